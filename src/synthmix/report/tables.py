"""The report's tables: summary.csv rows, and the metric, change and runs tables of the document.

A `Table` holds display strings only; document.py lays it out as Markdown or HTML.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synthmix.report.cells import Cell, Intervals
from synthmix.report.comparisons import Comparison, Results
from synthmix.report.wording import METRIC_LABELS, POWER, change_text, detectable, interval_text, model_names
from synthmix.runs.evaluate import FINAL_METRICS


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Section:
    """A titled part of the document: a paragraph, then its tables."""

    title: str
    text: str
    tables: tuple[Table, ...]


# --- summary.csv ---------------------------------------------------------------------------------


def summary_rows(results: Results) -> list[dict[str, Any]]:
    """summary.csv: one row per (model, source, mix); changes against the baseline where there is one.

    Every metric's change has its interval, standard error, degrees of freedom, unadjusted p and test;
    the primary metric's also its Holm-adjusted p, the verdict and the smallest detectable change
    (declared-family comparisons only). `family` says whether the row's change is a verdict of the
    declared family ('declared'), or exploratory.
    """
    against = {k.b: k for k in results.comparisons if k.kind == "baseline"}
    rows = []
    for cell in results.cells:
        row: dict[str, Any] = {
            "model": cell.model,
            "hyperparameter_source": cell.source,
            "mix": cell.mix.name,
            "seeds": " ".join(map(str, cell.seeds)),
        }
        for m in FINAL_METRICS:
            iv = results.intervals[cell][m]
            row |= {f"{m}_mean": iv.mean, f"{m}_ci_low": iv.low, f"{m}_ci_high": iv.high}
        k = against.get(cell)
        row["baseline"] = k.a.mix.name if k else ""
        row["family"] = _family_column(k, results)
        for m in FINAL_METRICS:
            row |= _change_columns(k, m)
        p = results.primary
        row |= {f"{p}_p_holm": "", f"{p}_significant": "", f"{p}_mde": ""}
        if k is not None and k.in_family:
            row |= {
                f"{p}_p_holm": k.p_holm,
                f"{p}_significant": results.significant(k),
                f"{p}_mde": detectable(k, results),
            }
        rows.append(row)
    return rows


def _family_column(k: Comparison | None, results: Results) -> str:
    if k is None:
        return ""
    return "declared" if k.in_family and not results.family.exploratory else "exploratory"


def _change_columns(k: Comparison | None, m: str) -> dict[str, Any]:
    """The change columns of one metric; empty strings for a cell with no baseline comparison."""
    if k is None:
        suffixes = ("change", "change_ci_low", "change_ci_high", "change_se", "change_df", "p", "test")
        return {f"{m}_{s}": "" for s in suffixes}
    d = k.differences[m]
    return {
        f"{m}_change": d.estimate,
        f"{m}_change_ci_low": d.low,
        f"{m}_change_ci_high": d.high,
        f"{m}_change_se": d.se,
        f"{m}_change_df": d.df,
        f"{m}_p": d.p_value,
        f"{m}_test": d.method,
    }


def write_summary_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


# --- the document's tables -----------------------------------------------------------------------


def metric_table(cells: Sequence[Cell], intervals: Intervals) -> Table:
    names = model_names(cells)
    rows = tuple(
        (
            names[c.model],
            c.source,
            c.mix.name,
            str(len(c.seeds)),
            *(interval_text(intervals[c][m]) for m in FINAL_METRICS),
        )
        for c in cells
    )
    return Table(
        ("model", "hyperparameters", "mix", "seeds", *(METRIC_LABELS[m] for m in FINAL_METRICS)), rows
    )


def change_table(comparisons: Sequence[Comparison], results: Results) -> Table:
    """One row per comparison: the primary metric first (with Holm p and the detectable change for the
    declared family's comparisons), then every other metric."""
    names = model_names(results.cells)
    primary = results.primary
    others = [m for m in FINAL_METRICS if m != primary]
    rows = tuple(
        (
            names[k.model] if k.kind != "backbone" else f"{names[k.b.model]} vs {names[k.a.model]}",
            k.b.source if k.kind != "tuned" else "tuned vs fixed",
            {"tuned": k.b.mix.name, "backbone": k.b.mix.name}.get(k.kind, f"{k.b.mix} vs {k.a.mix}"),
            change_text(k, primary, results),
            _detectable_text(k, results),
            *(change_text(k, m, results) for m in others),
        )
        for k in comparisons
    )
    header = (
        "model",
        "hyperparameters",
        "comparison",
        f"{METRIC_LABELS[primary]} (primary)",
        f"detectable ({POWER:.0%} power)",
        *(METRIC_LABELS[m] for m in others),
    )
    return Table(header, rows)


def _detectable_text(k: Comparison, results: Results) -> str:
    if not k.in_family:
        return ""
    mde = detectable(k, results)
    return "n/a" if mde != mde else f"{mde:.3f}"  # NaN: no variance to size it from


def runs_table(cells: Sequence[Cell]) -> Table:
    """Every run the report used, with what it was trained from and where MLflow has it."""
    names = model_names(cells)
    rows = tuple(
        (
            names[r.model],
            r.source,
            r.mix.name,
            str(r.seed),
            r.weights,
            str(r.train_images),
            ", ".join(f"{k}={v}" for k, v in sorted(r.hyperparameters.items())),
            r.fingerprint[:12],
            r.mlflow_run_id,
        )
        for c in cells
        for r in c.runs
    )
    header = ("model", "hyperparameters", "mix", "seed", "weights", "train images", "settings", "fingerprint")
    return Table((*header, "MLflow run"), rows)


def _controls_text(results: Results) -> str:
    pairs, generators = results.family.controls, results.family.generators
    listed = ", ".join(f"{b} vs {a}" for a, b in pairs)
    text = f", each synthetic mix against its augmentation control ({listed})" if pairs else ""
    if generators:
        listed = ", ".join(f"{b} vs {a}" for a, b in generators)
        text += f", each other generator's mix against the first generator's with the same counts ({listed})"
    return text + "," if text else ""


# The axes besides the mix, one section each: (comparison kind, title, what its table holds).
_AXIS_SECTIONS = (
    (
        "generator",
        "Generators",
        "Each other generator's images against the first generator's, with the same real and synthetic "
        "counts and the same paired inference as above (in the declared family when both mixes are study "
        "mixes, else exploratory).",
    ),
    (
        "vetting",
        "Vetted synthetic images",
        "Each vetted mix (@filtered: the automatic filters' rejects left out; @reviewed: a reviewer's; "
        "@vetted: both) against the same mix unvetted, the same paired inference as above (in the declared "
        "family when both mixes are study mixes, else exploratory).",
    ),
    (
        "backbone",
        "Backbones",
        "Each model against the first of study.models on the same mix and replicates, the same paired "
        "inference over the same test images (exploratory).",
    ),
)


def sections(results: Results) -> list[Section]:
    """Summary, changes against the baseline (and ratio), tuned vs fixed: also all of summary.md."""
    confidence, alpha, primary = results.confidence, results.alpha, METRIC_LABELS[results.primary]
    out = [
        Section(
            "Summary",
            f"Mean over replicates with its {confidence:.0%} confidence interval (Student t over replicates, "
            "on this test set: it covers what a replicate redraws, not the draw of test images) for every "
            "model, hyperparameter source and mix.",
            (metric_table(results.cells, results.intervals),),
        )
    ]
    against = [k for k in results.comparisons if k.kind in ("baseline", "augmentation", "ratio")]
    if against:
        out.append(
            Section(
                "Changes",
                f"Each entry: change, its {confidence:.0%} confidence interval and unadjusted p-value "
                "(spread over replicates plus the shared test-image draw, Student t; test loss: paired t-test over "
                f"replicates). {primary} against the baseline{_controls_text(results)} is the declared family: "
                "its Holm-adjusted p "
                f"follows, * marks one below {alpha:.2g}, and 'detectable' is the smallest change found with "
                f"{POWER:.0%} power. Every other entry is exploratory.",
                (change_table(against, results),),
            )
        )
    for kind, title, text in _AXIS_SECTIONS:
        found = [k for k in results.comparisons if k.kind == kind]
        if found:
            out.append(Section(title, text, (change_table(found, results),)))
    tuned = [k for k in results.comparisons if k.kind == "tuned"]
    if tuned:
        out.append(
            Section(
                "Tuned vs fixed hyperparameters",
                "Tuned minus fixed, for each mix that has both, same tests as above (exploratory).",
                (
                    metric_table([c for k in tuned for c in (k.a, k.b)], results.intervals),
                    change_table(tuned, results),
                ),
            )
        )
    return out

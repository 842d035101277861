"""The report's tables: summary.csv rows, and the metric, change and runs tables of the document.

A `Table` holds display strings only; document.py lays it out as Markdown or HTML.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synthmix.evaluate import FINAL_METRICS
from synthmix.report.cells import Cell, Intervals
from synthmix.report.comparisons import Comparison, Results
from synthmix.report.wording import METRIC_LABELS, change_text, interval_text, model_label


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
    """summary.csv: one row per (model, source, mix); changes against the baseline where there is one."""
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
        for m in FINAL_METRICS:
            row |= _change_columns(k, m, results.alpha)
        rows.append(row)
    return rows


def _change_columns(k: Comparison | None, m: str, alpha: float) -> dict[str, Any]:
    """The change columns of one metric; empty strings for a cell with no baseline comparison."""
    if k is None:
        suffixes = ("change", "change_ci_low", "change_ci_high", "p", "p_holm", "significant", "test")
        return {f"{m}_{s}": "" for s in suffixes}
    d = k.differences[m]
    return {
        f"{m}_change": d.estimate,
        f"{m}_change_ci_low": d.low,
        f"{m}_change_ci_high": d.high,
        f"{m}_p": d.p_value,
        f"{m}_p_holm": k.p_holm[m],
        f"{m}_significant": not math.isnan(k.p_holm[m]) and k.p_holm[m] < alpha,
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
    rows = tuple(
        (
            model_label(c.model),
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


def change_table(comparisons: Sequence[Comparison], alpha: float) -> Table:
    rows = tuple(
        (
            model_label(k.model),
            k.b.source if k.kind != "tuned" else "tuned vs fixed",
            f"{k.b.mix} vs {k.a.mix}" if k.kind != "tuned" else k.b.mix.name,
            *(change_text(k, m, alpha) for m in FINAL_METRICS),
        )
        for k in comparisons
    )
    return Table(("model", "hyperparameters", "comparison", *(METRIC_LABELS[m] for m in FINAL_METRICS)), rows)


def runs_table(cells: Sequence[Cell]) -> Table:
    """Every run the report used, with what it was trained from and where MLflow has it."""
    rows = tuple(
        (
            model_label(r.model),
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


def sections(results: Results) -> list[Section]:
    """Summary, changes against the baseline (and ratio), tuned vs fixed: also all of summary.md."""
    confidence, alpha = results.confidence, results.alpha
    out = [
        Section(
            "Summary",
            f"Mean over seeds with its {confidence:.0%} confidence interval (Student t over seeds) for every "
            "model, hyperparameter source and mix.",
            (metric_table(results.cells, results.intervals),),
        )
    ]
    against = [k for k in results.comparisons if k.kind in ("baseline", "ratio")]
    if against:
        out.append(
            Section(
                "Changes",
                f"Each entry: change, its {confidence:.0%} confidence interval, raw p-value and Holm-adjusted "
                f"p-value; * marks a Holm-adjusted p below {alpha:.2g}. Classification metrics: paired "
                "bootstrap over the same test images (and seeds); test loss: paired t-test over seeds.",
                (change_table(against, alpha),),
            )
        )
    tuned = [k for k in results.comparisons if k.kind == "tuned"]
    if tuned:
        out.append(
            Section(
                "Tuned vs fixed hyperparameters",
                "Tuned minus fixed, for each mix that has both, same tests as above.",
                (
                    metric_table([c for k in tuned for c in (k.a, k.b)], results.intervals),
                    change_table(tuned, alpha),
                ),
            )
        )
    return out

"""The study's report: summary table, figures, findings in words, report.md and a self-contained HTML.

Reads the finished runs under runs/ (docs/layout.md), the real training split and the synthetic set;
writes reports/ (summary.csv, summary.md, report.md, report.html, figures/*.png) and logs it to the
sweep's parent MLflow run.

Every number in the text is computed here from the runs, never written by hand. Intervals per
configuration are Student-t over seeds (metrics.json of each run). Changes against the real-only
baseline are paired: seed k of a mix is compared with seed k of the baseline, image by image over the
same test images (predictions.csv shares one row order), with the paired bootstrap of
`stats.bootstrap_differences` for the four classification metrics and a paired t-test over seeds for
test loss (known only per run). The mix-vs-baseline p-values of each model and metric form one family
and are Holm-adjusted; "significant" means the adjusted p-value is below 1 - report.confidence.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
import os
import shutil
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from synthmix import figures, stats
from synthmix.config import Params, ReportConfig
from synthmix.errors import UserError
from synthmix.mixes import Mix, read_synthetic_manifest
from synthmix.progress import progress

METRICS = (*stats.CLASSIFICATION_METRICS, "test_loss")
METRIC_LABELS = {
    "accuracy": "accuracy",
    "precision_macro": "macro precision",
    "recall_macro": "macro recall",
    "f1_macro": "macro F1",
    "test_loss": "test loss",
}
LOWER_IS_BETTER = frozenset({"test_loss"})
MODEL_LABELS = {"cnn": "CNN", "resnet50": "ResNet50"}
SOURCES = ("fixed", "tuned")
RUN_JSON_FIELDS = ("model", "mix", "seed", "weights", "hyperparameters", "hyperparameter_source", "classes")
HISTORY_FIELDS = ("epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy")


# --- runs as train wrote them --------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One finished training run: its run.json fields and final metrics."""

    dir: Path
    model: str
    mix: Mix
    seed: int
    source: str  # "fixed" or "tuned" hyperparameters
    weights: str
    classes: tuple[str, ...]
    hyperparameters: Mapping[str, Any] = field(hash=False)
    metrics: Mapping[str, float] = field(hash=False)
    fingerprint: str = ""
    mlflow_run_id: str = ""
    mlflow_parent_run_id: str = ""
    train_images: int | None = None


@dataclass(frozen=True)
class Cell:
    """Every seed of one (model, hyperparameter source, mix), ordered by seed."""

    model: str
    source: str
    mix: Mix
    runs: tuple[Run, ...]

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(r.seed for r in self.runs)

    @property
    def name(self) -> str:
        return f"{self.mix.name} {self.source}" if self.source != "fixed" else self.mix.name

    def run(self, seed: int) -> Run:
        return next(r for r in self.runs if r.seed == seed)


@dataclass(frozen=True)
class Predictions:
    """predictions.csv of one run as class indices, in its (shared) row order."""

    paths: tuple[str, ...]
    true: np.ndarray
    predicted: np.ndarray


def discover_runs(runs_dir: Path) -> tuple[list[Run], list[Path]]:
    """Finished runs under runs_dir (run.json with DONE beside it) and the unfinished run folders."""
    finished: list[Run] = []
    unfinished: list[Path] = []
    for run_json in sorted(runs_dir.glob("*/*/*/run.json")):
        if not (run_json.parent / "DONE").exists():
            unfinished.append(run_json.parent)
            continue
        finished.append(read_run(run_json.parent))
    return finished, unfinished


def read_run(run_dir: Path) -> Run:
    """One run folder's run.json and metrics.json, checked against docs/layout.md."""
    info = _read_json(run_dir / "run.json")
    missing = [k for k in RUN_JSON_FIELDS if k not in info]
    if missing:
        raise UserError(
            f"{run_dir}/run.json has no '{missing[0]}' field (docs/layout.md lists what a run records). "
            f"The run was written by another version of synthmix: delete {run_dir} and rerun `synthmix train`."
        )
    metrics_raw = _read_json(run_dir / "metrics.json")
    absent = [m for m in METRICS if m not in metrics_raw]
    if absent:
        raise UserError(
            f"{run_dir}/metrics.json has no '{absent[0]}'. Delete {run_dir} and rerun `synthmix train`."
        )
    source = str(info["hyperparameter_source"])
    if source not in SOURCES:
        raise UserError(
            f"{run_dir}/run.json says hyperparameter_source '{source}'; synthmix writes 'fixed' or 'tuned'. "
            f"Delete {run_dir} and rerun `synthmix train`."
        )
    return Run(
        dir=run_dir,
        model=str(info["model"]),
        mix=Mix.parse(info["mix"]),
        seed=int(info["seed"]),
        source=source,
        weights=str(info["weights"]),
        classes=tuple(str(c) for c in info["classes"]),
        hyperparameters=dict(info["hyperparameters"] or {}),
        metrics={m: float(metrics_raw[m]) for m in METRICS},
        fingerprint=str(info.get("fingerprint") or ""),
        mlflow_run_id=str(info.get("mlflow_run_id") or ""),
        mlflow_parent_run_id=str(info.get("mlflow_parent_run_id") or ""),
        train_images=int(info["train_images"]) if info.get("train_images") is not None else None,
    )


def _read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise UserError(
            f"{path} is missing although its run is marked DONE. Delete {path.parent} and rerun `synthmix train`."
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(
            f"{path} is not valid JSON ({exc}). Delete {path.parent} and rerun `synthmix train`."
        ) from None
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a JSON object. Delete {path.parent} and rerun `synthmix train`.")
    return data


def group_cells(runs: Iterable[Run], models: Sequence[str], mixes: Sequence[Mix]) -> list[Cell]:
    """(model, source, mix) cells in report order (models, then fixed before tuned, then mixes)."""
    by_key: dict[tuple[str, str, Mix], dict[int, Run]] = defaultdict(dict)
    for run in runs:
        seen = by_key[(run.model, run.source, run.mix)]
        if run.seed in seen:
            raise UserError(
                f"{run.dir} and {seen[run.seed].dir} are both {run.model} {run.mix} {run.source} seed "
                f"{run.seed}. Keep one of them (delete the other folder)."
            )
        seen[run.seed] = run
    order = {
        (m, s, x): (i, j, k)
        for i, m in enumerate(models)
        for j, s in enumerate(SOURCES)
        for k, x in enumerate(mixes)
    }
    return [
        Cell(model, source, mix, tuple(seeds[s] for s in sorted(seeds)))
        for (model, source, mix), seeds in sorted(by_key.items(), key=lambda item: order[item[0]])
    ]


def read_predictions(run: Run) -> Predictions:
    path = run.dir / "predictions.csv"
    if not path.exists():
        raise UserError(
            f"{path} is missing although the run is marked DONE. Delete {run.dir} and rerun `synthmix train`."
        )
    index = {c: i for i, c in enumerate(run.classes)}
    paths: list[str] = []
    true: list[int] = []
    predicted: list[int] = []
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if not {"path", "class", "predicted"} <= set(reader.fieldnames or ()):
            raise UserError(
                f"{path} needs columns path,class,predicted,correct (it has {reader.fieldnames})."
            )
        for row in reader:
            for column in ("class", "predicted"):
                if row[column] not in index:
                    raise UserError(
                        f"{path} names class '{row[column]}' ({column} of {row['path']}), which is not among "
                        f"the run's classes in {run.dir}/run.json. Delete {run.dir} and rerun `synthmix train`."
                    )
            paths.append(row["path"])
            true.append(index[row["class"]])
            predicted.append(index[row["predicted"]])
    return Predictions(tuple(paths), np.asarray(true, dtype=np.int64), np.asarray(predicted, dtype=np.int64))


def check_paired(reference: tuple[Run, Predictions], other: tuple[Run, Predictions]) -> None:
    """Two runs can be compared image by image only if they list the same test images in the same order."""
    (ref_run, ref), (run, pred) = reference, other
    if run.classes != ref_run.classes:
        raise UserError(
            f"{run.dir}/run.json lists other classes than {ref_run.dir}/run.json, so the two runs cannot be "
            "compared. Runs of one study must share the real set: rerun `synthmix train` for the stale runs."
        )
    if pred.paths != ref.paths or not np.array_equal(pred.true, ref.true):
        row = next(
            (i for i, (a, b) in enumerate(zip(ref.paths, pred.paths, strict=False)) if a != b),
            min(len(ref.paths), len(pred.paths)),
        )
        first = ref.paths[row] if row < len(ref.paths) else "(no row)"
        second = pred.paths[row] if row < len(pred.paths) else "(no row)"
        raise UserError(
            f"{run.dir}/predictions.csv does not list the same test images in the same order as "
            f"{ref_run.dir}/predictions.csv (row {row + 1}: {second} vs {first}; {len(pred.paths)} vs "
            f"{len(ref.paths)} rows), so they cannot be paired image by image. Both runs must be evaluated "
            "on the current prepared/test.csv: delete the stale run folders and rerun `synthmix train`."
        )


# --- comparisons ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """metric(b) - metric(a) over the seeds both cells share, with Holm-adjusted p-values."""

    model: str
    kind: str  # "baseline" (mix vs real-only), "ratio" (synthetic outnumbers real), "tuned" (tuned vs fixed)
    a: Cell
    b: Cell
    seeds: tuple[int, ...]
    differences: Mapping[str, stats.Difference] = field(hash=False)
    p_holm: Mapping[str, float] = field(hash=False)


def planned_pairs(cells: Sequence[Cell], baseline: Mix) -> list[tuple[str, Cell, Cell]]:
    """(kind, a, b) for every comparison the report makes, per model.

    baseline: each mix against the real-only baseline with the same hyperparameter source;
    ratio: a mix where synthetic outnumbers real against one with as many images where real outnumbers
    synthetic (e.g. 15r30s vs 30r15s): the two differ only in the ratio;
    tuned: tuned against fixed hyperparameters for the same mix.
    """
    key = {(c.model, c.source, c.mix): c for c in cells}
    pairs: list[tuple[str, Cell, Cell]] = []
    for cell in cells:
        base = key.get((cell.model, cell.source, baseline))
        if base is not None and cell.mix != baseline:
            pairs.append(("baseline", base, cell))
    for cell in cells:
        if cell.mix.synthetic > cell.mix.real:
            for other in cells:
                same_total = other.mix.real + other.mix.synthetic == cell.mix.real + cell.mix.synthetic
                if (
                    (other.model, other.source) == (cell.model, cell.source)
                    and same_total
                    and other.mix.real > other.mix.synthetic
                    # both hold real and synthetic images (all-real vs all-synthetic is a baseline comparison)
                    and other.mix.synthetic > 0
                    and cell.mix.real > 0
                ):
                    pairs.append(("ratio", other, cell))
    for cell in cells:
        fixed = key.get((cell.model, "fixed", cell.mix))
        if cell.source == "tuned" and fixed is not None:
            pairs.append(("tuned", fixed, cell))
    return pairs


def compare_cells(
    pairs: Sequence[tuple[str, Cell, Cell]],
    load: Callable[[Run], Predictions],
    cfg: ReportConfig,
) -> list[Comparison]:
    """Run every planned comparison: bootstrap for classification metrics, paired t for test loss.

    Pairs that share the same seeds are bootstrapped together in one vectorised call per model, so
    every comparison of a model sees the same resampled test images.
    """
    predictions: dict[Path, Predictions] = {}
    reference: dict[str, tuple[Run, Predictions]] = {}

    def predicted(run: Run) -> Predictions:
        if run.dir not in predictions:
            pred = load(run)
            ref = reference.setdefault(run.model, (run, pred))
            check_paired(ref, (run, pred))
            predictions[run.dir] = pred
        return predictions[run.dir]

    groups: dict[tuple[str, tuple[int, ...]], list[tuple[str, Cell, Cell]]] = defaultdict(list)
    for kind, a, b in pairs:
        shared = tuple(sorted(set(a.seeds) & set(b.seeds)))
        groups[(a.model, shared)].append((kind, a, b))
    raw: list[tuple[str, Cell, Cell, tuple[int, ...], dict[str, stats.Difference]]] = []
    for (_model, seeds), members in progress(list(groups.items()), "Comparing mixes"):
        if not seeds:
            nan = stats.Difference(math.nan, math.nan, math.nan, math.nan, "no seed in common")
            raw += [(kind, a, b, seeds, dict.fromkeys(METRICS, nan)) for kind, a, b in members]
            continue
        involved = {c.name: c for _, a, b in members for c in (a, b)}
        sets = {
            name: np.stack([predicted(c.run(s)).predicted for s in seeds]) for name, c in involved.items()
        }
        y_true = predicted(next(iter(involved.values())).run(seeds[0])).true
        n_classes = len(next(iter(involved.values())).runs[0].classes)
        boot = stats.bootstrap_differences(
            y_true,
            sets,
            [(a.name, b.name) for _, a, b in members],
            n_classes,
            samples=cfg.bootstrap_samples,
            confidence=cfg.confidence,
            seed=cfg.seed,
        )
        for kind, a, b in members:
            loss = stats.paired_t(
                [a.run(s).metrics["test_loss"] for s in seeds],
                [b.run(s).metrics["test_loss"] for s in seeds],
                cfg.confidence,
            )
            raw.append((kind, a, b, seeds, {**boot[(a.name, b.name)], "test_loss": loss}))
    # Holm per family: one model, one kind, one hyperparameter source, one metric.
    holm: dict[int, dict[str, float]] = defaultdict(dict)
    families: dict[tuple[str, str, str, str], list[int]] = defaultdict(list)
    for i, (kind, a, b, _, _) in enumerate(raw):
        for metric in METRICS:
            families[(a.model, kind, b.source, metric)].append(i)
    for (_, _, _, metric), members_idx in families.items():
        adjusted = stats.holm_adjust([raw[i][4][metric].p_value for i in members_idx])
        for i, p in zip(members_idx, adjusted, strict=True):
            holm[i][metric] = p
    return [
        Comparison(a.model, kind, a, b, seeds, diffs, holm[i])
        for i, (kind, a, b, seeds, diffs) in enumerate(raw)
    ]


# --- wording -------------------------------------------------------------------------------------


def signed(value: float, digits: int = 3) -> str:
    if math.isnan(value):
        return "n/a"
    text = f"{value:+.{digits}f}"
    return "+" + text[1:] if float(text) == 0 else text  # no "-0.000" for a change that rounds to zero


def p_text(p: float) -> str:
    if math.isnan(p):
        return "p n/a"
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def verdict(comparison: Comparison, metric: str, alpha: float) -> str:
    """'significantly better', 'significantly worse' or 'no significant difference' (Holm-adjusted)."""
    p = comparison.p_holm[metric]
    diff = comparison.differences[metric]
    if math.isnan(p) or p >= alpha:
        return "no significant difference"
    better = diff.estimate < 0 if metric in LOWER_IS_BETTER else diff.estimate > 0
    return "significantly better" if better else "significantly worse"


def describe(comparison: Comparison, metric: str, confidence: float) -> str:
    """e.g. 'macro F1 +0.071 (95% CI +0.040 to +0.102, p=0.001, Holm p=0.004): significantly better'."""
    d = comparison.differences[metric]
    alpha = 1 - confidence
    if math.isnan(d.estimate):
        return f"{METRIC_LABELS[metric]} not comparable ({d.method})"
    ci = f"{confidence:.0%} CI {signed(d.low)} to {signed(d.high)}, " if not math.isnan(d.low) else ""
    holm = comparison.p_holm[metric]
    holm_part = f", Holm {p_text(holm)}" if not math.isnan(holm) and holm != d.p_value else ""
    return (
        f"{METRIC_LABELS[metric]} {signed(d.estimate)} ({ci}{p_text(d.p_value)}{holm_part}): "
        f"{verdict(comparison, metric, alpha)}"
    )


def model_label(model: str) -> str:
    return MODEL_LABELS.get(model, model)


def findings(
    cells: Sequence[Cell],
    comparisons: Sequence[Comparison],
    intervals: Mapping[Cell, Mapping[str, stats.Interval]],
    baseline: Mix,
    confidence: float,
) -> list[str]:
    """The findings in words, each sentence computed from the comparisons."""
    out: list[str] = []
    alpha = 1 - confidence
    models = list(dict.fromkeys(c.model for c in cells))
    if cells and max(len(c.seeds) for c in cells) < 2:
        out.append(
            "Each configuration ran with a single seed, so the intervals cover the draw of test images only, "
            "not training randomness; run more seeds (study.seeds) for the full picture."
        )
    for model in models:
        label = model_label(model)
        for source in SOURCES:
            own = [c for c in cells if c.model == model and c.source == source]
            if not own:
                continue
            who = label if source == "fixed" else f"{label} (tuned)"
            against = [
                k for k in comparisons if k.model == model and k.kind == "baseline" and k.b.source == source
            ]
            if not any(c.mix == baseline for c in own):
                out.append(
                    f"{who}: no real-only baseline ({baseline}) runs, so no changes against it are reported."
                )
            for k in against:
                out.append(f"{who}: {k.b.mix} vs {k.a.mix} {describe(k, 'f1_macro', confidence)}.")
            best = max(own, key=lambda c: intervals[c]["f1_macro"].mean)
            best_iv = intervals[best]["f1_macro"]
            ci = (
                f", {confidence:.0%} CI {best_iv.low:.3f} to {best_iv.high:.3f}"
                if not math.isnan(best_iv.low)
                else ""
            )
            sentence = f"{who}: best mix by mean macro F1 is {best.mix} ({best_iv.mean:.3f}{ci})"
            if best.mix == baseline:
                sentence += (
                    "; that is the real-only baseline: no mix with synthetic images beat it on average"
                )
            else:
                vs = next((k for k in against if k.b == best), None)
                if vs is not None:
                    v = verdict(vs, "f1_macro", alpha)
                    sentence += (
                        f", {v} than {baseline}"
                        if v != "no significant difference"
                        else f", {v} from {baseline}"
                    )
            out.append(sentence + ".")
            for k in comparisons:
                if k.model == model and k.kind == "ratio" and k.b.source == source:
                    total = k.a.mix.real + k.a.mix.synthetic
                    out.append(
                        f"{who}: synthetic outnumbering real ({k.b.mix} vs {k.a.mix}, both {total} images a "
                        f"class): {describe(k, 'f1_macro', confidence)}."
                    )
        for k in comparisons:
            if k.model == model and k.kind == "tuned":
                out.append(
                    f"{label} {k.b.mix}: tuned vs fixed hyperparameters {describe(k, 'f1_macro', confidence)}."
                )
    return out


# --- the document: one structure, rendered as Markdown and as HTML --------------------------------


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class FigureRef:
    path: Path  # relative to the report folder
    caption: str


Block = Heading | Paragraph | Bullets | Table | FigureRef


def render_markdown(blocks: Sequence[Block]) -> str:
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            lines += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Paragraph):
            lines += [block.text, ""]
        elif isinstance(block, Bullets):
            lines += [f"- {item}" for item in block.items] + [""]
        elif isinstance(block, Table):
            lines += [*_markdown_table(block), ""]
        elif isinstance(block, FigureRef):
            lines += [f"![{block.caption}]({block.path.as_posix()})", "", f"*{block.caption}*", ""]
    return "\n".join(lines)


def _markdown_table(table: Table) -> list[str]:
    def row(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return [
        row(table.header),
        "|" + "|".join("---" for _ in table.header) + "|",
        *(row(r) for r in table.rows),
    ]


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1150px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: .15em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
tr:nth-child(even) td { background: #fafafa; }
figure { margin: 1.2em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 13px; color: #555; }
li { margin: .25em 0; }
"""


def render_html(blocks: Sequence[Block], root: Path, title: str) -> str:
    """One self-contained page: CSS inline, every figure embedded as a base64 PNG data URI."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
    ]
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            parts.append(f"<p>{html.escape(block.text)}</p>")
        elif isinstance(block, Bullets):
            parts.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in block.items) + "</ul>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{html.escape(h)}</th>" for h in block.header)
            body = "".join(
                "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in block.rows
            )
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif isinstance(block, FigureRef):
            data = base64.b64encode((root / block.path).read_bytes()).decode("ascii")
            caption = html.escape(block.caption)
            parts.append(
                f'<figure><img alt="{caption}" src="data:image/png;base64,{data}">'
                f"<figcaption>{caption}</figcaption></figure>"
            )
    parts.append("</body></html>")
    return "\n".join(parts)


# --- tables --------------------------------------------------------------------------------------


def summary_rows(
    cells: Sequence[Cell],
    intervals: Mapping[Cell, Mapping[str, stats.Interval]],
    comparisons: Sequence[Comparison],
    alpha: float,
) -> list[dict[str, Any]]:
    """summary.csv: one row per (model, source, mix); changes against the baseline where there is one."""
    against = {k.b: k for k in comparisons if k.kind == "baseline"}
    rows = []
    for cell in cells:
        row: dict[str, Any] = {
            "model": cell.model,
            "hyperparameter_source": cell.source,
            "mix": cell.mix.name,
            "seeds": " ".join(map(str, cell.seeds)),
        }
        for m in METRICS:
            iv = intervals[cell][m]
            row |= {f"{m}_mean": iv.mean, f"{m}_ci_low": iv.low, f"{m}_ci_high": iv.high}
        k = against.get(cell)
        row["baseline"] = k.a.mix.name if k else ""
        for m in METRICS:
            d = k.differences[m] if k else None
            row |= {
                f"{m}_change": d.estimate if d else "",
                f"{m}_change_ci_low": d.low if d else "",
                f"{m}_change_ci_high": d.high if d else "",
                f"{m}_p": d.p_value if d else "",
                f"{m}_p_holm": k.p_holm[m] if k else "",
                f"{m}_significant": (not math.isnan(k.p_holm[m]) and k.p_holm[m] < alpha) if k else "",
                f"{m}_test": d.method if d else "",
            }
        rows.append(row)
    return rows


def interval_text(iv: stats.Interval) -> str:
    if math.isnan(iv.low):
        return f"{iv.mean:.3f}"
    return f"{iv.mean:.3f} ({iv.low:.3f} to {iv.high:.3f})"


def change_text(k: Comparison, metric: str, alpha: float) -> str:
    d = k.differences[metric]
    if math.isnan(d.estimate):
        return "n/a"
    ci = f" ({signed(d.low)} to {signed(d.high)})" if not math.isnan(d.low) else ""
    holm = k.p_holm[metric]
    mark = " *" if not math.isnan(holm) and holm < alpha else ""
    holm_part = f", Holm {p_text(holm)}" if not math.isnan(holm) else ""
    return f"{signed(d.estimate)}{ci}, {p_text(d.p_value)}{holm_part}{mark}"


def metric_table(cells: Sequence[Cell], intervals: Mapping[Cell, Mapping[str, stats.Interval]]) -> Table:
    rows = tuple(
        (
            model_label(c.model),
            c.source,
            c.mix.name,
            str(len(c.seeds)),
            *(interval_text(intervals[c][m]) for m in METRICS),
        )
        for c in cells
    )
    return Table(("model", "hyperparameters", "mix", "seeds", *(METRIC_LABELS[m] for m in METRICS)), rows)


def change_table(comparisons: Sequence[Comparison], alpha: float) -> Table:
    rows = tuple(
        (
            model_label(k.model),
            k.b.source if k.kind != "tuned" else "tuned vs fixed",
            f"{k.b.mix} vs {k.a.mix}" if k.kind != "tuned" else k.b.mix.name,
            *(change_text(k, m, alpha) for m in METRICS),
        )
        for k in comparisons
    )
    return Table(("model", "hyperparameters", "comparison", *(METRIC_LABELS[m] for m in METRICS)), rows)


def write_summary_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


# --- figures from runs ---------------------------------------------------------------------------


def mean_curves(cell: Cell) -> dict[str, figures.Curves]:
    """history.csv of every seed: per-epoch mean, lowest and highest seed."""
    per_seed = [_read_history(run.dir / "history.csv") for run in cell.runs]
    epochs = min(len(h) for h in per_seed)  # seeds stop together; guard against a ragged history
    curves = {}
    for name in HISTORY_FIELDS[1:]:
        values = np.stack([h[:epochs, HISTORY_FIELDS.index(name)] for h in per_seed])
        curves[name] = figures.Curves(per_seed[0][:epochs, 0], values.mean(0), values.min(0), values.max(0))
    return curves


def _read_history(path: Path) -> np.ndarray:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if not set(HISTORY_FIELDS) <= set(reader.fieldnames or ()):
            raise UserError(f"{path} needs columns {','.join(HISTORY_FIELDS)} (it has {reader.fieldnames}).")
        rows = [[float(r[k]) for k in HISTORY_FIELDS] for r in reader]
    if not rows:
        raise UserError(f"{path} has no epochs. Delete {path.parent} and rerun `synthmix train`.")
    return np.asarray(rows)


def per_class_f1(cell: Cell, seeds: Sequence[int]) -> dict[str, float]:
    """Mean F1 per class over the given seeds, from per_class.csv."""
    sums: dict[str, float] = defaultdict(float)
    for seed in seeds:
        with open(cell.run(seed).dir / "per_class.csv", newline="") as fh:
            for row in csv.DictReader(fh):
                sums[row["class"]] += float(row["f1"])
    return {c: v / len(seeds) for c, v in sums.items()}


def confusion_counts(cell: Cell) -> np.ndarray:
    """confusion.csv summed over seeds (rows true, columns predicted, in class order)."""
    total = None
    for run in cell.runs:
        with open(run.dir / "confusion.csv", newline="") as fh:
            rows = list(csv.reader(fh))
        matrix = np.asarray([[float(v) for v in r[1:]] for r in rows[1:]])
        total = matrix if total is None else total + matrix
    return total


def load_samples(
    classes: Sequence[str], real: Mapping[str, list[Path]], synthetic: Mapping[str, list[Path]], per_row: int
) -> dict[str, tuple[list[np.ndarray], list[np.ndarray]]]:
    from synthmix.data import decode_array

    def decode(path: Path) -> np.ndarray:
        try:
            return decode_array(path)
        except (OSError, ValueError) as exc:
            raise UserError(
                f"Cannot read {path} for the sample figures ({exc}). Restore the data with `dvc pull` "
                "or `dvc repro`."
            ) from None

    return {
        c: (
            [decode(p) for p in real.get(c, [])[:per_row]],
            [decode(p) for p in synthetic.get(c, [])[:per_row]],
        )
        for c in classes
    }


# --- provenance ----------------------------------------------------------------------------------


def generator_lines(manifest: Path) -> list[str]:
    """Which generator made the synthetic set, from synthetic/manifest.csv."""
    from synthmix.tracking import file_hash

    if not manifest.exists():
        return [f"No synthetic set ({manifest} is missing): only real-image mixes could run."]
    rows = read_synthetic_manifest(manifest)
    if not rows:
        return [f"{manifest} lists no images."]
    lines = []
    for (generator, model_id, revision), group in sorted(
        _group_by(rows, lambda r: (r.generator, r.model_id, r.revision)).items()
    ):
        seeds = sorted({r.seed for r in group})
        steps = sorted({r.steps for r in group})
        guidance = sorted({r.guidance for r in group})
        lines.append(
            f"Generator {generator}, model {model_id or 'n/a'}"
            f"{f' (revision {revision})' if revision else ''}: {len(group)} images in "
            f"{len({r.label for r in group})} classes, {', '.join(map(str, steps))} steps, guidance "
            f"{', '.join(f'{g:g}' for g in guidance)}, seeds {_span(seeds)}, "
            f"{sum(r.retries for r in group)} retries."
        )
    lines.append(f"synthetic/manifest.csv sha256 {file_hash(manifest)[:16]}.")
    return lines


def title_weights(runs: Sequence[Run]) -> str:
    """What each model started from, for the title: random features never pass for ImageNet ones."""
    parts = []
    for model in dict.fromkeys(r.model for r in runs):
        used = sorted({r.weights for r in runs if r.model == model})
        if model == "cnn":
            parts.append(f"{model_label(model)} from scratch")
            continue
        names = {"imagenet": "ImageNet", "random": "random init, not ImageNet", "none": "random init"}
        parts.append(f"{model_label(model)} backbone: {', '.join(names.get(w, w) for w in used)}")
    return "; ".join(parts)


def _group_by(items: Iterable[Any], key: Callable[[Any], Any]) -> dict[Any, list[Any]]:
    out: dict[Any, list[Any]] = defaultdict(list)
    for item in items:
        out[key(item)].append(item)
    return out


def _span(values: Sequence[int]) -> str:
    """Sorted distinct ints, briefly: a run as 'a-b', many scattered ones (per-image seeds) as a count."""
    if len(values) > 3 and values[-1] - values[0] == len(values) - 1:
        return f"{values[0]}-{values[-1]}"
    if len(values) > 6:
        return f"{len(values)} distinct per-image seeds"
    return ", ".join(map(str, values))


def runs_table(cells: Sequence[Cell]) -> Table:
    rows = tuple(
        (
            model_label(r.model),
            r.source,
            r.mix.name,
            str(r.seed),
            r.weights,
            "" if r.train_images is None else str(r.train_images),
            ", ".join(f"{k}={v}" for k, v in sorted(r.hyperparameters.items())),
            r.fingerprint[:12],
            r.mlflow_run_id,
        )
        for c in cells
        for r in c.runs
    )
    return Table(
        (
            "model",
            "hyperparameters",
            "mix",
            "seed",
            "weights",
            "train images",
            "settings",
            "fingerprint",
            "MLflow run",
        ),
        rows,
    )


# --- the stage -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportResult:
    out_dir: Path
    findings: tuple[str, ...]
    figures: tuple[Path, ...]
    mlflow_run_id: str | None


def report_mixes(params: Params) -> list[Mix]:
    """The mixes a report may show, in study order: the baseline, the study's mixes, the selected mix."""
    return list(dict.fromkeys((params.study.baseline, *params.study.mixes, *params.selected_mixes)))


def write_report(params: Params, log_to_mlflow: bool = True) -> ReportResult:
    """Build reports/ from the finished runs (paths relative to the working directory, the repo root).

    The report is written into a temporary folder and swapped in at the end, so an interrupted run
    leaves the previous report whole.
    """
    cfg = params.report
    cfg.validate()
    runs_dir = params.train.runs_dir
    found, unfinished = discover_runs(runs_dir)
    mixes = report_mixes(params)
    models = list(params.study.models)
    selected = [r for r in found if r.model in models and r.mix in mixes and r.seed in params.study.seeds]
    if not selected:
        raise UserError(
            f"No finished runs of this study under {runs_dir}/ (looked for {runs_dir}/*/*/*/run.json with DONE "
            f"for models {', '.join(models)}, mixes {', '.join(m.name for m in mixes)}, seeds "
            f"{', '.join(map(str, params.study.seeds))}). Run `synthmix train` (or `dvc repro train`) first."
        )
    cells = group_cells(selected, models, mixes)
    intervals = {
        c: {m: stats.mean_ci([r.metrics[m] for r in c.runs], cfg.confidence) for m in METRICS} for c in cells
    }
    comparisons = compare_cells(planned_pairs(cells, params.study.baseline), read_predictions, cfg)
    alpha = 1 - cfg.confidence
    words = findings(cells, comparisons, intervals, params.study.baseline, cfg.confidence)

    out_dir = cfg.out_dir
    staging = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    if staging.exists():
        shutil.rmtree(staging)
    (staging / "figures").mkdir(parents=True)
    try:
        figure_blocks = _draw_figures(params, cells, intervals, staging)
        rows = summary_rows(cells, intervals, comparisons, alpha)
        write_summary_csv(rows, staging / "summary.csv")
        tables = _tables(cells, intervals, comparisons, alpha)
        (staging / "summary.md").write_text(render_markdown(tables))
        blocks = _document(
            params, cells, comparisons, words, tables, figure_blocks, found, selected, unfinished
        )
        (staging / "report.md").write_text(render_markdown(blocks))
        (staging / "report.html").write_text(render_html(blocks, staging, "synthmix report"))
        _swap_in(staging, out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    run_id = log_report(out_dir, selected, cells, intervals) if log_to_mlflow else None
    return ReportResult(out_dir, tuple(words), tuple(out_dir / b.path for b in figure_blocks), run_id)


def _swap_in(staging: Path, out_dir: Path) -> None:
    old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    if out_dir.exists():
        os.replace(out_dir, old)
    os.replace(staging, out_dir)
    if old.exists():
        shutil.rmtree(old)


def _tables(
    cells: Sequence[Cell],
    intervals: Mapping[Cell, Mapping[str, stats.Interval]],
    comparisons: Sequence[Comparison],
    alpha: float,
) -> list[Block]:
    confidence = 1 - alpha
    blocks: list[Block] = [
        Heading(2, "Summary"),
        Paragraph(
            f"Mean over seeds with its {confidence:.0%} confidence interval (Student t over seeds) for every "
            "model, hyperparameter source and mix."
        ),
        metric_table(cells, intervals),
    ]
    against = [k for k in comparisons if k.kind in ("baseline", "ratio")]
    if against:
        blocks += [
            Heading(2, "Changes"),
            Paragraph(
                f"Each entry: change, its {confidence:.0%} confidence interval, raw p-value and Holm-adjusted "
                f"p-value; * marks a Holm-adjusted p below {alpha:.2g}. Classification metrics: paired bootstrap "
                "over the same test images (and seeds); test loss: paired t-test over seeds."
            ),
            change_table(against, alpha),
        ]
    tuned = [k for k in comparisons if k.kind == "tuned"]
    if tuned:
        blocks += [
            Heading(2, "Tuned vs fixed hyperparameters"),
            Paragraph("Tuned minus fixed, for each mix that has both, same tests as above."),
            metric_table([c for k in tuned for c in (k.a, k.b)], intervals),
            change_table(tuned, alpha),
        ]
    return blocks


def _comparison_mix(cells: Sequence[Cell], model: str, baseline: Mix) -> Cell | None:
    """The mix the study's "30r30s" figures show: 30r30s when present, else the best non-baseline mix."""
    fixed = [c for c in cells if c.model == model and c.source == cells_source(cells, model)]
    wanted = next((c for c in fixed if c.mix == Mix(30, 30)), None)
    if wanted is not None:
        return wanted
    others = [c for c in fixed if c.mix != baseline]
    return max(others, key=lambda c: float(np.mean([r.metrics["f1_macro"] for r in c.runs])), default=None)


def cells_source(cells: Sequence[Cell], model: str) -> str:
    """The source the figures use for a model: fixed when it has fixed runs, else tuned."""
    return "fixed" if any(c.model == model and c.source == "fixed" for c in cells) else "tuned"


def _draw_figures(
    params: Params,
    cells: Sequence[Cell],
    intervals: Mapping[Cell, Mapping[str, stats.Interval]],
    out: Path,
) -> list[FigureRef]:
    from synthmix.data import read_manifest

    baseline = params.study.baseline
    blocks: list[FigureRef] = []
    models = list(dict.fromkeys(c.model for c in cells))
    mix_colour = {m: figures.PALETTE[i % len(figures.PALETTE)] for i, m in enumerate(report_mixes(params))}
    train_csv = params.data.prepared_dir / "train.csv"
    manifest = params.generate.out_dir / "manifest.csv"
    real_paths: dict[str, list[Path]] = defaultdict(list)
    synth_paths: dict[str, list[Path]] = defaultdict(list)
    if train_csv.exists():
        for row in sorted(read_manifest(train_csv), key=lambda r: r.rank):
            if row.split == "train":
                real_paths[row.label].append(row.path)
    if manifest.exists():
        for s in sorted(read_synthetic_manifest(manifest), key=lambda r: r.index):
            synth_paths[s.label].append(s.path)

    for model in progress(models, "Drawing figures"):
        label = model_label(model)
        source = cells_source(cells, model)
        own = [c for c in cells if c.model == model and c.source == source]
        base = next((c for c in own if c.mix == baseline), None)
        other = _comparison_mix(cells, model, baseline)
        shown = [c for c in (base, other) if c is not None]
        path = Path("figures") / f"curves-{model}.png"
        figures.curves_figure(
            f"{label}: loss and accuracy per epoch, {' vs '.join(c.mix.name for c in shown)}",
            {c.mix.name: mean_curves(c) for c in shown},
            out / path,
        )
        blocks.append(
            FigureRef(
                path,
                f"{label}: train (dashed) and test (solid) loss and accuracy per epoch, "
                f"{' vs '.join(c.mix.name for c in shown)} (the study's Figs. 4-5).",
            )
        )

        bars = [
            figures.Bar(c.mix.name, c.source, mix_colour[c.mix], intervals[c])
            for mix in report_mixes(params)
            for c in cells
            if c.model == model and c.mix == mix
        ]
        path = Path("figures") / f"metrics-{model}.png"
        figures.metric_bars_figure(f"{label}: every metric per mix", bars, METRICS, METRIC_LABELS, out / path)
        blocks.append(
            FigureRef(
                path,
                f"{label}: every metric per mix, mean over seeds with {params.report.confidence:.0%} "
                "CI error bars; hatched bars: tuned hyperparameters (the study's Figs. 6-7).",
            )
        )

        highlight: list[tuple[str, str]] = []
        if base is not None and other is not None:
            seeds = [s for s in base.seeds if s in other.seeds]
            if seeds:
                before, after = per_class_f1(base, seeds), per_class_f1(other, seeds)
                deltas = [
                    (c, after[c] - before[c]) for c in base.runs[0].classes if c in before and c in after
                ]
                path = Path("figures") / f"classwise-{model}.png"
                figures.classwise_figure(
                    f"{label}: class-wise F1 change, {baseline} -> {other.mix}", deltas, out / path
                )
                blocks.append(
                    FigureRef(
                        path,
                        f"{label}: change in F1 per class from {baseline} to {other.mix}, "
                        "sorted (the study's Fig. 8).",
                    )
                )
                ranked = sorted(deltas, key=lambda item: item[1], reverse=True)
                k = min(params.report.highlight_classes, len(ranked) // 2 or 1)
                highlight = [(c, f"F1 {signed(d, 2)}") for c, d in ranked[:k]]
                highlight += [(c, f"F1 {signed(d, 2)}") for c, d in ranked[-k:] if c not in dict(highlight)]
        if synth_paths and real_paths:
            if not highlight:  # no class-wise change to rank by: the first classes, as the study's Fig. 1
                highlight = [(c, "") for c in own[0].runs[0].classes[: 2 * params.report.highlight_classes]]
            images = load_samples(
                [c for c, _ in highlight], real_paths, synth_paths, params.report.sample_images
            )
            rows = [figures.SampleRow(c, note, *images[c]) for c, note in highlight]
            path = Path("figures") / f"samples-{model}.png"
            what = (
                "classes with the largest (top) and smallest (bottom) F1 change"
                if any(n for _, n in highlight)
                else "classes"
            )
            figures.samples_figure(f"{label}: real vs synthetic training images, {what}", rows, out / path)
            blocks.append(
                FigureRef(
                    path,
                    f"{label}: real (left) and synthetic (right) training images of the {what} "
                    "(the study's Figs. 1 and 9).",
                )
            )

        path = Path("figures") / f"confusion-{model}.png"
        figures.confusion_figure(
            f"{label}: confusion matrices (summed over seeds, rows normalised)",
            {c.mix.name: confusion_counts(c) for c in own},
            own[0].runs[0].classes,
            out / path,
        )
        blocks.append(
            FigureRef(
                path,
                f"{label}: confusion matrix of every mix, summed over seeds, each row "
                "normalised to the share of its true class.",
            )
        )
    return blocks


def _document(
    params: Params,
    cells: Sequence[Cell],
    comparisons: Sequence[Comparison],
    words: Sequence[str],
    tables: Sequence[Block],
    figure_blocks: Sequence[FigureRef],
    found: Sequence[Run],
    selected: Sequence[Run],
    unfinished: Sequence[Path],
) -> list[Block]:
    from synthmix.tracking import dvc_file_hash, git_commit

    cfg = params.report
    weights = sorted({f"{model_label(r.model)}: {r.weights}" for r in selected})
    seeds = sorted({r.seed for r in selected})
    method = next(
        (
            k.differences["accuracy"].method
            for k in comparisons
            if not math.isnan(k.differences["accuracy"].estimate)
        ),
        stats.BOOTSTRAP_SEEDS_METHOD,
    )
    blocks: list[Block] = [
        Heading(1, f"synthmix report: do synthetic training images help? ({title_weights(selected)})"),
        Paragraph(
            f"{len(selected)} finished runs: models {', '.join(dict.fromkeys(model_label(c.model) for c in cells))}; "
            f"mixes {', '.join(dict.fromkeys(c.mix.name for c in cells))} (N real + M synthetic training images "
            f"per class); seeds {', '.join(map(str, seeds))}; baseline {params.study.baseline} (real only)."
        ),
        Heading(2, "Findings"),
        Bullets(tuple(words)),
        Paragraph(
            f"How to read them: a change is the mix minus the baseline, averaged over the seeds both share. "
            f"Its {cfg.confidence:.0%} interval and p-value come from a {method} ({cfg.bootstrap_samples} "
            "resamples): every mix is scored on the same test images, so each image's predictions under both "
            "mixes are resampled together, which removes the difficulty of the images both mixes share and "
            "works for macro F1 too (McNemar's test covers accuracy only and gives no interval). Test loss, "
            "known only per run, uses a paired t-test over seeds. Several mixes are tested against one baseline, "
            "so the p-values of each model and metric are Holm-adjusted as one family; a change is called "
            f"significant when its adjusted p is below {1 - cfg.confidence:.2g}. Intervals are not adjusted."
        ),
        *tables,
        Heading(2, "Figures"),
        *figure_blocks,
        Heading(2, "What produced this report"),
        Bullets(
            (
                *generator_lines(params.generate.out_dir / "manifest.csv"),
                f"Model weights: {'; '.join(weights)}.",
                f"Seeds: {', '.join(map(str, seeds))}; bootstrap seed {cfg.seed}.",
                f"Code: git {git_commit()}; real set (data.dvc) md5 {dvc_file_hash()}.",
                f"Runs read from {params.train.runs_dir}/: {len(selected)} used, "
                f"{len(found) - len(selected)} finished runs outside this study's models, mixes and seeds "
                f"left out, {len(unfinished)} unfinished.",
            )
        ),
        Heading(3, "Runs"),
        runs_table(cells),
    ]
    return blocks


# --- MLflow --------------------------------------------------------------------------------------


def log_report(
    out_dir: Path,
    runs: Sequence[Run],
    cells: Sequence[Cell],
    intervals: Mapping[Cell, Mapping[str, stats.Interval]],
) -> str:
    """Log reports/ to the sweep's parent run (run.json's mlflow_parent_run_id), else to a new 'report' run."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from synthmix.tracking import configure, git_commit

    configure()
    client = mlflow.MlflowClient()
    candidates = []
    for run_id in sorted({r.mlflow_parent_run_id for r in runs if r.mlflow_parent_run_id}):
        try:
            found = client.get_run(run_id)
        except MlflowException:
            continue  # recorded, but not in this tracking store
        if found.info.lifecycle_stage == "active":
            candidates.append(found)
    # Runs kept from earlier sweeps name older parents: the newest sweep is the one this report closes.
    parent = max(candidates, key=lambda r: r.info.start_time or 0, default=None)
    if parent is not None:
        mlflow.set_experiment(experiment_id=parent.info.experiment_id)
    start = {"run_id": parent.info.run_id} if parent else {"run_name": "report"}
    with mlflow.start_run(**start) as active:
        mlflow.set_tags(
            {"synthmix.stage": "report" if parent is None else "sweep", "git_commit": git_commit()}
        )
        mlflow.log_metrics(
            {f"report.{c.model}.{c.source}.{c.mix}.{m}": intervals[c][m].mean for c in cells for m in METRICS}
        )
        mlflow.log_artifacts(str(out_dir), artifact_path="report")
        return active.info.run_id

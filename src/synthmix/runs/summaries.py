"""The sweep's summaries for DVC: metrics.json and plots/, means over seeds of the finished runs.

metrics.json: {<primary metric>: {model: {mix: mean over seeds}}}, what `dvc metrics show` and
`dvc exp show` put first (one column per model and mix); metrics_detail.json beside it:
{model: {mix: {<metric>_mean, <metric>_std, seeds, weights}}} (`dvc metrics show metrics_detail.json`);
plots/curves/<model>-<mix>.csv: per-epoch curves; plots/mixes.csv: one row of means per (model, mix)
(`dvc plots show`). Tuned runs appear under "<model>-tuned".

Several `synthmix train` processes may share one workspace (`mlflow run -e train -P mix=...` for two
mixes at once). Each writes the summaries of the runs it selected, under a lock (`.metrics.json.lock`
beside metrics.json) and each file atomically: metrics.json, plots/mixes.csv and plots/curves/ always
describe one writer's whole selection, that of the writer that finished last, never a mix of two.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from synthmix.core.files import locked, write_csv, write_json
from synthmix.runs.evaluate import FINAL_METRICS
from synthmix.runs.rundir import HISTORY_FIELDS, Run, read_history

PLOTS_MIXES = "mixes.csv"
DETAIL_NAME = "metrics_detail.json"
PLOTS_CURVES = "curves"


def summary_key(run: Run) -> str:
    """How a run's model is named in the summaries: tuned runs apart from fixed ones."""
    return run.model if run.source == "fixed" else f"{run.model}-{run.source}"


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=np.float64)
    std = float(array.std(ddof=1)) if array.size > 1 else 0.0  # sample std over seeds
    return float(array.mean()), std


def detail_path(metrics_path: Path) -> Path:
    """Where every metric's mean and spread go, beside the headline metrics file."""
    return metrics_path.with_name(DETAIL_NAME)


def write_summaries(
    runs: Sequence[Run], metrics_path: Path, plots_dir: Path, primary_metric: str = "f1_macro"
) -> None:
    """metrics.json (the primary metric), metrics_detail.json, plots/curves/<model>-<mix>.csv and
    plots/mixes.csv from the finished runs, replacing every summary another process wrote (see the
    module's docstring)."""
    groups: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for run in runs:
        groups[(summary_key(run), run.mix.name)].append(run)
    summary: dict[str, dict[str, dict[str, float | int | str]]] = {}
    mixes_rows = []
    curves: dict[str, np.ndarray] = {}
    for (model, mix), group in groups.items():
        entry: dict[str, float | int | str] = {}
        means = []
        for metric in FINAL_METRICS:
            mean, std = _mean_std([r.metrics[metric] for r in group])
            entry[f"{metric}_mean"], entry[f"{metric}_std"] = mean, std
            means.append(mean)
        entry["seeds"] = len(group)
        # Which weights produced the numbers, beside them: random features never pass for ImageNet ones.
        entry["weights"] = ",".join(sorted({r.weights for r in group}))
        summary.setdefault(model, {})[mix] = entry
        mixes_rows.append((model, mix, *means))
        histories = [read_history(r.dir) for r in group]
        epochs = min(len(h) for h in histories)
        curves[f"{model}-{mix}.csv"] = np.mean([h[:epochs] for h in histories], axis=0)
    curves_dir = plots_dir / PLOTS_CURVES
    with locked(metrics_path):
        for name, mean_curve in curves.items():
            rows = ([int(row[0]), *row[1:].tolist()] for row in mean_curve)
            write_csv(HISTORY_FIELDS, rows, curves_dir / name)
        for stale in curves_dir.glob("*.csv"):  # curves of mixes no longer selected would mislead
            if stale.name not in curves:
                stale.unlink(missing_ok=True)
        write_csv(("model", "mix", *FINAL_METRICS), sorted(mixes_rows), plots_dir / PLOTS_MIXES)
        write_json(summary, detail_path(metrics_path))
        headline = {
            model: {mix: entry[f"{primary_metric}_mean"] for mix, entry in mixes.items()}
            for model, mixes in summary.items()
        }
        write_json({primary_metric: headline}, metrics_path)

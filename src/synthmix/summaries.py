"""The sweep's summaries for DVC: metrics.json and plots/, means over seeds of the finished runs.

metrics.json: {model: {mix: {<metric>_mean, <metric>_std, seeds, weights}}} (`dvc metrics show`);
plots/curves/<model>-<mix>.csv: per-epoch curves; plots/mixes.csv: one row of means per (model, mix)
(`dvc plots show`). Tuned runs appear under "<model>-tuned".
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from synthmix.evaluate import FINAL_METRICS
from synthmix.files import write_csv, write_json
from synthmix.rundir import HISTORY_FIELDS, Run, read_history

PLOTS_MIXES = "mixes.csv"
PLOTS_CURVES = "curves"


def summary_key(run: Run) -> str:
    """How a run's model is named in the summaries: tuned runs apart from fixed ones."""
    return run.model if run.source == "fixed" else f"{run.model}-{run.source}"


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=np.float64)
    std = float(array.std(ddof=1)) if array.size > 1 else 0.0  # sample std over seeds
    return float(array.mean()), std


def write_summaries(runs: Sequence[Run], metrics_path: Path, plots_dir: Path) -> None:
    """metrics.json, plots/curves/<model>-<mix>.csv and plots/mixes.csv from the finished runs."""
    groups: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for run in runs:
        groups[(summary_key(run), run.mix.name)].append(run)
    summary: dict[str, dict[str, dict[str, float | int | str]]] = {}
    mixes_rows = []
    curves_dir = plots_dir / PLOTS_CURVES
    wanted_curves = set()
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
        mean_curve = np.mean([h[:epochs] for h in histories], axis=0)
        name = f"{model}-{mix}.csv"
        wanted_curves.add(name)
        write_csv(HISTORY_FIELDS, ([int(row[0]), *row[1:].tolist()] for row in mean_curve), curves_dir / name)
    for stale in curves_dir.glob("*.csv"):  # curves of mixes no longer selected would mislead
        if stale.name not in wanted_curves:
            stale.unlink()
    write_json(summary, metrics_path)
    write_csv(("model", "mix", *FINAL_METRICS), sorted(mixes_rows), plots_dir / PLOTS_MIXES)

"""Scoring a trained model on the real test split, and the files a run and a sweep leave behind.

`evaluate` is pure (logits in, scores out, scikit-learn's metrics); the writers put one run's scores
into its folder and the sweep's means over seeds into metrics.json and plots/ (docs/layout.md).
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from synthmix.data import atomic_path

FINAL_METRICS = ("accuracy", "precision_macro", "recall_macro", "f1_macro", "test_loss")
HISTORY_FIELDS = ("epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy")
CURVE_FIELDS = ("epoch", "train_loss", "test_loss", "train_accuracy", "test_accuracy")


@dataclass(frozen=True)
class ClassScore:
    label: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, float]  # FINAL_METRICS
    per_class: tuple[ClassScore, ...]  # in class order
    confusion: np.ndarray  # (C, C) counts, rows = true class, columns = predicted class
    predicted: np.ndarray  # (N,) predicted class index per test image


def evaluate(logits: torch.Tensor, labels: torch.Tensor, classes: Sequence[str]) -> Evaluation:
    """Accuracy, macro precision/recall/F1, test loss, per-class scores and the confusion matrix.

    Macro averages run over every class (a class never predicted scores precision 0, not NaN).
    """
    y_true = labels.numpy()
    y_pred = logits.argmax(1).numpy()
    index = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=index, zero_division=0
    )
    metrics = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "precision_macro": float(np.mean(precision)),
        "recall_macro": float(np.mean(recall)),
        "f1_macro": float(np.mean(f1)),
        "test_loss": float(torch.nn.functional.cross_entropy(logits.float(), labels)),
    }
    per_class = tuple(
        ClassScore(label, float(p), float(r), float(f), int(s))
        for label, p, r, f, s in zip(classes, precision, recall, f1, support, strict=True)
    )
    return Evaluation(metrics, per_class, confusion_matrix(y_true, y_pred, labels=index), y_pred)


# --- one run's files ------------------------------------------------------------------------------


def write_json(data: object, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_csv(header: Sequence[str], rows: Iterable[Sequence[object]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def write_run_scores(
    run_dir: Path,
    evaluation: Evaluation,
    history: Sequence[object],
    test_paths: Sequence[Path],
    labels: torch.Tensor,
    classes: Sequence[str],
) -> None:
    """history.csv, metrics.json, per_class.csv, confusion.csv and predictions.csv of one run.

    `history` holds train.EpochStats (eval_* on the test split). Predictions are sorted by path, so
    every run lists the test images in the same order and runs pair image by image.
    """
    write_csv(
        HISTORY_FIELDS,
        ((s.epoch, s.train_loss, s.train_accuracy, s.eval_loss, s.eval_accuracy) for s in history),
        run_dir / "history.csv",
    )
    write_json(evaluation.metrics, run_dir / "metrics.json")
    write_csv(
        ("class", "precision", "recall", "f1", "support"),
        ((c.label, c.precision, c.recall, c.f1, c.support) for c in evaluation.per_class),
        run_dir / "per_class.csv",
    )
    write_csv(
        ("true", *classes),
        ((label, *row.tolist()) for label, row in zip(classes, evaluation.confusion, strict=True)),
        run_dir / "confusion.csv",
    )
    true = labels.tolist()
    order = sorted(range(len(test_paths)), key=lambda i: Path(test_paths[i]).as_posix())
    write_csv(
        ("path", "class", "predicted", "correct"),
        (
            (
                Path(test_paths[i]).as_posix(),
                classes[true[i]],
                classes[int(evaluation.predicted[i])],
                int(true[i] == int(evaluation.predicted[i])),
            )
            for i in order
        ),
        run_dir / "predictions.csv",
    )


# --- the sweep's summaries for DVC ---------------------------------------------------------------


@dataclass(frozen=True)
class FinishedRun:
    """What the summaries need from one finished run folder."""

    model: str  # e.g. "cnn", or "cnn-tuned" for tuned hyperparameters
    mix: str
    seed: int
    metrics: dict[str, float]
    history: list[dict[str, float]]
    weights: str = "random"  # what the model started from: "imagenet", "random", "none" or a file


def read_finished_run(run_dir: Path, model_key: str) -> FinishedRun:
    info = json.loads((run_dir / "run.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    with open(run_dir / "history.csv", newline="") as fh:
        history = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]
    return FinishedRun(model_key, info["mix"], int(info["seed"]), metrics, history, str(info["weights"]))


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=np.float64)
    std = float(array.std(ddof=1)) if array.size > 1 else 0.0  # sample std over seeds
    return float(array.mean()), std


def write_summaries(runs: Sequence[FinishedRun], metrics_path: Path, plots_dir: Path) -> None:
    """metrics.json {model: {mix: {metric_mean, metric_std}}}, plots/curves/<model>-<mix>.csv and
    plots/mixes.csv (means over seeds), for `dvc metrics show` and `dvc plots show`."""
    groups: dict[tuple[str, str], list[FinishedRun]] = defaultdict(list)
    for run in runs:
        groups[(run.model, run.mix)].append(run)
    summary: dict[str, dict[str, dict[str, float | str]]] = {}
    mixes_rows = []
    curves_dir = plots_dir / "curves"
    wanted_curves = set()
    for (model, mix), group in groups.items():
        entry: dict[str, float | str] = {}
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
        epochs = min(len(r.history) for r in group)
        curve_rows = []
        for e in range(epochs):
            row = [e + 1]
            for field in CURVE_FIELDS[1:]:
                row.append(float(np.mean([r.history[e][field] for r in group])))
            curve_rows.append(row)
        name = f"{model}-{mix}.csv"
        wanted_curves.add(name)
        write_csv(CURVE_FIELDS, curve_rows, curves_dir / name)
    for stale in curves_dir.glob("*.csv"):  # curves of mixes no longer selected would mislead
        if stale.name not in wanted_curves:
            stale.unlink()
    write_json(_finite(summary), metrics_path)
    write_csv(("model", "mix", *FINAL_METRICS), sorted(mixes_rows), plots_dir / "mixes.csv")


def _finite(obj: object) -> object:
    # JSON has no NaN; a missing value is null.
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj

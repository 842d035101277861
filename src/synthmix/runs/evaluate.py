"""Scoring a trained model on the real test split: logits in, scores out (scikit-learn's metrics).

FINAL_METRICS names the metrics every run records; the run folder (runs/rundir.py) and the sweep's
summaries (runs/summaries.py) write them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support


@dataclass(frozen=True)
class ClassScore:
    """One class's row of per_class.csv."""

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


# What every run records, in this order (metrics.json, the summaries, the report).
FINAL_METRICS = ("accuracy", "precision_macro", "recall_macro", "f1_macro", "test_loss")


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

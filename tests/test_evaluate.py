"""Scores of a run: scikit-learn's metrics over every class."""

from __future__ import annotations

import pytest
import torch

from synthmix.runs.evaluate import evaluate

CLASSES = ["cat", "dog", "owl"]


def _logits(predicted: list[int]) -> torch.Tensor:
    logits = torch.zeros(len(predicted), len(CLASSES))
    logits[torch.arange(len(predicted)), torch.tensor(predicted)] = 5.0
    return logits


def test_metrics_match_a_hand_count_and_a_never_predicted_class_scores_zero():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    scores = evaluate(_logits([0, 0, 1, 0, 1, 1]), labels, CLASSES)  # owl never predicted
    assert scores.metrics["accuracy"] == pytest.approx(3 / 6)
    # precision cat 2/3, dog 1/3, owl 0 (zero_division=0) ; recall 1, 1/2, 0
    assert scores.metrics["precision_macro"] == pytest.approx((2 / 3 + 1 / 3 + 0) / 3)
    assert scores.metrics["recall_macro"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert scores.per_class[2].f1 == 0.0 and scores.per_class[2].support == 2
    assert scores.confusion.tolist() == [[2, 0, 0], [1, 1, 0], [0, 2, 0]]
    expected_loss = torch.nn.functional.cross_entropy(_logits([0, 0, 1, 0, 1, 1]), labels)
    assert scores.metrics["test_loss"] == pytest.approx(float(expected_loss))

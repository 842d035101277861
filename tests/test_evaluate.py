"""Scores of a run: scikit-learn's metrics over every class, and files in the layout the report reads."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from synthmix.evaluate import FinishedRun, evaluate, write_run_scores, write_summaries
from synthmix.train import EpochStats

CLASSES = ["cat", "dog", "owl"]


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


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


def test_run_files_follow_the_layout_with_predictions_sorted_by_path(tmp_path):
    labels = torch.tensor([2, 0, 1])
    paths = [Path("data/owl/b.png"), Path("data/cat/z.png"), Path("data/dog/a.png")]
    scores = evaluate(_logits([2, 1, 1]), labels, CLASSES)
    history = [EpochStats(1, 1.0, 0.5, 0.9, 0.6), EpochStats(2, 0.5, 0.8, 0.7, 0.66)]
    write_run_scores(tmp_path, scores, history, paths, labels, CLASSES)
    rows = list(csv.DictReader(_lines(tmp_path / "predictions.csv")))
    assert [r["path"] for r in rows] == ["data/cat/z.png", "data/dog/a.png", "data/owl/b.png"]
    assert [(r["class"], r["predicted"], r["correct"]) for r in rows] == [
        ("cat", "dog", "0"),
        ("dog", "dog", "1"),
        ("owl", "owl", "1"),
    ]
    history_rows = list(csv.DictReader(_lines(tmp_path / "history.csv")))
    assert list(history_rows[0]) == ["epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy"]
    assert history_rows[1]["test_accuracy"] == "0.66"
    confusion = list(csv.reader(_lines(tmp_path / "confusion.csv")))
    assert confusion[0] == ["true", *CLASSES] and confusion[1] == ["cat", "0", "1", "0"]
    assert set(json.loads((tmp_path / "metrics.json").read_text())) == {
        "accuracy", "precision_macro", "recall_macro", "f1_macro", "test_loss"
    }  # fmt: skip
    assert next(csv.DictReader(_lines(tmp_path / "per_class.csv")))["class"] == "cat"


def _run(mix: str, seed: int, accuracy: float) -> FinishedRun:
    metrics = dict.fromkeys(("precision_macro", "recall_macro", "f1_macro", "test_loss"), 0.5)
    history = [
        {
            "epoch": e,
            "train_loss": 1 / e,
            "test_loss": 2 / e,
            "train_accuracy": accuracy,
            "test_accuracy": accuracy,
        }
        for e in (1, 2)
    ]
    return FinishedRun("cnn", mix, seed, {**metrics, "accuracy": accuracy}, history)


def test_summaries_average_over_seeds_and_drop_curves_of_unselected_mixes(tmp_path):
    stale = tmp_path / "plots" / "curves" / "cnn-9r9s.csv"
    stale.parent.mkdir(parents=True)
    stale.write_text("old")
    runs = [_run("3r0s", 0, 0.6), _run("3r0s", 1, 0.8), _run("3r3s", 0, 0.9)]
    write_summaries(runs, tmp_path / "metrics.json", tmp_path / "plots")
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert summary["cnn"]["3r0s"]["accuracy_mean"] == pytest.approx(0.7)
    assert summary["cnn"]["3r0s"]["accuracy_std"] == pytest.approx(float(np.std([0.6, 0.8], ddof=1)))
    assert not stale.exists()
    curve = list(csv.DictReader(_lines(tmp_path / "plots" / "curves" / "cnn-3r0s.csv")))
    assert [float(r["test_accuracy"]) for r in curve] == pytest.approx([0.7, 0.7])
    mixes = list(csv.DictReader(_lines(tmp_path / "plots" / "mixes.csv")))
    assert [(r["model"], r["mix"]) for r in mixes] == [("cnn", "3r0s"), ("cnn", "3r3s")]

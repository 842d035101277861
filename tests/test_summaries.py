"""metrics.json and plots/ for DVC: means over seeds of the finished runs, nothing stale."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from synthmix.data.mixes import Mix
from synthmix.runs import rundir
from synthmix.runs.evaluate import evaluate
from synthmix.runs.summaries import write_summaries

CLASSES = ("a", "b")


def _run(root, mix: Mix, seed: int, correct: int, source: str = "fixed") -> rundir.Run:
    labels = [0, 0, 1, 1]
    predicted = [y if i < correct else 1 - y for i, y in enumerate(labels)]
    logits = torch.zeros(4, 2)
    logits[torch.arange(4), torch.tensor(predicted)] = 3.0
    record = rundir.RunRecord(
        "cnn",
        mix,
        seed,
        "random",
        {"lr": 0.1},
        source,
        f"{seed}" * 64,
        CLASSES,
        4,
        4,
        0,
        32,
        0,
        "",
        "epochs",
        2,
    )
    run_dir = root / mix.name / f"{source}{seed}"
    history = [(1, 1.0, 0.5, 2.0, correct / 8), (2, 0.5, 0.75, 1.0, correct / 4)]
    rundir.write_run(run_dir, record, evaluate(logits, torch.tensor(labels), CLASSES), history, [], [])
    return rundir.read_run(run_dir)


def test_summaries_average_over_seeds_and_drop_curves_of_unselected_mixes(tmp_path):
    stale = tmp_path / "plots" / "curves" / "cnn-9r9s.csv"
    stale.parent.mkdir(parents=True)
    stale.write_text("old")
    runs = [_run(tmp_path, Mix(3, 0), 0, 2), _run(tmp_path, Mix(3, 0), 1, 4), _run(tmp_path, Mix(3, 3), 0, 3)]
    write_summaries(runs, tmp_path / "metrics.json", tmp_path / "plots", primary_metric="accuracy")
    summary = json.loads((tmp_path / "metrics_detail.json").read_text())
    assert summary["cnn"]["3r0s"]["accuracy_mean"] == pytest.approx(0.75)
    # what `dvc exp show` puts first: the primary metric alone, one column per model and mix
    headline = json.loads((tmp_path / "metrics.json").read_text())
    assert headline == {"accuracy": {"cnn": {"3r0s": pytest.approx(0.75), "3r3s": pytest.approx(0.75)}}}
    assert summary["cnn"]["3r0s"]["accuracy_std"] == pytest.approx(float(np.std([0.5, 1.0], ddof=1)))
    assert summary["cnn"]["3r0s"]["seeds"] == 2 and summary["cnn"]["3r3s"]["weights"] == "random"
    assert not stale.exists()
    with open(tmp_path / "plots" / "curves" / "cnn-3r0s.csv", newline="") as fh:
        curve = list(csv.DictReader(fh))
    assert list(curve[0]) == list(rundir.HISTORY_FIELDS)
    assert [float(r["test_accuracy"]) for r in curve] == pytest.approx([0.375, 0.75])
    with open(tmp_path / "plots" / "mixes.csv", newline="") as fh:
        mixes = list(csv.DictReader(fh))
    assert [(r["model"], r["mix"]) for r in mixes] == [("cnn", "3r0s"), ("cnn", "3r3s")]


def test_tuned_runs_are_summarised_apart_from_fixed_ones(tmp_path):
    runs = [_run(tmp_path, Mix(3, 0), 0, 2), _run(tmp_path, Mix(3, 0), 0, 4, source="tuned")]
    write_summaries(runs, tmp_path / "metrics.json", tmp_path / "plots")
    summary = json.loads((tmp_path / "metrics_detail.json").read_text())
    assert summary["cnn"]["3r0s"]["accuracy_mean"] == pytest.approx(0.5)
    assert summary["cnn-tuned"]["3r0s"]["accuracy_mean"] == pytest.approx(1.0)

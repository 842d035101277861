"""The run folder: written by one writer, read back exactly, finished only when DONE says so."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import pytest
import torch

from synthmix.core.errors import UserError
from synthmix.data.mixes import Mix
from synthmix.runs import rundir
from synthmix.runs.evaluate import FINAL_METRICS, evaluate

CLASSES = ("cat", "dog", "owl")
PATHS = [Path("data/owl/b.png"), Path("data/cat/z.png"), Path("data/dog/a.png")]
LABELS = [2, 0, 1]
HISTORY = [(1, 1.0, 0.5, 0.9, 0.6), (2, 0.5, 0.8, 0.7, 0.66)]


def _record(**changes) -> rundir.RunRecord:
    fields = {
        "model": "cnn",
        "mix": Mix(3, 3),
        "seed": 1,
        "weights": "random",
        "hyperparameters": {"lr": 0.001, "epochs": 2},
        "hyperparameter_source": "fixed",
        "fingerprint": "f" * 64,
        "classes": CLASSES,
        "train_images": 18,
        "real_images": 9,
        "synthetic_images": 9,
        "image_size": 32,
        "augmented_images": 0,
        "augmentation": "",
        "budget": "epochs",
        "optimizer_steps": 2,
        "mlflow_run_id": "abc",
    }
    return rundir.RunRecord(**{**fields, **changes})


def _write(run_dir: Path, predicted=(2, 1, 1), **changes) -> rundir.RunRecord:
    logits = torch.zeros(3, 3)
    logits[torch.arange(3), torch.tensor(predicted)] = 5.0
    record = _record(**changes)
    rundir.write_run(run_dir, record, evaluate(logits, torch.tensor(LABELS), CLASSES), HISTORY, PATHS, LABELS)
    return record


def test_a_written_run_reads_back_field_for_field(tmp_path):
    record = _write(tmp_path / "run")
    run = rundir.read_run(tmp_path / "run")
    assert run.record == record
    assert (run.model, run.mix, run.seed, run.source) == ("cnn", Mix(3, 3), 1, "fixed")
    assert set(run.metrics) == set(FINAL_METRICS)
    assert run.metrics["accuracy"] == pytest.approx(2 / 3)
    assert rundir.read_history(tmp_path / "run").tolist() == [list(map(float, r)) for r in HISTORY]
    assert rundir.read_per_class(tmp_path / "run") == {"cat": 0.0, "dog": pytest.approx(2 / 3), "owl": 1.0}
    assert rundir.read_confusion(tmp_path / "run").tolist() == [[0, 1, 0], [0, 1, 0], [0, 0, 1]]


def test_where_a_run_ran_reads_back_and_a_run_from_before_the_device_setting_still_reads(tmp_path):
    from synthmix.config.compute import cpu_compute

    environment = cpu_compute().record()
    record = _write(tmp_path / "run", environment=environment)
    assert rundir.read_run(tmp_path / "run").record.environment == environment
    assert environment["device"] == "cpu" and "torch" in environment
    old = json.loads((tmp_path / "run" / rundir.RUN_JSON).read_text())
    del old["environment"]  # run.json as synthmix wrote it before compute.*: still a finished run
    (tmp_path / "run" / rundir.RUN_JSON).write_text(json.dumps(old))
    assert rundir.read_run(tmp_path / "run").record == dataclasses.replace(record, environment={})
    assert rundir.is_finished(tmp_path / "run", record.fingerprint)


def test_predictions_are_sorted_by_path_so_runs_pair_image_by_image(tmp_path):
    _write(tmp_path / "run")
    with open(tmp_path / "run" / rundir.PREDICTIONS_CSV, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["path"] for r in rows] == ["data/cat/z.png", "data/dog/a.png", "data/owl/b.png"]
    assert [(r["class"], r["predicted"], r["correct"]) for r in rows] == [
        ("cat", "dog", "0"),
        ("dog", "dog", "1"),
        ("owl", "owl", "1"),
    ]
    predictions = rundir.read_predictions(rundir.read_run(tmp_path / "run"))
    assert predictions.true.tolist() == [0, 1, 2] and predictions.predicted.tolist() == [1, 1, 2]


def test_finished_means_done_with_the_same_fingerprint(tmp_path):
    run_dir = tmp_path / "run"
    record = _write(run_dir)
    assert rundir.is_finished(run_dir, record.fingerprint)
    assert not rundir.is_finished(run_dir, "0" * 64)  # other settings: redo
    (run_dir / rundir.PER_CLASS_CSV).unlink()
    assert not rundir.is_finished(run_dir, record.fingerprint)  # a result file is gone
    rundir.begin(run_dir)
    assert not (run_dir / rundir.DONE).exists()


def test_discovery_finds_runs_by_run_json_and_lists_unfinished_folders(tmp_path):
    _write(tmp_path / "cnn" / "3r3s" / "seed1")
    _write(tmp_path / "cnn" / "3r0s" / "seed1", mix=Mix(3, 0))
    rundir.begin(tmp_path / "cnn" / "3r0s" / "seed1")  # as if a retrain was interrupted
    finished, unfinished = rundir.discover_runs(tmp_path)
    assert [r.mix for r in finished] == [Mix(3, 3)]
    assert unfinished == [tmp_path / "cnn" / "3r0s" / "seed1"]


def test_a_damaged_record_is_a_user_error_that_says_what_to_delete(tmp_path):
    run_dir = tmp_path / "run"
    _write(run_dir)
    data = json.loads((run_dir / rundir.RUN_JSON).read_text())
    del data["classes"]
    (run_dir / rundir.RUN_JSON).write_text(json.dumps(data))
    with pytest.raises(UserError, match=r"no 'classes' field.*delete"):
        rundir.read_run(run_dir)
    (run_dir / rundir.RUN_JSON).write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        rundir.read_run(run_dir)


def test_record_refuses_an_unknown_hyperparameter_source(tmp_path):
    _write(tmp_path / "run", hyperparameter_source="guessed")
    with pytest.raises(UserError, match="hyperparameter_source 'guessed'"):
        rundir.read_run(tmp_path / "run")

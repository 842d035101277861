"""Two studies in one workspace: two `synthmix train` processes on different mixes at once (as two
`mlflow run -e train -P mix=...` commands would be) share the image cache, runs/, metrics.json, plots/
and the MLflow database, and corrupt none of them."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import threading
from pathlib import Path

import mlflow
import pytest

from synthmix.core.files import locked
from synthmix.data.mixes import Mix
from synthmix.runs import rundir
from synthmix.runs.summaries import write_summaries
from test_faults_disk import _env, _finished_runs, _init_mlflow, _project, _temp_files
from test_summaries import _run

MIXES = ("3r3s", "0r3s")  # each with the baseline 3r0s, which both processes want


def _train(mix: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "synthmix", "train", "--mix", mix],
        cwd=cwd,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(process: subprocess.Popen) -> None:
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-4000:]
    assert "Traceback" not in out + err, err[-4000:]


def _summaries(root: Path) -> tuple[dict, list[dict], set[str]]:
    metrics = json.loads((root / "metrics_detail.json").read_text())
    headline = json.loads((root / "metrics.json").read_text())["f1_macro"]
    assert {m: set(x) for m, x in headline.items()} == {m: set(x) for m, x in metrics.items()}  # one writer's
    with open(root / "plots" / "mixes.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    curves = {p.name for p in (root / "plots" / "curves").glob("*.csv")}
    return metrics, rows, curves


def test_summaries_wait_for_the_lock_and_threads_writing_at_once_leave_one_whole_selection(tmp_path):
    baseline = [_run(tmp_path / "runs", Mix(3, 0), seed, 2 + seed) for seed in (0, 1)]
    selections = [
        [*baseline, _run(tmp_path / "runs", Mix(3, 3), 0, 4)],
        [*baseline, _run(tmp_path / "runs", Mix(0, 3), 0, 1)],
    ]
    metrics_path, plots = tmp_path / "metrics.json", tmp_path / "plots"
    with locked(metrics_path):  # another process writing its summaries
        writer = threading.Thread(target=write_summaries, args=(selections[0], metrics_path, plots))
        writer.start()
        writer.join(timeout=0.5)
        assert writer.is_alive() and not metrics_path.exists()
    writer.join(timeout=30)
    assert json.loads(metrics_path.read_text())["f1_macro"]["cnn"].keys() == {"3r0s", "3r3s"}

    def write_often(runs):
        for _ in range(20):
            write_summaries(runs, metrics_path, plots)

    threads = [threading.Thread(target=write_often, args=(runs,)) for runs in selections]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    metrics, rows, curves = _summaries(tmp_path)
    assert set(metrics["cnn"]) in ({"3r0s", "3r3s"}, {"3r0s", "0r3s"})
    assert {r["mix"] for r in rows} == set(metrics["cnn"]) == {c.removeprefix("cnn-")[:-4] for c in curves}
    assert not _temp_files(tmp_path)


@pytest.mark.slow
def test_two_train_processes_on_other_mixes_equal_two_sequential_ones(tmp_path, image_tree):
    sequential = _project(tmp_path / "sequential", image_tree)
    _init_mlflow(sequential)
    selections = {}  # the summaries each mix's command writes, alone
    for mix in MIXES:
        _finish(_train(mix, sequential))
        selections[mix] = _summaries(sequential)
    together = _project(tmp_path / "together", image_tree)
    _init_mlflow(together)  # as any earlier stage leaves it (two creating it at once: see below)
    processes = [_train(mix, together) for mix in MIXES]
    for process in processes:
        _finish(process)

    # Every run is finished and holds what a run on its own gives.
    expected = [f"runs/cnn/{m}/seed{s}" for m in ("0r3s", "3r0s", "3r3s") for s in (0, 1)]
    assert (
        sorted(p.parent.relative_to(together).as_posix() for p in together.glob("runs/*/*/*/DONE"))
        == expected
    )
    assert _finished_runs(together) == _finished_runs(sequential)
    # The summaries are one command's whole selection (the one that finished last), never a mix of both.
    metrics, rows, curves = _summaries(together)
    assert (metrics, rows, curves) in selections.values()
    assert {r["mix"] for r in rows} == set(metrics["cnn"]) == {c.removeprefix("cnn-")[:-4] for c in curves}
    assert not _temp_files(together)

    client = mlflow.MlflowClient(f"sqlite:///{together / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("synthmix").experiment_id])
    assert runs and {r.info.status for r in runs} == {"FINISHED"}
    ids = {r.info.run_id for r in runs}
    for run_json in together.glob(f"runs/*/*/*/{rundir.RUN_JSON}"):
        record = json.loads(run_json.read_text())
        assert {record["mlflow_run_id"], record["mlflow_parent_run_id"]} <= ids


@pytest.mark.slow
def test_two_processes_may_create_the_mlflow_database_together(tmp_path):
    script = "from synthmix.runs import tracking; tracking.configure()"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script], cwd=tmp_path, env=_env(), stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    errors = [process.communicate(timeout=300)[1] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], errors[0][-2000:] + errors[1][-2000:]

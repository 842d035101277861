"""Faults a training process meets: kill -9 (the OOM killer, a closed laptop), Ctrl-C, SIGTERM.

The real `synthmix train` runs as a subprocess with two worker processes on a tiny project. However it
stops, no process of it may survive, its MLflow runs must not stay RUNNING, and a rerun must finish
the study with exactly the results of an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from contextlib import chdir
from pathlib import Path

import psutil
import pytest
import yaml

from synthmix.runs import rundir, tracking
from test_train import _tiny_project

GONE_WITHIN_S = 5.0  # a stage's processes must be gone this soon after it was killed or interrupted


@pytest.fixture(autouse=True)
def _no_imagenet(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))


def _project(root: Path, image_tree) -> Path:
    """test_train's tiny project, the CNN only (4 runs: 2 mixes x 2 seeds), trained by 2 workers."""
    root.mkdir()
    with chdir(root):
        _tiny_project(root, image_tree)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["study"]["models"] = ["cnn"]
    params["train"]["workers"] = 2
    params["train"]["cnn"]["epochs"] = 6
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def _train(root: Path) -> subprocess.Popen:
    """`synthmix train` in its own process group, as a shell starts a foreground job; its output goes
    to train.log (`_log`)."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'm.db'}", "OMP_NUM_THREADS": "1"}
    with open(root / "train.log", "w") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "synthmix", "train"],
            cwd=root,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _log(root: Path) -> str:
    return (root / "train.log").read_text()[-3000:]


def _watch(victim: subprocess.Popen, seen: dict[int, psutil.Process], until) -> None:
    """Poll until `until(seen)` holds or the victim exits, recording every descendant it starts."""
    parent = psutil.Process(victim.pid)
    while victim.poll() is None and not until(seen):
        try:
            for child in parent.children(recursive=True):
                seen.setdefault(child.pid, child)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.02)


def _after(seconds: float, condition):
    """A `_watch` predicate: true `seconds` after `condition(seen)` first held."""
    since: list[float] = []

    def until(seen: dict[int, psutil.Process]) -> bool:
        if not since and condition(seen):
            since.append(time.monotonic())
        return bool(since) and time.monotonic() > since[0] + seconds

    return until


def _phase_began(phase: str, root: Path):
    """When a phase of `synthmix train` began: at once (starting), when both workers started (fitting,
    once they imported torch), when a run finished since now (logging: the others' results are being
    logged, their MLflow runs open)."""
    done = len(_finished(root))
    return {
        "starting": lambda seen: True,
        "fitting": lambda seen: len(_workers(seen)) == 2,
        "logging": lambda seen: len(_finished(root)) > done,
    }[phase]


def _workers(seen: dict[int, psutil.Process]) -> list[psutil.Process]:
    alive = []
    for p in seen.values():
        try:
            if (
                p.is_running()
                and p.status() != psutil.STATUS_ZOMBIE
                and "spawn_main" in " ".join(p.cmdline())
            ):
                alive.append(p)
        except psutil.NoSuchProcess:
            pass
    return alive


def _survivors(seen: dict[int, psutil.Process], within: float) -> tuple[list[str], float]:
    """The recorded processes still running `within` seconds from now (zombies count as gone), and the
    seconds until the last of them went."""
    start = time.monotonic()
    while True:
        alive = []
        for p in seen.values():
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:  # is_running: same pid and start
                    alive.append(f"{p.pid} {' '.join(p.cmdline())[:120]}")
            except psutil.NoSuchProcess:
                pass
        elapsed = time.monotonic() - start
        if not alive or elapsed > within:
            return alive, elapsed
        time.sleep(0.02)


def _finished(root: Path) -> dict[str, str]:
    """Each finished run folder and its DONE fingerprint."""
    return {
        d.parent.relative_to(root).as_posix(): d.read_text().strip()
        for d in sorted((root / "runs").glob(f"*/*/*/{rundir.DONE}"))
    }


def _file_ids(run_dir: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime_ns) of every file of a run folder: a file written again gets others."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(run_dir.iterdir()) if p.is_file()}


def _metrics(root: Path) -> dict[str, dict]:
    return {
        p.parent.relative_to(root).as_posix(): json.loads(p.read_text())
        for p in sorted((root / "runs").glob(f"*/*/*/{rundir.METRICS_JSON}"))
    }


def _mlflow_runs(root: Path) -> list:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'm.db'}")
    experiment = client.get_experiment_by_name(tracking.EXPERIMENT)
    return list(client.search_runs([experiment.experiment_id], max_results=1000))


@pytest.mark.slow
def test_killed_training_leaves_no_process_and_resumes_to_the_uninterrupted_results(tmp_path, image_tree):
    straight = _project(tmp_path / "straight", image_tree)
    killed = _project(tmp_path / "killed", image_tree)
    first = _train(straight)

    # kill -9 at a seeded random moment of each phase: starting up, fitting in workers, logging results
    rng = random.Random(0)
    delays = {"starting": rng.uniform(1, 4), "fitting": rng.uniform(3, 5), "logging": rng.uniform(0, 0.5)}
    gone_after = {}
    for phase, delay in delays.items():
        victim, seen = _train(killed), {}
        _watch(victim, seen, _after(delay, _phase_began(phase, killed)))
        assert victim.poll() is None, f"the stage ended before the kill while {phase}"
        assert phase != "fitting" or _workers(seen)
        victim.kill()  # SIGKILL: nothing in the stage runs any more, no handler, no finally
        victim.wait()
        survivors, gone_after[phase] = _survivors(seen, within=GONE_WITHIN_S)
        assert not survivors, f"still running {GONE_WITHIN_S}s after a kill while {phase}: {survivors}"
    print("after kill -9 every process of the stage was gone within", gone_after)

    kept = _finished(killed)  # runs finished before the last kill: the resume must keep, not redo them
    assert 0 < len(kept) < 4, "the kill while logging lands after a run finished, before the last"
    files = {d: _file_ids(killed / d) for d in kept}
    last = _train(killed)
    assert last.wait() == 0, _log(killed)
    assert first.wait() == 0, _log(straight)
    assert len(_finished(killed)) == 4
    assert _metrics(killed) == _metrics(straight)  # resumed runs give exactly the uninterrupted numbers
    assert {d: _file_ids(killed / d) for d in kept} == files  # not one file of a finished run rewritten

    runs = _mlflow_runs(killed)
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    # the last stage trained and logged exactly the runs not finished before it
    logged_by_last = {
        f"runs/{t[tracking.MODEL]}/{t[tracking.MIX]}/seed{t[tracking.SEED]}"
        for r in runs
        if (t := r.data.tags).get(tracking.PID) == str(last.pid) and tracking.MODEL in t
    }
    assert logged_by_last == set(_finished(killed)) - set(kept)
    stale = [r for r in runs if r.info.status == "KILLED"]
    assert len(stale) >= 2, "the stage runs killed while fitting and logging are marked by the next stage"
    for run in stale:
        assert tracking.FOUND_DEAD in run.data.tags and "another host" in run.data.tags[tracking.NOTE]
    assert {r.data.tags[tracking.HOST] for r in runs} == {socket.gethostname()}


@pytest.mark.slow
def test_ctrl_c_or_sigterm_stops_training_within_seconds_and_a_rerun_finishes(tmp_path, image_tree):
    root = _project(tmp_path / "project", image_tree)
    stopped_after = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        victim, seen, done_before = _train(root), {}, len(_finished(root))
        if signum == signal.SIGINT:  # once a run finished in this attempt, workers fitting the next ones
            _watch(
                victim,
                seen,
                lambda seen, n=done_before: len(_finished(root)) > n and len(_workers(seen)) == 2,
            )
        else:  # a second after both workers started
            _watch(victim, seen, _after(1, lambda seen: len(_workers(seen)) == 2))
        assert victim.poll() is None, "the stage ended before it could be interrupted"
        finished = _finished(root)
        began = time.monotonic()
        if signum == signal.SIGINT:  # Ctrl-C in a terminal signals the whole foreground process group
            os.killpg(victim.pid, signum)
        else:  # dvc, a scheduler or `kill` signals the stage's process alone
            victim.send_signal(signum)
        try:
            code = victim.wait(timeout=30)
        finally:
            victim.kill()
        stopped_after[signum.name] = time.monotonic() - began
        assert code == 130, _log(root)
        assert "Traceback" not in (root / "train.log").read_text(), _log(root)  # no worker's, no stage's
        assert stopped_after[signum.name] < GONE_WITHIN_S
        survivors, _ = _survivors(seen, within=1.0)
        assert not survivors
        # Finished runs stay intact, a run being recorded is recorded whole, the ones fitting stay unfinished.
        after = _finished(root)
        assert finished.items() <= after.items() and len(after) < 4
        assert all(rundir.is_finished(root / d, fingerprint) for d, fingerprint in after.items())
        runs = _mlflow_runs(root)
        assert {r.info.status for r in runs} <= {"FINISHED", "KILLED"}
        parent = next(r for r in runs if r.data.tags.get(tracking.SWEEP) == "true")  # the newest first
        assert parent.info.status == "KILLED" and tracking.FOUND_DEAD not in parent.data.tags
    print(f"stopped after {', '.join(f'{k} {v:.2f}s' for k, v in stopped_after.items())}")

    rerun = _train(root)
    assert rerun.wait() == 0, _log(root)
    assert len(_finished(root)) == 4
    assert {r.info.status for r in _mlflow_runs(root)} <= {"FINISHED", "KILLED"}


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="tells a reused pid apart by /proc")
def test_a_stage_marks_killed_only_its_runs_whose_process_on_this_host_is_gone(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'm.db'}")
    experiment = tracking.configure()
    # Named explicitly: a URI an earlier test set with mlflow.set_tracking_uri would win over the env.
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'm.db'}")
    gone = {**tracking.process_tags(), tracking.PID: str(_reaped_pid())}

    def started(tags: dict[str, str], **more: str) -> str:
        return client.create_run(experiment, tags={tracking.STAGE: "train", **tags, **more}).info.run_id

    dead = started(gone)
    child = started({}, **{"mlflow.parentRunId": dead})  # e.g. a run that records no process
    reused = started(tracking.process_tags(), **{tracking.PROCESS_START: "another boot:1"})
    alive = started(tracking.process_tags())
    elsewhere = started(gone, **{tracking.HOST: "another-machine"})
    other_stage = started(gone, **{tracking.STAGE: "generate"})
    unrecorded = started({})
    with tracking.stage_run("train"):
        pass

    def status(run_id: str) -> str:
        return client.get_run(run_id).info.status

    assert [status(r) for r in (dead, child, reused)] == ["KILLED"] * 3
    assert [status(r) for r in (alive, elsewhere, other_stage, unrecorded)] == ["RUNNING"] * 4
    tags = client.get_run(dead).data.tags
    assert tags[tracking.FOUND_DEAD][:4].isdigit() and "another host" in tags[tracking.NOTE]


def _reaped_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid

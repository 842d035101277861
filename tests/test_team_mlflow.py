"""The team's MLflow server (scripts/mlflow-server.sh): runs in PostgreSQL, artifacts proxied by the
server. A study trained against it is read back through the server's API alone, survives a restart,
and stopping the server leaves no process behind."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest

from synthmix.runs import rundir, tracking
from tiny_study import PROJECT, env_for

pytestmark = pytest.mark.slow

SCRIPT = PROJECT / "scripts" / "mlflow-server.sh"
MIX = "2r1s"  # a mix no other test trains in the shared study repo


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def server_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=300)


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def live_processes(folder: Path, group: int) -> list[str]:
    """Processes (zombies aside) in process group `group` or naming `folder` on their command line."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            args = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # not a process, or gone meanwhile
            continue
        state, _, pgrp = stat[stat.rindex(")") + 2 :].split()[:3]
        if state != "Z" and (int(pgrp) == group or str(folder) in args):
            found.append(f"{proc.name}: {args}")
    return found


class TeamServer:
    """The script's options for one server in `folder`, on free ports."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.port, self.pg_port = free_ports(2)
        self.url = f"http://127.0.0.1:{self.port}"
        ports = ["--port", str(self.port), "--pg-port", str(self.pg_port)]
        self.options = ["--dir", str(folder / "server"), *ports, "--workers", "1"]

    def run(self, action: str) -> subprocess.CompletedProcess:
        result = server_script(action, *self.options)
        assert result.returncode == 0, f"{action}:\n{result.stdout}\n{result.stderr}"
        return result


@pytest.fixture
def team_server() -> Iterator[TeamServer]:
    # Not pytest's tmp_path: as root the script runs PostgreSQL as the `postgres` user, who must be
    # able to enter the data folder, and pytest's base folder is private to root.
    folder = Path(tempfile.mkdtemp(prefix="synthmix-mlflow-"))
    folder.chmod(0o755)
    server = TeamServer(folder)
    try:
        started = server_script("start", *server.options)
        if started.returncode != 0 and "scripts/install-postgres.sh" in started.stderr:
            message = started.stderr.strip()  # the script's own: binaries or the postgres user missing
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)
        assert started.returncode == 0, f"start:\n{started.stdout}\n{started.stderr}"
        yield server
    finally:
        server_script("stop", *server.options)
        shutil.rmtree(folder, ignore_errors=True)


def train_against(repo: Path, tracking_uri: str, mix: str) -> None:
    env = {**env_for(repo), "MLFLOW_TRACKING_URI": tracking_uri}
    command = ["synthmix", "train", "--mix", mix, "--model", "cnn"]
    result = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout}\n{result.stderr}"


def snapshot(repo: Path) -> dict[Path, bytes]:
    """Every file `synthmix train` writes: the run folders, metrics.json and plots/ (small, in a tiny study)."""
    files = [
        repo / "metrics.json",
        *(p for d in ("runs", "plots") for p in (repo / d).rglob("*") if p.is_file()),
    ]
    return {p: p.read_bytes() for p in files}


def put_back(repo: Path, before: dict[Path, bytes], new_run_folder: Path) -> None:
    shutil.rmtree(new_run_folder, ignore_errors=True)
    for path in set(snapshot(repo)) - set(before):
        path.unlink()
    for path, content in before.items():
        path.write_bytes(content)


def test_a_study_logged_to_the_team_server_reads_back_through_its_api(study_repo: Path, team_server):
    repo, url = study_repo, team_server.url
    before = snapshot(repo)
    new_runs = repo / "runs" / "cnn" / MIX
    assert not new_runs.exists()
    try:
        train_against(repo, url, MIX)
        folders = {r.seed: r for r in (rundir.read_run(p) for p in new_runs.glob("seed*"))}
        metrics_file = (folders[0].dir / rundir.METRICS_JSON).read_bytes()
    finally:
        put_back(repo, before, new_runs)
    assert snapshot(repo) == before and not new_runs.exists()

    client = mlflow.MlflowClient(tracking_uri=url)
    experiment = client.get_experiment_by_name(tracking.EXPERIMENT)
    query = f"tags.`{tracking.STAGE}` = 'train' AND tags.`{tracking.MIX}` = '{MIX}'"
    runs = {int(r.data.tags[tracking.SEED]): r for r in client.search_runs([experiment.experiment_id], query)}
    assert sorted(runs) == sorted(folders) == [0, 1]  # study.seeds of the tiny study
    for seed, run in runs.items():
        assert run.info.status == "FINISHED"
        assert run.info.run_id == folders[seed].record.mlflow_run_id
        assert run.data.tags[tracking.MODEL] == "cnn"
        # the columns a team compares runs by in the UI
        params = run.data.params
        assert (params["model"], params["mix"], params["seed"]) == ("cnn", MIX, str(seed))
        assert params["generator"] == "ddpm"
        assert params["synthetic_images"] == "3"  # 1 synthetic image a class, 3 classes
        # artifacts go through the server (no client needs the artifact folder) and land in its folder
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")
        assert "results" in {a.path for a in client.list_artifacts(run.info.run_id)}
    models = {m.source_run_id: m for m in client.search_logged_models([experiment.experiment_id])}
    for run in runs.values():  # each run's model, stored through the server too
        assert models[run.info.run_id].artifact_location.startswith("mlflow-artifacts:")
    run, result = runs[0], f"results/{rundir.METRICS_JSON}"
    with tempfile.TemporaryDirectory() as downloads:
        assert (
            Path(client.download_artifacts(run.info.run_id, result, downloads)).read_bytes() == metrics_file
        )
    stored = (
        team_server.folder / "server" / "artifacts" / run.info.artifact_uri.removeprefix("mlflow-artifacts:/")
    )
    assert (stored / result).read_bytes() == metrics_file

    # starting it again is a no-op; stopped and started, it serves the same runs from PostgreSQL
    assert "already running" in team_server.run("start").stdout
    team_server.run("stop")
    team_server.run("start")
    again = client.search_runs([experiment.experiment_id], query)
    assert {r.info.run_id for r in again} == {r.info.run_id for r in runs.values()}

    group = int((team_server.folder / "server" / "mlflow.pid").read_text())
    team_server.run("stop")
    assert not listening(team_server.port) and not listening(team_server.pg_port)
    assert live_processes(team_server.folder, group) == []


def long_path_checkout(base: Path) -> Path:
    """The project's scripts/ (and its .venv, linked) under a path over 100 characters long, as in a
    user's `/home/<name>/projects/...` clone: where `ps` cuts a command line, `mlflow` falls off it."""
    repo = base / ("checkout-" + "x" * 50) / ("of-synthmix-" + "y" * 50)
    (repo / "scripts").mkdir(parents=True)
    shutil.copy2(SCRIPT, repo / "scripts" / SCRIPT.name)
    (repo / ".venv").symlink_to(PROJECT / ".venv")
    assert len(str(repo)) > 100
    return repo


def test_the_server_script_finds_its_server_from_a_checkout_at_a_long_path():
    folder = Path(tempfile.mkdtemp(prefix="synthmix-team-server-"))
    # (no "mlflow" in the folder's name: the check must find the server by more than a word in a path)
    folder.chmod(0o755)  # the postgres user enters it (see team_server)
    repo = long_path_checkout(folder)
    for parent in (repo.parent, repo):
        parent.chmod(0o755)
    script = repo / "scripts" / SCRIPT.name
    port, pg_port = free_ports(2)
    options = ["--dir", str(repo / ".mlflow-server"), "--port", str(port), "--pg-port", str(pg_port)]

    def run(action: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", str(script), action, *options, "--workers", "1"],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "COLUMNS": "80"},  # where ps has no terminal it may cut its lines at 80
        )

    group = None
    try:
        started = run("start")
        if started.returncode != 0 and "scripts/install-postgres.sh" in started.stderr:
            if os.environ.get("CI"):
                pytest.fail(started.stderr)
            pytest.skip(started.stderr.strip())
        assert started.returncode == 0, started.stderr
        group = int((repo / ".mlflow-server" / "mlflow.pid").read_text())
        status = run("status")
        assert status.returncode == 0 and "MLflow server: running" in status.stdout, status.stdout
        again = run("start")
        assert again.returncode == 0 and "already running" in again.stdout, again.stdout + again.stderr
        stopped = run("stop")
        assert stopped.returncode == 0 and "MLflow server stopped" in stopped.stdout, stopped.stdout
        assert not listening(port) and not listening(pg_port)
        assert live_processes(repo, group) == []

        # a pid file naming a live process that is not this folder's server: stop keeps both
        stranger = subprocess.Popen(["sleep", "60"])
        try:
            (repo / ".mlflow-server" / "mlflow.pid").write_text(f"{stranger.pid}\n")
            refused = run("stop")
            assert refused.returncode != 0 and f"pid {stranger.pid}" in refused.stderr, refused.stderr
            assert stranger.poll() is None  # not killed
            assert (repo / ".mlflow-server" / "mlflow.pid").read_text().strip() == str(stranger.pid)
        finally:
            stranger.kill()
            stranger.wait()
    finally:
        (repo / ".mlflow-server" / "mlflow.pid").unlink(missing_ok=True)
        run("stop")
        if group is not None and live_processes(repo, group):  # a broken script leaves nothing either
            os.killpg(group, signal.SIGKILL)
        shutil.rmtree(folder, ignore_errors=True)

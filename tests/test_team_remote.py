"""A team's data remote over SSH, end to end: push the finished tiny study to a real sshd on 127.0.0.1
(scripts/sshd-local.sh), clone the repository elsewhere, pull, and reproduce without running a stage.

dvc-ssh's client never prompts about the server's host key: sshfs connects with known_hosts=None, so
asyncssh accepts any key (and checks none) whatever ~/.ssh/known_hosts holds.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tiny_study import PROJECT, all_files, free_port, sh

pytestmark = pytest.mark.slow

SSHD = Path("/usr/sbin/sshd")
SSHD_LOCAL = PROJECT / "scripts" / "sshd-local.sh"


@dataclass(frozen=True)
class Server:
    url: str  # ssh://USER@127.0.0.1:PORT, a path is appended
    client_key: Path


def running(pid: int) -> bool:
    """Exists and has not exited (an exited sshd stays a zombie until init reaps it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Server]:
    if not SSHD.exists():
        pytest.skip(f"no {SSHD}: run scripts/install-sshd.sh")
    folder = tmp_path / "sshd"
    started = subprocess.run(
        [str(SSHD_LOCAL), "start", str(folder), str(free_port())], capture_output=True, text=True
    )
    assert started.returncode == 0, started.stderr
    pid = int((folder / "sshd.pid").read_text())
    try:
        yield Server(started.stdout.strip(), folder / "client_key")
    finally:
        subprocess.run([str(SSHD_LOCAL), "stop", str(folder)], check=True)
        assert not running(pid), "sshd still running after stop"


@pytest.fixture
def repo(study_repo: Path) -> Iterator[Path]:
    """The session's study, its .dvc/config.local put back as it was (the team remote lives there)."""
    local = study_repo / ".dvc" / "config.local"
    before = local.read_bytes() if local.exists() else None
    try:
        yield study_repo
    finally:
        if before is None:
            local.unlink(missing_ok=True)
        else:
            local.write_bytes(before)


def add_team_remote(repo: Path, server: Server, store: Path) -> None:
    sh("dvc", "remote", "add", "--local", "team", f"{server.url}{store}", cwd=repo)
    sh("dvc", "remote", "modify", "--local", "team", "keyfile", str(server.client_key), cwd=repo)


def test_a_clone_pulls_the_study_over_ssh_and_reproduces_it_without_running_a_stage(
    repo: Path, sshd: Server, tmp_path: Path
):
    default_remote = sh("dvc", "remote", "default", cwd=repo).stdout.strip()
    store = tmp_path / "store"
    add_team_remote(repo, sshd, store)
    sh("dvc", "push", "-q", "-r", "team", cwd=repo)
    assert any(p.is_file() for p in (store / "files" / "md5").rglob("*")), "nothing reached the server"

    clone = tmp_path / "clone"
    sh("git", "clone", "-q", str(repo), str(clone), cwd=tmp_path)
    add_team_remote(clone, sshd, store)
    sh("dvc", "pull", "-q", "-r", "team", cwd=clone)
    for folder in ("data", "synthetic"):
        assert all_files(clone / folder) == all_files(repo / folder), folder

    assert "up to date" in sh("dvc", "status", cwd=clone).stdout
    assert "Running stage" not in sh("dvc", "repro", cwd=clone).stdout
    # the team remote is the user's own (.dvc/config.local): the shared default is untouched
    assert sh("dvc", "remote", "default", cwd=repo).stdout.strip() == default_remote
    assert "team" not in (repo / ".dvc" / "config").read_text()

"""A team's data remote on S3, end to end: push the finished tiny study to an S3 API on 127.0.0.1 (moto's
server), clone the repository elsewhere, pull, and reproduce without running a stage.

The remote is configured as README.md says (`dvc remote add -d`, `region`, `endpointurl`) and committed,
so a clone needs nothing but credentials, which come from the environment and never enter .dvc/config.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

from tiny_study import BIN, all_files, free_port, sh

pytestmark = pytest.mark.slow

REGION = "eu-west-1"
SECRET = "synthmix-test-secret"


@dataclass(frozen=True)
class S3:
    endpoint: str  # http://127.0.0.1:PORT
    bucket: str
    client: object  # boto3's S3 client on the endpoint

    def keys(self) -> set[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket)
        return {item["Key"] for page in pages for item in page.get("Contents", [])}


def answering(url: str, server: subprocess.Popen, log: Path, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"moto_server exited ({server.returncode}):\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
    raise AssertionError(f"moto_server not answering on {url} after {within}s:\n{log.read_text()}")


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3]:
    """moto's S3 API on 127.0.0.1 with one empty bucket; dummy credentials in the environment (boto3's
    and every dvc command's), no ~/.aws file or profile of the user's consulted."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "synthmix-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = tmp_path / "moto_server.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped whole, checked whole
        )
    try:
        answering(endpoint, server, log)
        client = boto3.client("s3", endpoint_url=endpoint, region_name=REGION)
        client.create_bucket(Bucket="synthmix-team", CreateBucketConfiguration={"LocationConstraint": REGION})
        yield S3(endpoint, "synthmix-team", client)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
        assert not group_alive(server.pid), "moto_server (or a child of it) still running after stop"


def add_s3_remote(repo: Path, s3: S3, path: str) -> None:
    """The README's S3 remote, the default, committed to git."""
    sh("dvc", "remote", "add", "-d", "team", f"s3://{s3.bucket}/{path}", cwd=repo)
    sh("dvc", "remote", "modify", "team", "region", REGION, cwd=repo)
    sh("dvc", "remote", "modify", "team", "endpointurl", s3.endpoint, cwd=repo)
    sh("git", "commit", "-qm", "team S3 remote", ".dvc/config", cwd=repo)


def dvc_tracked_files(repo: Path) -> list[str]:
    listed = json.loads(sh("dvc", "list", ".", "-R", "--dvc-only", "--json", cwd=repo).stdout)
    return sorted(entry["path"] for entry in listed)


def cached_objects(repo: Path) -> set[str]:
    cache = repo / ".dvc" / "cache"
    return {p.relative_to(cache).as_posix() for p in (cache / "files").rglob("*") if p.is_file()}


def test_a_clone_pulls_the_study_from_s3_and_reproduces_it_without_running_a_stage(
    study_repo: Path, s3: S3, tmp_path: Path
):
    origin = tmp_path / "origin"  # a copy: the session's study keeps its own remotes and history
    shutil.copytree(study_repo, origin, symlinks=True)
    add_s3_remote(origin, s3, "study")
    config = (origin / ".dvc" / "config").read_text()
    assert s3.endpoint in config
    assert SECRET not in config and "secret_access_key" not in config and "access_key_id" not in config

    started = time.perf_counter()
    sh("dvc", "push", "-q", cwd=origin)
    pushed = time.perf_counter() - started
    in_bucket = s3.keys()
    assert in_bucket, "nothing reached the bucket"
    assert in_bucket <= {f"study/{key}" for key in cached_objects(origin)}, (
        "the bucket holds what no cache did"
    )

    clone = tmp_path / "clone"
    started = time.perf_counter()
    sh("git", "clone", "-q", str(origin), str(clone), cwd=tmp_path)
    cloned = time.perf_counter() - started
    assert sh("dvc", "remote", "default", cwd=clone).stdout.strip() == "team"
    started = time.perf_counter()
    sh("dvc", "pull", "-q", cwd=clone)
    pulled = time.perf_counter() - started
    assert {f"study/{key}" for key in cached_objects(clone)} == in_bucket, "the pull did not take the bucket"

    tracked = dvc_tracked_files(origin)
    assert {"data", "synthetic", "runs", "reports"} <= {path.split("/")[0] for path in tracked}
    differ = [
        p
        for p in tracked
        if not (clone / p).is_file() or (clone / p).read_bytes() != (origin / p).read_bytes()
    ]
    assert not differ, (
        f"{len(differ)} of {len(tracked)} DVC-tracked files differ after the pull: {differ[:5]}"
    )
    for folder in ("data", "synthetic"):  # and nothing more than the study's in them
        assert all_files(clone / folder) == all_files(origin / folder), folder

    assert "up to date" in sh("dvc", "status", cwd=clone).stdout
    assert "Running stage" not in sh("dvc", "repro", cwd=clone).stdout
    print(
        f"S3 remote: {len(tracked)} files, {len(in_bucket)} objects; "
        f"push {pushed:.2f}s, clone {cloned:.2f}s, pull {pulled:.2f}s"
    )

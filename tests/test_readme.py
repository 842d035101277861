"""README.md's quick start and bring-your-own-data commands, run exactly as written in fresh shells.

A user copies these blocks into a new terminal: no activated venv, no variables of ours. Each block
runs in `env -i` bash (system PATH, a temporary HOME holding ~/Downloads/animals) in a copy of this
working tree whose `.venv` is the project's own, with a small params.yaml so the study takes about a
minute. A command that exits non-zero fails the test with the block and its output.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tiny_study import PROJECT, TINY_PARAMS, merged, sh, write_tiny_images

pytestmark = pytest.mark.slow

SECTIONS = ("Quick start", "Bring your own images")
SMALL_STUDY = {"study": {"mixes": ["6r0s", "6r4s"], "models": ["cnn"], "seeds": [0, 1], "baseline": "6r0s"}}


def shell_blocks(markdown: str, heading: str) -> list[str]:
    """The ```bash blocks of the `## heading` section, in order."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", markdown, flags=re.M | re.S)
    assert match, f"README.md has no '## {heading}' section"
    return re.findall(r"^```(?:bash|sh|console)\n(.*?)^```", match.group(1), flags=re.M | re.S)


def test_the_readme_sections_hold_the_commands_this_test_runs():
    readme = (PROJECT / "README.md").read_text()
    quick, own = (shell_blocks(readme, s) for s in SECTIONS)
    assert quick and own
    assert "make run" in quick[0] and "synthmix data import ~/Downloads/animals" in own[0]
    assert not any(".venv/bin/dvc" in block for block in (*quick, *own))  # fails in a fresh shell


def _sandbox(root: Path) -> Path:
    """This working tree (tracked and untracked, not ignored files) as a fresh git repository."""
    repo = root / "synthmix"
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=PROJECT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = PROJECT / name
        if source.is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, repo / name)
    venv = PROJECT / ".venv"
    (repo / ".venv").symlink_to(venv)
    # make's set-up stamp must stay newer than pyproject.toml: never reinstall into the shared venv
    stamp = (venv / ".installed-stamp").stat().st_mtime
    os.utime(repo / "pyproject.toml", (stamp - 60, stamp - 60))
    params = merged(merged(yaml.safe_load((PROJECT / "params.yaml").read_text()), TINY_PARAMS), SMALL_STUDY)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("git", "init", "-q", "-b", "main", cwd=repo)
    sh("git", "add", "-A", cwd=repo)
    sh("git", "-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "clone", cwd=repo)
    return repo


def _fresh_shell(block: str, cwd: Path, home: Path) -> subprocess.CompletedProcess:
    env = {
        "HOME": str(home),
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "HF_HUB_OFFLINE": "1",  # the tests' rule: nothing from a hub
        "SYNTHMIX_QUIET": "1",
    }
    script = "set -eo pipefail\n" + block
    return subprocess.run(
        ["env", "-i", *(f"{k}={v}" for k, v in env.items()), "bash", "--noprofile", "--norc", "-c", script],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_every_quick_start_and_bring_your_own_command_works_as_written_in_a_fresh_shell(tmp_path: Path):
    readme = (PROJECT / "README.md").read_text()
    repo = _sandbox(tmp_path)
    home = tmp_path / "home"
    write_tiny_images(home / "Downloads" / "animals" / "animals", ("cat", "dog", "owl"), 12, ".jpg")
    outputs = {}
    for section in SECTIONS:
        for block in shell_blocks(readme, section):
            result = _fresh_shell(block, repo, home)
            assert result.returncode == 0, (
                f"README '{section}' block failed with exit {result.returncode}:\n{block}\n"
                f"--- stdout ---\n{result.stdout[-3000:]}\n--- stderr ---\n{result.stderr[-3000:]}"
            )
            outputs[section] = result.stdout + result.stderr

    # The quick start ran the study on the digits; bring-your-own then ran it on the animals.
    assert "f1_macro" in outputs["Quick start"]  # dvc metrics show
    imported = " ".join(outputs["Bring your own images"].split())
    assert "Imported 36 images in 3 classes" in imported and "Class 'cat' has 12 images" in imported
    train = (repo / "prepared" / "train.csv").read_text()
    assert all(f"{label}/" in train for label in ("cat", "dog", "owl"))
    metrics = json.loads((repo / "metrics.json").read_text())["f1_macro"]
    assert set(metrics["cnn"]) == {"6r0s", "6r4s"}
    assert (repo / "reports" / "report.html").stat().st_size > 0

"""A tiny synthmix study as a real git + DVC repository: 3 classes of 16 px images, tiny settings.

`conftest.study_repo` builds one per test session (after `dvc repro`) for every end-to-end test that
needs a finished study: the pipeline, the SSH data remote, the MLflow server. Tests that change it put
it back as they found it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

PROJECT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

TINY_PARAMS = {
    "mix": "all",
    "data": {"train_per_class": 6, "test_per_class": 6},
    "generate": {
        "images_per_class": 6,
        "ddpm": {
            "resolution": 8,
            "base_channels": 8,
            "train_steps": 6,
            "batch_size": 8,
            "sample_steps": 2,
            "checkpoint_every": 3,
        },
    },
    "study": {
        "mixes": ["6r0s", "6r4s", "3r4s", "6r4a", "6r4s@filtered", "6r4s@reviewed"],
        "models": ["cnn", "resnet50"],
        "seeds": [0, 1],
        "baseline": "6r0s",
    },
    "train": {"image_size": 32, "cnn": {"epochs": 2}, "resnet50": {"epochs": 2, "weights": "none"}},
    "report": {"bootstrap_samples": 200},
}


def env_for(repo: Path) -> dict[str, str]:
    # mlflow.set_experiment in this process exports MLFLOW_EXPERIMENT_ID: a child in another store
    # must not inherit an experiment id that store has never had
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{repo / 'mlflow.db'}"
    env["HF_HUB_OFFLINE"] = "1"
    env["SYNTHMIX_QUIET"] = "1"
    return env


def sh(
    *args: str, cwd: Path, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run a command in `cwd` with `env_for(cwd)`, updated by `env`."""
    result = subprocess.run(
        list(args), cwd=cwd, env={**env_for(cwd), **(env or {})}, capture_output=True, text=True
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on, for a server a test starts beside the study."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_tiny_images(
    root: Path, labels=("circle", "cross", "square"), count: int = 12, suffix: str = ".png", seed: int = 0
) -> None:
    """`count` distinct images a class with a class-dependent pattern, so a classifier can learn something."""
    rng = np.random.default_rng(seed)
    for c, label in enumerate(labels):
        for i in range(count):
            pixels = rng.integers(0, 80, size=(16, 16), dtype=np.uint8)
            pixels[3 + c * 4 : 7 + c * 4, 2:14] += 150
            (root / label).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels, "L").save(root / label / f"{i:02d}{suffix}", quality=95)


def merged(base: dict, overrides: dict) -> dict:
    out = dict(base)
    for key, value in overrides.items():
        out[key] = merged(base.get(key) or {}, value) if isinstance(value, dict) else value
    return out


def all_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def copy_project(repo: Path) -> None:
    """The files of this project a pipeline repository needs (not data, params or results) into `repo`:
    dvc.yaml and what its stages read besides data (the code, the prompts/ and vetting/ folders), the
    MLproject."""
    for name in ("dvc.yaml", ".dvcignore", "MLproject", "python_env.yaml", ".gitignore"):
        shutil.copy(PROJECT / name, repo / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for folder in ("src", "prompts", "vetting"):
        shutil.copytree(PROJECT / folder, repo / folder, ignore=ignore)


def build_repo(base: Path) -> Path:
    """A git + DVC repository shaped like synthmix's own, with tiny data and params, after `dvc repro`.
    Its default DVC remote is the folder `base/remote`."""
    repo = base / "repo"
    repo.mkdir()
    copy_project(repo)
    # DVC needs every parameter a stage declares in params.yaml: start from the project's file.
    params = merged(yaml.safe_load((PROJECT / "params.yaml").read_text()), TINY_PARAMS)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("git", "init", "-q", "-b", "main", cwd=repo)
    sh("git", "config", "user.email", "test@example.com", cwd=repo)
    sh("git", "config", "user.name", "test", cwd=repo)
    sh("dvc", "init", "-q", cwd=repo)
    sh("dvc", "config", "core.analytics", "false", cwd=repo)
    sh("dvc", "remote", "add", "-d", "local", str(base / "remote"), cwd=repo)
    write_tiny_images(repo / "data")
    sh("dvc", "add", "-q", "data", cwd=repo)
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-qm", "tiny study", cwd=repo)
    sh("dvc", "repro", cwd=repo)
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-qm", "repro", cwd=repo)
    return repo

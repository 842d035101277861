"""MLflow set-up shared by every stage: where runs go and the tags that tie a run to its inputs."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI when set, else sqlite:///mlflow.db in the working directory (the repo root)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def configure(experiment: str = "synthmix") -> None:
    """Point MLflow at tracking_uri() and the `synthmix` experiment.

    Under `mlflow run` (which sets MLFLOW_RUN_ID for the command) the run it opened becomes the parent:
    that run's experiment is kept, or MLflow refuses to resume the run.
    """
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    outer_run = os.environ.get("MLFLOW_RUN_ID")
    if outer_run:
        experiment_id = mlflow.MlflowClient().get_run(outer_run).info.experiment_id
        mlflow.set_experiment(experiment_id=experiment_id)
    else:
        mlflow.set_experiment(experiment)


def git_commit(cwd: Path | None = None) -> str:
    """The current commit, with '-dirty' when the work tree has changes; 'unknown' outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def dvc_file_hash(dvc_file: Path = Path("data.dvc")) -> str:
    """The md5 DVC recorded for the real set in data.dvc ('untracked' when there is none)."""
    if not dvc_file.exists():
        return "untracked"
    import yaml

    outs = (yaml.safe_load(dvc_file.read_text()) or {}).get("outs") or [{}]
    return str(outs[0].get("md5", "unknown"))


def file_hash(path: Path) -> str:
    """sha256 of a file such as the synthetic set's manifest ('missing' when absent)."""
    if not path.exists():
        return "missing"
    return hashlib.sha256(path.read_bytes()).hexdigest()


def dvc_experiment() -> str:
    """The DVC experiment name when running under `dvc exp run`, so MLflow and `dvc exp show` match up."""
    return os.environ.get("DVC_EXP_NAME", "")

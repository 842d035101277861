"""MLflow for every stage: where runs go, one tag vocabulary, and one way to open a stage's run.

Every synthmix run carries the same `synthmix.*` tags (TAGS below), so `mlflow ui` can filter any
stage's runs the same way (e.g. `tags."synthmix.stage" = "train"`). Stages call `stage_run` and never
`mlflow.start_run` themselves.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
EXPERIMENT = "synthmix"

# The tag vocabulary: every tag synthmix sets is named here, once.
STAGE = "synthmix.stage"  # prepare | generate | tune | train | report
GIT_COMMIT = "synthmix.git_commit"
DATA_MD5 = "synthmix.data_md5"  # the md5 DVC recorded for the real set in data.dvc
SYNTHETIC_MANIFEST_SHA256 = "synthmix.synthetic_manifest_sha256"
DVC_EXPERIMENT = "synthmix.dvc_experiment"
SWEEP = "synthmix.sweep"  # "true" on a stage's parent run
MODEL = "synthmix.model"
MIX = "synthmix.mix"
SEED = "synthmix.seed"
WEIGHTS = "synthmix.weights"
HYPERPARAMETER_SOURCE = "synthmix.hyperparameter_source"
FINGERPRINT = "synthmix.fingerprint"
OPTUNA_STUDY = "synthmix.optuna_study"
OPTUNA_STATE = "synthmix.optuna_state"  # a trial's end: COMPLETE | PRUNED | FAIL
BEST_PARAM = "synthmix.best."  # prefix: the best trial's value of each searched parameter
PARAM_IMPORTANCES = "synthmix.param_importances"
# MLflow 3 opens an experiment on its GenAI overview unless told it holds model training.
_EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI when set, else sqlite:///mlflow.db in the working directory (the repo root)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def configure(experiment: str = EXPERIMENT) -> str:
    """Point MLflow at tracking_uri() and `experiment`; returns the experiment id.

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
        experiment_id = mlflow.set_experiment(experiment).experiment_id
    client = mlflow.MlflowClient()
    if client.get_experiment(experiment_id).tags.get(_EXPERIMENT_KIND[0]) != _EXPERIMENT_KIND[1]:
        client.set_experiment_tag(experiment_id, *_EXPERIMENT_KIND)
    return experiment_id


def provenance_tags(synthetic_manifest: Path | None = None) -> dict[str, str]:
    """What ties a run to its inputs: code commit, real set, synthetic set, DVC experiment."""
    tags = {
        GIT_COMMIT: git_commit(),
        DATA_MD5: dvc_file_hash(Path("data.dvc")),
        DVC_EXPERIMENT: dvc_experiment(),
    }
    if synthetic_manifest is not None:
        tags[SYNTHETIC_MANIFEST_SHA256] = file_hash(synthetic_manifest)
    return tags


@contextmanager
def stage_run(
    stage: str,
    *,
    run_name: str | None = None,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    synthetic_manifest: Path | None = None,
    experiment: str = EXPERIMENT,
) -> Iterator[Any]:
    """A stage's MLflow run with the provenance tags, `params` logged once; yields the active run.

    The run ends FINISHED when the block completes and FAILED when it raises (MLflow's own rule).
    """
    import mlflow

    configure(experiment)
    all_tags = {STAGE: stage, **provenance_tags(synthetic_manifest), **(tags or {})}
    with mlflow.start_run(run_name=run_name or stage, tags=all_tags) as run:
        if params:
            mlflow.log_params(dict(params))
        yield run


@contextmanager
def quiet() -> Iterator[None]:
    """Silence MLflow's per-run notices that say nothing to a synthmix user (the pickle-format caution
    for a model we wrote ourselves, the dataset-source guess, a pandas deprecation inside MLflow)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    loggers = [logging.getLogger(name) for name in ("mlflow.pytorch", "mlflow.pyfunc", "mlflow.models")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*dataset source can be interpreted in multiple ways")
            warnings.filterwarnings("ignore", message=".*all arguments of all will be keyword-only")
            warnings.filterwarnings("ignore", message=".*An input example was not provided")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


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

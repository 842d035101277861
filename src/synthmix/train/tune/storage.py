"""The Optuna storage the workers share: open it, create or join a study, count and reclaim trials.

A worker claims a trial only while finished + running trials are fewer than the study's target; when
the rest are running elsewhere it waits, and a running trial whose heartbeat went stale (its worker
died) is failed so that a live worker takes its place.
"""

from __future__ import annotations

import warnings
from time import sleep
from typing import Any

import optuna
from optuna.trial import TrialState

from synthmix.config.params import TuneConfig
from synthmix.core.errors import UserError
from synthmix.train.tune.space import TrialSeededTPESampler

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)  # the trials that count toward tune.trials
WAIT_SECONDS = 1.0  # how often a worker with nothing to claim looks whether the study needs it again


def open_storage(url: str, heartbeat_seconds: int) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage with heartbeats, so a dead worker's RUNNING trials are failed, not counted."""
    engine_kwargs: dict[str, Any] = (
        {"connect_args": {"timeout": 60}}  # several local workers wait for sqlite's lock instead of failing
        if url.startswith("sqlite")
        else {"pool_pre_ping": True}
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_seconds
            )
    except ImportError as exc:
        raise UserError(
            f"tune.storage '{redacted(url)}' needs a database driver that is not installed ({exc}). For "
            "PostgreSQL install psycopg2-binary (pip install psycopg2-binary), or use sqlite:///optuna.db."
        ) from None
    except Exception as exc:  # SQLAlchemy reports a bad URL or an unreachable server in many types
        raise UserError(
            f"Cannot open the Optuna storage tune.storage '{redacted(url)}': {exc}. Use an SQLAlchemy URL "
            "such as sqlite:///optuna.db or postgresql://user:password@host/dbname, and check that the "
            "database server is running and reachable."
        ) from None


def redacted(url: str) -> str:
    """The storage URL with its password hidden, for messages and MLflow params."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not even a URL: nothing to hide
        return url


def create_study(name: str, storage: optuna.storages.BaseStorage, cfg: TuneConfig) -> optuna.Study:
    """Create the study, or join it when another worker (or an earlier run) already did."""
    return optuna.create_study(
        study_name=name,
        storage=storage,
        sampler=TrialSeededTPESampler(cfg.sampler_seed),
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=cfg.pruning_startup_trials, n_warmup_steps=cfg.pruning_warmup_epochs
        ),
        direction="minimize",
        load_if_exists=True,
    )


def counts(study: optuna.Study, before: int | None = None) -> tuple[int, int]:
    """(finished, running) trials; with `before`, running ones numbered lower than it only."""
    finished = running = 0
    for trial in study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING)):
        if trial.state in FINISHED:
            finished += 1
        elif before is None or trial.number < before:
            running += 1
    return finished, running


def fail_stale_trials(study: optuna.Study) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def wait_for_work(study: optuna.Study, n_trials: int) -> bool:
    """Block while the remaining trials are all running elsewhere; True when the study has n_trials.

    A running trial of a dead worker turns FAIL once its heartbeat is stale, and then this worker
    takes its place.
    """
    while True:
        fail_stale_trials(study)
        finished, running = counts(study)
        if finished >= n_trials:
            return True
        if finished + running < n_trials:
            return False
        sleep(WAIT_SECONDS)

"""Per-(model, mix) hyperparameter tuning with Optuna, shared by any number of workers, logged to MLflow.

The objective is the final validation loss of a model trained on the mix's training set minus a
validation split carved from it (stratified per class and per real/synthetic source, seeded): the test
split is never read here. Trials live in an Optuna storage (sqlite by default, any SQLAlchemy URL such
as PostgreSQL to spread one study over many machines); every `synthmix tune` process pointed at the
same storage and data joins the same study, and together they finish `tune.trials` trials, counted
across all of them. A rerun continues the study, and trials left RUNNING by a dead worker are failed
once their heartbeat is stale. The best hyperparameters go to tune.best_params_file (docs/layout.md),
which training reads (hparams.tuned_hyperparameters) when train.use_tuned is true.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import math
import random
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
import yaml
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, TPESampler
from optuna.study import MaxTrialsCallback
from optuna.trial import FrozenTrial, TrialState

from synthmix import tracking
from synthmix.config import Params, TuneConfig, check_model, to_dict
from synthmix.data import read_manifest
from synthmix.errors import UserError
from synthmix.generate.manifest import read_synthetic_manifest
from synthmix.hparams import SEARCHED, Hyperparameters, ensure_best_params_file, write_best_params
from synthmix.mixes import Mix, TrainingImage, training_images

if TYPE_CHECKING:
    from synthmix.fit import EpochStats
    from synthmix.images import LabelledImages


MLFLOW_EXPERIMENT = "synthmix-tune"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)  # the trials that count toward tune.trials
WAIT_SECONDS = 1.0  # how often a worker with nothing to claim looks whether the study needs it again


# --- the search space and the sampler ------------------------------------------------------------


def suggest_hyperparameters(trial: optuna.Trial, cfg: TuneConfig) -> Hyperparameters:
    """One point of the search space in params.yaml's `tune` group (lr and weight decay on a log scale)."""
    return Hyperparameters(
        lr=trial.suggest_float("lr", *cfg.lr, log=True),
        weight_decay=trial.suggest_float("weight_decay", *cfg.weight_decay, log=True),
        epochs=trial.suggest_int("epochs", *cfg.epochs),
        batch_size=trial.suggest_categorical("batch_size", list(cfg.batch_size)),
        dropout=trial.suggest_float("dropout", *cfg.dropout),
    )


class TrialSeededTPESampler(BaseSampler):
    """TPE whose randomness is seeded by (sampler seed, trial number) instead of once per process.

    One process with a fixed seed replays the same study, and two workers that start at once do not
    draw the same "random" start-up points (they would with one shared seed, since each process's
    TPESampler starts from the same random state). Trial numbers are unique across workers.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._per_trial: dict[int, TPESampler] = {}

    def _for(self, trial: FrozenTrial) -> TPESampler:
        if trial.number not in self._per_trial:
            digest = hashlib.sha256(f"{self.seed}:{trial.number}".encode()).digest()
            # constant_liar: concurrent workers treat each other's running trials as bad, so they spread out
            self._per_trial[trial.number] = TPESampler(
                seed=int.from_bytes(digest[:4], "big"), constant_liar=True
            )
        return self._per_trial[trial.number]

    def infer_relative_search_space(self, study, trial) -> dict[str, BaseDistribution]:
        return self._for(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space) -> dict[str, Any]:
        return self._for(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution) -> Any:
        return self._for(trial).sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study, trial) -> None:
        self._for(trial).before_trial(study, trial)

    def after_trial(self, study, trial, state, values) -> None:
        self._for(trial).after_trial(study, trial, state, values)
        del self._per_trial[trial.number]


# --- the data: the mix's training set, split into tuning-train and validation ---------------------


@dataclass(frozen=True)
class TuningData:
    classes: tuple[str, ...]
    train: LabelledImages
    validation: LabelledImages


def validation_split(
    images: Sequence[TrainingImage], fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Indices (train, validation) into `images`: per class and source, round(fraction * n) validate.

    Every group of two or more images gives at least one to validation and keeps at least one for
    training. The choice depends on the seed, the class, the source and the content hashes only, so
    it does not change with file names or listing order.
    """
    groups: dict[tuple[str, str], list[int]] = {}
    for index, image in enumerate(images):
        groups.setdefault((image.label, image.source), []).append(index)
    train: list[int] = []
    validation: list[int] = []
    for (label, source), members in sorted(groups.items()):
        members = sorted(members, key=lambda i: images[i].sha256)
        digest = hashlib.sha256(f"{seed}:{label}:{source}".encode()).digest()
        random.Random(int.from_bytes(digest[:8], "big")).shuffle(members)
        count = 0 if len(members) < 2 else min(len(members) - 1, max(1, round(fraction * len(members))))
        validation += members[:count]
        train += members[count:]
    return sorted(train), sorted(validation)


def mix_training_set(params: Params, mix: Mix) -> list[TrainingImage]:
    """The mix's training images (real training split + synthetic set); never the test split."""
    real_rows = read_manifest(params.data.prepared_dir / "train.csv")
    synthetic_rows = (
        read_synthetic_manifest(params.generate.out_dir / "manifest.csv") if mix.synthetic else []
    )
    return training_images(real_rows, synthetic_rows, mix)


def load_tuning_data(params: Params, images: Sequence[TrainingImage]) -> TuningData:
    from synthmix.images import load_images

    classes = tuple(sorted({image.label for image in images}))
    train_index, validation_index = validation_split(
        images, params.tune.validation_fraction, params.tune.seed
    )
    if not validation_index:
        raise UserError(
            f"tune.validation_fraction {params.tune.validation_fraction} leaves no validation images: "
            "every class needs at least 2 training images in the mix. Use a mix with more images per class."
        )
    labelled = load_images(
        [image.path for image in images],
        [classes.index(image.label) for image in images],
        [image.sha256 for image in images],
        params.train.image_size,
        params.train.cache_dir,
    )
    return TuningData(classes, labelled.subset(train_index), labelled.subset(validation_index))


# --- the study -----------------------------------------------------------------------------------


def study_name(model: str, mix: Mix, params: Params, images: Sequence[TrainingImage]) -> str:
    """`<model>-<mix>-<hash>`: the hash covers all that decides a trial's value except its own params.

    So workers with the same space and data join one study, and a changed search space, validation
    split, image size or data set starts a new one instead of mixing incomparable trials.
    """
    tune = params.tune
    section = params.train.model_section(model)
    fixed = {k: v for k, v in to_dict(section).items() if k not in section.searched_fields}
    identity = {
        "space": {key: to_dict(getattr(tune, key)) for key in SEARCHED},
        "validation_fraction": tune.validation_fraction,
        "seed": tune.seed,
        "image_size": params.train.image_size,
        "fixed": fixed,
        "images": [[image.label, image.sha256] for image in images],
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return f"{model}-{mix.name}-{digest[:12]}"


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
            f"tune.storage '{_redacted(url)}' needs a database driver that is not installed ({exc}). For "
            "PostgreSQL install psycopg2-binary (pip install psycopg2-binary), or use sqlite:///optuna.db."
        ) from None
    except Exception as exc:  # SQLAlchemy reports a bad URL or an unreachable server in many types
        raise UserError(
            f"Cannot open the Optuna storage tune.storage '{_redacted(url)}': {exc}. Use an SQLAlchemy URL "
            "such as sqlite:///optuna.db or postgresql://user:password@host/dbname, and check that the "
            "database server is running and reachable."
        ) from None


def _redacted(url: str) -> str:
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
        time.sleep(WAIT_SECONDS)


class SurplusTrial(Exception):
    """Two workers claimed the last trial at once; the later one gives its trial up (state FAIL)."""


# --- one trial -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TuningTask:
    model: str
    mix: Mix
    params: Params
    data: TuningData
    n_trials: int
    parent_run_id: str


def objective(trial: optuna.Trial, task: TuningTask) -> float:
    """Train on the tuning split, report validation loss per epoch (for pruning), return the final one."""
    import mlflow

    from synthmix.fit import fit

    finished, running_before = counts(trial.study, before=trial.number)
    if finished + running_before >= task.n_trials:
        raise SurplusTrial(f"trial {trial.number} is surplus: {task.n_trials} trials are already claimed")
    hp = suggest_hyperparameters(trial, task.params.tune)
    mlflow.start_run(
        run_name=f"{task.model}-{task.mix.name}-trial{trial.number}",
        parent_run_id=task.parent_run_id,
        tags={tracking.STAGE: "tune-trial", tracking.OPTUNA_STUDY: trial.study.study_name},
    )
    try:
        mlflow.log_params({**hp.as_dict(), "trial": trial.number})

        def on_epoch(stats: EpochStats) -> None:
            trial.report(stats.eval_loss, stats.epoch)
            mlflow.log_metrics(
                {
                    "train_loss": stats.train_loss,
                    "train_accuracy": stats.train_accuracy,
                    "val_loss": stats.eval_loss,
                    "val_accuracy": stats.eval_accuracy,
                },
                step=stats.epoch,
            )
            if trial.should_prune():
                raise optuna.TrialPruned(f"validation loss {stats.eval_loss:.4f} at epoch {stats.epoch}")

        result = fit(
            task.model,
            task.data.train,
            task.data.validation,
            hp,
            seed=task.params.tune.seed,
            num_classes=len(task.data.classes),
            train_cfg=task.params.train,
            on_epoch=on_epoch,
        )
        final = result.history[-1]
        trial.set_user_attr("val_accuracy", final.eval_accuracy)
        mlflow.log_metrics({"objective": final.eval_loss, "val_accuracy_final": final.eval_accuracy})
        # A diverged trial (inf/nan loss) is recorded by Optuna as FAIL and does not count toward N.
        mlflow.set_tag("optuna.state", "COMPLETE" if math.isfinite(final.eval_loss) else "FAIL")
    except optuna.TrialPruned:
        mlflow.set_tag("optuna.state", "PRUNED")
        mlflow.end_run()
        raise
    except BaseException as exc:
        mlflow.end_run("FAILED" if isinstance(exc, Exception) else "KILLED")
        raise
    mlflow.end_run()
    return final.eval_loss


# --- the whole study, its MLflow parent run and its result ---------------------------------------


@dataclass(frozen=True)
class TuneResult:
    model: str
    mix: Mix
    study_name: str
    hyperparameters: Hyperparameters
    value: float  # best final validation loss
    finished_trials: int  # complete + pruned, over all workers
    trials_here: int  # trials this process ran
    mlflow_run_id: str


def tune_mix(
    model: str, mix: Mix, params: Params, *, trials: int | None = None, storage: str | None = None
) -> TuneResult:
    """Join (or start) the study of (model, mix) and run trials until it has `trials` finished ones."""
    cfg = params.tune
    n_trials = trials or cfg.trials
    images = mix_training_set(params, mix)
    data = load_tuning_data(params, images)
    name = study_name(model, mix, params, images)
    with _setup_lock(params.train.cache_dir):  # workers on one machine create tables and runs in turn
        study = create_study(name, open_storage(storage or cfg.storage, cfg.heartbeat_seconds), cfg)
        tracking.configure(MLFLOW_EXPERIMENT)
        parent_id = _parent_run(study, model, mix, params, storage or cfg.storage, n_trials)
    task = TuningTask(model, mix, params, data, n_trials, parent_id)
    ran_here: list[int] = []

    def after_trial(study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.state in FINISHED:
            ran_here.append(trial.number)
        if wait_for_work(study, n_trials):  # the last trials run elsewhere: wait for them, then stop
            study.stop()

    if not wait_for_work(study, n_trials):
        study.optimize(
            lambda trial: objective(trial, task),
            callbacks=[MaxTrialsCallback(n_trials, states=FINISHED), after_trial],
            catch=(SurplusTrial,),
        )
    finished = len(study.get_trials(deepcopy=False, states=FINISHED))
    try:
        best = study.best_trial
    except ValueError:
        raise UserError(
            f"No trial of study {name} completed (all {finished} were pruned or failed). Widen the search "
            "space in params.yaml (tune.lr, tune.epochs ...) or raise tune.pruning_startup_trials."
        ) from None
    hp = Hyperparameters.from_values(best.params)
    write_best_params(cfg.best_params_file, model, mix, hp, float(best.value), finished)
    _log_study(study, parent_id, best, finished)
    return TuneResult(model, mix, name, hp, float(best.value), finished, len(ran_here), parent_id)


@contextlib.contextmanager
def _setup_lock(cache_dir: Path) -> Iterator[None]:
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / "tune-setup.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _parent_run(
    study: optuna.Study, model: str, mix: Mix, params: Params, storage: str, n_trials: int
) -> str:
    """The study's MLflow parent run, shared by every worker: its id is kept in the study itself."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    existing = study.user_attrs.get("mlflow_run_id")
    if existing:
        with contextlib.suppress(MlflowException):  # a study outliving its MLflow store gets a new run
            client.get_run(existing)
            return existing
    experiment = client.get_experiment_by_name(MLFLOW_EXPERIMENT)
    run = client.create_run(
        experiment.experiment_id,
        run_name=f"tune-{study.study_name}",
        tags={
            tracking.STAGE: "tune",
            tracking.SWEEP: "true",
            tracking.OPTUNA_STUDY: study.study_name,
            tracking.MODEL: model,
            tracking.MIX: mix.name,
            **tracking.provenance_tags(),
        },
    )
    run_id = run.info.run_id
    search_space = {f"tune.{key}": to_dict(getattr(params.tune, key)) for key in SEARCHED}
    for key, value in {
        "model": model,
        "mix": mix.name,
        "study": study.study_name,
        "storage": _redacted(storage),
        "trials": n_trials,
        "sampler_seed": params.tune.sampler_seed,
        "seed": params.tune.seed,
        "validation_fraction": params.tune.validation_fraction,
        **search_space,
    }.items():
        client.log_param(run_id, key, value)
    study.set_user_attr("mlflow_run_id", run_id)
    return run_id


def _log_study(study: optuna.Study, run_id: str, best: FrozenTrial, finished: int) -> None:
    """Best value and parameters, the optimisation history and parameter importances on the parent run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from mlflow import MlflowClient
    from optuna.visualization import matplotlib as optuna_plots

    client = MlflowClient()
    client.log_metric(run_id, "best_value", float(best.value))
    client.log_metric(run_id, "finished_trials", finished)
    for key, value in best.params.items():
        client.set_tag(run_id, f"best.{key}", str(value))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        axes = optuna_plots.plot_optimization_history(study)
        client.log_figure(run_id, axes.figure, "optuna/optimization_history.png")
        plt.close(axes.figure)
        completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if len({tuple(sorted(t.params.items())) for t in completed}) >= 2:
            evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)  # same trials, same figure
            axes = optuna_plots.plot_param_importances(study, evaluator=evaluator)
            client.log_figure(run_id, axes.figure, "optuna/param_importances.png")
            plt.close(axes.figure)
        else:  # importances compare completed trials: with fewer than two there is nothing to compare
            client.set_tag(run_id, "param_importances", "skipped: fewer than 2 distinct completed trials")
    client.set_terminated(run_id)


# --- the stage -----------------------------------------------------------------------------------


def run_tuning(
    params: Params,
    models: Sequence[str] = (),
    mixes: Sequence[str] = (),
    *,
    trials: int | None = None,
    storage: str | None = None,
) -> list[TuneResult]:
    """Tune every requested (model, mix); no models / mixes means study.models / the selected mixes."""
    chosen_models = tuple(check_model(m) for m in models) or params.study.models
    chosen_mixes = tuple(Mix.parse(m) for m in mixes) or params.selected_mixes
    for mix in chosen_mixes:
        mix.check_feasible(params.data.train_per_class, params.generate.images_per_class)
    ensure_best_params_file(params.tune.best_params_file)
    return [
        tune_mix(model, mix, params, trials=trials, storage=storage)
        for model in chosen_models
        for mix in chosen_mixes
    ]

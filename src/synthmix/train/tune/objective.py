"""One trial: train on the tuning split with the trial's hyperparameters, report the validation loss
each epoch (so the pruner can stop a poor trial), and log it all as an MLflow run nested under the
study's parent run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import optuna

from synthmix.config.compute import Compute
from synthmix.config.params import TrainConfig, TuneConfig
from synthmix.data.mixes import Mix
from synthmix.runs import tracking
from synthmix.runs.environment import environment_params
from synthmix.train.tune.data import TuningData
from synthmix.train.tune.space import suggest_hyperparameters
from synthmix.train.tune.storage import counts

if TYPE_CHECKING:
    from synthmix.train.fit import EpochStats


class SurplusTrial(Exception):
    """Two workers claimed the last trial at once; the later one gives its trial up (state FAIL)."""


@dataclass(frozen=True)
class TuningTask:
    model: str
    mix: Mix
    tune: TuneConfig
    train: TrainConfig
    data: TuningData
    n_trials: int
    parent_run_id: str
    compute: Compute  # where every trial trains


def objective(trial: optuna.Trial, task: TuningTask) -> float:
    """Train on the tuning split, report validation loss per epoch (for pruning), return the final one."""
    import mlflow

    from synthmix.train.fit import fit  # torch: imported only when a trial runs

    finished, running_before = counts(trial.study, before=trial.number)
    if finished + running_before >= task.n_trials:
        raise SurplusTrial(f"trial {trial.number} is surplus: {task.n_trials} trials are already claimed")
    hp = suggest_hyperparameters(trial, task.tune)
    mlflow.start_run(
        run_name=f"{task.model}-{task.mix.name}-trial{trial.number}",
        parent_run_id=task.parent_run_id,
        tags={tracking.STAGE: "tune-trial", tracking.OPTUNA_STUDY: trial.study.study_name},
    )
    try:
        mlflow.log_params(
            {**hp.as_dict(), "trial": trial.number, **environment_params(task.compute.record())}
        )

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
            seed=task.tune.seed,
            num_classes=len(task.data.classes),
            train_cfg=task.train,
            on_epoch=on_epoch,
            augment=task.train.augment if task.mix.online_augment else None,
            compute=task.compute,
        )
        final = result.history[-1]
        trial.set_user_attr("val_accuracy", final.eval_accuracy)
        mlflow.log_metrics({"objective": final.eval_loss, "val_accuracy_final": final.eval_accuracy})
        # A diverged trial (inf/nan loss) is recorded by Optuna as FAIL and does not count toward N.
        mlflow.set_tag(tracking.OPTUNA_STATE, "COMPLETE" if math.isfinite(final.eval_loss) else "FAIL")
    except optuna.TrialPruned:
        mlflow.set_tag(tracking.OPTUNA_STATE, "PRUNED")
        mlflow.end_run()
        raise
    except BaseException as exc:
        mlflow.end_run("FAILED" if isinstance(exc, Exception) else "KILLED")
        raise
    mlflow.end_run()
    return final.eval_loss

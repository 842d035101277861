"""The `synthmix tune` stage: join (or start) the study of each (model, mix), run trials until it has
`tune.trials` finished ones over all workers, log the study to its MLflow parent run, and write the
best hyperparameters to tune.best_params_file.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import optuna
from optuna.study import MaxTrialsCallback
from optuna.trial import FrozenTrial, TrialState

from synthmix.config.compute import Compute, resolve_compute
from synthmix.config.hparams import SEARCHED, Hyperparameters, ensure_best_params_file, write_best_params
from synthmix.config.params import Params, check_model, to_dict
from synthmix.core.errors import UserError
from synthmix.core.files import locked
from synthmix.data.mixes import Mix
from synthmix.data.split import runnable
from synthmix.runs import tracking
from synthmix.runs.environment import watch_system
from synthmix.train.tune.data import load_tuning_data, study_name, tuning_sets
from synthmix.train.tune.objective import SurplusTrial, TuningTask, objective
from synthmix.train.tune.storage import FINISHED, create_study, open_storage, redacted, wait_for_work

MLFLOW_EXPERIMENT = "synthmix-tune"


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


def tune_stage(
    params: Params,
    models: Sequence[str] = (),
    mixes: Sequence[str] = (),
    *,
    trials: int | None = None,
    storage: str | None = None,
    compute: Compute | None = None,
) -> list[TuneResult]:
    """Tune every requested (model, mix); no models / mixes means study.models / the selected mixes.
    `compute`: compute.* resolved (the CLI's; else resolved here)."""
    compute = compute or resolve_compute(params.compute)
    watch_system(compute)  # MLflow's system metrics, on CUDA only
    chosen_models = tuple(check_model(m) for m in models) or params.study.models
    chosen_mixes = tuple(Mix.parse(m) for m in mixes) or params.selected_mixes
    data = params.data
    for mix in chosen_mixes:
        mix.check_feasible(data.train_per_class, params.generate.images_per_class, data.extra_per_class)
    # A study mix the data cannot serve (60r0s on a set with no extra images) is skipped, as train does.
    asked = chosen_mixes if mixes or params.mix != "all" else ()
    chosen_mixes = tuple(runnable(chosen_mixes, data.prepared_dir, data.train_per_class, asked))
    ensure_best_params_file(params.tune.best_params_file)
    return [
        tune_mix(model, mix, params, trials=trials, storage=storage, compute=compute)
        for model in chosen_models
        for mix in chosen_mixes
    ]


def tune_mix(
    model: str,
    mix: Mix,
    params: Params,
    *,
    trials: int | None = None,
    storage: str | None = None,
    compute: Compute | None = None,
) -> TuneResult:
    """Join (or start) the study of (model, mix) and run trials until it has `trials` finished ones."""
    cfg, compute = params.tune, compute or resolve_compute(params.compute)
    n_trials = trials or cfg.trials
    url = storage or cfg.storage
    sets = tuning_sets(params, mix)
    data = load_tuning_data(params.train, sets)
    name = study_name(model, mix, params.tune, params.train, sets)
    # workers on one machine create tables and runs in turn
    with locked(params.train.cache_dir / "tune-setup"):
        study = create_study(name, open_storage(url, cfg.heartbeat_seconds), cfg)
        tracking.configure(MLFLOW_EXPERIMENT)
        parent_id = _parent_run(study, model, mix, params, url, n_trials)
    task = TuningTask(model, mix, params.tune, params.train, data, n_trials, parent_id, compute)
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
    # Workers finishing together all write the study's parent run: MLflow's tag upsert is not atomic
    # (two inserts of one tag fail with a UNIQUE constraint), so the workers of a machine take turns.
    with locked(params.train.cache_dir / "tune-setup"):
        _log_study(study, parent_id, best, finished)
    return TuneResult(model, mix, name, hp, float(best.value), finished, len(ran_here), parent_id)


# --- the study's MLflow parent run ----------------------------------------------------------------


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
        "storage": redacted(storage),
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
        client.set_tag(run_id, tracking.BEST_PARAM + key, str(value))
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
            client.set_tag(
                run_id, tracking.PARAM_IMPORTANCES, "skipped: fewer than 2 distinct completed trials"
            )
    client.set_terminated(run_id)

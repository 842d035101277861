"""Per-(model, mix) hyperparameter tuning with Optuna, shared by any number of workers, logged to MLflow.

The objective is the final validation loss of a model trained on the mix's training set less the
held-out real images, scored on those: per class, the highest-ranked tune.validation_fraction of the
real training images, the same validation set for every mix and never a synthetic image. The test
split is never read here. Trials live in an Optuna storage (sqlite by default, any SQLAlchemy URL such
as PostgreSQL to spread one study over many machines); every `synthmix tune` process pointed at the
same storage and data joins the same study, and together they finish `tune.trials` trials, counted
across all of them. A rerun continues the study, and trials left RUNNING by a dead worker are failed
once their heartbeat is stale. The best hyperparameters go to tune.best_params_file (docs/layout.md),
which training reads (config.hparams.tuned_hyperparameters) when train.use_tuned is true.

- `space`: the search space and the sampler.
- `data`: the held-out real validation images, the mix's training set less them, and the study's name.
- `storage`: the shared Optuna storage: open it, create or join a study, count and reclaim trials.
- `objective`: one trial: train, report per epoch for pruning, log a nested MLflow run.
The `synthmix tune` stage itself (a study per (model, mix), its MLflow parent run, best_params.yaml)
is synthmix.stages.tune.
"""

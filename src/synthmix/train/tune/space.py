"""The search space (params.yaml's `tune` group) and the sampler that draws from it."""

from __future__ import annotations

import hashlib
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, TPESampler
from optuna.trial import FrozenTrial

from synthmix.config.hparams import Hyperparameters
from synthmix.config.params import TuneConfig


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

"""Hyperparameters of one run, and tuned/best_params.yaml, the file tune writes and train reads.

Fixed values come from a model's params.yaml section (train.<model>); tuned ones from the best
parameters file, whose one writer and reader are here. Both train and tune import this module, and
neither imports the other.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from synthmix.config.params import TrainConfig
from synthmix.core.errors import UserError
from synthmix.core.files import atomic_path, locked
from synthmix.data.mixes import Mix

SEARCHED = ("lr", "weight_decay", "dropout", "epochs", "batch_size")  # the fields a tuned entry may set
_KINDS = {"lr": float, "weight_decay": float, "dropout": float, "epochs": int, "batch_size": int}


@dataclass(frozen=True)
class Hyperparameters:
    lr: float
    weight_decay: float
    epochs: int
    batch_size: int
    dropout: float  # cnn: the fc dropout; a frozen backbone: dropout before its new head

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> Hyperparameters:
        return cls(**{name: _KINDS[name](values[name]) for name in SEARCHED})

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def fixed_hyperparameters(model: str, train_cfg: TrainConfig) -> Hyperparameters:
    """The params.yaml values of `model` (its train.<model> section and train.batch_size)."""
    section = train_cfg.model_section(model)
    return Hyperparameters(
        section.lr, section.weight_decay, section.epochs, train_cfg.batch_size, section.dropout
    )


def tuned_hyperparameters(
    best_params_file: Path, model: str, mix: Mix, fixed: Hyperparameters
) -> Hyperparameters:
    """The tuned values of (model, mix); keys the entry lacks keep the fixed value."""
    how = f"Run `synthmix tune --model {model} --mix {mix.name}` first, or set train.use_tuned: false."
    if not best_params_file.exists():
        raise UserError(f"train.use_tuned is true, but {best_params_file} does not exist. {how}")
    entry = read_best_params(best_params_file).get(model, {}).get(mix.name)
    if not isinstance(entry, dict):
        raise UserError(
            f"{best_params_file} has no tuned hyperparameters for {model} on mix {mix.name}. {how}"
        )
    values = fixed.as_dict()
    try:
        values.update({name: _KINDS[name](entry[name]) for name in SEARCHED if name in entry})
    except (TypeError, ValueError) as exc:
        raise UserError(
            f"{best_params_file} holds a value for {model} on mix {mix.name} that is not a number ({exc}). "
            "Delete the entry and rerun `synthmix tune`."
        ) from None
    return Hyperparameters(**values)


# --- tuned/best_params.yaml ----------------------------------------------------------------------


def read_best_params(path: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """{model: {mix: {lr, weight_decay, dropout, epochs, batch_size, value, trials}}}; {} when absent."""
    if not path.exists():
        return {}
    try:
        content = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path} is not valid YAML ({exc}). Delete it and rerun `synthmix tune`.") from None
    if not isinstance(content, dict) or not all(isinstance(v, dict) for v in content.values()):
        raise UserError(
            f"{path} is not a best-parameters file ({{model: {{mix: {{lr, ...}}}}}}). Delete it and rerun "
            "`synthmix tune`."
        )
    return content


def write_best_params(
    path: Path, model: str, mix: Mix, hp: Hyperparameters, value: float, trials: int
) -> None:
    """Merge one (model, mix) entry into the file, keeping every other entry; atomic and locked."""
    with locked(path):  # two `tune` commands for other mixes finishing together
        content = read_best_params(path)
        content.setdefault(model, {})[mix.name] = {
            **hp.as_dict(),
            "value": float(value),
            "trials": int(trials),
        }
        with atomic_path(path) as tmp:
            tmp.write_text(yaml.safe_dump(content, sort_keys=True))


def ensure_best_params_file(path: Path) -> None:
    """Create an empty best-parameters file when there is none (the dvc stage's output when tuning is off)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text("{}\n")

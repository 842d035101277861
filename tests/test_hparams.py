"""A run's hyperparameters: fixed ones from the model's params section, tuned ones from best_params.yaml."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from synthmix.config.hparams import (
    Hyperparameters,
    fixed_hyperparameters,
    read_best_params,
    tuned_hyperparameters,
    write_best_params,
)
from synthmix.config.params import CNNConfig, ResNetConfig, TrainConfig
from synthmix.core.errors import UserError
from synthmix.data.mixes import Mix


def test_fixed_hyperparameters_come_from_the_models_own_section():
    cfg = TrainConfig(
        batch_size=8,
        cnn=CNNConfig(lr=0.2, weight_decay=0.3, epochs=4, fc_dropout=0.25, conv_dropout=0.05),
        resnet50=ResNetConfig(lr=0.5, weight_decay=0.6, epochs=7, head_dropout=0.125),
    )
    assert fixed_hyperparameters("cnn", cfg) == Hyperparameters(0.2, 0.3, 4, 8, 0.25)
    assert fixed_hyperparameters("resnet50", cfg) == Hyperparameters(0.5, 0.6, 7, 8, 0.125)


def test_a_tuned_entry_keeps_fixed_values_for_keys_it_lacks_and_names_what_to_run(tmp_path):
    path = tmp_path / "best.yaml"
    path.write_text("cnn:\n  3r3s: {lr: 0.05}\n")
    fixed = Hyperparameters(0.1, 0.2, 3, 8, 0.5)
    assert tuned_hyperparameters(path, "cnn", Mix(3, 3), fixed) == dataclasses.replace(fixed, lr=0.05)
    with pytest.raises(UserError, match="synthmix tune --model cnn --mix 3r0s"):
        tuned_hyperparameters(path, "cnn", Mix(3, 0), fixed)
    path.write_text("cnn:\n  3r3s: {lr: fast}\n")
    with pytest.raises(UserError, match="not a number"):
        tuned_hyperparameters(path, "cnn", Mix(3, 3), fixed)


def test_best_params_merge_keeps_other_entries_and_training_reads_them(tmp_path):
    path = tmp_path / "tuned" / "best_params.yaml"
    hp = Hyperparameters(lr=0.01, weight_decay=1e-4, epochs=7, batch_size=16, dropout=0.3)
    write_best_params(path, "cnn", Mix(30, 0), hp, value=0.5, trials=20)
    write_best_params(path, "cnn", Mix(30, 30), dataclasses.replace(hp, lr=0.02), value=0.4, trials=20)
    write_best_params(path, "resnet50", Mix(30, 0), hp, value=0.3, trials=5)
    content = yaml.safe_load(path.read_text())
    assert set(content) == {"cnn", "resnet50"} and set(content["cnn"]) == {"30r0s", "30r30s"}
    # What training reads with train.use_tuned: true.
    fixed = fixed_hyperparameters("cnn", TrainConfig())
    hp = tuned_hyperparameters(path, "cnn", Mix(30, 30), fixed)
    assert (hp.lr, hp.weight_decay, hp.dropout, hp.epochs, hp.batch_size) == (0.02, 1e-4, 0.3, 7, 16)
    assert [p.name for p in path.parent.iterdir() if "tmp" in p.name] == []
    path.write_text("- just\n- a list\n")
    with pytest.raises(UserError, match="not a best-parameters file"):
        read_best_params(path)

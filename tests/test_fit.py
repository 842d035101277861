"""fit: seeded and deterministic, reports on a split it never learns from, caches frozen features."""

from __future__ import annotations

import dataclasses

import optuna
import pytest
import torch

from synthmix.config.hparams import Hyperparameters
from synthmix.config.params import AugmentConfig, TrainConfig
from synthmix.data.images import LabelledImages
from synthmix.models import MODELS, resolve_resnet_weights
from synthmix.models import _resnet50_backbone as resnet50_backbone
from synthmix.train.features import feature_cache_key, precompute_features
from synthmix.train.fit import fit

HP = Hyperparameters(lr=0.003, weight_decay=0.0, epochs=3, batch_size=8, dropout=0.0)


@pytest.fixture(autouse=True)
def _no_imagenet(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))


def _images(n: int, classes: int = 3, seed: int = 0, size: int = 32) -> LabelledImages:
    """Learnable tiny data: each class a different brightness, plus noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    base = (labels * (200 // classes) + 20).view(n, 1, 1, 1).float()
    noise = torch.randint(0, 40, (n, 3, size, size), generator=g).float()
    images = (base + noise).clamp(0, 255).to(torch.uint8)
    keys = tuple(f"{seed:08x}{i:056x}" for i in range(n))
    return LabelledImages(images, labels, keys)


def _cfg(tmp_path) -> TrainConfig:
    return TrainConfig(cache_dir=tmp_path / "cache")


def test_a_frozen_backbone_is_built_once_and_its_head_matches_a_fresh_build(tmp_path):
    # The shared trunk must leave torch's RNG where a fresh build would, or heads (and results) change.
    weights = resolve_resnet_weights("auto")
    resnet50_backbone.cache_clear()
    first = MODELS["resnet50"].build(3, 32, 0.0, None, weights, 5)
    resnet50_backbone.cache_clear()
    torch.manual_seed(123)  # whatever the RNG held before must not matter
    fresh = MODELS["resnet50"].build(3, 32, 0.0, None, weights, 5)
    again = MODELS["resnet50"].build(3, 32, 0.0, None, weights, 5)
    assert again.backbone is fresh.backbone and first.backbone is not fresh.backbone
    for a, b in ((first, fresh), (fresh, again)):
        assert torch.equal(a.head[-1].weight, b.head[-1].weight)
        assert torch.equal(a.backbone.conv1.weight, b.backbone.conv1.weight)
    assert resnet50_backbone.cache_info().hits >= 1


@pytest.mark.parametrize("model", ["cnn", "resnet50"])
def test_same_seed_same_inputs_identical_results_on_cpu(tmp_path, model):
    train, test = _images(24), _images(12, seed=1)
    runs = [
        fit(model, train, test, HP, seed=seed, num_classes=3, train_cfg=_cfg(tmp_path)) for seed in (0, 0, 1)
    ]
    assert runs[0].history == runs[1].history
    assert torch.equal(runs[0].eval_logits, runs[1].eval_logits)
    assert runs[0].history != runs[2].history  # the seed matters
    assert [s.epoch for s in runs[0].history] == [1, 2, 3]
    assert runs[0].eval_logits.shape == (12, 3) and runs[0].eval_logits.dtype == torch.float32


def test_cnn_learns_a_separable_problem(tmp_path):
    hp = dataclasses.replace(HP, epochs=15, lr=0.003)
    result = fit("cnn", _images(60), _images(30, seed=1), hp, seed=0, num_classes=3, train_cfg=_cfg(tmp_path))
    assert result.weights_used == "random"
    assert result.history[-1].train_loss < result.history[0].train_loss
    assert result.history[-1].eval_accuracy > 0.6


def test_evaluation_split_never_influences_training(tmp_path):
    train = _images(24)
    a = fit("cnn", train, _images(12, seed=1), HP, seed=0, num_classes=3, train_cfg=_cfg(tmp_path))
    b = fit("cnn", train, _images(6, seed=7), HP, seed=0, num_classes=3, train_cfg=_cfg(tmp_path))
    assert [s.train_loss for s in a.history] == [s.train_loss for s in b.history]
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_resnet50_cached_features_give_the_same_logits_as_the_full_model(tmp_path):
    train, test = _images(16), _images(8, seed=1)
    cfg = _cfg(tmp_path)
    cold = fit("resnet50", train, test, HP, seed=0, num_classes=3, train_cfg=cfg)
    key = feature_cache_key("resnet50", resolve_resnet_weights("auto"), 0, 32)
    assert len(list((cfg.cache_dir / "features" / key).rglob("*.npy"))) == 24  # one file per unique image
    warm = fit("resnet50", train, test, HP, seed=0, num_classes=3, train_cfg=cfg)
    assert torch.equal(cold.eval_logits, warm.eval_logits)
    assert cold.weights_used == "random"  # no ImageNet file in this TORCH_HOME: never called imagenet
    with torch.no_grad():
        uncached = cold.model.eval()(test.images.float())  # backbone + head on raw pixels, no cache
    torch.testing.assert_close(uncached, cold.eval_logits, atol=1e-4, rtol=1e-4)


def test_features_precomputed_for_the_workers_are_the_ones_fit_would_compute(tmp_path):
    train, test = _images(16), _images(8, seed=1)
    own = fit("resnet50", train, test, HP, seed=1, num_classes=3, train_cfg=_cfg(tmp_path / "own"))
    cfg = _cfg(tmp_path / "shared")
    precompute_features("resnet50", [1], [test, train], 3, cfg)
    key = feature_cache_key("resnet50", resolve_resnet_weights("auto"), 1, 32)
    assert len(list((cfg.cache_dir / "features" / key).rglob("*.npy"))) == 24
    shared = fit("resnet50", train, test, HP, seed=1, num_classes=3, train_cfg=cfg)
    assert torch.equal(own.eval_logits, shared.eval_logits)


def test_only_the_resnet50_head_changes_in_training(tmp_path):
    result = fit(
        "resnet50", _images(16), _images(8, seed=1), HP, seed=0, num_classes=3, train_cfg=_cfg(tmp_path)
    )
    resnet50_backbone.cache_clear()  # a trunk drawn afresh from the same seed
    fresh = MODELS["resnet50"].build(3, 32, 0.0, None, resolve_resnet_weights("auto"), 0)
    assert fresh.backbone is not result.model.backbone
    for (name, p), q in zip(
        result.model.backbone.state_dict().items(), fresh.backbone.state_dict().values(), strict=True
    ):
        assert torch.equal(p, q), name


def test_on_epoch_sees_every_epoch_and_its_exception_propagates(tmp_path):
    seen = []

    def prune_after_two(stats):
        seen.append(stats.epoch)
        if stats.epoch == 2:
            raise optuna.TrialPruned()

    with pytest.raises(optuna.TrialPruned):
        fit(
            "cnn",
            _images(12),
            _images(6, seed=1),
            HP,
            seed=0,
            num_classes=3,
            train_cfg=_cfg(tmp_path),
            on_epoch=prune_after_two,
        )
    assert seen == [1, 2]


def test_max_steps_trains_exactly_that_many_steps_over_the_same_batches(tmp_path):
    train, test = _images(24), _images(12, seed=1)  # 3 batches of 8 an epoch
    run = dict(seed=0, num_classes=3, train_cfg=_cfg(tmp_path))
    by_epochs = fit("cnn", train, test, HP, **run)
    assert by_epochs.steps == 9
    seven = fit("cnn", train, test, HP, **run, max_steps=7)
    assert seven.steps == 7
    assert [s.epoch for s in seven.history] == [1, 2, 3]  # the third epoch ran one batch of three
    assert seven.history[:2] == by_epochs.history[:2]  # same shuffles, same steps so far
    assert seven.history[2] != by_epochs.history[2]
    longer = fit("cnn", train, test, dataclasses.replace(HP, epochs=1), **run, max_steps=9)
    assert longer.history == by_epochs.history and torch.equal(longer.eval_logits, by_epochs.eval_logits)
    with pytest.raises(ValueError, match="max_steps"):
        fit("cnn", train, test, HP, **run, max_steps=0)


def test_augmented_training_is_seeded_and_keeps_the_batch_order(tmp_path):
    train, test = _images(24), _images(12, seed=1)
    run = dict(seed=0, num_classes=3, train_cfg=_cfg(tmp_path))
    plain = fit("cnn", train, test, HP, **run)
    runs = [fit("cnn", train, test, HP, **run, augment=AugmentConfig()) for _ in range(2)]
    assert runs[0].history == runs[1].history and torch.equal(runs[0].eval_logits, runs[1].eval_logits)
    assert runs[0].history != plain.history
    # A policy that changes no pixel trains exactly the run without augmentation: same batches, same order.
    identity = AugmentConfig(crop_scale=(1.0, 1.0), rotation=0.0, color_jitter=0.0, randaugment_ops=0)
    unchanged = fit("cnn", train, test, HP, **run, augment=identity)
    assert unchanged.history == plain.history and torch.equal(unchanged.eval_logits, plain.eval_logits)


def test_a_frozen_backbone_head_trains_on_features_of_augmented_batches(tmp_path):
    train, test = _images(16), _images(8, seed=1)
    hp = dataclasses.replace(HP, epochs=2)
    cfgs = [TrainConfig(cache_dir=tmp_path / name, resnet50={"weights": "none"}) for name in ("a", "b")]
    plain = fit("resnet50", train, test, hp, seed=0, num_classes=3, train_cfg=cfgs[0])
    augmented = fit(
        "resnet50", train, test, hp, seed=0, num_classes=3, train_cfg=cfgs[1], augment=AugmentConfig()
    )
    assert augmented.weights_used == "none" and augmented.steps == 4
    assert augmented.history != plain.history
    assert all(torch.isfinite(torch.tensor(s.as_row())).all() for s in augmented.history)
    key = feature_cache_key("resnet50", resolve_resnet_weights("none"), 0, 32)
    assert len(list((cfgs[1].cache_dir / "features" / key).rglob("*.npy"))) == 8  # evaluation only
    resnet50_backbone.cache_clear()  # a trunk drawn afresh from the same seed: training left it alone
    fresh = MODELS["resnet50"].build(3, 32, 0.0, None, resolve_resnet_weights("none"), 0)
    for p, q in zip(
        augmented.model.backbone.state_dict().values(), fresh.backbone.state_dict().values(), strict=True
    ):
        assert torch.equal(p, q)

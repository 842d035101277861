"""fit: seeded and deterministic, reports on a split it never learns from, caches frozen features."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import optuna
import pytest
import torch

from conftest import write_image
from synthmix.cli import run
from synthmix.config import TrainConfig
from synthmix.models import resolve_resnet_weights
from synthmix.store import LabelledImages
from synthmix.train import (
    RUN_FILES,
    Hyperparameters,
    feature_cache_key,
    fit,
    fixed_hyperparameters,
)

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


def test_fixed_hyperparameters_are_the_params_yaml_values():
    cfg = TrainConfig()
    assert fixed_hyperparameters("cnn", cfg) == Hyperparameters(cfg.cnn.lr, 1e-4, 50, 32, 0.5)
    assert fixed_hyperparameters("resnet50", cfg) == Hyperparameters(0.001, 0.001, 20, 32, 0.0)


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
    key = feature_cache_key(resolve_resnet_weights("auto"), 0, 32)
    assert len(list((cfg.cache_dir / "features" / key).rglob("*.npy"))) == 24  # one file per unique image
    warm = fit("resnet50", train, test, HP, seed=0, num_classes=3, train_cfg=cfg)
    assert torch.equal(cold.eval_logits, warm.eval_logits)
    assert cold.weights_used == "random"  # no ImageNet file in this TORCH_HOME: never called imagenet
    with torch.no_grad():
        uncached = cold.model.eval()(test.images.float())  # backbone + head on raw pixels, no cache
    torch.testing.assert_close(uncached, cold.eval_logits, atol=1e-4, rtol=1e-4)


def test_features_precomputed_for_the_workers_are_the_ones_fit_would_compute(tmp_path):
    from synthmix.train import precompute_backbone_features

    train, test = _images(16), _images(8, seed=1)
    own = fit("resnet50", train, test, HP, seed=1, num_classes=3, train_cfg=_cfg(tmp_path / "own"))
    cfg = _cfg(tmp_path / "shared")
    precompute_backbone_features([1], [test, train], 3, cfg)
    key = feature_cache_key(resolve_resnet_weights("auto"), 1, 32)
    assert len(list((cfg.cache_dir / "features" / key).rglob("*.npy"))) == 24
    shared = fit("resnet50", train, test, HP, seed=1, num_classes=3, train_cfg=cfg)
    assert torch.equal(own.eval_logits, shared.eval_logits)


def test_only_the_resnet50_head_changes_in_training(tmp_path):
    result = fit(
        "resnet50", _images(16), _images(8, seed=1), HP, seed=0, num_classes=3, train_cfg=_cfg(tmp_path)
    )
    torch.manual_seed(0)
    from synthmix.models import build_model

    fresh = build_model("resnet50", 3, 32, dropout=0.0)
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


# --- the train stage end to end: the real CLI on a tiny tree ---------------------------------------


def _tiny_project(root, image_tree, use_tuned=False):
    """A 3-class real set split 4/3, a 3-image-per-class synthetic set with its manifest, params.yaml."""
    import yaml

    from synthmix.data import prepare_split, sha256_file
    from synthmix.mixes import SyntheticRow, write_synthetic_manifest

    image_tree({"ant": 7, "bee": 7, "cow": 7}, root=root / "data")
    prepare_split(Path("data"), Path("prepared"), 4, 3, seed=0)
    synthetic = []
    for label in ("ant", "bee", "cow"):
        for index in range(3):
            path = write_image(Path("synthetic") / label / f"{index:04d}.png", seed=100 + index)
            synthetic.append(
                SyntheticRow(path, label, index, index, "test", "none", "", "", 0, 0.0, 0, sha256_file(path))
            )
    write_synthetic_manifest(synthetic, Path("synthetic/manifest.csv"))
    params = {
        "mix": "3r3s",
        "data": {"train_per_class": 4, "test_per_class": 3},
        "generate": {"images_per_class": 3},
        "study": {"mixes": ["3r0s", "3r3s", "0r3s"], "baseline": "3r0s", "seeds": [0, 1]},
        "train": {
            "image_size": 32,
            "batch_size": 4,
            "use_tuned": use_tuned,
            "cnn": {"epochs": 2},
            "resnet50": {"epochs": 2, "weights": "auto"},
        },
    }
    Path("params.yaml").write_text(yaml.safe_dump(params))


@pytest.fixture
def tiny_project(in_tmp, image_tree, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{in_tmp / 'm.db'}")
    _tiny_project(in_tmp, image_tree)
    return in_tmp


@pytest.mark.slow
def test_train_command_writes_runs_logs_mlflow_and_resumes(tiny_project, capsys):
    import mlflow

    assert run(["train"]) == 0
    run_dirs = sorted(Path("runs").glob("*/*/*"))
    # 2 models x (the selected mix 3r3s + the baseline 3r0s) x 2 seeds
    assert [d.relative_to("runs").as_posix() for d in run_dirs] == [
        f"{m}/{x}/seed{s}" for m in ("cnn", "resnet50") for x in ("3r0s", "3r3s") for s in (0, 1)
    ]
    for d in run_dirs:
        assert {p.name for p in d.iterdir()} == {*RUN_FILES, "DONE"}
    info = json.loads(Path("runs/resnet50/3r3s/seed1/run.json").read_text())
    assert (
        info["weights"] == "random"
        and info["train_images"] == 18
        and info["classes"] == ["ant", "bee", "cow"]
    )
    assert len(Path("runs/cnn/3r3s/seed0/predictions.csv").read_text().splitlines()) == 1 + 9
    summary = json.loads(Path("metrics.json").read_text())
    assert set(summary["cnn"]) == {"3r0s", "3r3s"} and summary["cnn"]["3r3s"]["seeds"] == 2
    assert Path("plots/curves/resnet50-3r3s.csv").exists() and Path("plots/mixes.csv").exists()

    client = mlflow.tracking.MlflowClient()
    runs = client.search_runs(client.get_experiment_by_name("synthmix").experiment_id)
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 8 and len(runs) == 9
    child = client.get_run(info["mlflow_run_id"])
    assert child.data.tags["model"] == "resnet50" and child.data.tags["mix"] == "3r3s"
    assert child.data.tags["seed"] == "1" and child.data.tags["weights"] == "random"
    assert {"git_commit", "data_dvc_hash", "synthetic_manifest_hash", "dvc_experiment"} <= set(
        child.data.tags
    )
    assert child.data.params["hp.lr"] == "0.001" and child.data.params["train.image_size"] == "32"
    assert [m.step for m in client.get_metric_history(child.info.run_id, "test_accuracy")] == [1, 2]
    assert "final_f1_macro" in child.data.metrics
    assert child.inputs.dataset_inputs[0].dataset.name == "train-3r3s"
    artifacts = {a.path for a in client.list_artifacts(child.info.run_id, "results")}
    assert "results/predictions.csv" in artifacts and "results/confusion.csv" in artifacts
    model = mlflow.pytorch.load_model(f"runs:/{child.info.run_id}/model")
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 3)

    # Resume: nothing is retrained; a new mix trains only that mix; a changed setting retrains.
    before = Path("runs/cnn/3r3s/seed0/run.json").stat().st_mtime_ns
    assert run(["train"]) == 0
    assert Path("runs/cnn/3r3s/seed0/run.json").stat().st_mtime_ns == before
    assert "Trained 0 run(s), 8 already finished" in capsys.readouterr().err.replace("\n", " ")
    assert run(["train", "--model", "cnn", "--mix", "0r3s", "--seed", "0"]) == 0
    assert "Trained 1 run(s), 1 already finished" in capsys.readouterr().err.replace("\n", " ")
    assert Path("runs/cnn/3r3s/seed0/run.json").stat().st_mtime_ns == before


@pytest.mark.slow
def test_an_interrupted_run_is_redone(tiny_project, capsys):
    assert run(["train", "--model", "cnn", "--seed", "0"]) == 0
    (Path("runs/cnn/3r3s/seed0") / "DONE").unlink()  # as if killed before finishing
    assert run(["train", "--model", "cnn", "--seed", "0"]) == 0
    assert "Trained 1 run(s), 1 already finished" in capsys.readouterr().err.replace("\n", " ")
    assert (Path("runs/cnn/3r3s/seed0") / "DONE").exists()


@pytest.mark.parametrize(
    "args,message",
    [
        (["--model", "vgg"], "Unknown model 'vgg'"),
        (["--mix", "3r9s"], "9 synthetic images per class"),
        (["--mix", "9r0s"], "9 real training images per class"),
        (["--mix", "3x"], "malformed"),
    ],
)
def test_unknown_model_or_infeasible_mix_exits_2_before_any_work(tiny_project, capsys, args, message):
    assert run(["train", *args]) == 2
    assert message in capsys.readouterr().err.replace("\n", " ")
    assert not Path("runs").exists() and not Path("m.db").exists()


def test_imagenet_weights_offline_exit_2_naming_the_file_before_any_work(tiny_project, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    params = Path("params.yaml").read_text().replace("weights: auto", "weights: imagenet")
    Path("params.yaml").write_text(params)
    assert run(["train", "--model", "resnet50"]) == 2
    assert "resnet50-0676ba61.pth" in capsys.readouterr().err.replace("\n", "")
    assert not Path("runs").exists()


def test_use_tuned_without_tuned_entry_says_which_tune_to_run(tiny_project, capsys):
    Path("params.yaml").write_text(
        Path("params.yaml").read_text().replace("use_tuned: false", "use_tuned: true")
    )
    Path("tuned").mkdir()
    Path("tuned/best_params.yaml").write_text("cnn:\n  3r0s: {lr: 0.01, epochs: 1}\n")
    assert run(["train", "--model", "cnn", "--seed", "0"]) == 2
    assert "synthmix tune --model cnn --mix 3r3s" in capsys.readouterr().err.replace("\n", " ")
    assert not Path("runs").exists()

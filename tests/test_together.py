"""Runs trained together (train/together.py) are the same runs trained one at a time, to a stated
tolerance, on the CPU: the CNN with dropout, frozen ResNet50 heads with dropout, runs of different sizes
and step budgets, and bfloat16 autocast."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from synthmix.config.compute import ComputeConfig, resolve_compute
from synthmix.config.hparams import Hyperparameters
from synthmix.config.params import TrainConfig
from synthmix.data.images import LabelledImages
from synthmix.models import MODELS
from synthmix.train.fit import fit
from synthmix.train.together import TogetherRun, chain_of, fit_together

# Stated tolerance: float32 runs together differ from runs alone only in the order of sums (grouped
# convolutions and batched products): logits and weights within 1e-4 of their largest magnitude after a
# few epochs (measured here: about 1e-6 for the CNN and 2e-7 for ResNet50's heads).
LOGIT_TOLERANCE = 1e-4
HP = Hyperparameters(lr=0.003, weight_decay=0.001, epochs=3, batch_size=8, dropout=0.3)


@pytest.fixture(autouse=True)
def _no_imagenet(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))


def _images(n: int, seed: int, classes: int = 3, size: int = 32) -> LabelledImages:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    base = (labels * (200 // classes) + 20).view(n, 1, 1, 1).float()
    noise = torch.randint(0, 40, (n, 3, size, size), generator=g).float()
    images = (base + noise).clamp(0, 255).to(torch.uint8)
    return LabelledImages(images, labels, tuple(f"{seed:08x}{i:056x}" for i in range(n)))


def _runs() -> list[TogetherRun]:
    """Three runs: different seeds and sizes (so different batch counts an epoch), one with a step
    budget that ends it part-way through an epoch."""
    return [
        TogetherRun(_images(24, seed=1), seed=0),
        TogetherRun(_images(13, seed=2), seed=1),
        TogetherRun(_images(30, seed=3), seed=2, max_steps=7),
    ]


def _alone(model: str, run: TogetherRun, test: LabelledImages, cfg: TrainConfig, hp=HP, compute=None):
    return fit(
        model, run.train, test, hp, seed=run.seed, num_classes=3, train_cfg=cfg,
        max_steps=run.max_steps, compute=compute,
    )  # fmt: skip


def _assert_same(together, alone, tolerance: float) -> None:
    assert together.steps == alone.steps
    assert [h.epoch for h in together.history] == [h.epoch for h in alone.history]
    scale = float(alone.eval_logits.abs().max())
    assert torch.allclose(together.eval_logits, alone.eval_logits, rtol=0, atol=tolerance * scale)
    assert torch.equal(together.eval_logits.argmax(1), alone.eval_logits.argmax(1))
    for a, b in zip(together.history, alone.history, strict=True):
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-4, abs=1e-5)
        assert a.train_accuracy == b.train_accuracy and a.eval_accuracy == b.eval_accuracy
    mine, theirs = together.model.state_dict(), alone.model.state_dict()
    assert list(mine) == list(theirs)
    for (name, p), q in zip(mine.items(), theirs.values(), strict=True):
        assert torch.allclose(p, q, rtol=0, atol=tolerance * float(q.abs().max())), name


@pytest.mark.parametrize("model", ["cnn", "resnet50"])
def test_runs_trained_together_are_the_runs_trained_alone(model, tmp_path):
    cfg = TrainConfig(cache_dir=tmp_path / "cache")
    test = _images(12, seed=9)
    runs = _runs()
    together = fit_together(model, runs, test, HP, num_classes=3, train_cfg=cfg)
    for run, result in zip(runs, together, strict=True):
        _assert_same(result, _alone(model, run, test, cfg), LOGIT_TOLERANCE)
    # each run really learnt its own: different seeds and data give different heads
    assert not torch.allclose(together[0].eval_logits, together[1].eval_logits)
    assert together[2].steps == 7 and together[1].steps == 3 * 2  # 13 images: 2 batches an epoch


def test_heads_on_one_pretrained_backbone_share_its_test_features_and_agree(tmp_path):
    """A weights file (as ImageNet's): every seed's backbone is the same network, so the runs share one
    feature-cache key and the test split's features are read once for the whole group."""
    source = MODELS["resnet50"].create(3, 32)
    path = tmp_path / "resnet50.pth"
    torch.save(
        {**source.backbone.state_dict(), "fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)},
        path,
    )
    cfg = TrainConfig(cache_dir=tmp_path / "cache", resnet50={"weights": str(path)})
    test, runs = _images(12, seed=9), _runs()
    together = fit_together("resnet50", runs, test, HP, num_classes=3, train_cfg=cfg)
    for run, result in zip(runs, together, strict=True):
        _assert_same(result, _alone("resnet50", run, test, cfg), LOGIT_TOLERANCE)
    assert not torch.allclose(together[0].eval_logits, together[1].eval_logits)


def test_a_dropout_free_cnn_agrees_in_bfloat16_autocast(tmp_path):
    """bfloat16 autocast (what CUDA runs in) on the CPU: together and alone compute each layer in
    bfloat16 with float32 weights, so they agree to bfloat16's precision, not float32's."""
    cfg = TrainConfig(cache_dir=tmp_path / "cache")
    compute = resolve_compute(ComputeConfig(device="cpu", dtype="bfloat16"))
    hp = Hyperparameters(lr=0.003, weight_decay=0.0, epochs=2, batch_size=8, dropout=0.0)
    test, runs = _images(12, seed=9), _runs()[:2]
    together = fit_together("cnn", runs, test, hp, num_classes=3, train_cfg=cfg, compute=compute)
    for run, result in zip(runs, together, strict=True):
        alone = _alone("cnn", run, test, cfg, hp, compute)
        scale = float(alone.eval_logits.abs().max())
        assert torch.allclose(result.eval_logits, alone.eval_logits, atol=0.05 * max(scale, 1.0))
        assert (result.eval_logits.argmax(1) == alone.eval_logits.argmax(1)).float().mean() >= 5 / 6


def test_only_chains_of_supported_layers_train_together():
    assert chain_of(MODELS["cnn"].create(3, 32), 32) is not None
    assert chain_of(MODELS["resnet50"].create(3, 32), 32) is not None  # its head
    assert chain_of(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), 32) is None
    grouped = MODELS["cnn"].create(3, 32)
    grouped.features[0] = nn.Conv2d(3, 8, 3, padding=1, groups=1)
    grouped.forward = lambda x: torch.zeros(len(x), 3)  # the chain is not the forward pass
    assert chain_of(grouped, 32) is None


def test_float16_runs_train_alone(tmp_path):
    compute = resolve_compute(ComputeConfig(device="cpu", dtype="bfloat16"))
    half = type(compute)(compute.device, torch.float16, compute.diffusion_dtype, compute.gpu)
    with pytest.raises(ValueError, match="float16"):
        fit_together(
            "cnn", _runs()[:1], _images(4, seed=9), HP, num_classes=3,
            train_cfg=TrainConfig(cache_dir=tmp_path), compute=half,
        )  # fmt: skip


@pytest.mark.slow
def test_the_train_stage_trains_runs_together_when_asked_and_they_agree(
    in_tmp, image_tree, monkeypatch, capsys
):
    """train.together: always on the CPU retrains every run (its fingerprint says together), each as one
    of its model's stacked network, with the predictions and curves of the runs trained alone; a rerun
    trains nothing. (auto, the default, trains them alone on the CPU.)"""
    import numpy as np
    import yaml

    from synthmix.cli import run
    from synthmix.runs import rundir
    from test_train import _tiny_project

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{in_tmp / 'm.db'}")
    _tiny_project(in_tmp, image_tree)
    assert run(["train"]) == 0
    run_dirs = sorted(in_tmp.glob("runs/*/*/*"))
    assert len(run_dirs) == 8
    alone = {d: (d.joinpath("predictions.csv").read_text(), rundir.read_history(d)) for d in run_dirs}
    assert all("together" not in rundir.read_run(d).record.environment for d in run_dirs)

    params = yaml.safe_load(Path("params.yaml").read_text())
    params["train"]["together"] = "always"
    Path("params.yaml").write_text(yaml.safe_dump(params))
    capsys.readouterr()
    assert run(["train"]) == 0
    assert "Trained 8 run(s), 0 already finished" in capsys.readouterr().err.replace("\n", " ")
    for d, (predictions, history) in alone.items():
        assert d.joinpath("predictions.csv").read_text() == predictions, d
        assert np.allclose(rundir.read_history(d), history, rtol=1e-4, atol=1e-6), d
        assert rundir.read_run(d).record.environment["together"] == "true"
    assert run(["train"]) == 0
    assert "Trained 0 run(s), 8 already finished" in capsys.readouterr().err.replace("\n", " ")


@pytest.mark.slow
def test_the_train_stage_shares_its_runs_among_launched_processes(in_tmp, image_tree, monkeypatch):
    """`torchrun --nproc_per_node 2 -m synthmix train` (what `accelerate launch --multi_gpu` runs; CPU
    processes and gloo here, one a GPU on a GPU machine): each process trains every other run under its
    own MLflow stage run, the first writes the summaries of all of them, and the runs are those one
    process trains (the same predictions)."""
    import subprocess
    import sys

    import mlflow

    from synthmix.runs import rundir, tracking
    from test_train import _tiny_project

    uri = f"sqlite:///{in_tmp / 'm.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    _tiny_project(in_tmp, image_tree)
    launcher = Path(sys.executable).with_name("torchrun")
    command = [str(launcher), "--standalone", "--nproc_per_node", "2", "-m", "synthmix", "train"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    run_dirs = sorted(in_tmp.glob("runs/*/*/*"))
    assert len(run_dirs) == 8 and all(
        rundir.is_finished(d, rundir.read_run(d).record.fingerprint) for d in run_dirs
    )
    assert Path("metrics.json").exists()
    client = mlflow.MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("synthmix").experiment_id])
    parents = [r for r in runs if r.data.tags.get(tracking.SWEEP) == "true"]
    assert sorted(r.info.run_name.split(":")[0] for r in parents) == ["process 1 of 2", "process 2 of 2"]
    assert all(r.info.status == "FINISHED" for r in runs) and len(runs) == 8 + 2
    pids = {r.data.tags[tracking.PID] for r in runs if "mlflow.parentRunId" in r.data.tags}
    assert len(pids) == 2
    shared = {d: d.joinpath("predictions.csv").read_text() for d in run_dirs}
    for d in run_dirs:
        d.joinpath(rundir.DONE).unlink()  # one process trains them all again
    from synthmix.cli import run

    assert run(["train"]) == 0
    assert {d: d.joinpath("predictions.csv").read_text() for d in run_dirs} == shared


@pytest.mark.gpu
def test_runs_trained_together_on_cuda_agree_with_the_runs_alone(tmp_path):
    """On CUDA (bfloat16 autocast, TF32; dropout off, since CUDA's fused dropout draws other masks than
    the runs' own generators): the stated tolerance of two CUDA runs of one spec, 0.05 on the logits
    and >= 5/6 of the predictions, holds between a run trained together and alone."""
    compute = resolve_compute(ComputeConfig(device="cuda"))
    cfg = TrainConfig(cache_dir=tmp_path / "cache", cnn={"conv_dropout": 0.0})
    hp = Hyperparameters(lr=0.003, weight_decay=0.0, epochs=2, batch_size=8, dropout=0.0)
    test, runs = _images(12, seed=9), _runs()
    for model in ("cnn", "resnet50"):
        together = fit_together(model, runs, test, hp, num_classes=3, train_cfg=cfg, compute=compute)
        for run, result in zip(runs, together, strict=True):
            alone = _alone(model, run, test, cfg, hp, compute)
            torch.testing.assert_close(result.eval_logits, alone.eval_logits, atol=0.05, rtol=0.0)
            assert (result.eval_logits.argmax(1) == alone.eval_logits.argmax(1)).float().mean() >= 5 / 6

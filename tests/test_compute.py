"""compute.*: the device setting validated, resolved against this machine, refused with exit 2 when it asks
for a GPU that is not there (check-params and every stage), and what it changes on the CPU (nothing,
in float32; bfloat16 autocast when asked for)."""

from __future__ import annotations

import pytest
import torch
import yaml

from synthmix.cli import run
from synthmix.config.compute import Compute, ComputeConfig, cpu_compute, resolve_compute
from synthmix.config.params import params_from_dict
from synthmix.core.errors import UserError
from synthmix.data.images import LabelledImages
from synthmix.train.fit import fit

NO_GPU = lambda: False  # noqa: E731


def _cuda() -> Compute:
    """A CUDA compute as a GPU machine resolves it (only its identity is used: no tensor goes there)."""
    return Compute(torch.device("cuda", 0), torch.bfloat16, torch.float16, "NVIDIA H100")


# --- the setting -------------------------------------------------------------------------------


def test_auto_takes_the_cpu_in_float32_without_a_gpu():
    compute = resolve_compute(ComputeConfig(), cuda_available=NO_GPU)
    assert compute == cpu_compute()
    assert compute.device == torch.device("cpu") and compute.dtype == torch.float32
    assert compute.identity is None and compute.is_default_cpu and not compute.is_cuda
    assert params_from_dict({}).compute == ComputeConfig(device="auto", dtype="auto")


def test_cpu_in_bfloat16_is_its_own_result_and_autocasts():
    compute = resolve_compute(ComputeConfig(device="cpu", dtype="bfloat16"))
    assert compute.dtype == torch.bfloat16 and compute.identity == {
        "device": "cpu",
        "dtype": "bfloat16",
        "diffusion_dtype": "bfloat16",
    }
    with compute.autocast():
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")
    with cpu_compute().autocast():
        assert not torch.is_autocast_enabled("cpu")


@pytest.mark.parametrize("value", ["gpu", "CUDA", "cuda:", "cuda:x", "cuda0", "mps"])
def test_an_unknown_device_names_the_setting_and_the_values(value):
    with pytest.raises(UserError) as info:
        params_from_dict({"compute": {"device": value}})
    assert "compute.device" in str(info.value) and "auto, cpu, cuda or cuda:N" in str(info.value)


def test_an_unknown_dtype_names_the_setting():
    with pytest.raises(UserError) as info:
        params_from_dict({"compute": {"dtype": "float64"}})
    assert "compute.dtype" in str(info.value)


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:1"])
def test_cuda_without_a_gpu_says_what_was_found_and_how_to_fix_it(device):
    with pytest.raises(UserError) as info:
        resolve_compute(ComputeConfig(device=device), cuda_available=NO_GPU)
    message = str(info.value)
    assert f"compute.device in params.yaml is {device}" in message
    assert "no CUDA GPU" in message and "compute.device: auto" in message and "cpu" in message
    assert "\n" not in message  # one paragraph


def test_a_gpu_index_out_of_range_names_the_gpus_there(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(UserError) as info:
        resolve_compute(ComputeConfig(device="cuda:2"))
    assert "compute.device in params.yaml is cuda:2" in str(info.value)
    assert "2 CUDA GPU(s), numbered 0 to 1" in str(info.value)


def test_float16_on_the_cpu_is_refused():
    with pytest.raises(UserError) as info:
        resolve_compute(ComputeConfig(device="cpu", dtype="float16"))
    assert "compute.dtype in params.yaml is float16" in str(info.value)


def test_the_record_names_device_precision_gpu_and_library_versions():
    record = cpu_compute().record()
    assert record["device"] == "cpu" and record["dtype"] == "float32" and record["gpu"] == "cpu"
    assert record["torch"] == torch.__version__.split("+")[0] or record["torch"] == torch.__version__
    assert {"torchvision", "diffusers", "transformers", "timm"} <= set(record)


# --- every command refuses a GPU that is not there -------------------------------------------------

COMMANDS = [
    ["check-params"],
    ["prepare"],
    ["generate"],
    ["quality"],
    ["tune"],
    ["tune", "--if-enabled"],
    ["train"],
    ["report", "--no-mlflow"],
    ["review", "--port", "0"],
    ["data", "default", "--no-dvc"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c))
def test_compute_device_cuda_without_a_gpu_exits_2_from_every_command(in_tmp, monkeypatch, capsys, command):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    (in_tmp / "params.yaml").write_text(yaml.safe_dump({"compute": {"device": "cuda"}}))
    assert run(command) == 2
    err = capsys.readouterr().err
    assert "compute.device in params.yaml is cuda" in " ".join(err.split())
    assert "Traceback" not in err
    assert not any(p.name != "params.yaml" for p in in_tmp.iterdir())  # refused before any work


def test_check_params_in_a_fresh_process_exits_2_with_the_message(in_tmp):
    import subprocess
    import sys

    (in_tmp / "params.yaml").write_text(yaml.safe_dump({"compute": {"device": "cuda:0"}}))
    result = subprocess.run(
        [sys.executable, "-m", "synthmix", "check-params"], cwd=in_tmp, capture_output=True, text=True
    )
    assert result.returncode == 2, result.stderr
    assert "compute.device in params.yaml is cuda:0" in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr + result.stdout


def test_check_params_names_the_device_it_resolved(in_tmp, capsys):
    (in_tmp / "params.yaml").write_text(yaml.safe_dump({"compute": {"device": "cpu"}}))
    assert run(["check-params"]) == 0
    assert "networks on cpu in float32." in " ".join(capsys.readouterr().err.split())


# --- what it changes in training ---------------------------------------------------------------


def _tiny_set(n: int, seed: int) -> LabelledImages:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=generator, dtype=torch.uint8)
    labels = torch.arange(n) % 3
    return LabelledImages(images, labels, tuple(f"{seed}-{i}" for i in range(n)))


def _fit(compute: Compute | None, tmp_path, **kwargs):
    from synthmix.config.hparams import Hyperparameters
    from synthmix.config.params import TrainConfig

    cfg = TrainConfig(cache_dir=tmp_path)
    hp = Hyperparameters(lr=1e-3, weight_decay=0.0, dropout=0.0, epochs=2, batch_size=4)
    train, test = _tiny_set(12, 0), _tiny_set(6, 1)
    return fit("cnn", train, test, hp, seed=0, num_classes=3, train_cfg=cfg, compute=compute, **kwargs)


def test_the_cpu_in_float32_trains_exactly_as_without_a_compute(tmp_path):
    resolved = resolve_compute(ComputeConfig(), cuda_available=NO_GPU)
    plain, on_cpu = _fit(None, tmp_path), _fit(resolved, tmp_path)
    assert torch.equal(plain.eval_logits, on_cpu.eval_logits)
    assert [s.as_row() for s in plain.history] == [s.as_row() for s in on_cpu.history]
    for a, b in zip(plain.model.state_dict().values(), on_cpu.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_bfloat16_autocast_on_the_cpu_trains_with_float32_weights_loss_and_logits(tmp_path):
    compute = resolve_compute(ComputeConfig(device="cpu", dtype="bfloat16"))
    result = _fit(compute, tmp_path)
    exact = _fit(None, tmp_path)
    assert result.eval_logits.dtype == torch.float32 and torch.isfinite(result.eval_logits).all()
    assert all(p.dtype == torch.float32 for p in result.model.parameters())
    assert all(torch.isfinite(torch.tensor(s.as_row())).all() for s in result.history)
    assert not torch.equal(result.eval_logits, exact.eval_logits)  # it really ran in bfloat16
    # the same run at a coarser precision: logits near float32's (a tiny CNN, 2 epochs)
    torch.testing.assert_close(result.eval_logits, exact.eval_logits, atol=0.25, rtol=0.1)


def test_bfloat16_on_the_cpu_trains_a_frozen_backbones_head_and_keys_its_features_apart(tmp_path):
    from synthmix.config.params import TrainConfig
    from synthmix.models import MODELS
    from synthmix.train.features import feature_cache_key

    weights = MODELS["resnet50"].weights(TrainConfig().resnet50.model_copy(update={"weights": "none"}))
    compute = resolve_compute(ComputeConfig(device="cpu", dtype="bfloat16"))
    cpu_key = feature_cache_key("resnet50", weights, 0, 32)
    assert feature_cache_key("resnet50", weights, 0, 32, cpu_compute()) == cpu_key
    assert feature_cache_key("resnet50", weights, 0, 32, compute) != cpu_key
    assert feature_cache_key("resnet50", weights, 0, 32, _cuda()) not in (cpu_key,)


def test_a_cuda_run_is_not_a_cpu_runs_result_and_the_cpu_fingerprint_is_unchanged():
    from synthmix.config.hparams import Hyperparameters
    from synthmix.config.params import TrainConfig
    from synthmix.data.mixes import Mix
    from synthmix.stages.train import RunSpec, StudyData, run_fingerprint

    hp = Hyperparameters(lr=1e-3, weight_decay=0.0, epochs=2, batch_size=4, dropout=0.0)
    spec = RunSpec("cnn", Mix(3, 0), 0, hp, "fixed")
    data = StudyData(("a",), (), {spec.draw: []})
    cfg = TrainConfig()
    before = run_fingerprint(spec, data, cfg, "random", "code")  # as the stage computed it before compute.*
    assert run_fingerprint(spec, data, cfg, "random", "code", cpu_compute()) == before
    assert run_fingerprint(spec, data, cfg, "random", "code", _cuda()) != before


def test_a_ddpm_trained_on_a_gpu_is_not_the_cpus():
    from synthmix.config.params import DDPMConfig
    from synthmix.generate.ddpm import model_fingerprint

    cpu = model_fingerprint(DDPMConfig(), ["a"], ["h"], 0)
    assert model_fingerprint(DDPMConfig(), ["a"], ["h"], 0, cpu_compute().identity) == cpu
    assert model_fingerprint(DDPMConfig(), ["a"], ["h"], 0, _cuda().identity) != cpu


@pytest.mark.gpu
def test_two_runs_of_one_spec_on_cuda_agree_within_the_stated_tolerance(tmp_path):
    # README "Running on a GPU": the same spec twice on CUDA (bfloat16 autocast, TF32) gives test
    # logits within 0.05 (absolute, after 2 epochs of the tiny CNN) and the same predictions on >= 5/6.
    compute = resolve_compute(ComputeConfig(device="cuda"))
    first, second = _fit(compute, tmp_path / "a"), _fit(compute, tmp_path / "b")
    torch.testing.assert_close(first.eval_logits, second.eval_logits, atol=0.05, rtol=0.0)
    agree = (first.eval_logits.argmax(1) == second.eval_logits.argmax(1)).float().mean()
    assert agree >= 5 / 6
    assert first.eval_logits.device.type == "cpu" and next(first.model.parameters()).device.type == "cpu"

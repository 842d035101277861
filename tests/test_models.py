"""The study's two models: the exact parameter counts of the paper, frozen backbone, weights handling."""

from __future__ import annotations

import pytest
import torch

from synthmix.cli import run
from synthmix.config.params import MODEL_NAMES, TrainConfig
from synthmix.core.errors import UserError
from synthmix.core.files import sha256_file
from synthmix.models import (
    MODELS,
    BackboneWeights,
    imagenet_checkpoint_path,
    resolve_resnet_weights,
    trainable_parameters,
)

RANDOM = BackboneWeights("none", None, "random-init")


def build_model(name: str, num_classes: int, size: int, dropout: float, weights: BackboneWeights = RANDOM):
    return MODELS[name].build(num_classes, size, dropout, TrainConfig().model_section(name), weights, 0)


@pytest.fixture(autouse=True)
def _empty_torch_home(tmp_path, monkeypatch):
    # No ImageNet weights in the cache and no downloads, whatever the machine has.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_cnn_has_the_studys_117034_parameters_at_128px_90_classes():
    assert trainable_parameters(build_model("cnn", 90, 128, dropout=0.5)) == 117_034
    assert MODELS["cnn"].trainable_parameters(90, 128) == 117_034


def test_every_registered_model_has_a_params_section_and_builds_a_classifier():
    # Adding a backbone is one registry entry plus its train.<name> section: the two lists agree.
    assert tuple(MODELS) == MODEL_NAMES
    for name, entry in MODELS.items():
        assert entry.name == name and entry.label and entry.preprocessing
        model = build_model(name, 4, 32, dropout=0.0).eval()
        assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 4)
        assert entry.trained_from_scratch == (
            trainable_parameters(model) == sum(p.numel() for p in model.parameters())
        )


def test_cnn_flatten_size_follows_the_input_size():
    for size in (32, 64, 100):
        model = build_model("cnn", 10, size, dropout=0.5).eval()
        assert model(torch.zeros(2, 3, size, size)).shape == (2, 10)


@pytest.mark.gpu
def test_the_study_models_on_a_gpu_give_the_cpus_logits():
    """A model and batch moved to CUDA compute what they do on the CPU (fp32, TF32 off)."""
    torch.manual_seed(0)
    x = torch.rand(8, 3, 32, 32) * 255
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        for name in ("cnn", "resnet50"):
            model = build_model(name, 10, 32, dropout=0.5).eval()
            with torch.no_grad():
                on_cpu = model(x)
                on_gpu = model.to("cuda")(x.to("cuda"))
            assert on_gpu.device.type == "cuda" and next(model.parameters()).device.type == "cuda"
            torch.testing.assert_close(on_gpu.cpu(), on_cpu, rtol=1e-4, atol=1e-4)
            assert torch.equal(on_gpu.argmax(1).cpu(), on_cpu.argmax(1))
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32


def test_resnet50_trains_only_its_new_head_184410_parameters():
    model = build_model("resnet50", 90, 64, dropout=0.0)
    assert trainable_parameters(model) == 184_410 == MODELS["resnet50"].trainable_parameters(90, 64)
    assert all(not p.requires_grad for p in model.backbone.parameters())
    model.train()
    assert not model.backbone.training  # frozen batch-norm statistics: features stay cacheable


@pytest.mark.parametrize("model,count", [("cnn", "117,034"), ("resnet50", "184,410")])
def test_model_summary_command_prints_the_trainable_count(capsys, model, count):
    assert run(["model-summary", "--model", model, "--num-classes", "90", "--image-size", "128"]) == 0
    out = capsys.readouterr().out
    assert f"{count} trainable parameters" in out and "Conv2d" in out


def test_model_summary_unknown_model_exits_2(capsys):
    assert run(["model-summary", "--model", "vgg"]) == 2
    assert "Unknown model 'vgg'" in capsys.readouterr().err


def test_auto_weights_without_cached_imagenet_are_recorded_as_random():
    assert not imagenet_checkpoint_path().exists()
    assert resolve_resnet_weights("auto").used == "random"
    assert resolve_resnet_weights("none").used == "none"


def test_auto_uses_imagenet_when_torchvisions_cache_has_it(tmp_path):
    checkpoint = imagenet_checkpoint_path()
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"placeholder")  # auto only checks that the file is there
    weights = resolve_resnet_weights("auto")
    assert weights.used == "imagenet" and weights.file == checkpoint


def test_imagenet_weights_offline_and_uncached_say_where_the_file_goes():
    with pytest.raises(UserError) as info:
        resolve_resnet_weights("imagenet")
    assert str(imagenet_checkpoint_path()) in str(info.value)


def test_state_dict_file_loads_into_the_backbone(tmp_path):
    torch.manual_seed(1)
    source = build_model("resnet50", 5, 32, dropout=0.0)
    full = {
        **source.backbone.state_dict(),
        "fc.weight": torch.zeros(1000, 2048),
        "fc.bias": torch.zeros(1000),
    }
    path = tmp_path / "resnet50.pth"
    torch.save(full, path)
    weights = resolve_resnet_weights(str(path))
    assert weights.used == str(path) and weights.identity.startswith("file:")
    loaded = build_model("resnet50", 7, 32, dropout=0.0, weights=weights)
    assert torch.equal(loaded.backbone.conv1.weight, source.backbone.conv1.weight)
    assert (
        loaded.backbone.conv1.weight.device.type == "cpu"
    )  # loaded onto the meta-built trunk, not left meta
    assert weights.sha256 == sha256_file(path)


def test_state_dict_file_that_is_missing_or_not_resnet50_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        resolve_resnet_weights(str(tmp_path / "absent.pth"))
    bad = tmp_path / "bad.pth"
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    with pytest.raises(UserError, match="not a torchvision ResNet50"):
        build_model("resnet50", 3, 32, dropout=0.0, weights=BackboneWeights(str(bad), bad, "x"))

"""The opt-in backbones (vit_b_16, timm, clip, dinov2): their heads, their frozen trunks, and weights
that are pretrained only when they are on this machine, else random and recorded as such."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from synthmix.cli import run
from synthmix.config.hparams import Hyperparameters
from synthmix.config.params import CLIPConfig, DINOv2Config, TimmConfig, TrainConfig
from synthmix.core.files import sha256_file
from synthmix.data.images import LabelledImages
from synthmix.models import MODELS, FrozenBackboneClassifier, trainable_parameters, weights_from_used
from synthmix.runs.mlflow_log import FrozenBackboneModel
from synthmix.train.features import feature_cache_key
from synthmix.train.fit import fit

HP = Hyperparameters(lr=0.01, weight_decay=0.0, epochs=1, batch_size=8, dropout=0.0)
TINY = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "image_size": 32,
    "patch_size": 8,
}


@pytest.fixture(autouse=True)
def _nothing_cached(tmp_path, monkeypatch):
    # No ImageNet file, an empty Hugging Face cache and no downloads, whatever the machine has.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _images(n: int, classes: int = 3, seed: int = 0) -> LabelledImages:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    images = (labels.view(n, 1, 1, 1) * 60 + torch.randint(0, 40, (n, 3, 32, 32), generator=g)).to(
        torch.uint8
    )
    return LabelledImages(images, labels, tuple(f"{seed:08x}{i:056x}" for i in range(n)))


def _save_tiny(kind: str, path):
    """A tiny random CLIP vision or DINOv2 model, written the way a downloaded one is: save_pretrained."""
    import transformers

    torch.manual_seed(0)
    if kind == "clip":
        model = transformers.CLIPVisionModel(transformers.CLIPVisionConfig(intermediate_size=37, **TINY))
    else:
        model = transformers.Dinov2Model(transformers.Dinov2Config(**TINY))
    model.save_pretrained(path)
    return model


def _fit(model: str, cfg: TrainConfig):
    return fit(model, _images(12), _images(6, seed=1), HP, seed=0, num_classes=3, train_cfg=cfg)


# --- parameter counts -----------------------------------------------------------------------------


@pytest.mark.parametrize("model,count", [("vit_b_16", "69,210"), ("cnn", "117,034"), ("resnet50", "184,410")])
def test_model_summary_prints_the_new_heads_count_and_leaves_the_studys_unchanged(capsys, model, count):
    # ViT-B/16: only its new head trains, Linear(768, 90) = 69,210; its input is resized to 224 px
    assert run(["model-summary", "--model", model, "--num-classes", "90"]) == 0
    assert f"{count} trainable parameters" in capsys.readouterr().out


# --- timm -----------------------------------------------------------------------------------------


def test_a_timm_model_by_name_trains_its_head_only_and_auto_without_weights_is_recorded_random(tmp_path):
    cfg = TrainConfig(cache_dir=tmp_path / "cache", timm=TimmConfig(name="test_resnet"))
    untrained = MODELS["timm"].build(3, 32, 0.0, cfg.timm, MODELS["timm"].weights(cfg.timm), 0)
    trunk = {k: v.detach().clone() for k, v in untrained.backbone.state_dict().items()}
    result = _fit("timm", cfg)
    model = result.model
    # every weight and batch-norm statistic of the trunk is what it was before training
    after = model.backbone.state_dict()
    assert after.keys() == trunk.keys() and all(torch.equal(after[k], v) for k, v in trunk.items())
    assert result.weights_used == "random"  # auto, nothing cached: never called pretrained
    assert len(result.history) == 1 and isinstance(model, FrozenBackboneClassifier)
    assert trainable_parameters(model) == 96 * 3 + 3  # test_resnet's 96 features -> 3 classes
    assert all(not p.requires_grad for p in model.backbone.parameters())
    fresh = MODELS["timm"].build(3, 32, 0.0, cfg.timm, MODELS["timm"].weights(cfg.timm), 0)
    assert fresh.backbone is model.backbone  # one shared frozen trunk: training left it alone
    # the feature cache tells timm models apart, and a random trunk from pretrained weights
    other = MODELS["timm"].weights(TimmConfig(name="test_vit"))
    assert feature_cache_key("timm", MODELS["timm"].weights(cfg.timm), 0, 32) != feature_cache_key(
        "timm", other, 0, 32
    )


def test_a_timm_state_dict_file_loads_into_the_trunk_and_is_recorded_by_path_and_hash(tmp_path):
    import timm

    torch.manual_seed(3)
    source = timm.create_model("test_resnet", num_classes=10)  # with a classifier, which is dropped
    path = tmp_path / "test_resnet.pth"
    torch.save(source.state_dict(), path)
    section = TimmConfig(name="test_resnet", weights=str(path))
    weights = MODELS["timm"].weights(section)
    assert (weights.used, weights.sha256, weights.arch) == (str(path), sha256_file(path), "test_resnet")
    model = MODELS["timm"].build(3, 32, 0.0, section, weights, 0)
    loaded = model.backbone.state_dict()
    assert loaded and all(torch.equal(v, source.state_dict()[k]) for k, v in loaded.items())  # fc dropped
    assert weights_from_used(weights.used, "timm", weights.arch) == weights  # how MLflow's copy reloads


@pytest.mark.parametrize(
    "section,key,reason,fix",
    [
        (
            "timm:\n    name: no_such_net\n",
            "train.timm.name is 'no_such_net'",
            "a model timm",  # ... "<version> does not have"
            "Use a name timm.list_models() lists",
        ),
        (
            "timm:\n    weights: pretrained\n",
            "train.timm.weights is pretrained",
            "are not in the local Hugging Face cache",
            "set train.timm.weights to the path of a state-dict file, auto or none",
        ),
        (
            "clip:\n    model: {tmp}/absent/clip\n",
            "train.clip.model is '{tmp}/absent/clip'",
            "there is no such directory",
            "Give a directory written by CLIPVisionModel.save_pretrained(dir)",
        ),
        (
            "dinov2:\n    weights: pretrained\n",
            "train.dinov2.weights is pretrained",
            "'facebook/dinov2-base' is not on this machine",
            "set train.dinov2.weights to auto or none",
        ),
    ],
)
def test_unusable_backbone_settings_stop_training_with_the_key_and_the_fix(
    tmp_path, capsys, section, key, reason, fix
):
    model = section.split(":")[0]
    params = tmp_path / "params.yaml"
    params.write_text(f"train:\n  {section.format(tmp=tmp_path)}")
    assert run(["train", "--params", str(params), "--model", model]) == 2  # before any data is read
    err = " ".join(capsys.readouterr().err.split())
    # the key with its value, why it cannot be used, and what to do: words the test path cannot supply
    assert key.format(tmp=tmp_path) in err and reason in err and fix in err, err


# --- transformers encoders: CLIP and DINOv2 -------------------------------------------------------


@pytest.mark.parametrize("kind,section", [("clip", CLIPConfig), ("dinov2", DINOv2Config)])
def test_a_local_encoder_loads_through_from_pretrained_and_only_its_linear_probe_trains(
    tmp_path, kind, section
):
    saved = _save_tiny(kind, tmp_path / kind)
    settings = section(model=str(tmp_path / kind), weights="pretrained")
    cfg = TrainConfig(cache_dir=tmp_path / "cache", **{kind: settings})
    weights = MODELS[kind].weights(settings)
    assert weights.used == str(tmp_path / kind) and weights.sha256 == sha256_file(weights.file)
    result = _fit(kind, cfg)
    model = result.model
    assert result.weights_used == str(tmp_path / kind)
    assert torch.equal(  # the saved encoder's weights, loaded, not a fresh random draw
        next(model.backbone.encoder.parameters()), next(saved.parameters())
    )
    features = model.features(_images(2).images.float())
    assert features.shape == (2, 32)  # the pooled embedding: hidden_size
    assert trainable_parameters(model) == 32 * 3 + 3 and not model.backbone.training
    assert all(not p.requires_grad for p in model.backbone.parameters())
    # a logged run (head + the backbone's identity) rebuilds the same classifier
    head = tmp_path / "head.pt"
    torch.save(model.head.state_dict(), head)
    logged = FrozenBackboneModel()
    logged.load_context(
        SimpleNamespace(
            model_config={
                "model": kind,
                "weights": result.weights_used,
                "weights_sha256": weights.sha256,
                "backbone": weights.arch,
                "seed": 0,
                "num_classes": 3,
                "image_size": 32,
            },
            artifacts={"head": str(head)},
        )
    )
    x = _images(4, seed=2).images.float()
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(logged.predict(None, x.numpy())), model(x), atol=1e-5)


@pytest.mark.parametrize("kind", ["clip", "dinov2"])
def test_auto_without_local_weights_is_a_random_encoder_recorded_as_random(kind):
    weights = MODELS[kind].weights(TrainConfig().model_section(kind))  # the default hub id, not cached
    assert weights.is_random and weights.used == "random"
    assert MODELS[kind].weights_from_used("random", "").identity == weights.identity

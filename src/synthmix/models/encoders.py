"""Frozen backbones from other libraries: any timm model by name, and transformers' CLIP and DINOv2
image encoders as linear probes (a new head on the pooled embedding).

Weights are pretrained only when they are on this machine: a state-dict file, a local directory, or the
local Hugging Face cache. Nothing is downloaded at training time, except that `pretrained` fetches a hub
id when downloads are on. Without local weights `auto` builds a random network of the same kind,
recorded as "random"; `pretrained` stops with the key to change and how.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from synthmix.core.errors import UserError
from synthmix.models.backbones import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RANDOM_USED,
    BackboneWeights,
    file_sha256,
    offline,
    random_init,
    shared_trunk,
    with_arch,
)
from synthmix.models.layers import FrozenBackboneClassifier, PixelScaling, linear_head

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")

# --- timm -----------------------------------------------------------------------------------------


def resolve_timm_weights(name: str, setting: str) -> BackboneWeights:
    """pretrained | none | auto | path (or a recorded "random") -> the weights of timm's `name`."""
    import timm

    if not timm.is_model(name):
        raise UserError(
            f"train.timm.name is '{name}', a model timm {timm.__version__} does not have. Use a name "
            "timm.list_models() lists (e.g. resnet18, convnext_tiny, vit_small_patch16_224)."
        )
    tag = f"timm-{timm.__version__}:{name}"
    if setting in RANDOM_USED:
        return random_init(setting, name, f"{tag}:random-init")
    if setting in ("auto", "pretrained"):
        cached = _timm_cached_file(name)
        if cached is not None:
            return BackboneWeights("pretrained", cached, f"{tag}:{file_sha256(cached)}", name)
        if setting == "auto":
            return random_init("random", name, f"{tag}:random-init")
        raise UserError(
            f"train.timm.weights is pretrained, but timm's weights of '{name}' are not in the local Hugging "
            "Face cache (synthmix never downloads them while training). Download them on a machine with "
            f"internet (timm.create_model('{name}', pretrained=True)) and copy the cache, or set "
            "train.timm.weights to the path of a state-dict file, auto or none."
        )
    path = Path(setting)
    if not path.is_file():
        raise UserError(
            f"train.timm.weights is '{setting}', but there is no such file. Give the path of a state-dict "
            f"file of timm's {name} (.safetensors, .pth or .bin), or use pretrained, auto or none."
        )
    return BackboneWeights(str(path), path, f"{tag}:file:{file_sha256(path)}", name)


def _timm_cached_file(name: str) -> Path | None:
    """timm's published weights of `name`, when the local Hugging Face cache holds them."""
    from huggingface_hub import try_to_load_from_cache
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    for filename in ("model.safetensors", "pytorch_model.bin") if hub_id else ():
        found = try_to_load_from_cache(hub_id, filename)
        if isinstance(found, str):
            return Path(found)
    return None


def _timm_trunk(weights: BackboneWeights) -> nn.Module:
    """timm's model without its classifier (num_classes=0: forward gives the pooled features)."""
    import timm
    from timm.models import load_state_dict

    trunk = timm.create_model(weights.arch, pretrained=False, num_classes=0)
    if weights.file is None:
        return trunk
    try:
        state = load_state_dict(str(weights.file), weights_only=True)
    except Exception as exc:
        raise UserError(
            f"timm weights file {weights.file} cannot be read as a state dict ({exc}). Save it with "
            "safetensors.torch.save_file(model.state_dict(), path) or torch.save."
        ) from None
    classifier = trunk.pretrained_cfg.get("classifier") or ()
    heads = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    state = {k: v for k, v in state.items() if not k.startswith(tuple(f"{h}." for h in heads))}
    result = trunk.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise UserError(
            f"{weights.file} is not a state dict of timm's {weights.arch}: missing "
            f"{result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]}. Use one saved from "
            f"timm.create_model('{weights.arch}')."
        )
    return trunk


def build_timm(
    num_classes: int, image_size: int, dropout: float, section: Any, weights: BackboneWeights, seed: int
) -> nn.Module:
    """timm's `name`, frozen and shared, with [dropout ->] Linear(features, C). Pixels are normalised
    by the model's own mean and std and resized to its pretrained input size (pretrained_cfg)."""
    trunk = shared_trunk(_timm_trunk, with_arch(weights, section.name if section else ""), seed)
    cfg = trunk.pretrained_cfg
    features = getattr(trunk, "head_hidden_size", None) or trunk.num_features
    scale = PixelScaling(cfg.get("mean", IMAGENET_MEAN), cfg.get("std", IMAGENET_STD), cfg["input_size"][-1])
    return FrozenBackboneClassifier(trunk, linear_head(features, num_classes, dropout), scale)


def timm_weights(section: Any) -> BackboneWeights:
    return resolve_timm_weights(section.name, section.weights)


def timm_weights_from_used(used: str, arch: str) -> BackboneWeights:
    return resolve_timm_weights(arch, used)


# --- transformers image encoders: CLIP and DINOv2 -------------------------------------------------


class PooledEncoder(nn.Module):
    """A transformers vision model as a feature extractor: pixels -> its pooled embedding (N, hidden)."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(pixel_values=x).pooler_output


@dataclass(frozen=True)
class Encoder:
    """One transformers image encoder: its classes, its preprocessing and its input size."""

    model: str  # its train.<model> section
    label: str
    model_class: str  # e.g. CLIPVisionModel
    config_class: str  # its random fallback is this class's default configuration
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    max_input: int | None  # a cap on config.image_size (DINOv2's 518 is its position grid; it sees 224)

    def resolve(self, model: str, setting: str) -> BackboneWeights:
        """pretrained | none | auto (or a recorded "random") -> the weights actually used."""
        import transformers

        random_identity = f"transformers-{transformers.__version__}:{self.config_class}():random-init"
        if setting in RANDOM_USED:
            return random_init(setting, "", random_identity)
        local = self._local_dir(model, setting)
        weights_file = (
            next((local / f for f in _WEIGHT_FILES if (local / f).is_file()), None) if local else None
        )
        if local is not None and weights_file is None and Path(model).expanduser().exists():
            raise UserError(
                f"train.{self.model}.model is '{model}', a directory with no weights file "
                f"({', '.join(_WEIGHT_FILES)}). Write one with {self.model_class}.save_pretrained(dir)."
            )
        if weights_file is not None:
            identity = f"transformers-{transformers.__version__}:{self.model_class}:{model}:{file_sha256(weights_file)}"
            return BackboneWeights(model, weights_file, identity, str(local))
        if setting == "auto":
            return random_init("random", "", random_identity)
        raise UserError(
            f"train.{self.model}.weights is pretrained, but '{model}' is not on this machine (downloads are "
            f"off). Save it with {self.model_class}.from_pretrained('{model}').save_pretrained(dir) on a "
            f"machine with internet and set train.{self.model}.model to that directory, or set "
            f"train.{self.model}.weights to auto or none."
        )

    def _local_dir(self, model: str, setting: str) -> Path | None:
        """The directory holding `model`: itself, or its snapshot in the local hub cache (None when absent)."""
        path = Path(model).expanduser()
        if path.exists():
            if not (path / "config.json").is_file():
                raise UserError(
                    f"train.{self.model}.model is '{model}', which holds no config.json. Give a directory "
                    f"written by {self.model_class}.save_pretrained(dir), or a hub id."
                )
            return path
        if not _HUB_ID.fullmatch(model):
            raise UserError(
                f"train.{self.model}.model is '{model}', but there is no such directory. Give a directory "
                f"written by {self.model_class}.save_pretrained(dir), or a hub id like "
                f"{_DEFAULT_IDS[self.model]}."
            )
        from huggingface_hub import snapshot_download

        try:
            return Path(snapshot_download(model, local_files_only=True))
        except Exception:  # not in the cache (or a partial download): pretrained may fetch it
            pass
        if setting != "pretrained" or offline():
            return None
        try:
            return Path(snapshot_download(model))
        except Exception as exc:
            raise UserError(
                f"train.{self.model}.model '{model}' could not be downloaded ({exc}). Save it to a directory "
                f"on a machine with internet and set train.{self.model}.model to it."
            ) from None

    def trunk(self, weights: BackboneWeights) -> nn.Module:
        import transformers

        cls = getattr(transformers, self.model_class)
        if weights.file is None:
            return PooledEncoder(cls(getattr(transformers, self.config_class)()))
        try:
            return PooledEncoder(cls.from_pretrained(weights.arch, local_files_only=True))
        except Exception as exc:
            raise UserError(
                f"{weights.arch} does not load as a {self.model_class} ({exc}). Set train.{self.model}.model "
                f"to a directory written by {self.model_class}.save_pretrained(dir)."
            ) from None

    def build(
        self,
        num_classes: int,
        image_size: int,
        dropout: float,
        section: Any,
        weights: BackboneWeights,
        seed: int,
    ) -> nn.Module:
        """The frozen encoder and [dropout ->] Linear(hidden, C); images resized to its input size."""
        trunk = shared_trunk(self.trunk, weights, seed)
        config = trunk.encoder.config
        size = config.image_size if self.max_input is None else min(config.image_size, self.max_input)
        head = linear_head(config.hidden_size, num_classes, dropout)
        return FrozenBackboneClassifier(trunk, head, PixelScaling(self.mean, self.std, size))

    def weights(self, section: Any) -> BackboneWeights:
        return self.resolve(section.model, section.weights)

    def weights_from_used(self, used: str, arch: str) -> BackboneWeights:
        return self.resolve(used, "pretrained") if used not in RANDOM_USED else self.resolve(used, used)


_DEFAULT_IDS = {"clip": "openai/clip-vit-base-patch32", "dinov2": "facebook/dinov2-base"}
CLIP = Encoder("clip", "CLIP", "CLIPVisionModel", "CLIPVisionConfig", CLIP_MEAN, CLIP_STD, None)
DINOV2 = Encoder("dinov2", "DINOv2", "Dinov2Model", "Dinov2Config", IMAGENET_MEAN, IMAGENET_STD, 224)

"""The classifiers synthmix trains, one registry entry each: the study's 117,034-parameter simple CNN
and frozen ResNet50 (the defaults), and opt-in frozen backbones (ViT-B/16, any timm model, CLIP and
DINOv2 image encoders), each with a new head.

Every model takes float pixels in [0, 255], shape (N, 3, S, S), and does its own preprocessing as its
first layer (layers.PixelScaling). What a backbone starts from resolves from its train.<model> section
(backbones.BackboneWeights): pretrained when the weights are on this machine, else, for `auto`, a
random initialisation recorded as "random".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from synthmix.config.params import TrainConfig
from synthmix.core.errors import UserError
from synthmix.models.backbones import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RESNET_FEATURES,
    BackboneWeights,
    _file_sha256,
    _resnet50_backbone,
    build_resnet50,
    build_vit_b_16,
    imagenet_checkpoint_path,
    random_init,
    resnet50_backbone,
    resolve_resnet_weights,
    resolve_torchvision_weights,
    torchvision_weights,
)
from synthmix.models.cnn import CNN_CHANNELS, CNN_HIDDEN, SimpleCNN, build_cnn
from synthmix.models.encoders import CLIP, DINOV2, build_timm, timm_weights, timm_weights_from_used
from synthmix.models.layers import FrozenBackboneClassifier, PixelScaling, trainable_parameters

__all__ = [
    "CNN_CHANNELS",
    "CNN_HIDDEN",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MODELS",
    "RESNET_FEATURES",
    "BackboneWeights",
    "FrozenBackboneClassifier",
    "ModelEntry",
    "PixelScaling",
    "SimpleCNN",
    "_file_sha256",
    "_resnet50_backbone",
    "imagenet_checkpoint_path",
    "model_entry",
    "model_summary",
    "random_weights",
    "resnet50_backbone",
    "resnet_weights",
    "resolve_resnet_weights",
    "resolve_torchvision_weights",
    "trainable_parameters",
    "weights_from_used",
]

Builder = Callable[[int, int, float, Any, BackboneWeights, int], nn.Module]


def random_weights(section: Any) -> BackboneWeights:
    return random_init()


def random_from_used(used: str, arch: str) -> BackboneWeights:
    return random_init(used)


def resnet_weights(section: Any) -> BackboneWeights:
    return resolve_resnet_weights(section.weights)


# --- the registry: adding a backbone is one entry here (and its params.yaml section) -----------------


@dataclass(frozen=True)
class ModelEntry:
    """Everything synthmix needs to know about a classifier; nothing else branches on its name."""

    name: str  # also its train.<name> section in params.yaml
    label: str  # how the report names it
    build: Builder
    weights: Callable[[Any], BackboneWeights]  # what it starts from, resolved from its params section
    preprocessing: str  # what its first layer does to pixels in [0, 255]
    frozen_backbone: bool  # True: a frozen feature extractor and a trained head (features are cached)
    # the weights a run recorded (its `used`, and BackboneWeights.arch), resolved again
    weights_from_used: Callable[[str, str], BackboneWeights] = random_from_used
    library: str = "torchvision"  # where the network comes from (part of the feature-cache key)

    @property
    def trained_from_scratch(self) -> bool:
        return not self.frozen_backbone

    def trainable_parameters(self, num_classes: int, image_size: int) -> int:
        return trainable_parameters(self.create(num_classes, image_size))

    def create(self, num_classes: int, image_size: int, seed: int = 0) -> nn.Module:
        """A model with random weights and its default settings, for summaries (no weights file needed)."""
        section = TrainConfig().model_section(self.name)
        return self.build(num_classes, image_size, section.dropout, section, random_weights(section), seed)


_RESNET50 = torchvision_weights("resnet50")
_VIT_B_16 = torchvision_weights("vit_b_16")
_RESIZED = "resized (bilinear, antialiased) to"
MODELS: dict[str, ModelEntry] = {
    entry.name: entry
    for entry in (
        ModelEntry(
            "cnn", "CNN", build_cnn, random_weights, "x/255", frozen_backbone=False, library="synthmix"
        ),
        ModelEntry(
            "resnet50",
            "ResNet50",
            build_resnet50,
            _RESNET50[0],
            "x/255, ImageNet mean/std",
            True,
            _RESNET50[1],
        ),
        ModelEntry(
            "vit_b_16",
            "ViT-B/16",
            build_vit_b_16,
            _VIT_B_16[0],
            f"x/255, ImageNet mean/std, {_RESIZED} 224 px",
            True,
            _VIT_B_16[1],
        ),
        ModelEntry(
            "timm",
            "timm",
            build_timm,
            timm_weights,
            f"x/255, the model's pretrained_cfg mean/std, {_RESIZED} its input_size",
            True,
            timm_weights_from_used,
            library="timm",
        ),
        ModelEntry(
            "clip",
            "CLIP",
            CLIP.build,
            CLIP.weights,
            f"x/255, CLIP mean/std, {_RESIZED} config.image_size",
            True,
            CLIP.weights_from_used,
            library="transformers",
        ),
        ModelEntry(
            "dinov2",
            "DINOv2",
            DINOV2.build,
            DINOV2.weights,
            f"x/255, ImageNet mean/std, {_RESIZED} config.image_size (at most 224 px)",
            True,
            DINOV2.weights_from_used,
            library="transformers",
        ),
    )
}


def model_entry(name: str, key: str = "--model") -> ModelEntry:
    if name not in MODELS:
        raise UserError(f"Unknown model '{name}' ({key}). synthmix trains: {', '.join(MODELS)}.")
    return MODELS[name]


def model_summary(name: str, num_classes: int, image_size: int) -> str:
    """Layers with output shapes and parameter counts, and the trainable total (no network needed)."""
    if num_classes < 2:
        raise UserError(f"--num-classes is {num_classes}; a classifier needs at least 2 classes.")
    if image_size < 32:
        raise UserError(f"--image-size is {image_size}; the CNN halves it five times, so use at least 32.")
    model = model_entry(name).create(num_classes, image_size)
    model.eval()
    shapes: dict[str, tuple[int, ...]] = {}
    units = model.summary_units()
    hooks = [
        module.register_forward_hook(lambda _m, _i, out, n=n: shapes.__setitem__(n, tuple(out.shape[1:])))
        for n, module in units
    ]
    with torch.no_grad():
        model(torch.zeros(1, 3, image_size, image_size))
    for hook in hooks:
        hook.remove()
    rows = [("layer", "type", "output shape", "trainable", "frozen")]
    for n, module in units:
        trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
        frozen = sum(p.numel() for p in module.parameters() if not p.requires_grad)
        rows.append((n, type(module).__name__, str(shapes.get(n, "")), f"{trainable:,}", f"{frozen:,}"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = [
        "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in rows
    ]
    total = sum(p.numel() for p in model.parameters())
    lines.append(
        f"{name}, {num_classes} classes, {image_size}x{image_size} input: "
        f"{trainable_parameters(model):,} trainable parameters ({total:,} in all)"
    )
    return "\n".join(lines)


def weights_from_used(used: str, model: str = "resnet50", arch: str = "") -> BackboneWeights:
    """The weights a run of `model` recorded as used ("random", "none", "imagenet", a file, a model
    directory) and, for a model that names its network (timm), that network, resolved again."""
    return model_entry(model).weights_from_used(used, arch)

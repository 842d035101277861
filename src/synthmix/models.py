"""The study's two classifiers: the 117,034-parameter simple CNN and a frozen ResNet50 with a new head.

Every model takes float pixels in [0, 255], shape (N, 3, S, S) (a uint8 image batch cast to float) and
does its own input normalisation as its first layer, so a model logged to MLflow needs nothing else
to be used: the CNN divides by 255, the ResNet50 applies ImageNet's mean and std.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from synthmix.config import TrainConfig
from synthmix.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CNN_CHANNELS = (8, 16, 24, 32, 40)
CNN_HIDDEN = 128
RESNET_FEATURES = 2048


class PixelScaling(nn.Module):
    """x in [0, 255] -> (x / 255 - mean) / std per channel (buffers, not trainable)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x / 255.0 - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={tuple(self.mean.flatten().tolist())}, std={tuple(self.std.flatten().tolist())}"


class SimpleCNN(nn.Module):
    """Five [3x3 conv (padding 1) -> ReLU -> 2x2 max-pool -> dropout] blocks, FC 128 (dropout), FC C."""

    def __init__(
        self, num_classes: int, image_size: int, conv_dropout: float = 0.1, fc_dropout: float = 0.5
    ) -> None:
        super().__init__()
        self.scale = PixelScaling((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
        layers: list[nn.Module] = []
        in_channels = 3
        for out_channels in CNN_CHANNELS:
            layers += [
                nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Dropout(conv_dropout),
            ]
            in_channels = out_channels
        self.features = nn.Sequential(*layers)
        side = image_size
        for _ in CNN_CHANNELS:
            side //= 2  # each max-pool floors, like Keras' "valid" pooling
        if side < 1:
            raise UserError(f"Image size {image_size} is too small for five 2x2 poolings; use at least 32.")
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(CNN_CHANNELS[-1] * side * side, CNN_HIDDEN),
            nn.ReLU(),
            nn.Dropout(fc_dropout),
            nn.Linear(CNN_HIDDEN, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(self.scale(x)))

    def summary_units(self) -> list[tuple[str, nn.Module]]:
        return [
            ("scale", self.scale),
            *((f"features.{n}", m) for n, m in self.features.named_children()),
            *((f"classifier.{n}", m) for n, m in self.classifier.named_children()),
        ]


class FrozenBackboneClassifier(nn.Module):
    """A frozen feature extractor (always in eval mode, no gradients) followed by a trainable head."""

    def __init__(self, backbone: nn.Module, head: nn.Module, scale: PixelScaling) -> None:
        super().__init__()
        self.scale = scale
        self.backbone = backbone
        self.head = head
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.backbone.eval()

    def train(self, mode: bool = True) -> FrozenBackboneClassifier:
        super().train(mode)
        self.backbone.eval()  # frozen means frozen batch-norm statistics too, so features can be cached
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.scale(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def summary_units(self) -> list[tuple[str, nn.Module]]:
        return [
            ("scale", self.scale),
            *((f"backbone.{n}", m) for n, m in self.backbone.named_children()),
            *((f"head.{n}", m) for n, m in self.head.named_children()),
        ]


# --- ResNet50 weights -----------------------------------------------------------------------------


@dataclass(frozen=True)
class BackboneWeights:
    """What the backbone is initialised from, resolved from train.resnet50.weights."""

    used: str  # recorded everywhere: "imagenet", "random" (auto without ImageNet), "none", or a file path
    file: Path | None  # state-dict file to load; None = random initialisation
    identity: str  # feature-cache key part: which weights exactly (file name or content hash)

    @property
    def is_random(self) -> bool:
        return self.file is None

    @property
    def sha256(self) -> str:
        """Content hash of the weights file ("" for a random initialisation)."""
        return "" if self.file is None else _file_sha256(*_file_identity(self.file))


def imagenet_checkpoint_path() -> Path:
    """Where torchvision keeps ResNet50's ImageNet weights: $TORCH_HOME/hub/checkpoints/resnet50-*.pth."""
    from torchvision.models import ResNet50_Weights

    url = ResNet50_Weights.IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def _offline() -> bool:
    return any(os.environ.get(k, "") not in ("", "0") for k in ("HF_HUB_OFFLINE", "TORCH_HUB_OFFLINE"))


def resolve_resnet_weights(setting: str) -> BackboneWeights:
    """imagenet | none | auto | path -> the weights actually used. Fails before any training."""
    checkpoint = imagenet_checkpoint_path()
    if setting == "none":
        return BackboneWeights("none", None, "random-init")
    if setting == "auto":
        # auto never downloads: ImageNet only when torchvision's cache already has it.
        if checkpoint.exists():
            return BackboneWeights("imagenet", checkpoint, f"imagenet:{checkpoint.name}")
        return BackboneWeights("random", None, "random-init")
    if setting == "imagenet":
        if not checkpoint.exists():
            _download_imagenet(checkpoint)
        return BackboneWeights("imagenet", checkpoint, f"imagenet:{checkpoint.name}")
    path = Path(setting)
    if not path.is_file():
        raise UserError(
            f"train.resnet50.weights is '{setting}', but there is no such file. Give the path of a "
            "ResNet50 state-dict file (torch.save(model.state_dict(), ...)), or use imagenet, none or auto."
        )
    return BackboneWeights(str(path), path, f"file:{_file_sha256(*_file_identity(path))}")


def _file_identity(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns


# A study builds the same frozen backbone for every run: read and hash a weights file once per process
# (keyed by path, size and mtime, so a replaced file is read again).
@functools.lru_cache(maxsize=4)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    from synthmix.files import sha256_file

    return sha256_file(Path(path))


def _read_state_dict(path: Path) -> dict:
    # Read once per process: the trunk it fills is cached (_resnet50_backbone) and keeps its tensors.
    return torch.load(path, map_location="cpu", weights_only=True)


def _download_imagenet(checkpoint: Path) -> None:
    how_to = (
        f"Put torchvision's ResNet50 ImageNet file at {checkpoint} (download "
        f"https://download.pytorch.org/models/{checkpoint.name} on a machine with internet; TORCH_HOME "
        "moves the folder), or set train.resnet50.weights to auto, none, or a state-dict file."
    )
    if _offline():
        raise UserError(
            f"train.resnet50.weights is imagenet, but the weights are not cached and downloads are "
            f"off (HF_HUB_OFFLINE/TORCH_HUB_OFFLINE). {how_to}"
        )
    from torchvision.models import ResNet50_Weights

    try:
        ResNet50_Weights.IMAGENET1K_V1.get_state_dict(progress=False)  # torchvision's own cache
    except Exception as exc:  # any network failure ends the same way: tell the user where the file goes
        raise UserError(
            f"train.resnet50.weights is imagenet, but the weights could not be downloaded ({exc}). {how_to}"
        ) from None


def _load_backbone_state(backbone: nn.Module, file: Path) -> None:
    try:
        state = _read_state_dict(file)
    except Exception as exc:
        raise UserError(
            f"ResNet50 weights file {file} cannot be read as a state dict ({exc}). Save it with "
            "torch.save(model.state_dict(), path)."
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    backbone_state = {k: v for k, v in state.items() if not k.startswith("fc.")}  # the head is replaced
    result = backbone.load_state_dict(backbone_state, strict=False, assign=True)
    missing = [k for k in result.missing_keys if not k.startswith("fc.")]
    if missing or result.unexpected_keys:
        raise UserError(
            f"{file} is not a torchvision ResNet50 state dict: missing {missing[:3]}, unexpected "
            f"{list(result.unexpected_keys)[:3]}. Use a state dict saved from torchvision.models.resnet50."
        )


# --- the frozen backbone, built once per process --------------------------------------------------


@functools.lru_cache(maxsize=8)
def _resnet50_backbone(weights: BackboneWeights, seed: int) -> tuple[nn.Module, torch.Tensor]:
    """The frozen ResNet50 trunk for `weights` (and `seed`, when random), and the RNG state a fresh
    build leaves behind, so the head drawn after it is the same whether the trunk was cached or not.

    A weights file is loaded onto a trunk built on the meta device (no random initialisation to throw
    away) with load_state_dict(assign=True); a random trunk is drawn from `seed`.
    """
    from torchvision.models import resnet50

    if weights.file is None:
        torch.manual_seed(seed)
        backbone = resnet50(weights=None)
    else:
        with torch.device("meta"):
            backbone = resnet50(weights=None)
        _load_backbone_state(backbone, weights.file)
    rng_after = torch.get_rng_state()
    backbone.fc = nn.Identity()
    for p in backbone.parameters():
        p.requires_grad_(False)
    return backbone.eval(), rng_after


def resnet50_backbone(weights: BackboneWeights, seed: int) -> nn.Module:
    """The shared frozen trunk; leaves torch's RNG where a fresh build with `seed` would."""
    if not weights.is_random:
        backbone, _ = _resnet50_backbone(weights, 0)  # one trunk for every seed
        torch.manual_seed(seed)
        return backbone
    backbone, rng_after = _resnet50_backbone(weights, seed)
    torch.set_rng_state(rng_after)
    return backbone


def build_cnn(
    num_classes: int, image_size: int, dropout: float, section: Any, weights: BackboneWeights, seed: int
) -> nn.Module:
    """The study's CNN, every weight drawn from `seed`."""
    torch.manual_seed(seed)
    return SimpleCNN(num_classes, image_size, conv_dropout=section.conv_dropout, fc_dropout=dropout)


def build_resnet50(
    num_classes: int, image_size: int, dropout: float, section: Any, weights: BackboneWeights, seed: int
) -> nn.Module:
    """torchvision's ResNet50, frozen and shared, its fc replaced by [dropout ->] Linear(2048, C)."""
    backbone = resnet50_backbone(weights, seed)
    head = nn.Sequential(nn.Dropout(dropout), nn.Linear(RESNET_FEATURES, num_classes))
    return FrozenBackboneClassifier(backbone, head, PixelScaling(IMAGENET_MEAN, IMAGENET_STD))


def random_weights(section: Any) -> BackboneWeights:
    return BackboneWeights("random", None, "random-init")


def resnet_weights(section: Any) -> BackboneWeights:
    return resolve_resnet_weights(section.weights)


# --- the registry: adding a backbone is one entry here (and its params.yaml section) -----------------


@dataclass(frozen=True)
class ModelEntry:
    """Everything synthmix needs to know about a classifier; nothing else branches on its name."""

    name: str  # also its train.<name> section in params.yaml
    label: str  # how the report names it
    build: Callable[[int, int, float, Any, BackboneWeights, int], nn.Module]
    weights: Callable[[Any], BackboneWeights]  # what it starts from, resolved from its params section
    preprocessing: str  # what its first layer does to pixels in [0, 255]
    frozen_backbone: bool  # True: a frozen feature extractor and a trained head (features are cached)

    @property
    def trained_from_scratch(self) -> bool:
        return not self.frozen_backbone

    def trainable_parameters(self, num_classes: int, image_size: int) -> int:
        return trainable_parameters(self.create(num_classes, image_size))

    def create(self, num_classes: int, image_size: int, seed: int = 0) -> nn.Module:
        """A model with random weights and its default settings, for summaries (no weights file needed)."""
        section = TrainConfig().model_section(self.name)
        return self.build(num_classes, image_size, section.dropout, section, random_weights(section), seed)


MODELS: dict[str, ModelEntry] = {
    entry.name: entry
    for entry in (
        ModelEntry("cnn", "CNN", build_cnn, random_weights, "x/255", frozen_backbone=False),
        ModelEntry(
            "resnet50",
            "ResNet50",
            build_resnet50,
            resnet_weights,
            "x/255, ImageNet mean/std",
            frozen_backbone=True,
        ),
    )
}


def model_entry(name: str, key: str = "--model") -> ModelEntry:
    if name not in MODELS:
        raise UserError(f"Unknown model '{name}' ({key}). synthmix trains: {', '.join(MODELS)}.")
    return MODELS[name]


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


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


def weights_from_used(used: str) -> BackboneWeights:
    """The weights a run recorded as used ("random", "none", "imagenet" or a file), resolved again."""
    if used in ("random", "none"):
        return BackboneWeights(used, None, "random-init")
    return resolve_resnet_weights(used)

"""Frozen backbones: what their weights are (BackboneWeights), where torchvision's ImageNet weights come
from, and the trunk each is built into once per process.

A setting resolves before any training to the weights actually used, recorded in every run and the
report: pretrained only when the weights are there (a local file or cache), else, for `auto`, a random
initialisation that is called "random", never passed off as pretrained.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from synthmix.core.errors import UserError
from synthmix.models.layers import FrozenBackboneClassifier, PixelScaling, linear_head

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESNET_FEATURES = 2048
VIT_FEATURES = 768
VIT_IMAGE_SIZE = 224  # ViT-B/16's ImageNet weights: a 14x14 patch grid, so 224 px in
RANDOM_USED = ("random", "none")  # `used` of a random initialisation: auto without weights, or none


@dataclass(frozen=True)
class BackboneWeights:
    """What a backbone is initialised from, resolved from its train.<model> section."""

    used: str  # recorded everywhere: "imagenet", "random" (auto without weights), "none", a file, a model
    file: Path | None  # weights file to load; None = random initialisation
    identity: str  # feature-cache key part: which weights exactly (file name or content hash)
    arch: str = ""  # which network, where the model names one (a timm name, a transformers directory)

    @property
    def is_random(self) -> bool:
        return self.file is None

    @property
    def sha256(self) -> str:
        """Content hash of the weights file ("" for a random initialisation)."""
        return "" if self.file is None else file_sha256(self.file)


def random_init(used: str = "random", arch: str = "", identity: str = "random-init") -> BackboneWeights:
    return BackboneWeights(used, None, identity, arch)


def offline() -> bool:
    return any(os.environ.get(k, "") not in ("", "0") for k in ("HF_HUB_OFFLINE", "TORCH_HUB_OFFLINE"))


def _file_identity(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns


# A study builds the same frozen backbone for every run: read and hash a weights file once per process
# (keyed by path, size and mtime, so a replaced file is read again).
@functools.lru_cache(maxsize=8)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    from synthmix.core.files import sha256_file

    return sha256_file(Path(path))


def file_sha256(path: Path) -> str:
    return _file_sha256(*_file_identity(path))


# --- torchvision's backbones: resnet50 and vit_b_16 -----------------------------------------------


@dataclass(frozen=True)
class Torchvision:
    """One torchvision backbone: its constructor, its ImageNet weights and its classifier's keys."""

    model: str  # also its train.<model> section
    label: str
    weights_enum: str  # the torchvision.models enum whose IMAGENET1K_V1 the `imagenet` setting means
    head_prefix: str  # the classifier's state-dict keys, dropped: the head is replaced

    def imagenet(self) -> Any:
        import torchvision.models

        return getattr(torchvision.models, self.weights_enum).IMAGENET1K_V1

    def trunk(self) -> nn.Module:
        import torchvision.models

        net = getattr(torchvision.models, self.model)(weights=None)
        setattr(net, self.head_prefix.rstrip("."), nn.Identity())
        return net


RESNET50 = Torchvision("resnet50", "ResNet50", "ResNet50_Weights", "fc.")
VIT_B_16 = Torchvision("vit_b_16", "ViT-B/16", "ViT_B_16_Weights", "heads.")
_TORCHVISION = {tv.model: tv for tv in (RESNET50, VIT_B_16)}


def imagenet_checkpoint_path(model: str = "resnet50") -> Path:
    """Where torchvision keeps a model's ImageNet weights: $TORCH_HOME/hub/checkpoints/<file>.pth."""
    url = _TORCHVISION[model].imagenet().url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def resolve_torchvision_weights(model: str, setting: str) -> BackboneWeights:
    """imagenet | none | auto | path -> the weights actually used. Fails before any training."""
    tv = _TORCHVISION[model]
    checkpoint = imagenet_checkpoint_path(model)
    if setting in RANDOM_USED:
        return random_init(setting)
    if setting == "auto":
        # auto never downloads: ImageNet only when torchvision's cache already has it.
        if checkpoint.exists():
            return BackboneWeights("imagenet", checkpoint, f"imagenet:{checkpoint.name}")
        return random_init()
    if setting == "imagenet":
        if not checkpoint.exists():
            _download_imagenet(tv, checkpoint)
        return BackboneWeights("imagenet", checkpoint, f"imagenet:{checkpoint.name}")
    path = Path(setting)
    if not path.is_file():
        raise UserError(
            f"train.{model}.weights is '{setting}', but there is no such file. Give the path of a "
            f"{tv.label} state-dict file (torch.save(model.state_dict(), ...)), or use imagenet, none or auto."
        )
    return BackboneWeights(str(path), path, f"file:{file_sha256(path)}")


def resolve_resnet_weights(setting: str) -> BackboneWeights:
    return resolve_torchvision_weights("resnet50", setting)


def _download_imagenet(tv: Torchvision, checkpoint: Path) -> None:
    how_to = (
        f"Put torchvision's {tv.label} ImageNet file at {checkpoint} (download "
        f"https://download.pytorch.org/models/{checkpoint.name} on a machine with internet; TORCH_HOME "
        f"moves the folder), or set train.{tv.model}.weights to auto, none, or a state-dict file."
    )
    if offline():
        raise UserError(
            f"train.{tv.model}.weights is imagenet, but the weights are not cached and downloads are "
            f"off (HF_HUB_OFFLINE/TORCH_HUB_OFFLINE). {how_to}"
        )
    try:
        tv.imagenet().get_state_dict(progress=False)  # torchvision's own cache
    except Exception as exc:  # any network failure ends the same way: tell the user where the file goes
        raise UserError(
            f"train.{tv.model}.weights is imagenet, but the weights could not be downloaded ({exc}). {how_to}"
        ) from None


def _read_state_dict(path: Path) -> dict:
    # Read once per process: the trunk it fills is cached (_frozen_trunk) and keeps its tensors.
    return torch.load(path, map_location="cpu", weights_only=True)


def _load_torchvision_state(tv: Torchvision, backbone: nn.Module, file: Path) -> None:
    try:
        state = _read_state_dict(file)
    except Exception as exc:
        raise UserError(
            f"{tv.label} weights file {file} cannot be read as a state dict ({exc}). Save it with "
            "torch.save(model.state_dict(), path)."
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    backbone_state = {k: v for k, v in state.items() if not k.startswith(tv.head_prefix)}
    result = backbone.load_state_dict(backbone_state, strict=False, assign=True)
    missing = [k for k in result.missing_keys if not k.startswith(tv.head_prefix)]
    if missing or result.unexpected_keys:
        raise UserError(
            f"{file} is not a torchvision {tv.label} state dict: missing {missing[:3]}, unexpected "
            f"{list(result.unexpected_keys)[:3]}. Use a state dict saved from torchvision.models.{tv.model}."
        )


def _torchvision_trunk(model: str, weights: BackboneWeights) -> nn.Module:
    """A weights file is loaded onto a trunk built on the meta device (no random initialisation to
    throw away) with load_state_dict(assign=True); a random trunk is drawn from torch's RNG."""
    tv = _TORCHVISION[model]
    if weights.file is None:
        return tv.trunk()
    with torch.device("meta"):
        trunk = tv.trunk()
    _load_torchvision_state(tv, trunk, weights.file)
    return trunk


# --- the frozen trunk, built once per process -----------------------------------------------------

Maker = Callable[[BackboneWeights], nn.Module]


@functools.lru_cache(maxsize=8)
def _frozen_trunk(make: Maker, weights: BackboneWeights, seed: int) -> tuple[nn.Module, torch.Tensor]:
    """The frozen trunk `make` builds for `weights` (and `seed`, when random), and the RNG state a fresh
    build leaves behind, so the head drawn after it is the same whether the trunk was cached or not."""
    if weights.is_random:
        torch.manual_seed(seed)
    trunk = make(weights)
    rng_after = torch.get_rng_state()
    for p in trunk.parameters():
        p.requires_grad_(False)
    return trunk.eval(), rng_after


_resnet50_backbone = _frozen_trunk  # the name tests and benches clear the cache by


def shared_trunk(make: Maker, weights: BackboneWeights, seed: int) -> nn.Module:
    """The shared frozen trunk; leaves torch's RNG where a fresh build with `seed` would."""
    if not weights.is_random:
        trunk, _ = _frozen_trunk(make, weights, 0)  # one trunk for every seed
        torch.manual_seed(seed)
        return trunk
    trunk, rng_after = _frozen_trunk(make, weights, seed)
    torch.set_rng_state(rng_after)
    return trunk


def _resnet50_trunk(weights: BackboneWeights) -> nn.Module:
    return _torchvision_trunk("resnet50", weights)


def _vit_b_16_trunk(weights: BackboneWeights) -> nn.Module:
    return _torchvision_trunk("vit_b_16", weights)


def resnet50_backbone(weights: BackboneWeights, seed: int) -> nn.Module:
    return shared_trunk(_resnet50_trunk, weights, seed)


def build_resnet50(
    num_classes: int, image_size: int, dropout: float, section: Any, weights: BackboneWeights, seed: int
) -> nn.Module:
    """torchvision's ResNet50, frozen and shared, its fc replaced by [dropout ->] Linear(2048, C)."""
    backbone = resnet50_backbone(weights, seed)
    head = linear_head(RESNET_FEATURES, num_classes, dropout)
    return FrozenBackboneClassifier(backbone, head, PixelScaling(IMAGENET_MEAN, IMAGENET_STD))


def build_vit_b_16(
    num_classes: int, image_size: int, dropout: float, section: Any, weights: BackboneWeights, seed: int
) -> nn.Module:
    """torchvision's ViT-B/16, frozen and shared, its heads replaced by [dropout ->] Linear(768, C).

    Its position embeddings are a 14x14 grid, the 224 px its ImageNet weights were trained at, so the
    preprocessing layer resizes every image to 224 px (interpolating the embeddings to another grid
    instead would feed the pretrained weights a geometry they never saw)."""
    backbone = shared_trunk(_vit_b_16_trunk, weights, seed)
    head = linear_head(VIT_FEATURES, num_classes, dropout)
    return FrozenBackboneClassifier(backbone, head, PixelScaling(IMAGENET_MEAN, IMAGENET_STD, VIT_IMAGE_SIZE))


def torchvision_weights(
    model: str,
) -> tuple[Callable[[Any], BackboneWeights], Callable[[str, str], BackboneWeights]]:
    """The registry's two weight functions for a torchvision backbone: from its section, and from what a
    run recorded as used."""

    def from_section(section: Any) -> BackboneWeights:
        return resolve_torchvision_weights(model, section.weights)

    def from_used(used: str, arch: str) -> BackboneWeights:
        return resolve_torchvision_weights(model, used)

    return from_section, from_used


def with_arch(weights: BackboneWeights, arch: str) -> BackboneWeights:
    return weights if weights.arch else replace(weights, arch=arch)

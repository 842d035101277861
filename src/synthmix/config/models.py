"""The train.<model> sections of params.yaml: one `ModelSection` subclass per model synthmix trains.

config.TrainConfig holds one field per section; the field's name is the model's name (MODEL_NAMES).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar, Literal

from synthmix.config.types import Fraction, NonNegativeFloat, PositiveFloat, PositiveInt, Section, _require

RESNET_WEIGHTS_KEYWORDS = ("imagenet", "none", "auto")  # torchvision backbones: resnet50, vit_b_16
TIMM_WEIGHTS_KEYWORDS = ("pretrained", "none", "auto")


class ModelSection(Section):
    """What every train.<model> section holds. A new backbone is a subclass and a TrainConfig field."""

    dropout_field: ClassVar[str]  # the field with the dropout before the classifier head
    lr: PositiveFloat
    weight_decay: NonNegativeFloat
    epochs: PositiveInt

    @property
    def dropout(self) -> float:
        """The dropout before the classifier head: the one the head uses and the search replaces."""
        return getattr(self, self.dropout_field)

    @property
    def searched_fields(self) -> tuple[str, ...]:
        """The fields a tuned entry replaces; the others stay as params.yaml sets them."""
        return ("lr", "weight_decay", "epochs", self.dropout_field)


class CNNConfig(ModelSection):
    dropout_field = "fc_dropout"
    lr: PositiveFloat = 0.001  # study: 0.0075 (128 px); at 32 px on the digits 0.0075 never leaves chance
    weight_decay: NonNegativeFloat = 1e-4
    epochs: PositiveInt = 50
    conv_dropout: Fraction = 0.1
    fc_dropout: Fraction = 0.5


def _weights_setting(keywords: tuple[str, ...], example: str) -> object:
    """A weights setting: one of `keywords` or the path of a state-dict file (a name with a suffix)."""
    reason = f"use {', '.join(keywords)}, or the path of a state-dict file (e.g. {example})."
    return _require(lambda v: v in keywords or bool(Path(v).suffix), reason)


TorchvisionWeights = Annotated[str, _weights_setting(RESNET_WEIGHTS_KEYWORDS, "weights/resnet50.pth")]


class FrozenBackboneSection(ModelSection):
    """A frozen backbone with a new head: only the head trains, with its own dropout before it."""

    dropout_field = "head_dropout"
    lr: PositiveFloat = 0.001
    weight_decay: NonNegativeFloat = 0.001
    epochs: PositiveInt = 20
    head_dropout: Fraction = 0.0  # dropout before the new classification head (the study used none)


class ResNetConfig(FrozenBackboneSection):
    weights: TorchvisionWeights = "auto"  # imagenet | none | auto | path to a state-dict file


class ViTConfig(FrozenBackboneSection):
    """torchvision's ViT-B/16, frozen, with a new head; images are resized to its 224 px."""

    weights: Annotated[str, _weights_setting(RESNET_WEIGHTS_KEYWORDS, "weights/vit_b_16.pth")] = "auto"


class TimmConfig(FrozenBackboneSection):
    """Any timm model by name, frozen (num_classes=0 gives its features), with a new head."""

    name: Annotated[str, _require(bool, "name a timm model, e.g. resnet18.")] = "resnet18"
    # pretrained: timm's published weights, from the local Hugging Face cache only | none | auto (pretrained
    # when cached, else random init) | path to a state-dict file
    weights: Annotated[str, _weights_setting(TIMM_WEIGHTS_KEYWORDS, "weights/resnet18.safetensors")] = "auto"


class EncoderConfig(FrozenBackboneSection):
    """A frozen transformers image encoder probed linearly: a new head on its pooled embedding."""

    model: Annotated[str, _require(bool, "give a Hugging Face hub id or a local directory.")]
    weight_decay: NonNegativeFloat = 0.0
    # pretrained: from_pretrained(model), a local directory or the local hub cache | none | auto
    # (pretrained when available locally, else a randomly initialised encoder of the default config)
    weights: Literal["pretrained", "none", "auto"] = "auto"


class CLIPConfig(EncoderConfig):
    model: Annotated[str, _require(bool, "give a Hugging Face hub id or a local directory.")] = (
        "openai/clip-vit-base-patch32"
    )


class DINOv2Config(EncoderConfig):
    model: Annotated[str, _require(bool, "give a Hugging Face hub id or a local directory.")] = (
        "facebook/dinov2-base"
    )

"""The train.<model> sections of params.yaml: one `ModelSection` subclass per model synthmix trains.

config.TrainConfig holds one field per section; the field's name is the model's name (MODEL_NAMES).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar, Literal

from synthmix.config_types import Fraction, NonNegativeFloat, PositiveFloat, PositiveInt, Section, _require

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


class ResNetConfig(ModelSection):
    dropout_field = "head_dropout"
    lr: PositiveFloat = 0.001
    weight_decay: NonNegativeFloat = 0.001
    epochs: PositiveInt = 20
    weights: TorchvisionWeights = "auto"  # imagenet | none | auto | path to a state-dict file
    head_dropout: Fraction = 0.0  # dropout before the new classification head (the study used none)


class ViTConfig(ModelSection):
    """torchvision's ViT-B/16, frozen, with a new head; images are resized to its 224 px."""

    dropout_field = "head_dropout"
    lr: PositiveFloat = 0.001
    weight_decay: NonNegativeFloat = 0.001
    epochs: PositiveInt = 20
    weights: Annotated[str, _weights_setting(RESNET_WEIGHTS_KEYWORDS, "weights/vit_b_16.pth")] = "auto"
    head_dropout: Fraction = 0.0


class TimmConfig(ModelSection):
    """Any timm model by name, frozen (num_classes=0 gives its features), with a new head."""

    dropout_field = "head_dropout"
    name: Annotated[str, _require(bool, "name a timm model, e.g. resnet18.")] = "resnet18"
    lr: PositiveFloat = 0.001
    weight_decay: NonNegativeFloat = 0.001
    epochs: PositiveInt = 20
    # pretrained: timm's published weights, from the local Hugging Face cache only | none | auto (pretrained
    # when cached, else random init) | path to a state-dict file
    weights: Annotated[str, _weights_setting(TIMM_WEIGHTS_KEYWORDS, "weights/resnet18.safetensors")] = "auto"
    head_dropout: Fraction = 0.0


class EncoderConfig(ModelSection):
    """A frozen transformers image encoder probed linearly: a new head on its pooled embedding."""

    dropout_field = "head_dropout"
    model: Annotated[str, _require(bool, "give a Hugging Face hub id or a local directory.")]
    lr: PositiveFloat = 0.001
    weight_decay: NonNegativeFloat = 0.0
    epochs: PositiveInt = 20
    # pretrained: from_pretrained(model), a local directory or the local hub cache | none | auto
    # (pretrained when available locally, else a randomly initialised encoder of the default config)
    weights: Literal["pretrained", "none", "auto"] = "auto"
    head_dropout: Fraction = 0.0


class CLIPConfig(EncoderConfig):
    model: Annotated[str, _require(bool, "give a Hugging Face hub id or a local directory.")] = (
        "openai/clip-vit-base-patch32"
    )


class DINOv2Config(EncoderConfig):
    model: Annotated[str, _require(bool, "give a Hugging Face hub id or a local directory.")] = (
        "facebook/dinov2-base"
    )

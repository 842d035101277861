"""The study's simple CNN: 117,034 trainable parameters at 128 px and 90 classes."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from synthmix.core.errors import UserError
from synthmix.models.backbones import BackboneWeights
from synthmix.models.layers import PixelScaling

CNN_CHANNELS = (8, 16, 24, 32, 40)
CNN_HIDDEN = 128


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


def build_cnn(
    num_classes: int, image_size: int, dropout: float, section: Any, weights: BackboneWeights, seed: int
) -> nn.Module:
    """The study's CNN, every weight drawn from `seed`."""
    torch.manual_seed(seed)
    return SimpleCNN(num_classes, image_size, conv_dropout=section.conv_dropout, fc_dropout=dropout)

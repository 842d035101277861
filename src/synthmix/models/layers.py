"""The pieces every classifier is built from: its pixel preprocessing and the frozen-backbone wrapper.

Every model takes float pixels in [0, 255], shape (N, 3, S, S) (a uint8 image batch cast to float) and
does its own input preprocessing as its first layer, so a model logged to MLflow needs nothing else to
be used.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional


class PixelScaling(nn.Module):
    """x in [0, 255] -> (x / 255 - mean) / std per channel (buffers, not trainable); with `size`, then
    resized (bilinear, antialiased) to size x size when the input has another size: the resolution a
    pretrained backbone was trained at, which the study's smaller images are scaled up to."""

    size: int | None = None  # a class default too: a CNN pickled before `size` existed still loads

    def __init__(self, mean: Sequence[float], std: Sequence[float], size: int | None = None) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x / 255.0 - self.mean) / self.std
        if self.size is not None and tuple(x.shape[-2:]) != (self.size, self.size):
            x = functional.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True)
        return x

    def extra_repr(self) -> str:
        text = f"mean={tuple(self.mean.flatten().tolist())}, std={tuple(self.std.flatten().tolist())}"
        return text + (f", resized to {self.size}x{self.size}" if self.size is not None else "")


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


def linear_head(features: int, num_classes: int, dropout: float) -> nn.Sequential:
    """The new head of every frozen backbone: [dropout ->] Linear(features, C)."""
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(features, num_classes))


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

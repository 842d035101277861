"""The reference classifier: the study's CNN trained on the real training images alone.

It never sees a synthetic image, the generator's pool or the test split, so its verdict on a synthetic
image is a real-data opinion of which class the image shows: the classifier-agreement filter rejects an
image it assigns to another class, or to its own with a probability below the threshold. Its penultimate
layer (the CNN's 128-unit hidden layer) is the feature space the quality measures fall back to when no
pretrained encoder is on the machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from synthmix.config.compute import Compute, cpu_compute
from synthmix.config.hparams import fixed_hyperparameters
from synthmix.config.params import TrainConfig
from synthmix.data.images import LabelledImages
from synthmix.train.fit import EVAL_BATCH, FitResult, fit, single_thread

REFERENCE_MODEL = "cnn"


@dataclass(frozen=True)
class Verdicts:
    """Per image: the reference classifier's class (`predicted`) and its probability of the image's
    own label (`confidence`)."""

    predicted: np.ndarray  # int, (N,)
    confidence: np.ndarray  # float, (N,)

    def rejected(self, labels: np.ndarray, min_confidence: float) -> np.ndarray:
        """Images assigned to another class, or to their own below `min_confidence`."""
        return (self.predicted != labels) | (self.confidence < min_confidence)


def train_reference(
    real: LabelledImages, num_classes: int, cfg: TrainConfig, seed: int, compute: Compute | None = None
) -> FitResult:
    """The CNN on the real training images, with the study's fixed CNN hyperparameters (train.cnn);
    reported on its own training images: nothing else is held out for it. Trained on `compute`."""
    hp = fixed_hyperparameters(REFERENCE_MODEL, cfg)
    return fit(
        REFERENCE_MODEL, real, real, hp, seed=seed, num_classes=num_classes, train_cfg=cfg, compute=compute
    )


def _hidden(model: nn.Module) -> nn.Module:
    """The CNN up to its last hidden layer: everything but the final linear layer."""
    return nn.Sequential(model.scale, model.features, *list(model.classifier)[:-1])


def features_and_verdicts(
    model: nn.Module, images: LabelledImages, compute: Compute | None = None
) -> tuple[np.ndarray, Verdicts]:
    """The hidden-layer features (N, 128) and the verdicts on `images` (their labels as the own class),
    computed on `compute`'s device under its autocast (the model goes there and comes back)."""
    compute = compute or cpu_compute()
    hidden, head = _hidden(model), list(model.classifier)[-1]
    model.to(compute.device).eval()
    feats, logits = [], []
    with single_thread(), torch.inference_mode(), compute.autocast():
        for chunk in images.images.split(EVAL_BATCH):
            h = hidden(chunk.to(compute.device, torch.float32))
            feats.append(h.float().cpu())
            logits.append(head(h).float().cpu())
    model.cpu()
    if not feats:
        return np.zeros((0, 0)), Verdicts(np.zeros(0, dtype=int), np.zeros(0))
    probs = torch.cat(logits).softmax(1)
    own = probs[torch.arange(len(images)), images.labels]
    return torch.cat(feats).numpy().astype(np.float64), Verdicts(probs.argmax(1).numpy(), own.numpy())

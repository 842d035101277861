"""The frozen backbone's feature cache: each unique image's features computed once per backbone.

A frozen backbone (models.ModelEntry.frozen_backbone) gives the same features for an image in every
epoch, mix and run, so its head trains on cached features. The cache key holds everything the features
depend on: the backbone, its exact weights (or random seed), the input size and the preprocessing.
Each entry is checked when read (images.read_cache_entry: float32, the backbone's feature length, all
finite); a bad one is deleted and computed again, with a warning naming it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from synthmix.config.compute import Compute, cpu_compute
from synthmix.config.params import TrainConfig
from synthmix.core.files import sha256_json, write_array
from synthmix.core.progress import progress
from synthmix.data.images import LabelledImages, read_cache_entry
from synthmix.models import MODELS, BackboneWeights, FrozenBackboneClassifier

FEATURE_BATCH = 64


def feature_cache_key(
    model: str, weights: BackboneWeights, seed: int, image_size: int, compute: Compute | None = None
) -> str:
    """Backbone, exact weights, input size and preprocessing: everything the features depend on; and
    the device and precision, except on the CPU in float32 (whose keys are what they always were)."""
    import torchvision

    entry = MODELS[model]
    spec = {
        "backbone": f"{entry.library}.{entry.name}",
        # a random trunk's identity names its network (e.g. the timm model) and the seed draws it
        "weights": weights.identity if not weights.is_random else f"{weights.identity}:seed{seed}",
        "image_size": image_size,
        "preprocessing": f"{entry.preprocessing}, no augmentation",
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
    }
    identity = (compute or cpu_compute()).identity
    if identity is not None:  # a GPU's features differ from the CPU's in the last bits: kept apart
        spec["compute"] = identity
    return sha256_json(spec)[:20]


def cached_feature_path(cache_dir: Path, key: str, sha256: str) -> Path:
    return cache_dir / "features" / key / sha256[:2] / f"{sha256}.npy"


def backbone_features(
    model: FrozenBackboneClassifier,
    images: LabelledImages,
    cache_dir: Path,
    key: str,
    compute: Compute | None = None,
) -> torch.Tensor:
    """The backbone's features of every image (N, D), computed once per unique image and cached; on
    `compute`'s device (where `model` is) and under its autocast, returned float32 on the CPU."""
    compute = compute or cpu_compute()
    features: dict[str, np.ndarray] = {}
    todo: dict[str, int] = {}
    length = model.head[-1].in_features
    for i, sha in enumerate(images.keys):
        if sha in features or sha in todo:
            continue
        path = cached_feature_path(cache_dir, key, sha)
        cached = read_cache_entry(path, np.float32, (length,), "computing these features again")
        if cached is not None:
            features[sha] = cached
        else:
            todo[sha] = i
    if todo:
        rows = torch.tensor(list(todo.values()), dtype=torch.long)
        model.eval()
        with torch.inference_mode(), compute.autocast():
            computed = torch.cat(
                [
                    model.features(images.images[chunk].to(compute.device, torch.float32)).float().cpu()
                    for chunk in progress(
                        rows.split(FEATURE_BATCH), f"Backbone features ({len(todo)} images)"
                    )
                ]
            ).numpy()
        for sha, row in zip(todo, computed, strict=True):
            target = cached_feature_path(cache_dir, key, sha)
            write_array(row, target)
            features[sha] = row
    if not images.keys:
        return torch.zeros(0, length)
    return torch.from_numpy(np.stack([features[sha] for sha in images.keys]))


def precompute_features(
    model: str,
    seeds: Sequence[int],
    image_sets: Sequence[LabelledImages],
    num_classes: int,
    cfg: TrainConfig,
    compute: Compute | None = None,
) -> None:
    """Cache a frozen backbone's features of every image in `image_sets` for each seed's backbone.

    The train stage calls this once, in the main process with every core, before handing runs out to
    workers, which then find every feature they need under the same cache key. On `compute`'s device.
    """
    compute = compute or cpu_compute()
    entry = MODELS[model]
    section = cfg.model_section(model)
    weights = entry.weights(section)
    image_size = int(image_sets[0].images.shape[-1]) if image_sets else cfg.image_size
    for seed in dict.fromkeys(seeds if weights.is_random else seeds[:1]):
        built = entry.build(num_classes, image_size, 0.0, section, weights, seed).to(compute.device)
        key = feature_cache_key(model, weights, seed, image_size, compute)
        for images in image_sets:
            backbone_features(built, images, cfg.cache_dir, key, compute)

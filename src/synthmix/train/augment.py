"""train.augment's policy (torchvision.transforms.v2) and the two ways the study uses it.

The augmentation control asks whether synthetic images beat plain augmentation, so augmentation must
be as reproducible as everything else. Every image is transformed under torch's RNG seeded by its
own seed, in a forked RNG: an augmented copy (<N>r<K>a) depends only on its source image, its seed
and the policy, never on which images share its batch or mix, so mixes stay nested and copies can be
cached under `policy_digest`; on-the-fly augmentation (+aug) draws each image's seed from a generator
the run owns, so a run replays exactly; and the caller's RNG (initialisation, dropout) is untouched.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from synthmix.config.params import AugmentConfig
from synthmix.core.files import sha256_json
from synthmix.data.images import LabelledImages

if TYPE_CHECKING:
    from torchvision.transforms import v2

# Raise when build_policy changes what a policy does with the same settings: it is part of the digest.
POLICY_VERSION = 1
SEED_BOUND = 2**63 - 1  # seeds drawn by augment_batch lie in [0, SEED_BOUND)


def build_policy(cfg: AugmentConfig, size: int) -> v2.Compose:
    """The transforms `cfg` names, in order, on uint8 (3, S, S) tensors: uint8 (3, size, size) out."""
    from torchvision.transforms import v2  # imported when used: torchvision takes a second to load

    steps: list[v2.Transform] = [v2.RandomResizedCrop(size, scale=tuple(cfg.crop_scale), antialias=True)]
    if cfg.flip:
        steps.append(v2.RandomHorizontalFlip())
    if cfg.rotation > 0:
        steps.append(v2.RandomRotation(cfg.rotation))
    if cfg.color_jitter > 0:
        jitter = cfg.color_jitter
        steps.append(v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter))
    if cfg.randaugment_ops > 0:
        steps.append(v2.RandAugment(num_ops=cfg.randaugment_ops, magnitude=cfg.randaugment_magnitude))
    return v2.Compose(steps)


def augmented_copies(images: torch.Tensor, seeds: Sequence[int], cfg: AugmentConfig) -> torch.Tensor:
    """Image i of uint8 `images` (N, 3, S, S) transformed with torch's RNG seeded by seeds[i] (uint8 out).

    A copy depends on its source image, its seed and the policy alone; torch's global RNG is the same
    after the call as before it.
    """
    if len(seeds) != len(images):
        raise ValueError(f"{len(images)} images but {len(seeds)} seeds: one seed per image")
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(
            f"augmented_copies takes uint8 (N, 3, S, S) images, not {images.dtype} {tuple(images.shape)}"
        )
    if len(images) == 0:
        return images.clone()
    policy = build_policy(cfg, int(images.shape[-1]))
    copies = []
    with torch.random.fork_rng(devices=[]):  # CPU only: the transforms draw from the default generator
        for image, seed in zip(images, seeds, strict=True):
            torch.default_generator.manual_seed(int(seed))
            copies.append(policy(image))
    return torch.stack(copies)


def augment_batch(images: torch.Tensor, generator: torch.Generator, cfg: AugmentConfig) -> torch.Tensor:
    """A training batch augmented afresh: one seed per image drawn from `generator`, then
    `augmented_copies`. The same generator state gives the same batch."""
    seeds = torch.randint(0, SEED_BOUND, (len(images),), generator=generator, dtype=torch.int64)
    return augmented_copies(images, seeds.tolist(), cfg)


def describe(cfg: AugmentConfig) -> str:
    """The policy in one line, for run records and the report."""
    low, high = cfg.crop_scale
    parts = [f"random-resized crop (area {float(low)!r}-{float(high)!r})"]
    if cfg.flip:
        parts.append("horizontal flip")
    if cfg.rotation > 0:
        parts.append(f"rotation ±{cfg.rotation:g}°")
    if cfg.color_jitter > 0:
        parts.append(f"colour jitter {cfg.color_jitter:g}")
    if cfg.randaugment_ops > 0:
        parts.append(f"RandAugment({cfg.randaugment_ops} ops, magnitude {cfg.randaugment_magnitude})")
    return ", ".join(parts)


def policy_digest(cfg: AugmentConfig) -> str:
    """A short hash of everything a copy depends on besides its image and seed: cache-key part."""
    import torchvision

    spec = {
        "policy": cfg.model_dump(mode="json"),
        "policy_version": POLICY_VERSION,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
    }
    return sha256_json(spec)[:16]


def with_copies(images: LabelledImages, seeds: Sequence[int | None], cfg: AugmentConfig) -> LabelledImages:
    """`images` with each entry whose seed is not None replaced by its augmented copy (an <N>r<K>a mix's
    copies load as their real images first), keyed apart from its source so that the frozen-backbone
    feature cache holds the copy's own features."""
    copies = [i for i, seed in enumerate(seeds) if seed is not None]
    if not copies:
        return images
    pixels = images.images.clone()
    pixels[copies] = augmented_copies(images.images[copies], [int(seeds[i] or 0) for i in copies], cfg)
    digest = policy_digest(cfg)
    keys = tuple(
        key if seed is None else sha256_json([key, digest, seed])
        for key, seed in zip(images.keys, seeds, strict=True)
    )
    return LabelledImages(pixels, images.labels, keys)

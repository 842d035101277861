"""The augmentation policy: seeded per image, independent of its batch, uint8 in and out, described."""

from __future__ import annotations

import os
import subprocess
import sys

import torch

from synthmix.config.params import AugmentConfig
from synthmix.train.augment import augment_batch, augmented_copies, build_policy, describe, policy_digest

POLICY = AugmentConfig()  # the default: crop, rotation, colour jitter and RandAugment
FLIP_ONLY = dict(crop_scale=(1.0, 1.0), rotation=0.0, color_jitter=0.0, randaugment_ops=0)


def _images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(seed)).to(
        torch.uint8
    )


def test_a_copy_depends_on_its_seed_alone():
    images = _images(3)
    a = augmented_copies(images, [1, 2, 3], POLICY)
    assert torch.equal(a, augmented_copies(images, [1, 2, 3], POLICY))
    b = augmented_copies(images, [4, 5, 6], POLICY)
    for i in range(3):
        assert not torch.equal(a[i], b[i])


def test_a_copy_is_the_same_whichever_images_share_its_call():
    images = _images(5)
    together = augmented_copies(images, [10, 11, 12, 13, 14], POLICY)
    alone = augmented_copies(images[2:3], [12], POLICY)
    reordered = augmented_copies(images[[4, 2, 0]], [14, 12, 10], POLICY)
    assert torch.equal(together[2], alone[0])
    assert torch.equal(together[[4, 2, 0]], reordered)


def test_copies_are_uint8_of_the_same_shape_and_leave_the_callers_rng_alone():
    images = _images(4, size=40)
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    copies = augmented_copies(images, [0, 1, 2, 3], POLICY)
    assert torch.equal(torch.rand(3), expected)
    assert copies.dtype == torch.uint8 and copies.shape == images.shape
    assert not torch.equal(copies, images)
    assert augmented_copies(images[:0], [], POLICY).shape == (0, 3, 40, 40)


def test_flip_is_only_ever_applied_when_asked_for():
    image = torch.arange(3 * 32 * 32).remainder(251).to(torch.uint8).view(1, 3, 32, 32)  # not symmetric
    mirrored = image.flip(-1)
    seeds = list(range(20))
    batch = image.expand(len(seeds), -1, -1, -1).contiguous()
    unflipped = augmented_copies(batch, seeds, AugmentConfig(flip=False, **FLIP_ONLY))
    assert all(torch.equal(copy, image[0]) for copy in unflipped)
    flipped = augmented_copies(batch, seeds, AugmentConfig(flip=True, **FLIP_ONLY))
    kinds = [torch.equal(c, mirrored[0]) for c in flipped]
    assert any(kinds) and not all(kinds)  # each copy either mirrored or not, both happen
    assert all(torch.equal(c, image[0]) for c, m in zip(flipped, kinds, strict=True) if not m)


def test_a_batch_is_augmented_afresh_from_its_generator_state():
    images = _images(6)
    generator = torch.Generator().manual_seed(3)
    first = augment_batch(images, generator, POLICY)
    second = augment_batch(images, generator, POLICY)  # the generator moved on: new seeds
    assert not torch.equal(first, second)
    replay = torch.Generator().manual_seed(3)
    assert torch.equal(augment_batch(images, replay, POLICY), first)
    assert first.dtype == torch.uint8 and first.shape == images.shape


def test_the_policy_holds_only_what_is_switched_on():
    names = [type(t).__name__ for t in build_policy(AugmentConfig(**FLIP_ONLY), 32).transforms]
    assert names == ["RandomResizedCrop"]
    names = [type(t).__name__ for t in build_policy(AugmentConfig(flip=True), 32).transforms]
    assert names == [
        "RandomResizedCrop",
        "RandomHorizontalFlip",
        "RandomRotation",
        "ColorJitter",
        "RandAugment",
    ]


def test_describe_names_each_enabled_part():
    text = describe(POLICY)
    assert text == (
        "random-resized crop (area 0.8-1.0), rotation ±10°, colour jitter 0.2, RandAugment(2 ops, magnitude 9)"
    )
    assert "flip" in describe(AugmentConfig(flip=True))
    assert describe(AugmentConfig(**FLIP_ONLY)) == "random-resized crop (area 1.0-1.0)"


def test_the_digest_changes_with_every_setting():
    digests = {
        policy_digest(cfg)
        for cfg in (
            POLICY,
            AugmentConfig(flip=True),
            AugmentConfig(crop_scale=(0.5, 1.0)),
            AugmentConfig(rotation=5.0),
            AugmentConfig(color_jitter=0.1),
            AugmentConfig(randaugment_ops=1),
            AugmentConfig(randaugment_magnitude=5),
        )
    }
    assert len(digests) == 7
    # the same settings give the same digest in another interpreter (other str-hash seed): a cache key
    code = "from synthmix.train.augment import AugmentConfig, policy_digest; print(policy_digest(AugmentConfig(flip=True)))"
    env = {**os.environ, "PYTHONHASHSEED": "3"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == policy_digest(AugmentConfig(**{**POLICY.model_dump(), "flip": True}))

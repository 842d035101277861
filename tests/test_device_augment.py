"""The augmentation policy on the images' device, a batch at once (CUDA's +aug path), checked on the CPU:
seeded by its generator, the identity when every step is off, its draws in the configured ranges, each
step the same as torchvision's for the same parameters, and the same pixel statistics as the CPU policy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from synthmix.config.compute import Compute, cpu_compute
from synthmix.config.params import AugmentConfig
from synthmix.core.files import sha256_json
from synthmix.train import device_augment as dev
from synthmix.train.augment import augment_batch
from synthmix.train.device_augment import RANDAUGMENT_OPS, augment_on_device, draw
from synthmix.train.fit import _augmented_inputs, single_thread

POLICY = AugmentConfig(flip=True)  # every step on: crop, flip, rotation, colour jitter, RandAugment
OFF = dict(flip=False, crop_scale=(1.0, 1.0), rotation=0.0, color_jitter=0.0, randaugment_ops=0)


def _natural(size: int = 32, seed: int = 0) -> torch.Tensor:
    """A smooth random RGB image (coarse noise, bilinear-upsampled), uint8 (3, S, S)."""
    coarse = np.random.default_rng(seed).integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    pixels = np.asarray(Image.fromarray(coarse, "RGB").resize((size, size), Image.Resampling.BILINEAR))
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1).contiguous()


def _batch(n: int, size: int = 32) -> torch.Tensor:
    return torch.stack([_natural(size, seed) for seed in range(n)])


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_a_batch_depends_on_its_generator_state():
    images = _batch(6)
    first = augment_on_device(images, _generator(3), POLICY)
    assert torch.equal(augment_on_device(images, _generator(3), POLICY), first)
    other = augment_on_device(images, _generator(4), POLICY)
    assert all(not torch.equal(a, b) for a, b in zip(first, other, strict=True))
    generator = _generator(3)
    augment_on_device(images, generator, POLICY)
    assert not torch.equal(augment_on_device(images, generator, POLICY), first)  # the generator moved on


def test_the_output_is_uint8_of_the_input_shape_and_device():
    images = _batch(3, size=40)[..., :24, :]  # not square
    out = augment_on_device(images.contiguous(), _generator(0), POLICY)
    assert out.dtype == torch.uint8 and out.shape == (3, 3, 24, 40) and out.device == images.device
    assert augment_on_device(images[:0], _generator(0), POLICY).shape == (0, 3, 24, 40)
    with pytest.raises(ValueError, match="uint8"):
        augment_on_device(images.float(), _generator(0), POLICY)


def test_the_identity_policy_returns_the_input():
    images = _batch(16)
    assert torch.equal(augment_on_device(images, _generator(0), AugmentConfig(**OFF)), images)


def test_flip_only_mirrors_about_half_exactly():
    image = torch.arange(3 * 32 * 32).remainder(251).to(torch.uint8).view(1, 3, 32, 32)  # not symmetric
    images = image.expand(200, -1, -1, -1).contiguous()
    cfg = AugmentConfig(**{**OFF, "flip": True})
    flips = draw(200, 32, 32, _generator(1), cfg).flip
    out = augment_on_device(images, _generator(1), cfg)
    assert 70 < int(flips.sum()) < 130
    assert torch.equal(out[flips], images[flips].flip(-1)) and torch.equal(out[~flips], images[~flips])


def test_crops_and_angles_lie_in_the_configured_ranges():
    cfg = AugmentConfig(crop_scale=(0.3, 0.6), rotation=15.0)
    draws = draw(500, 64, 64, _generator(2), cfg)
    top, left, h, w = draws.boxes.unbind(1)
    assert bool(((top >= 0) & (left >= 0) & (top + h <= 64) & (left + w <= 64)).all())
    area = (h * w).double() / 64**2
    slack = 2 * 64.5 / 64**2  # w and h are rounded to whole pixels
    assert float(area.min()) >= 0.3 - slack and float(area.max()) <= 0.6 + slack
    assert float(area.min()) < 0.33 and float(area.max()) > 0.57  # the whole range is drawn
    ratio = w.double() / h
    assert float(ratio.min()) >= 3 / 4 * 0.95 and float(ratio.max()) <= 4 / 3 * 1.05
    assert float(draws.angle.abs().max()) <= 15 and float(draws.angle.min()) < -13 < 13 < float(
        draws.angle.max()
    )
    assert bool(((draws.ops >= 0) & (draws.ops < len(RANDAUGMENT_OPS))).all())
    assert set(draws.ops.flatten().tolist()) == set(range(len(RANDAUGMENT_OPS)))
    assert torch.equal(draws.jitter_order.sort(dim=1).values, torch.arange(3).expand(500, 3))


def test_the_crop_is_torchvisions_resized_crop():
    images = _batch(8)
    cfg = AugmentConfig(**{**OFF, "crop_scale": (0.2, 1.0)})
    boxes = draw(8, 32, 32, _generator(5), cfg).boxes
    out = augment_on_device(images, _generator(5), cfg)
    expected = torch.stack(
        [
            TF.resized_crop(x, *map(int, box), [32, 32], antialias=True)
            for x, box in zip(images, boxes, strict=True)
        ]
    )
    assert int((out.int() - expected.int()).abs().max()) <= 1  # rounding: one resample vs torchvision's


def test_the_rotation_is_torchvisions_within_its_interior():
    images = _batch(8)
    cfg = AugmentConfig(**{**OFF, "rotation": 30.0, "flip": True})
    draws = draw(8, 32, 32, _generator(6), cfg)
    out = augment_on_device(images, _generator(6), cfg)
    expected = torch.stack(
        [
            TF.rotate(x.flip(-1) if flip else x, float(angle), interpolation=v2.InterpolationMode.BILINEAR)
            for x, flip, angle in zip(images, draws.flip, draws.angle, strict=True)
        ]
    )
    # the centre is inside the frame at any angle; at the frame's edge torchvision blends into the fill
    assert int((out.int() - expected.int())[..., 8:24, 8:24].abs().max()) <= 1


def test_each_jitter_step_is_torchvisions():
    images = _batch(8)
    factors = torch.linspace(0.7, 1.3, 8, dtype=torch.float64)
    for op, kernel in enumerate((TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation)):
        order = torch.tensor([op, (op + 1) % 3, (op + 2) % 3]).expand(8, 3)
        factor = torch.ones(8, 3, dtype=torch.float64)
        factor[:, op] = factors
        out = dev._jitter(images, order, factor)
        expected = torch.stack([kernel(x, float(f)) for x, f in zip(images, factors, strict=True)])
        difference = (out.int() - expected.int()).abs()
        assert int(difference.max()) <= 1 and float((difference > 0).float().mean()) < 0.01  # float rounding


@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("negate", [False, True])
def test_each_randaugment_op_is_torchvisions(negate, dense):
    """One batch, image i taking op i: each image as torchvision's op makes it at the same magnitude."""
    images = _batch(2 * len(RANDAUGMENT_OPS))
    ops = torch.arange(len(images))[:, None] % len(RANDAUGMENT_OPS)
    out = dev._randaugment(images, ops, torch.full(ops.shape, negate), 9, dense=dense)
    reference = v2.RandAugment()
    values, signed = dev._magnitudes(9, 32, 32)
    for image, op, augmented in zip(images, ops[:, 0].tolist(), out, strict=True):
        magnitude = -values[op] if negate and signed[op] else values[op]
        expected = reference._apply_image_or_video_transform(
            image, RANDAUGMENT_OPS[op], magnitude, interpolation=reference.interpolation, fill=reference._fill
        )
        difference = (augmented.int() - expected.int()).abs()
        name = RANDAUGMENT_OPS[op]
        assert int(difference.max()) <= 1 and float((difference > 0).float().mean()) < 0.01, name


def test_randaugment_on_the_whole_batch_and_per_chosen_images_agree():
    images = _batch(32)
    draws = draw(32, 32, 32, _generator(7), AugmentConfig(randaugment_ops=3))
    dense = dev._randaugment(images, draws.ops, draws.negate, 9, dense=True)
    assert torch.equal(dense, dev._randaugment(images, draws.ops, draws.negate, 9, dense=False))


def test_pixel_statistics_match_the_cpu_policy():
    """One natural-ish image augmented 512 times both ways: the per-image mean and contrast (std) of the
    copies agree in distribution within a few grey levels (the CPU policy: 115 +- 22 and 62 +- 14)."""
    images = _natural().expand(512, -1, -1, -1).contiguous()
    for cfg in (POLICY, AugmentConfig(randaugment_ops=0)):
        with single_thread():  # as fit runs it; per-image ops on busy cores crawl with more threads
            cpu = augment_batch(images, _generator(0), cfg).double()
            batched = augment_on_device(images, _generator(0), cfg).double()
        for name, stat in (("mean", cpu.mean(dim=(1, 2, 3))), ("std", cpu.std(dim=(1, 2, 3)))):
            ours = batched.mean(dim=(1, 2, 3)) if name == "mean" else batched.std(dim=(1, 2, 3))
            assert abs(float(ours.mean() - stat.mean())) < 4, (cfg, name)
            assert abs(float(ours.std() - stat.std())) < 3, (cfg, name)
        black = float((batched == 0).double().mean()), float((cpu == 0).double().mean())  # fill, solarize
        assert math.isclose(*black, abs_tol=0.01)


class _CudaLike(Compute):
    """The CPU, taken for CUDA: fit's on-device path, run here."""

    @property
    def is_cuda(self) -> bool:
        return True


def test_fit_augments_each_batch_on_the_device_when_on_cuda():
    images, batch = _batch(10), torch.tensor([3, 1, 4, 1, 5])
    cpu = cpu_compute()
    cuda_like = _CudaLike(cpu.device, cpu.dtype, cpu.diffusion_dtype, "test")
    on_device = _augmented_inputs(images, POLICY, 0, None, cuda_like)
    per_image = _augmented_inputs(images, POLICY, 0, None, cpu)
    first = on_device(batch)
    assert first.dtype == torch.float32 and first.shape == (5, 3, 32, 32)
    assert not torch.equal(on_device(batch), first)  # afresh on every call
    replay = _augmented_inputs(images, POLICY, 0, None, cuda_like)
    assert torch.equal(replay(batch), first)
    # the CPU keeps augment.py's per-image policy and its CPU generator, as before
    generator = torch.Generator().manual_seed(int(sha256_json(["augment", 0])[:15], 16))
    assert torch.equal(per_image(batch), augment_batch(images[batch], generator, POLICY).float())
    assert not torch.equal(per_image(batch), first)


@pytest.mark.gpu
def test_on_cuda_a_batch_depends_on_its_generator_and_both_paths_agree():
    images = _batch(16).cuda()
    first = augment_on_device(images, torch.Generator("cuda").manual_seed(1), POLICY)
    assert first.is_cuda and torch.equal(
        augment_on_device(images, torch.Generator("cuda").manual_seed(1), POLICY), first
    )
    draws = draw(16, 32, 32, torch.Generator("cuda").manual_seed(2), AugmentConfig(randaugment_ops=3))
    dense = dev._randaugment(images, draws.ops, draws.negate, 9, dense=True)
    assert torch.equal(dense, dev._randaugment(images, draws.ops, draws.negate, 9, dense=False))

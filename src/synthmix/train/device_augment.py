"""train.augment's policy on the images' own device, a whole batch at once: +aug training on CUDA.

augment.py transforms one image at a time on the CPU under per-image seeds, which leaves a GPU waiting
for the CPU. Here a batch is transformed by batched tensor ops, each image with its own parameters drawn
from a generator on the batch's device (`draw`, then `apply`). It has build_policy's semantics, not its
bytes (the CPU path stays augment.py's, unchanged):

- Random-resized crop (area in cfg.crop_scale, aspect ratio 3/4-4/3 as torchvision's default, its ten
  tries on integer boxes then the whole image), horizontal flip (p 0.5) and rotation (uniform within
  ±cfg.rotation, zero fill) are ONE affine warp per image: affine_grid + grid_sample, bilinear, clamped
  at the border as resize is. torchvision resizes the crop (bilinear, antialiased), rounds to uint8, then
  rotates with nearest neighbour; here each pixel is sampled once. A crop is never larger than the
  output, so the resize is an upscale, where antialiasing changes nothing: without rotation the two
  agree within rounding; with it this one is smoother (no nearest-neighbour jaggies, one rounding).
- Colour jitter: brightness, contrast and saturation factors uniform in [1-j, 1+j], applied in a random
  order per image, as v2.ColorJitter does; each step on uint8 as torchvision's kernels (truncated).
- RandAugment: all 14 of v2's ops (none left out), each image its own op and sign per step, v2's
  magnitudes (31 bins); the geometric ones nearest-neighbour with zero fill, as v2. Each op matches
  torchvision's kernel for the same image and magnitude within 1 grey level (float rounding of
  per-image factors); Equalize is torchvision's own batched kernel.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from synthmix.config.params import AugmentConfig

RATIO = (3 / 4, 4 / 3)  # torchvision's RandomResizedCrop default aspect-ratio range
CROP_TRIES = 10  # torchvision's tries before it falls back to the whole image
MAGNITUDE_BINS = 31  # v2.RandAugment's num_magnitude_bins default
RANDAUGMENT_OPS = (
    "Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color",
    "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize",
)  # fmt: skip  # v2.RandAugment's op list, in its order


@dataclass(frozen=True)
class Draws:
    """Each image's random parameters (first dimension: the batch), on the batch's device."""

    boxes: torch.Tensor  # (N, 4) int64: the crop's top, left, height, width
    flip: torch.Tensor  # (N,) bool
    angle: torch.Tensor  # (N,) float64 degrees, counter-clockwise
    jitter_order: torch.Tensor  # (N, 3) int64: a permutation of 0 brightness, 1 contrast, 2 saturation
    jitter_factor: torch.Tensor  # (N, 3) float64, by op: 1 where there is no jitter
    ops: torch.Tensor  # (N, K) int64: RandAugment's op at each of its K steps, into RANDAUGMENT_OPS
    negate: torch.Tensor  # (N, K) bool: that step's magnitude negated (signed ops only)


def augment_on_device(images: torch.Tensor, generator: torch.Generator, cfg: AugmentConfig) -> torch.Tensor:
    """uint8 (N, 3, H, W) `images` augmented by `cfg`'s policy on their device, each image its own draws
    from `generator` (on the same device): uint8 (N, 3, H, W) out. The same generator state gives the
    same batch."""
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(
            f"augment_on_device takes uint8 (N, 3, H, W) images, not {images.dtype} {tuple(images.shape)}"
        )
    if generator.device.type != images.device.type:
        raise ValueError(f"the generator is on {generator.device}, the images on {images.device}")
    height, width = int(images.shape[-2]), int(images.shape[-1])
    return apply(images, draw(len(images), height, width, generator, cfg), cfg)


def draw(n: int, height: int, width: int, generator: torch.Generator, cfg: AugmentConfig) -> Draws:
    """n images' parameters for `cfg`'s policy, from `generator`, on its device (a step that is off
    gets its identity: no flip, angle 0, factors 1)."""
    device = generator.device

    def uniform(*shape: int, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
        return low + (high - low) * torch.rand(shape, generator=generator, device=device, dtype=torch.float64)

    boxes = _crop_boxes(n, height, width, tuple(map(float, cfg.crop_scale)), uniform)
    flip = uniform(n) < 0.5 if cfg.flip else torch.zeros(n, dtype=torch.bool, device=device)
    angle = uniform(n, low=-cfg.rotation, high=cfg.rotation) if cfg.rotation > 0 else uniform(n, high=0.0)
    jitter = cfg.color_jitter
    order = uniform(n, 3).argsort(dim=1)  # a uniform random permutation per image, as v2's randperm
    factor = uniform(n, 3, low=max(0.0, 1 - jitter), high=1 + jitter)  # v2.ColorJitter's ranges
    steps, choices = cfg.randaugment_ops, len(RANDAUGMENT_OPS)
    ops = uniform(n, steps, high=choices).long().clamp_(max=choices - 1)
    negate = uniform(n, steps) <= 0.5  # v2: `torch.rand(()) <= 0.5` negates
    return Draws(boxes, flip, angle, order, factor, ops, negate)


def _crop_boxes(
    n: int, height: int, width: int, scale: tuple[float, float], uniform: Callable[..., torch.Tensor]
) -> torch.Tensor:
    """(N, 4) top, left, height, width: torchvision's RandomResizedCrop.make_params, all tries at once."""
    target = height * width * uniform(n, CROP_TRIES, low=scale[0], high=scale[1])
    ratio = torch.exp(uniform(n, CROP_TRIES, low=math.log(RATIO[0]), high=math.log(RATIO[1])))
    w, h = (target * ratio).sqrt().round().long(), (target / ratio).sqrt().round().long()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.long().argmax(dim=1, keepdim=True)  # the first try that fits, as torchvision's loop
    found = fits.any(dim=1)
    fall_h, fall_w = _fallback(height, width)
    h = torch.where(found, h.gather(1, first)[:, 0], fall_h)
    w = torch.where(found, w.gather(1, first)[:, 0], fall_w)
    top = torch.where(found, (uniform(n) * (height - h + 1)).long(), (height - h) // 2)
    left = torch.where(found, (uniform(n) * (width - w + 1)).long(), (width - w) // 2)
    return torch.stack([top, left, h, w], dim=1)


def _fallback(height: int, width: int) -> tuple[int, int]:
    """torchvision's crop when no try fits: the whole image, cut to the ratio range if it lies outside."""
    in_ratio = width / height
    if in_ratio < min(RATIO):
        return round(width / min(RATIO)), width
    if in_ratio > max(RATIO):
        return height, round(height * max(RATIO))
    return height, width


def apply(images: torch.Tensor, draws: Draws, cfg: AugmentConfig) -> torch.Tensor:
    """uint8 `images` transformed with `draws` (from `draw`): warp, colour jitter, RandAugment."""
    if len(images) == 0:
        return images.clone()
    x = _warp(images, draws, rotated=cfg.rotation > 0)
    if cfg.color_jitter > 0:
        x = _jitter(x, draws.jitter_order, draws.jitter_factor)
    if cfg.randaugment_ops > 0:
        x = _randaugment(x, draws.ops, draws.negate, cfg.randaugment_magnitude)
    return x


# --- the crop, flip and rotation: one warp --------------------------------------------------------


def _pixel_grid(theta: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """grid_sample's grid for (N, 2, 3) inverse affine maps in centred pixel coordinates (x right,
    y down, 0 at the image's centre), as torchvision's _affine_grid builds it, for the whole batch."""
    device = theta.device
    base = torch.empty(1, height, width, 3, device=device)
    base[..., 0].copy_(torch.linspace((1.0 - width) * 0.5, (width - 1.0) * 0.5, width, device=device))
    base[..., 1].copy_(
        torch.linspace((1.0 - height) * 0.5, (height - 1.0) * 0.5, height, device=device)[:, None]
    )
    base[..., 2].fill_(1)
    rescaled = theta.to(torch.float32).transpose(1, 2).clone()  # (N, 3, 2), divided in place below
    rescaled[..., 0].div_(0.5 * width)  # scalars, not a tensor: no copy from the host per batch
    rescaled[..., 1].div_(0.5 * height)
    grid = base.view(1, height * width, 3).expand(len(theta), -1, -1).bmm(rescaled)
    return grid.view(len(theta), height, width, 2)


def _warp(images: torch.Tensor, draws: Draws, rotated: bool) -> torch.Tensor:
    """Crop, resize, flip and rotate in one bilinear sample. An output pixel's point rotated back (q)
    is a point of the flipped, resized crop, which maps straight into the source image (clamped to the
    crop, as resize clamps); when `rotated`, a q outside the frame is rotation's zero fill."""
    height, width = images.shape[-2:]
    radians = torch.deg2rad(draws.angle)
    cos, sin, zero = radians.cos(), radians.sin(), torch.zeros_like(radians)
    rotation = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = _pixel_grid(rotation, height, width)  # q, normalised: the frame is [-1, 1]
    inside = (grid.abs() <= 1).all(dim=-1)[:, None] if rotated else None
    top, left, h, w = (v[:, None, None] for v in draws.boxes.to(torch.float64).unbind(1))
    flip = draws.flip[:, None, None]

    def per_image(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.stack([x, y], dim=-1).to(grid.dtype)  # (N, 1, 1, 2): broadcast over the pixels

    grid.mul_(per_image(torch.where(flip, -w / width, w / width), h / height))
    grid.add_(per_image((2 * left + w) / width - 1, (2 * top + h) / height - 1))
    # resize reads no pixel outside its crop: the first and last pixel centres bound the samples
    first = per_image((2 * left + 1) / width - 1, (2 * top + 1) / height - 1)
    last = per_image((2 * (left + w) - 1) / width - 1, (2 * (top + h) - 1) / height - 1)
    grid = torch.clamp(grid, first, last)
    out = F.grid_sample(
        images.to(torch.float32), grid, mode="bilinear", padding_mode="border", align_corners=False
    )
    if inside is not None:
        out = torch.where(inside, out, 0.0)
    return out.round_().to(torch.uint8)  # bilinear stays within 0-255


# --- colour: torchvision's kernels with a factor per image -----------------------------------------


def _gray(x: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) float luma of uint8 RGB, floored as torchvision does for uint8 images."""
    r, g, b = x.unbind(dim=-3)
    return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).unsqueeze(-3).floor_()


def _factor(f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,) float64 factors -> (f, 1 - f) as float32 (N, 1, 1, 1), computed like torchvision's scalars."""
    return f.to(torch.float32).view(-1, 1, 1, 1), (1 - f).to(torch.float32).view(-1, 1, 1, 1)


def _blend(x: torch.Tensor, reference: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """torchvision's _blend on uint8: x * f + reference * (1 - f), clamped, truncated to uint8."""
    ratio, rest = _factor(f)
    out = x.to(torch.float32, copy=True)  # then in place: uint8 times float is a slow path on the CPU
    return out.mul_(ratio).add_(reference * rest).clamp_(0, 255).to(torch.uint8)


def _jitter(x: torch.Tensor, order: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Brightness (blend with 0), contrast (with the mean luma) and saturation (with the luma), in each
    image's order: one blend per step, its reference chosen per image."""
    for step in range(3):
        op = order[:, step]
        gray = _gray(x)
        mean = gray.mean(dim=(-3, -2, -1), keepdim=True)
        which = op.view(-1, 1, 1, 1)
        reference = torch.where(which == 0, 0.0, torch.where(which == 1, mean, gray))
        x = _blend(x, reference, factor.gather(1, op[:, None])[:, 0])
    return x


# --- RandAugment ---------------------------------------------------------------------------------


def _magnitudes(magnitude: int, height: int, width: int) -> tuple[list[float], list[bool]]:
    """Each op's magnitude at v2's bin `magnitude`, by RANDAUGMENT_OPS, and whether its sign is drawn."""
    bins = MAGNITUDE_BINS

    def at(values: torch.Tensor) -> float:
        return float(values[magnitude])

    colour = at(torch.linspace(0.0, 0.9, bins))
    signed = {
        "ShearX": at(torch.linspace(0.0, 0.3, bins)),
        "ShearY": at(torch.linspace(0.0, 0.3, bins)),
        "TranslateX": at(torch.linspace(0.0, 150.0 / 331.0 * width, bins)),
        "TranslateY": at(torch.linspace(0.0, 150.0 / 331.0 * height, bins)),
        "Rotate": at(torch.linspace(0.0, 30.0, bins)),
        **dict.fromkeys(("Brightness", "Color", "Contrast", "Sharpness"), colour),
    }
    unsigned = {
        "Posterize": at((8 - (torch.arange(bins) / ((bins - 1) / 4))).round().int()),
        "Solarize": at(torch.linspace(1.0, 0.0, bins)),
    }
    values = [signed.get(name, unsigned.get(name, 0.0)) for name in RANDAUGMENT_OPS]
    return values, [name in signed for name in RANDAUGMENT_OPS]


def _randaugment(
    x: torch.Tensor, ops: torch.Tensor, negate: torch.Tensor, magnitude: int, dense: bool | None = None
) -> torch.Tensor:
    """RandAugment's steps: at step k image i gets RANDAUGMENT_OPS[ops[i, k]], its sign negate[i, k].

    `dense` (default: off the CPU): every op runs on the whole batch and each image keeps its own, with
    no host sync; else each op runs on the images that chose it. Every op is per image, so the two give
    the same images. The five geometric ops are one warp, each image by its own map."""
    values, signed = _magnitudes(magnitude, x.shape[-2], x.shape[-1])
    dense = x.device.type != "cpu" if dense is None else dense
    for step in range(ops.shape[1]):
        op, sign = ops[:, step], torch.where(negate[:, step], -1.0, 1.0).to(torch.float64)
        m = torch.zeros_like(sign)  # each image's magnitude, for its own op
        for index, value in enumerate(values):
            m = torch.where(op == index, sign * value if signed[index] else value, m)
        geometric = op == _GEOMETRIC[0]
        for index in _GEOMETRIC[1:]:
            geometric = geometric | (op == index)
        units = [(geometric, _geometric)]
        units += [(op == RANDAUGMENT_OPS.index(name), transform) for name, transform in _OPS.items()]
        out = x
        for chosen, transform in units:
            if dense:
                out = torch.where(chosen.view(-1, 1, 1, 1), transform(x, m, op), out)
                continue
            rows = chosen.nonzero()[:, 0]
            if len(rows):
                out = out.clone() if out is x else out
                out[rows] = transform(x[rows], m[rows], op[rows])
        x = out
    return x


def _geometric(x: torch.Tensor, m: torch.Tensor, op: torch.Tensor) -> torch.Tensor:
    """ShearX, ShearY, TranslateX, TranslateY or Rotate by `op`, at magnitude `m`, each image its own:
    v2's inverse maps (shear by atan(m) about the top-left corner, translation by int(m) pixels, rotation
    about the centre), nearest neighbour, zero fill. Any other op's image gets the identity map."""
    height, width = x.shape[-2], x.shape[-1]

    def where(name: str, value: torch.Tensor) -> torch.Tensor:
        return torch.where(op == RANDAUGMENT_OPS.index(name), value, 0.0)

    shear = torch.tan(torch.deg2rad(torch.rad2deg(torch.atan(m))))  # through degrees and back, as v2
    shear_x, shear_y = where("ShearX", shear), where("ShearY", shear)
    shift = -torch.trunc(m)
    radians = torch.deg2rad(where("Rotate", m))
    cos, sin = radians.cos(), radians.sin()
    matrix = [
        [cos, shear_x - sin, shear_x * height / 2 + where("TranslateX", shift)],
        [shear_y + sin, cos, shear_y * width / 2 + where("TranslateY", shift)],
    ]
    theta = torch.stack([torch.stack(row, 1) for row in matrix], 1)
    grid = _pixel_grid(theta, height, width)
    out = F.grid_sample(x.to(torch.float32), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return out.round_().to(torch.uint8)


def _per_image(m: torch.Tensor) -> torch.Tensor:
    return m.view(-1, 1, 1, 1)


def _sharpness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision's adjust_sharpness: the interior blended with a 3x3 smoothed copy, the border kept."""
    kernel = torch.full((3, 1, 3, 3), 1.0 / 13.0, device=x.device)  # 1s around a 5, normalised
    kernel[:, :, 1, 1] = 5.0 / 13.0
    out = x.to(torch.float32)
    blurred = F.conv2d(out, kernel, groups=3).round_()
    view = out[..., 1:-1, 1:-1]
    view.add_(blurred.sub_(view) * _factor(1 - factor)[0])
    return out.clamp_(0, 255).to(torch.uint8)


def _posterize(x: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """The top `bits` bits of each value kept (8: the image as it is)."""
    keep = bits.long().clamp(0, 8)
    return x & _per_image(((1 << keep) - 1) << (8 - keep)).to(torch.uint8)


def _autocontrast(x: torch.Tensor) -> torch.Tensor:
    """torchvision's autocontrast: each channel stretched to 0-255 (a flat channel left alone)."""
    f = x.to(torch.float32)
    low, high = f.amin(dim=(-2, -1), keepdim=True), f.amax(dim=(-2, -1), keepdim=True)
    flat = high == low
    scale = torch.where(flat, 1.0, (high - low) * (1.0 / 255))
    return f.sub_(torch.where(flat, 0.0, low)).div_(scale).clamp_(0, 255).to(torch.uint8)


def _equalize(x: torch.Tensor) -> torch.Tensor:
    from torchvision.transforms.v2 import functional as TF  # batched already: per image and channel

    return TF.equalize(x)


def _contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(x, _gray(x).mean(dim=(-3, -2, -1), keepdim=True), factor)


_GEOMETRIC = tuple(
    RANDAUGMENT_OPS.index(n) for n in ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
)
# every other op but Identity: (images, each image's magnitude, its op) -> images
_OPS: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "Brightness": lambda x, m, op: _blend(x, torch.zeros((), device=x.device), 1 + m),
    "Color": lambda x, m, op: _blend(x, _gray(x), 1 + m),  # saturation
    "Contrast": lambda x, m, op: _contrast(x, 1 + m),
    "Sharpness": lambda x, m, op: _sharpness(x, 1 + m),
    "Posterize": lambda x, m, op: _posterize(x, m),
    "Solarize": lambda x, m, op: torch.where(x >= _per_image(255 * m), 255 - x, x),  # v2 inverts: 255 - x
    "AutoContrast": lambda x, m, op: _autocontrast(x),
    "Equalize": lambda x, m, op: _equalize(x),
}

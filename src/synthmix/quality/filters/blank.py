"""The blank-image filter: an image whose grey levels barely vary (blacked out by a safety checker, or a
sample that collapsed to one colour) teaches a classifier nothing about its class."""

from __future__ import annotations

import torch

# ITU-R BT.601 luma weights: grey as a person sees it, so a saturated single-colour image is blank too
_LUMA = torch.tensor([0.299, 0.587, 0.114])


def pixel_std(images: torch.Tensor) -> torch.Tensor:
    """The standard deviation of each image's grey levels (0-255), images uint8 (N, 3, S, S) -> (N,)."""
    grey = (images.to(torch.float64) * _LUMA.to(torch.float64)[None, :, None, None]).sum(1)
    return grey.flatten(1).std(1, correction=0)

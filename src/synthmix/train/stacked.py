"""The stacked network of runs trained together (together.py) and its optimiser: layer i of run k is
slice k of every stacked parameter; each layer computes every run at once."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional

from synthmix.models import PixelScaling

ADAM_BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults, which `fit` uses
ADAM_EPS = 1e-8
# the layers a stack computes; ReLU and MaxPool2d act on every run's channels as they are
LAYERS = (PixelScaling, nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.Dropout, nn.Flatten, nn.Linear)


class Stack:
    """The runs' layers stacked: parameter k of every stacked tensor is run k's; each layer computes
    every run at once. Activations are maps (B, K*C, H, W) until Flatten, vectors (K, B, F) after."""

    def __init__(self, chains: Sequence[Sequence[nn.Module]], device: torch.device) -> None:
        self.chains, self.runs = chains, len(chains)
        self.layers = list(chains[0])
        self.params: dict[tuple[int, str], torch.Tensor] = {}
        for i, layer in enumerate(self.layers):
            if isinstance(layer, nn.Conv2d | nn.Linear):
                for name in ("weight", "bias"):
                    if getattr(layer, name) is not None:
                        stacked = torch.stack([getattr(c[i], name).detach() for c in chains])
                        self.params[(i, name)] = stacked.to(device).requires_grad_(True)
        self.pixel_scale = [
            (layer.mean.to(device), layer.std.to(device)) if isinstance(layer, PixelScaling) else None
            for layer in self.layers
        ]

    def parameters(self) -> list[torch.Tensor]:
        return list(self.params.values())

    def forward(
        self,
        x: torch.Tensor,
        dropout: Sequence[tuple[torch.Generator, int]] | None,
    ) -> torch.Tensor:
        """x: maps (B, K*C, H, W), or vectors (K, B, F) for a head -> logits (K, B, classes). `dropout`:
        in training each run's generator and batch size (rows past it are padding); None in eval."""
        k = self.runs
        for i, layer in enumerate(self.layers):
            if isinstance(layer, PixelScaling):
                mean, std = self.pixel_scale[i]
                b, _, h, w = x.shape
                x = ((x.view(b, k, 3, h, w) / 255.0 - mean.unsqueeze(1)) / std.unsqueeze(1)).view(b, -1, h, w)
                if layer.size is not None and (h, w) != (layer.size, layer.size):
                    x = functional.interpolate(x, size=(layer.size,) * 2, mode="bilinear", antialias=True)
            elif isinstance(layer, nn.Conv2d):
                weight, bias = self.params[(i, "weight")], self.params.get((i, "bias"))
                x = functional.conv2d(
                    x,
                    weight.flatten(0, 1),
                    None if bias is None else bias.flatten(),
                    layer.stride,
                    layer.padding,
                    layer.dilation,
                    groups=k,
                )
            elif isinstance(layer, nn.Linear):
                weight, bias = self.params[(i, "weight")], self.params.get((i, "bias"))
                out = torch.bmm(x, weight.transpose(1, 2))
                x = out if bias is None else out + bias.unsqueeze(1)
            elif isinstance(layer, nn.Flatten):
                b = x.shape[0]
                x = x.view(b, k, -1).transpose(0, 1)
            elif isinstance(layer, nn.Dropout):
                if dropout is not None and layer.p > 0:
                    x = x * _dropout_masks(x, layer.p, dropout)
            else:
                x = layer(x)
        return x

    def write_back(self, k: int) -> None:
        """Run k's stacked parameters into its own model's layers."""
        with torch.no_grad():
            for (i, name), stacked in self.params.items():
                getattr(self.chains[k][i], name).copy_(stacked[k].detach().to(torch.float32).cpu())


def _dropout_masks(x: torch.Tensor, p: float, runs: Sequence[tuple[torch.Generator, int]]) -> torch.Tensor:
    """Every run's dropout mask for its rows, zero on padding rows: drawn from its own generator in the
    shape it draws alone, one call a run (the CPU kernel of `functional.dropout` is bernoulli_(1 - p),
    then / (1 - p)); a run without rows this step draws nothing."""
    maps = x.dim() == 4
    rows = x.shape[0] if maps else x.shape[1]
    per_run = (x.shape[1] // len(runs), *x.shape[2:]) if maps else (x.shape[2],)
    masks = torch.zeros((len(runs), rows, *per_run), device=x.device, dtype=x.dtype)
    for j, (generator, size) in enumerate(runs):
        if size:
            masks[j, :size].bernoulli_(1 - p, generator=generator)  # a contiguous block: as drawn alone
    masks.div_(1 - p)
    return masks.transpose(0, 1).reshape(x.shape) if maps else masks


class StackedAdam:
    """torch.optim.Adam (its single-tensor arithmetic, L2 weight decay) on stacked parameters, with a
    step count per run: a run without a batch this step keeps its parameters and moments."""

    def __init__(self, params: Sequence[torch.Tensor], runs: int, lr: float, weight_decay: float) -> None:
        self.params, self.lr, self.weight_decay = list(params), lr, weight_decay
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        self.steps = [0] * runs  # each run's step count, here and (for per-run scalars) on the device
        self.device_steps = torch.zeros(runs, dtype=torch.float64, device=self.params[0].device)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, active: Sequence[bool], active_on_device: torch.Tensor) -> None:
        """One step of the runs that had a batch: `active` here, `active_on_device` (K,) bool there
        (both given, so that no step waits for a copy between the two)."""
        beta1, beta2 = ADAM_BETAS
        self.steps = [n + bool(a) for n, a in zip(self.steps, active, strict=True)]
        self.device_steps += active_on_device
        counts = {n for n, a in zip(self.steps, active, strict=True) if a}
        if len(counts) == 1:  # every active run at one count: Adam's Python-float arithmetic, to the bit
            count = counts.pop()
            step_size: float | torch.Tensor = self.lr / (1 - beta1**count)
            bias2_sqrt: float | torch.Tensor = (1 - beta2**count) ** 0.5
        else:  # runs at different step counts: the same arithmetic with per-run scalars, on the device
            count_t = self.device_steps.clamp(min=1)
            step_size = (self.lr / (1 - beta1**count_t)).to(torch.float32)
            bias2_sqrt = ((1 - beta2**count_t) ** 0.5).to(torch.float32)
        for p, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq, strict=True):
            shape = (-1, *([1] * (p.dim() - 1)))
            on = active_on_device.view(shape)
            grad = p.grad if p.grad is not None else torch.zeros_like(p)
            if self.weight_decay != 0:
                grad = grad.add(p, alpha=self.weight_decay)
            m_new = m.lerp(grad, 1 - beta1)
            v_new = (v * beta2).addcmul_(grad, grad, value=1 - beta2)
            if isinstance(step_size, float):
                denom = (v_new.sqrt() / bias2_sqrt).add_(ADAM_EPS)
                p_new = p.addcdiv(m_new, denom, value=-step_size)
            else:
                denom = (v_new.sqrt() / bias2_sqrt.view(shape)).add_(ADAM_EPS)
                p_new = p - step_size.view(shape) * (m_new / denom)
            m.copy_(torch.where(on, m_new, m))
            v.copy_(torch.where(on, v_new, v))
            p.copy_(torch.where(on, p_new, p))

"""Runs trained together: K runs of one model and hyperparameters stacked into one network whose every
layer computes all K at once (grouped convolutions, batched matrix products): a GPU takes a study's
dozens of small runs in about the time of one.

Each run keeps all of its own: initial weights (its model built from its seed, as `fit` builds it),
training images and batch order (its shuffle generator), dropout masks (from its own generator, in the
order it draws them alone), Adam state and step count, epochs or step budget. Its gradient is that of
its own mean loss and Adam is elementwise, so it is the run trained alone up to the order of sums
(tests/test_together.py measures how far, on the CPU). A run with fewer batches in an epoch waits,
unchanged, for the others; each run is evaluated after each of its epochs. Supported: chains of
PixelScaling, Conv2d, ReLU, MaxPool2d, Dropout, Flatten and Linear (the study's CNN, every frozen
backbone's head: `chain_of`), in float32 or bfloat16 autocast (float16 needs a loss scale per run).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import torch
from torch import nn
from torch.nn import functional

from synthmix.config.compute import Compute, cpu_compute
from synthmix.config.hparams import Hyperparameters
from synthmix.config.params import TrainConfig
from synthmix.data.images import LabelledImages
from synthmix.models import FrozenBackboneClassifier, PixelScaling, model_entry
from synthmix.train.features import backbone_features, feature_cache_key
from synthmix.train.fit import EVAL_BATCH, EpochStats, FitResult

ADAM_BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults, which `fit` uses
ADAM_EPS = 1e-8
_ELEMENTWISE = (nn.ReLU, nn.MaxPool2d)


@dataclass(frozen=True)
class TogetherRun:
    """One run of a group: its training images, its seed and its step budget (None: hp.epochs)."""

    train: LabelledImages
    seed: int
    max_steps: int | None = None


def chain_of(model: nn.Module, image_size: int) -> list[nn.Module] | None:
    """The trained layers of `model` in forward order, when training them together is supported: a
    frozen backbone's head (on its cached features), or the whole network. None otherwise, and
    also when the chain does not compute what the model computes (checked on one image of `image_size`)."""
    frozen = isinstance(model, FrozenBackboneClassifier)
    units = list(model.head.children()) if frozen else [m for _, m in getattr(model, "summary_units", list)()]
    supported = (PixelScaling, nn.Conv2d, nn.Dropout, nn.Flatten, nn.Linear, *_ELEMENTWISE)
    plain = all(
        type(u) in supported and getattr(u, "groups", 1) == 1 and getattr(u, "start_dim", 1) == 1
        for u in units
    )
    if not units or not plain or any(isinstance(u, nn.Flatten) and u.end_dim != -1 for u in units):
        return None
    if not frozen:  # the chain must be the forward pass: one image through both
        probe = torch.rand(1, 3, image_size, image_size, generator=torch.Generator().manual_seed(0)) * 255
        was_training = model.training
        model.eval()
        with torch.no_grad():
            try:
                chained = probe
                for unit in units:
                    chained = unit(chained)
                same = torch.allclose(chained, model(probe), atol=1e-5)
            except RuntimeError:  # a layer that the chain does not feed as the model does
                same = False
        model.train(was_training)
        if not same:
            return None
    return units


@cache
def _supported(model_name: str, image_size: int) -> bool:
    return chain_of(model_entry(model_name).create(2, image_size), image_size) is not None


def trains_together(model_name: str, image_size: int, compute: Compute) -> bool:
    """Whether runs of `model_name` can train together in `compute`'s precision (not float16)."""
    return compute.dtype != torch.float16 and _supported(model_name, image_size)


def fit_together(
    model_name: str,
    runs: Sequence[TogetherRun],
    evaluate_on: LabelledImages,
    hp: Hyperparameters,
    *,
    num_classes: int,
    train_cfg: TrainConfig,
    compute: Compute | None = None,
) -> list[FitResult]:
    """`fit` of every run in `runs` (same model and hyperparameters, each its own seed, images and step
    budget, no on-the-fly augmentation), trained together; results in the order of `runs`."""
    compute = compute or cpu_compute()
    if compute.dtype == torch.float16:
        raise ValueError("runs train together in float32 or bfloat16; float16 needs a loss scale per run")
    if not runs or any(len(r.train) == 0 for r in runs):
        raise ValueError("fit_together needs runs with at least one training image each")
    compute.enable_fast_kernels()
    device = compute.device
    entry = model_entry(model_name)
    section = train_cfg.model_section(model_name)
    weights = entry.weights(section)
    image_size = int(runs[0].train.images.shape[-1])
    models, generators, inputs = [], [], []
    for run in runs:
        model = entry.build(num_classes, image_size, hp.dropout, section, weights, run.seed)
        # dropout: on the CPU torch's generator as the build left it, whence the run alone draws its masks
        generator = torch.Generator(device)
        generators.append(
            generator.set_state(torch.get_rng_state())
            if device.type == "cpu"
            else generator.manual_seed(run.seed)
        )
        models.append(model)
    frozen = isinstance(models[0], FrozenBackboneClassifier)
    eval_inputs = []
    for run, model in zip(runs, models, strict=True):
        if frozen:
            key = feature_cache_key(model_name, weights, run.seed, image_size, compute)
            model.to(device)
            inputs.append(backbone_features(model, run.train, train_cfg.cache_dir, key, compute))
            eval_inputs.append(backbone_features(model, evaluate_on, train_cfg.cache_dir, key, compute))
            model.cpu()
        else:
            inputs.append(run.train.images)
    chains = [chain_of(m, image_size) for m in models]
    if any(c is None for c in chains):
        raise ValueError(f"{model_name} is not a network that runs can train together (chain_of)")
    stack = _Stack([c for c in chains if c is not None], device)
    if not frozen:
        eval_inputs = [evaluate_on.images]
    train_x = torch.cat(inputs).to(device)  # every run's images (or features) on the device once
    train_y = torch.cat([r.train.labels for r in runs]).to(device)
    offsets = torch.tensor([0, *[len(r.train) for r in runs]]).cumsum(0)[:-1]
    eval_x = torch.stack([x.to(device) for x in eval_inputs]) if frozen else eval_inputs[0].to(device)
    eval_y = evaluate_on.labels.to(device)
    histories, logits, steps = _train_together(
        stack, runs, hp, generators, train_x, train_y, offsets, eval_x, eval_y, frozen, compute
    )
    results = []
    for k, model in enumerate(models):
        stack.write_back(k)
        results.append(FitResult(model.cpu().eval(), histories[k], weights.used, logits[k].cpu(), steps[k]))
    return results


class _Stack:
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


def _train_together(
    stack: _Stack,
    runs: Sequence[TogetherRun],
    hp: Hyperparameters,
    generators: Sequence[torch.Generator],
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    offsets: torch.Tensor,
    eval_x: torch.Tensor,
    eval_y: torch.Tensor,
    frozen: bool,
    compute: Compute,
) -> tuple[list[list[EpochStats]], list[torch.Tensor], list[int]]:
    """`fit._train_loop` for every run at once: per-run histories, final eval logits and steps."""
    k = len(runs)
    shuffles = [torch.Generator().manual_seed(r.seed) for r in runs]
    adam = _StackedAdam(stack.parameters(), k, hp.lr, hp.weight_decay)
    histories: list[list[EpochStats]] = [[] for _ in runs]
    final: list[torch.Tensor] = [torch.empty(0)] * k
    steps, epochs = [0] * k, [0] * k

    def going(j: int) -> bool:
        limit = runs[j].max_steps
        return epochs[j] < hp.epochs if limit is None else steps[j] < limit

    while any(going(j) for j in range(k)):
        # each going run's epoch: its own permutation, cut to its remaining steps
        batches: list[list[torch.Tensor]] = []
        for j, run in enumerate(runs):
            if not going(j):
                batches.append([])
                continue
            epochs[j] += 1
            order = torch.randperm(len(run.train), generator=shuffles[j]).split(hp.batch_size)
            limit = run.max_steps
            batches.append(list(order if limit is None else order[: limit - steps[j]]))
        sums = torch.zeros(k, dtype=torch.float64)
        correct, seen = [0] * k, [0] * k
        for step in range(max(len(b) for b in batches)):
            picked = [b[step] if step < len(b) else torch.empty(0, dtype=torch.long) for b in batches]
            losses, hits = _step(stack, adam, picked, generators, train_x, train_y, offsets, frozen, compute)
            for j, rows in enumerate(picked):
                if len(rows):
                    sums[j] += float(losses[j]) * len(rows)
                    correct[j] += int(hits[j])
                    seen[j] += len(rows)
        ran = [j for j in range(k) if batches[j]]
        logits = _predict(stack, eval_x, frozen, compute)
        for j in ran:
            steps[j] += len(batches[j])
            final[j] = logits[j]
            if len(eval_y):
                eval_loss = float(functional.cross_entropy(logits[j], eval_y))
                eval_acc = float((logits[j].argmax(1) == eval_y).float().mean())
            else:
                eval_loss = eval_acc = float("nan")
            histories[j].append(
                EpochStats(epochs[j], float(sums[j]) / seen[j], correct[j] / seen[j], eval_loss, eval_acc)
            )
    return histories, final, steps


def _step(
    stack: _Stack,
    adam: _StackedAdam,
    picked: Sequence[torch.Tensor],
    generators: Sequence[torch.Generator],
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    offsets: torch.Tensor,
    frozen: bool,
    compute: Compute,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step of every run with a batch (the others unchanged): each run's mean loss and
    correct predictions, (K,) each."""
    k = len(picked)
    sizes = [len(rows) for rows in picked]
    width = max(sizes)
    index = torch.zeros(k, width, dtype=torch.long)  # padding rows read image 0 and are masked out
    valid = torch.zeros(k, width, dtype=torch.bool)
    for j, rows in enumerate(picked):
        index[j, : len(rows)] = rows + offsets[j]
        valid[j, : len(rows)] = True
    index, valid = index.to(compute.device), valid.to(compute.device)
    x = train_x[index].to(torch.float32)  # (K, B, ...)
    if not frozen:
        x = x.transpose(0, 1).flatten(1, 2)  # (B, K*3, H, W)
    y = train_y[index]
    with compute.autocast():
        out = stack.forward(x, list(zip(generators, sizes, strict=True)))
    per_row = functional.cross_entropy(out.float().flatten(0, 1), y.flatten(), reduction="none").view(
        k, width
    )
    counts = torch.tensor(sizes, device=compute.device).clamp(min=1)
    losses = (per_row * valid).sum(1) / counts  # each run's mean over its own rows
    adam.zero_grad()
    losses.sum().backward()
    adam.step(torch.tensor([s > 0 for s in sizes], device=compute.device))
    hits = ((out.detach().argmax(2) == y) & valid).sum(1)
    return losses.detach().cpu(), hits.cpu()


def _predict(stack: _Stack, eval_x: torch.Tensor, frozen: bool, compute: Compute) -> torch.Tensor:
    """Every run's logits on the evaluation split, (K, N, classes) float32, in eval mode."""
    k = stack.runs
    chunk = max(1, EVAL_BATCH // k) if not frozen else EVAL_BATCH
    parts = []
    with torch.inference_mode(), compute.autocast():
        rows = eval_x.shape[1] if frozen else eval_x.shape[0]
        for start in range(0, rows, chunk):
            if frozen:
                x = eval_x[:, start : start + chunk].to(torch.float32)
            else:
                x = eval_x[start : start + chunk].to(torch.float32).repeat(1, k, 1, 1)
            parts.append(stack.forward(x, None).float())
    return torch.cat(parts, dim=1) if parts else torch.empty(k, 0, 0)


class _StackedAdam:
    """torch.optim.Adam (its single-tensor arithmetic, L2 weight decay) on stacked parameters, with a
    step count per run: a run without a batch this step keeps its parameters and moments."""

    def __init__(self, params: Sequence[torch.Tensor], runs: int, lr: float, weight_decay: float) -> None:
        self.params, self.lr, self.weight_decay = list(params), lr, weight_decay
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        self.steps = torch.zeros(runs, dtype=torch.float64)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, active: torch.Tensor) -> None:
        beta1, beta2 = ADAM_BETAS
        on_runs = active.cpu()
        self.steps += on_runs.to(torch.float64)
        counts = set(self.steps[on_runs].tolist())
        if len(counts) == 1:  # the usual step: Adam's own Python-float arithmetic, to the last bit
            count = counts.pop()
            step_size: float | torch.Tensor = self.lr / (1 - beta1**count)
            bias2_sqrt: float | torch.Tensor = (1 - beta2**count) ** 0.5
        else:  # runs at different step counts: the same arithmetic with per-run scalars
            count = self.steps.clamp(min=1)
            step_size = (self.lr / (1 - beta1**count)).to(torch.float32)
            bias2_sqrt = ((1 - beta2**count) ** 0.5).to(torch.float32)
        for p, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq, strict=True):
            shape = (-1, *([1] * (p.dim() - 1)))
            on = active.view(shape)
            grad = p.grad if p.grad is not None else torch.zeros_like(p)
            if self.weight_decay != 0:
                grad = grad.add(p, alpha=self.weight_decay)
            m_new = m.lerp(grad, 1 - beta1)
            v_new = (v * beta2).addcmul_(grad, grad, value=1 - beta2)
            if isinstance(step_size, float):
                denom = (v_new.sqrt() / bias2_sqrt).add_(ADAM_EPS)
                p_new = p.addcdiv(m_new, denom, value=-step_size)
            else:
                denom = (v_new.sqrt() / bias2_sqrt.to(p.device).view(shape)).add_(ADAM_EPS)
                p_new = p - step_size.to(p.device).view(shape) * (m_new / denom)
            m.copy_(torch.where(on, m_new, m))
            v.copy_(torch.where(on, v_new, v))
            p.copy_(torch.where(on, p_new, p))

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
from synthmix.models import FrozenBackboneClassifier, model_entry
from synthmix.train.features import backbone_features, feature_cache_key
from synthmix.train.fit import EVAL_BATCH, EpochStats, FitResult
from synthmix.train.stacked import LAYERS, Stack, StackedAdam


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
    plain = all(
        type(u) in LAYERS and getattr(u, "groups", 1) == 1 and getattr(u, "start_dim", 1) == 1 for u in units
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
    eval_features: dict[str, torch.Tensor] = {}  # by feature-cache key: runs of one backbone share it
    keys = []
    for run, model in zip(runs, models, strict=True):
        if frozen:
            key = feature_cache_key(model_name, weights, run.seed, image_size, compute)
            model.to(device)
            inputs.append(backbone_features(model, run.train, train_cfg.cache_dir, key, compute))
            if key not in eval_features:
                eval_features[key] = backbone_features(model, evaluate_on, train_cfg.cache_dir, key, compute)
            keys.append(key)
            model.cpu()
        else:
            inputs.append(run.train.images)
    chains = [chain_of(m, image_size) for m in models]
    if any(c is None for c in chains):
        raise ValueError(f"{model_name} is not a network that runs can train together (chain_of)")
    stack = Stack([c for c in chains if c is not None], device)
    train_x = torch.cat(inputs).to(device)  # every run's images (or features) on the device once
    train_y = torch.cat([r.train.labels for r in runs]).to(device)
    offsets = torch.tensor([0, *[len(r.train) for r in runs]]).cumsum(0)[:-1]
    if not frozen:
        eval_x = evaluate_on.images.to(device)
    elif len(eval_features) == 1:  # one backbone for all (pretrained weights): a view, not K copies
        eval_x = next(iter(eval_features.values())).to(device).expand(len(runs), -1, -1)
    else:
        on_device = {key: x.to(device) for key, x in eval_features.items()}
        eval_x = torch.stack([on_device[key] for key in keys])
    eval_y = evaluate_on.labels.to(device)
    histories, logits, steps = _train_together(
        stack, runs, hp, generators, train_x, train_y, offsets, eval_x, eval_y, frozen, compute
    )
    results = []
    for k, model in enumerate(models):
        stack.write_back(k)
        results.append(FitResult(model.cpu().eval(), histories[k], weights.used, logits[k].cpu(), steps[k]))
    return results


def _train_together(
    stack: Stack,
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
    adam = StackedAdam(stack.parameters(), k, hp.lr, hp.weight_decay)
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
        index, sizes = _epoch_index(batches, offsets, hp.batch_size)
        # one copy an epoch: no step waits for a copy from here
        index = index.to(compute.device)
        rows = torch.tensor(sizes, device=compute.device)  # (steps, K) each batch's rows
        sums = torch.zeros(k, dtype=torch.float64, device=compute.device)
        correct = torch.zeros(k, dtype=torch.long, device=compute.device)
        for step in range(len(sizes)):
            losses, hits = _step(
                stack,
                adam,
                index[step],
                sizes[step],
                rows[step],
                generators,
                train_x,
                train_y,
                frozen,
                compute,
            )
            # as fit sums them: each batch's float32 mean loss times its rows, in float64
            sums += losses.double() * rows[step]
            correct += hits
        seen = [sum(len(b) for b in run_batches) for run_batches in batches]
        sums_cpu, correct_cpu = sums.cpu().tolist(), correct.cpu().tolist()
        logits = _predict(stack, eval_x, frozen, compute)
        for j in (j for j in range(k) if batches[j]):
            steps[j] += len(batches[j])
            final[j] = logits[j]
            if len(eval_y):
                eval_loss = float(functional.cross_entropy(logits[j], eval_y))
                eval_acc = float((logits[j].argmax(1) == eval_y).float().mean())
            else:
                eval_loss = eval_acc = float("nan")
            train_loss, train_acc = sums_cpu[j] / seen[j], correct_cpu[j] / seen[j]
            histories[j].append(EpochStats(epochs[j], train_loss, train_acc, eval_loss, eval_acc))
    return histories, final, steps


def _epoch_index(
    batches: Sequence[Sequence[torch.Tensor]], offsets: torch.Tensor, width: int
) -> tuple[torch.Tensor, list[list[int]]]:
    """An epoch's rows of every run as one (steps, K, width) index into the concatenated training set
    (a batch's rows first, padding rows reading row 0) and each step's batch sizes."""
    k, count = len(batches), max(len(b) for b in batches)
    index = torch.zeros(count, k, width, dtype=torch.long)
    sizes = [[0] * k for _ in range(count)]
    for j, run_batches in enumerate(batches):
        for step, rows in enumerate(run_batches):
            index[step, j, : len(rows)] = rows + offsets[j]
            sizes[step][j] = len(rows)
    return index, sizes


def _step(
    stack: Stack,
    adam: StackedAdam,
    index: torch.Tensor,
    sizes: Sequence[int],
    rows: torch.Tensor,
    generators: Sequence[torch.Generator],
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    frozen: bool,
    compute: Compute,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step of every run with a batch (the others unchanged): each run's mean loss and
    correct predictions, (K,) each, on the device."""
    k, width = index.shape
    valid = torch.arange(width, device=rows.device) < rows.unsqueeze(1)  # (K, B): a batch's own rows
    x = train_x[index].to(torch.float32)  # (K, B, ...)
    if not frozen:
        x = x.transpose(0, 1).flatten(1, 2)  # (B, K*3, H, W)
    y = train_y[index]
    with compute.autocast():
        out = stack.forward(x, list(zip(generators, sizes, strict=True)))
    per_row = functional.cross_entropy(out.float().flatten(0, 1), y.flatten(), reduction="none").view(
        k, width
    )
    losses = (per_row * valid).sum(1) / rows.clamp(min=1)  # each run's mean over its own rows
    adam.zero_grad()
    losses.sum().backward()
    adam.step([n > 0 for n in sizes], rows > 0)
    hits = ((out.detach().argmax(2) == y) & valid).sum(1)
    return losses.detach(), hits


def _predict(stack: Stack, eval_x: torch.Tensor, frozen: bool, compute: Compute) -> torch.Tensor:
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

"""`fit`: tensors in, a trained model and its curves out. Pure apart from the feature cache.

fit is seeded and deterministic on CPU, and the split it reports on (`evaluate_on`) never influences
training: no early stopping, no model selection, the last epoch's model is the result. A model with a
frozen backbone trains only its head, on the backbone's cached features (features.py), or, when every
batch is augmented afresh (augment.py; on CUDA device_augment.py), on the features of each augmented
batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from synthmix.config.compute import Compute, cpu_compute
from synthmix.config.hparams import Hyperparameters
from synthmix.config.params import AugmentConfig, TrainConfig
from synthmix.core.files import sha256_json
from synthmix.data.images import LabelledImages
from synthmix.models import FrozenBackboneClassifier, model_entry
from synthmix.train.augment import augment_batch
from synthmix.train.device_augment import augment_on_device
from synthmix.train.features import backbone_features, feature_cache_key

EVAL_BATCH = 256


@dataclass(frozen=True)
class EpochStats:
    epoch: int  # from 1
    train_loss: float
    train_accuracy: float
    eval_loss: float  # on `evaluate_on` (the test split in a study run, the validation split when tuning)
    eval_accuracy: float

    def as_row(self) -> tuple[int, float, float, float, float]:
        """(epoch, train_loss, train_accuracy, eval_loss, eval_accuracy): a run's history.csv row."""
        return (self.epoch, self.train_loss, self.train_accuracy, self.eval_loss, self.eval_accuracy)


@dataclass
class FitResult:
    model: nn.Module  # the trained classifier: float pixels in [0, 255] (N, 3, S, S) -> logits
    history: list[EpochStats]
    weights_used: str  # what the model started from: "imagenet", "random", "none" or a file path
    eval_logits: torch.Tensor  # final logits on evaluate_on, (N, C) float32
    steps: int  # optimiser steps taken


def fit(
    model_name: str,
    train: LabelledImages,
    evaluate_on: LabelledImages,
    hp: Hyperparameters,
    *,
    seed: int,
    num_classes: int,
    train_cfg: TrainConfig,
    on_epoch: Callable[[EpochStats], None] | None = None,
    augment: AugmentConfig | None = None,
    max_steps: int | None = None,
    compute: Compute | None = None,
) -> FitResult:
    """Train `model_name` on `train` for hp.epochs epochs; report each epoch on `evaluate_on`.

    `on_epoch` runs after each epoch and may raise (optuna.TrialPruned); the exception propagates.
    `augment`: every training batch is augmented afresh by that policy, from a generator of its own
    seeded from `seed` (the batch order stays that of the same run without augmentation).
    `max_steps`: exactly that many optimiser steps instead of hp.epochs epochs; the last epoch may
    stop part-way, and its history row averages the batches it ran.
    `compute`: the device and precision it trains in (default: the CPU in float32). The images and
    the model go to the device once; the model and the logits come back on the CPU.
    """
    entry = model_entry(model_name)
    compute = compute or cpu_compute()
    compute.enable_fast_kernels()
    device = compute.device
    if len(train) == 0:
        raise ValueError("fit needs at least one training image")
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps must be at least 1, not {max_steps}")
    section = train_cfg.model_section(model_name)
    weights = entry.weights(section)
    image_size = int(train.images.shape[-1])
    model = entry.build(num_classes, image_size, hp.dropout, section, weights, seed)  # seeds torch's RNG
    model.to(device)  # in place; nothing on the CPU
    frozen = isinstance(model, FrozenBackboneClassifier)
    key = feature_cache_key(model_name, weights, seed, image_size, compute) if frozen else ""
    # A frozen backbone's head trains on its features: cached ones (the same numbers the backbone gives)
    # or, when every batch is augmented afresh, those of each augmented batch. Evaluation's are cached.
    inputs: Callable[[torch.Tensor], torch.Tensor]
    if augment is not None:
        embed = model.features if frozen else None
        inputs = _augmented_inputs(train.images, augment, seed, embed, compute)
    elif frozen:
        inputs = backbone_features(model, train, train_cfg.cache_dir, key, compute).to(device).__getitem__
    else:
        inputs = _as_float(train.images.to(device)).__getitem__
    if frozen:
        eval_x = backbone_features(model, evaluate_on, train_cfg.cache_dir, key, compute).to(device)
        trained: nn.Module = model.head
    else:
        eval_x, trained = _as_float(evaluate_on.images.to(device)), model
    labels, eval_labels = train.labels.to(device), evaluate_on.labels.to(device)
    history, logits, steps = _train_loop(
        trained, inputs, labels, eval_x, eval_labels, hp, seed, on_epoch, max_steps, compute
    )
    model.cpu().eval()
    return FitResult(model, history, weights.used, logits.cpu(), steps)


def _as_float(images: torch.Tensor) -> torch.Tensor:
    return images.to(torch.float32)


def _augmented_inputs(
    images: torch.Tensor,
    cfg: AugmentConfig,
    seed: int,
    embed: Callable[[torch.Tensor], torch.Tensor] | None,
    compute: Compute,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Batch indices -> the model's inputs for those images, augmented afresh on every call; through
    the frozen backbone (`embed`, eval mode, no gradients) when only a head trains. On the CPU each
    image is augmented in turn (augment.py); on CUDA the images go to the GPU once and each batch is
    augmented there at once, from a generator on the GPU (device_augment.py)."""
    generator = torch.Generator(compute.device).manual_seed(int(sha256_json(["augment", seed])[:15], 16))
    on_device = images.to(compute.device) if compute.is_cuda else None

    def inputs(batch: torch.Tensor) -> torch.Tensor:
        if on_device is None:
            x = augment_batch(images[batch], generator, cfg)
        else:
            x = augment_on_device(on_device[batch.to(compute.device)], generator, cfg)
        x = _as_float(x).to(compute.device)
        if embed is None:
            return x
        with torch.no_grad(), compute.autocast():
            return embed(x).float()

    return inputs


@contextmanager
def single_thread() -> Iterator[None]:
    """Small models train fastest on one thread: their ops are too small to split, and splitting them
    across busy cores is up to 10x slower. One fixed thread count also keeps results bit-identical
    on machines with different core counts."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _train_loop(
    module: nn.Module,
    inputs: Callable[[torch.Tensor], torch.Tensor],
    train_y: torch.Tensor,
    eval_x: torch.Tensor,
    eval_y: torch.Tensor,
    hp: Hyperparameters,
    seed: int,
    on_epoch: Callable[[EpochStats], None] | None,
    max_steps: int | None,
    compute: Compute,
) -> tuple[list[EpochStats], torch.Tensor, int]:
    """Adam + cross-entropy, shuffled minibatches from a seeded generator; eval after every epoch.

    `inputs` maps a batch's indices to the module's inputs. Runs hp.epochs epochs, or, given
    `max_steps`, epochs until that many steps are done. Returns history, final eval logits and steps.
    Forward passes run under `compute`'s autocast (none in float32); the loss is float32, and float16
    scales it (a GradScaler) so its gradients do not underflow.
    """
    with single_thread():
        trainable = [p for p in module.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(trainable, lr=hp.lr, weight_decay=hp.weight_decay)
        scaler = torch.amp.GradScaler(compute.device.type) if compute.dtype == torch.float16 else None
        shuffle = torch.Generator().manual_seed(seed)
        history: list[EpochStats] = []
        logits = torch.empty(0)
        n, steps, epoch = len(train_y), 0, 0
        while (epoch < hp.epochs) if max_steps is None else (steps < max_steps):
            epoch += 1
            batches = torch.randperm(n, generator=shuffle).split(hp.batch_size)
            if max_steps is not None:
                batches = batches[: max_steps - steps]
            loss_sum, correct, seen = _train_epoch(
                module, optimizer, inputs, train_y, batches, compute, scaler
            )
            steps += len(batches)
            logits = predict_logits(module, eval_x, compute=compute)
            eval_loss = float(nn.functional.cross_entropy(logits, eval_y)) if len(eval_y) else float("nan")
            eval_acc = float((logits.argmax(1) == eval_y).float().mean()) if len(eval_y) else float("nan")
            stats = EpochStats(epoch, loss_sum / seen, correct / seen, eval_loss, eval_acc)
            history.append(stats)
            if on_epoch is not None:
                on_epoch(stats)
        return history, logits, steps


def _train_epoch(
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    inputs: Callable[[torch.Tensor], torch.Tensor],
    train_y: torch.Tensor,
    batches: Sequence[torch.Tensor],
    compute: Compute,
    scaler: torch.amp.GradScaler | None,
) -> tuple[float, int, int]:
    """One optimiser step per batch; the summed loss, correct predictions and images seen."""
    module.train()
    loss_fn = nn.CrossEntropyLoss()
    loss_sum, correct, seen = 0.0, 0, 0
    for batch in batches:
        x, y = inputs(batch), train_y[batch]
        with compute.autocast():
            out = module(x)
        loss = loss_fn(out.float(), y)  # float32 whatever the forward pass ran in (a no-op in float32)
        optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        # Running train metrics over the epoch, dropout on: what the study's curves show.
        loss_sum += float(loss.detach()) * len(batch)
        correct += int((out.detach().argmax(1) == y).sum())
        seen += len(batch)
    return loss_sum, correct, seen


def predict_logits(
    module: nn.Module, inputs: torch.Tensor, batch_size: int = EVAL_BATCH, compute: Compute | None = None
) -> torch.Tensor:
    """Logits of `module` in eval mode, in batches (float32, (N, C)), under `compute`'s autocast (the
    inputs already on its device)."""
    module.eval()
    with torch.inference_mode(), (compute or cpu_compute()).autocast():
        parts = [module(chunk.to(torch.float32)).float() for chunk in inputs.split(batch_size)]
    return torch.cat(parts) if parts else torch.empty(0)

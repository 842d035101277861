"""Training: `fit` (pure: tensors in, trained model and curves out) and the `train` stage around it.

fit is seeded and deterministic on CPU, and the split it reports on (`evaluate_on`) never influences
training: no early stopping, no model selection, the last epoch's model is the result. A frozen
ResNet50 computes each unique image's features once (cached on disk) and trains its head on them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from synthmix.config import TrainConfig, check_model
from synthmix.data import atomic_path
from synthmix.models import (
    BackboneWeights,
    FrozenBackboneClassifier,
    build_model,
    resolve_resnet_weights,
)
from synthmix.store import LabelledImages

EVAL_BATCH = 256
FEATURE_PREPROCESSING = "x/255, imagenet mean/std, no augmentation"


@dataclass(frozen=True)
class Hyperparameters:
    lr: float
    weight_decay: float
    epochs: int
    batch_size: int
    dropout: float  # cnn: the fc dropout; resnet50: dropout before the new head (0.0 = plain linear head)


def fixed_hyperparameters(model: str, train_cfg: TrainConfig) -> Hyperparameters:
    """The params.yaml values for `model`."""
    check_model(model)
    if model == "cnn":
        c = train_cfg.cnn
        return Hyperparameters(c.lr, c.weight_decay, c.epochs, train_cfg.batch_size, c.fc_dropout)
    r = train_cfg.resnet50
    return Hyperparameters(r.lr, r.weight_decay, r.epochs, train_cfg.batch_size, 0.0)


@dataclass(frozen=True)
class EpochStats:
    epoch: int  # from 1
    train_loss: float
    train_accuracy: float
    eval_loss: float  # on `evaluate_on` (the test split in a study run, the validation split when tuning)
    eval_accuracy: float


@dataclass
class FitResult:
    model: nn.Module  # the trained classifier: float pixels in [0, 255] (N, 3, S, S) -> logits
    history: list[EpochStats]
    weights_used: str  # "imagenet" | "random" | "<path>" | "none" (cnn: "random")
    eval_logits: torch.Tensor  # final logits on evaluate_on, (N, C) float32


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
) -> FitResult:
    """Train `model_name` on `train` for hp.epochs epochs; report each epoch on `evaluate_on`.

    `on_epoch` runs after each epoch and may raise (optuna.TrialPruned); the exception propagates.
    """
    check_model(model_name)
    if len(train) == 0:
        raise ValueError("fit needs at least one training image")
    torch.manual_seed(seed)  # model initialisation and dropout
    image_size = int(train.images.shape[-1])
    if model_name == "cnn":
        model = build_model(
            "cnn", num_classes, image_size, dropout=hp.dropout, conv_dropout=train_cfg.cnn.conv_dropout
        )
        history, logits = _train_loop(
            model, _as_float(train.images), train.labels, _as_float(evaluate_on.images), evaluate_on.labels,
            hp, seed, on_epoch,
        )  # fmt: skip
        return FitResult(model, history, "random", logits)

    weights = resolve_resnet_weights(train_cfg.resnet50.weights)
    model = build_model("resnet50", num_classes, image_size, dropout=hp.dropout, weights=weights)
    assert isinstance(model, FrozenBackboneClassifier)
    # Only the head trains: run it on cached backbone features, the same numbers the backbone gives.
    key = feature_cache_key(weights, seed, image_size)
    train_features = backbone_features(model, train, train_cfg.cache_dir, key)
    eval_features = backbone_features(model, evaluate_on, train_cfg.cache_dir, key)
    history, logits = _train_loop(
        model.head, train_features, train.labels, eval_features, evaluate_on.labels, hp, seed, on_epoch
    )
    model.eval()
    return FitResult(model, history, weights.used, logits)


def _as_float(images: torch.Tensor) -> torch.Tensor:
    return images.to(torch.float32)


def _train_loop(
    module: nn.Module,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    eval_x: torch.Tensor,
    eval_y: torch.Tensor,
    hp: Hyperparameters,
    seed: int,
    on_epoch: Callable[[EpochStats], None] | None,
) -> tuple[list[EpochStats], torch.Tensor]:
    """Adam + cross-entropy, shuffled minibatches from a seeded generator; eval after every epoch."""
    trainable = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=hp.lr, weight_decay=hp.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    shuffle = torch.Generator().manual_seed(seed)
    history: list[EpochStats] = []
    logits = torch.empty(0)
    n = len(train_y)
    for epoch in range(1, hp.epochs + 1):
        module.train()
        loss_sum, correct = 0.0, 0
        for batch in torch.randperm(n, generator=shuffle).split(hp.batch_size):
            x, y = train_x[batch], train_y[batch]
            out = module(x)
            loss = loss_fn(out, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            # Running train metrics over the epoch, dropout on: what the study's curves show.
            loss_sum += float(loss.detach()) * len(batch)
            correct += int((out.detach().argmax(1) == y).sum())
        logits = predict_logits(module, eval_x)
        eval_loss = float(nn.functional.cross_entropy(logits, eval_y)) if len(eval_y) else float("nan")
        eval_acc = float((logits.argmax(1) == eval_y).float().mean()) if len(eval_y) else float("nan")
        stats = EpochStats(epoch, loss_sum / n, correct / n, eval_loss, eval_acc)
        history.append(stats)
        if on_epoch is not None:
            on_epoch(stats)
    return history, logits


def predict_logits(module: nn.Module, inputs: torch.Tensor, batch_size: int = EVAL_BATCH) -> torch.Tensor:
    """Logits of `module` in eval mode, in batches (float32, (N, C))."""
    module.eval()
    with torch.inference_mode():
        parts = [module(chunk.to(torch.float32)) for chunk in inputs.split(batch_size)]
    return torch.cat(parts) if parts else torch.empty(0)


# --- the frozen backbone's feature cache ----------------------------------------------------------


def feature_cache_key(weights: BackboneWeights, seed: int, image_size: int) -> str:
    """Backbone, exact weights, input size and preprocessing: everything the features depend on."""
    identity = weights.identity if not weights.is_random else f"random-init:seed{seed}"
    import torchvision

    spec = {
        "backbone": "torchvision.resnet50",
        "weights": identity,
        "image_size": image_size,
        "preprocessing": FEATURE_PREPROCESSING,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:20]


def cached_feature_path(cache_dir: Path, key: str, sha256: str) -> Path:
    return cache_dir / "features" / key / sha256[:2] / f"{sha256}.npy"


def backbone_features(
    model: FrozenBackboneClassifier, images: LabelledImages, cache_dir: Path, key: str
) -> torch.Tensor:
    """The backbone's features of every image, computed once per unique image and cached under `key`."""
    features: dict[str, np.ndarray] = {}
    todo: dict[str, int] = {}
    for i, sha in enumerate(images.keys):
        if sha in features or sha in todo:
            continue
        path = cached_feature_path(cache_dir, key, sha)
        if path.exists():
            features[sha] = np.load(path)
        else:
            todo[sha] = i
    if todo:
        rows = torch.tensor(list(todo.values()), dtype=torch.long)
        model.eval()
        with torch.inference_mode():
            computed = torch.cat(
                [model.features(images.images[chunk].to(torch.float32)) for chunk in rows.split(64)]
            ).numpy()
        for sha, row in zip(todo, computed, strict=True):
            target = cached_feature_path(cache_dir, key, sha)
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(target) as tmp, open(tmp, "wb") as fh:
                np.save(fh, row)
            features[sha] = row
    if not images.keys:
        return torch.zeros(0, 2048)
    return torch.from_numpy(np.stack([features[sha] for sha in images.keys]))


def hyperparameters_dict(hp: Hyperparameters) -> dict[str, float | int]:
    return asdict(hp)

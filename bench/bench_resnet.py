"""Frozen ResNet50 over the study's grid: synthmix's cached-feature path vs the study's loop vs the limit.

- synthmix: `train.fit` for every (mix, seed) of the grid, sharing one cold image and feature cache,
  as the train stage does (decoding, feature extraction, model building and head training all timed).
- the study's loop: the whole model (backbone + head) on every batch of every epoch, and on the test
  set after every epoch for the curves. Too slow to run over the whole grid on a laptop CPU, so it is
  measured on one mix, one seed and a few epochs, and extrapolated per forward pass to the grid (the
  table says so).
- the limit: one backbone pass over the unique images (train + synthetic + test), nothing else.

The backbone loads a weights file (a random ResNet50 state dict standing in for ImageNet's, which cannot
be downloaded here): like ImageNet weights, a file's features are shared by every seed.

Run from the repository root:  .venv/bin/python bench/bench_resnet.py [--sizes 128 224] [--train 30]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import tempfile
from pathlib import Path

import torch
from common import (
    append_results,
    command_line,
    describe_machine,
    make_study_dir,
    markdown_table,
    set_threads,
    stopwatch,
)
from torch import nn

from synthmix.config import ResNetConfig, TrainConfig
from synthmix.data import read_manifest
from synthmix.mixes import Mix, read_synthetic_manifest, training_images
from synthmix.models import FrozenBackboneClassifier, build_model, resolve_resnet_weights
from synthmix.store import LabelledImages, load_images
from synthmix.train import Hyperparameters, fit, fixed_hyperparameters, predict_logits

BACKBONE_BATCH = 64  # the batch train.backbone_features uses
PROFILED = ("backbone_features", "build_resnet50", "_load_backbone_state", "_train_loop", "load_images")


def study_grid(real: int, synthetic: int) -> tuple[Mix, ...]:
    """The study's five mixes scaled to `real` real and `synthetic` synthetic images per class."""
    return (
        Mix(real, 0),
        Mix(real, synthetic // 2),
        Mix(real, synthetic),
        Mix(real // 2, synthetic),
        Mix(0, synthetic),
    )


def load_set(items, index: dict[str, int], size: int, cache_dir: Path) -> LabelledImages:
    return load_images(
        [i.path for i in items], [index[i.label] for i in items], [i.sha256 for i in items], size, cache_dir
    )


def synthmix_grid(train_sets, test_rows, index, seeds, hp, cfg: TrainConfig) -> dict[str, float]:
    """The grid the way the train stage runs it; returns the total and its decode share."""
    decode = 0.0
    with stopwatch() as total:
        with stopwatch() as t:
            test = load_set(test_rows, index, cfg.image_size, cfg.cache_dir)
        decode += t()
        for items in train_sets.values():
            with stopwatch() as t:
                train = load_set(items, index, cfg.image_size, cfg.cache_dir)
            decode += t()
            for seed in seeds:
                fit("resnet50", train, test, hp, seed=seed, num_classes=len(index), train_cfg=cfg)
    return {"total": total(), "decode": decode}


def backbone_limit(model: FrozenBackboneClassifier, unique: torch.Tensor) -> float:
    """Seconds for one backbone pass over the unique images, in the batches synthmix uses."""
    model.eval()
    with torch.inference_mode():
        model.features(unique[:4].float())  # warm-up: first-call allocations are not the limit
        with stopwatch() as t:
            for chunk in unique.split(BACKBONE_BATCH):
                model.features(chunk.float())
    return t()


def study_loop(model: nn.Module, train: LabelledImages, test: LabelledImages, hp: Hyperparameters,
               epochs: int, seed: int) -> float:  # fmt: skip
    """The study's loop: backbone + head on every batch of every epoch, test set scored every epoch."""
    torch.manual_seed(seed)
    head = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(head, lr=hp.lr, weight_decay=hp.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    shuffle = torch.Generator().manual_seed(seed)
    with stopwatch() as t:
        for _ in range(epochs):
            model.train()
            for batch in torch.randperm(len(train), generator=shuffle).split(hp.batch_size):
                loss = loss_fn(model(train.images[batch].float()), train.labels[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            predict_logits(model, test.images)
    return t()


def profile_top(profile: cProfile.Profile, total: float) -> list[list[object]]:
    """Cumulative seconds of the functions that make up the synthmix path."""
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    rows = []
    for name in PROFILED:
        entries = [(v[3], v[1]) for (_, _, fn), v in stats.items() if fn == name]
        if entries:
            seconds = sum(e[0] for e in entries)
            calls = sum(e[1] for e in entries)
            rows.append([f"`{name}`", calls, seconds, f"{seconds / total:.0%}"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 224], help="Input sizes in pixels.")
    parser.add_argument("--train", type=int, default=30, help="Real training images per class.")
    parser.add_argument("--test", type=int, default=30, help="Real test images per class.")
    parser.add_argument("--synthetic", type=int, default=30, help="Synthetic images per class.")
    parser.add_argument("--seeds", type=int, default=3, help="Seeds per mix (the study's 3).")
    parser.add_argument("--epochs", type=int, default=20, help="Head epochs (the study's 20).")
    parser.add_argument("--loop-epochs", type=int, default=1, help="Epochs of the study's loop measured.")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores).")
    parser.add_argument("--no-append", action="store_true", help="Print only; leave RESULTS.md alone.")
    args = parser.parse_args()

    threads = set_threads(args.threads)
    machine = describe_machine(threads)
    command = command_line()
    with tempfile.TemporaryDirectory(prefix="synthmix-bench-resnet-") as tmp:
        root = Path(tmp)
        make_study_dir(root / "study", "digits", 10, args.train, args.test, args.synthetic)
        os.chdir(root / "study")
        train_rows = read_manifest(Path("prepared/train.csv"))
        test_rows = sorted(read_manifest(Path("prepared/test.csv")), key=lambda r: r.path.as_posix())
        synthetic_rows = read_synthetic_manifest(Path("synthetic/manifest.csv"))
        index = {c: i for i, c in enumerate(sorted({r.label for r in test_rows}))}
        grid = study_grid(args.train, args.synthetic)
        train_sets = {mix: training_images(train_rows, synthetic_rows, mix) for mix in grid}
        seeds = tuple(range(args.seeds))
        weights_file = root / "resnet50.pth"
        torch.manual_seed(0)
        torch.save(build_model("resnet50", 10, 224, dropout=0.0).backbone.state_dict(), weights_file)

        rows, profiles = [], []
        for size in args.sizes:
            cfg = TrainConfig(
                image_size=size,
                cache_dir=root / f"cache-{size}",
                resnet50=ResNetConfig(epochs=args.epochs, weights=str(weights_file)),
            )
            hp = fixed_hyperparameters("resnet50", cfg)
            profile = cProfile.Profile()
            profile.enable()
            ours = synthmix_grid(train_sets, test_rows, index, seeds, hp, cfg)
            profile.disable()
            profiles.append((size, profile_top(profile, ours["total"]), ours["total"]))

            unique_items = {i.sha256: i for s in train_sets.values() for i in s} | {
                r.sha256: r for r in test_rows
            }
            unique = load_set(list(unique_items.values()), index, size, cfg.cache_dir).images
            weights = resolve_resnet_weights(str(weights_file))
            model = build_model("resnet50", 10, size, dropout=hp.dropout, weights=weights)
            assert isinstance(model, FrozenBackboneClassifier)
            limit = backbone_limit(model, unique)

            loop_mix = grid[0]
            loop_train = load_set(train_sets[loop_mix], index, size, cfg.cache_dir)
            loop_test = load_set(test_rows, index, size, cfg.cache_dir)
            measured = study_loop(model, loop_train, loop_test, hp, args.loop_epochs, seed=0)
            per_forward = measured / (args.loop_epochs * (len(loop_train) + len(loop_test)))
            grid_forwards = (
                len(seeds) * args.epochs * sum(len(s) + len(test_rows) for s in train_sets.values())
            )
            study_grid_seconds = per_forward * grid_forwards
            rows.append([
                size, len(unique), limit, ours["total"], ours["total"] / limit,
                f"{measured:.3g} s ({loop_mix.name}, seed 0, {args.loop_epochs} epoch(s))",
                f"{study_grid_seconds:,.0f} s (extrapolated)", study_grid_seconds / ours["total"],
            ])  # fmt: skip
            print(markdown_table(HEADER, rows[-1:]), flush=True)

    table = markdown_table(HEADER, rows)
    profile_tables = "\n\n".join(
        f"Where synthmix's {total:.3g} s at {size} px went (cProfile, cumulative, calls nest):\n\n"
        + markdown_table(["function", "calls", "seconds", "share of total"], top)
        for size, top, total in profiles
    )
    grid_text = ", ".join(m.name for m in grid)
    body = f"""Data: the embedded digits, 10 classes x ({args.train} train + {args.test} test) real + {args.synthetic}
synthetic a class (left-over digits stand in for generated images), resized to each size. Grid: {grid_text}
x {len(seeds)} seeds x {args.epochs} head epochs, batch {hp.batch_size}. The limit is one backbone pass
(batches of {BACKBONE_BATCH}, inference mode) over the unique images; the goal is synthmix within 1.2x of it.
The study's loop was run on the preloaded uint8 tensors (no decoding charged to it) for the mix, seed and
epochs named, then extrapolated per forward pass to the whole grid: {len(seeds)} seeds x {args.epochs}
epochs x (each mix's training images + the {len(test_rows)} test images).

{table}

{profile_tables}
"""
    print(body)
    if not args.no_append:
        append_results("Frozen ResNet50 over the study's grid", command, machine, body)


HEADER = [
    "px",
    "unique images",
    "limit: one backbone pass (s)",
    "synthmix grid (s)",
    "synthmix / limit",
    "study loop, measured",
    "study loop, full grid",
    "study loop / synthmix",
]

if __name__ == "__main__":
    main()

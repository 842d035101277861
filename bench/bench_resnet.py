"""Frozen ResNet50 over the study's grid: synthmix's path vs the limit (and vs the study's own loop).

- the limit: one backbone pass over the unique images (train + synthetic + test), already decoded, in
  inference mode, in batches of features.FEATURE_BATCH, with every thread: nothing else.
- synthmix: what the train stage does, from cold image and feature caches and a fresh process's empty
  model caches: `load_images` for the test set and each mix, `precompute_features` once (main process,
  every thread; it loads the weights file), then `fit` for every (mix, seed) on the cached features
  (single-threaded, as fit runs; one after another here, where the stage hands them to train.workers).
- the study's loop: the whole model (backbone + head) on every batch of every epoch, and on the test set
  after every epoch for the curves. Too slow to run over the grid on a CPU, so it is measured on one mix,
  one seed and a few epochs and extrapolated per forward pass to the grid (the table says so).

Fair timing: no profiler while timing; both sides warmed up in this process first; then rounds of
limit, synthmix, limit, synthmix, ..., limit, so each synthmix pass sits between two limit passes and
drifting load hits both. The headline ratio is the median over rounds of synthmix / (mean of the two
limit passes around it); best synthmix / best limit is shown too. A separate cProfile pass afterwards
shows where synthmix's time goes (the profiler's overhead inflates that pass, so its shares are read,
not its seconds).

The backbone loads a weights file (a random ResNet50 state dict standing in for ImageNet's, which cannot
be downloaded here): like ImageNet weights, a file's features are shared by every seed.

Run from the repository root:  .venv/bin/python bench/bench_resnet.py [--sizes 128 224] [--train 30]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from common import (
    append_results,
    command_line,
    describe_machine,
    make_study_dir,
    markdown_table,
    median,
    set_threads,
    stopwatch,
    write_resnet50_weights,
)
from torch import nn

from synthmix import models
from synthmix.config.hparams import Hyperparameters, fixed_hyperparameters
from synthmix.config.params import ResNetConfig, TrainConfig
from synthmix.data.images import LabelledImages, load_images
from synthmix.data.mixes import Mix, training_images
from synthmix.data.real import read_manifest
from synthmix.generate.manifest import read_synthetic_manifest
from synthmix.models import MODELS, FrozenBackboneClassifier
from synthmix.train.features import FEATURE_BATCH, precompute_features
from synthmix.train.fit import fit, predict_logits

MODEL = "resnet50"
# (label, file the function is in, function, only when called from this function): cProfile rows.
PROFILED = (
    ("`load_images` (decode + resize, cold cache)", "synthmix/data/images.py", "load_images", None),
    ("`precompute_features` (once)", "synthmix/train/features.py", "precompute_features", None),
    ("- trunk built, weights file read (`_resnet50_backbone`)", "synthmix/models.py", "_resnet50_backbone", None),
    ("- backbone forward (`features`)", "synthmix/models.py", "features", None),
    ("`fit` (every run)", "synthmix/train/fit.py", "fit", None),
    ("- model built (`build_resnet50`)", "synthmix/models.py", "build_resnet50", "fit"),
    ("- cached features read (`backbone_features`)", "synthmix/train/features.py", "backbone_features", "fit"),
    ("- head trained and scored (`_train_loop`)", "synthmix/train/fit.py", "_train_loop", None),
)  # fmt: skip


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


def forget_process_caches() -> None:
    """What a fresh train-stage process starts without: the shared trunk (which holds the read weights)
    and the weights file's hash."""
    models._resnet50_backbone.cache_clear()
    models._file_sha256.cache_clear()


def synthmix_grid(train_sets, test_rows, index, seeds: Sequence[int], hp: Hyperparameters,
                  cfg: TrainConfig) -> dict[str, float]:  # fmt: skip
    """The grid the way the train stage runs it, from cold caches; seconds in all and per phase."""
    forget_process_caches()
    shutil.rmtree(cfg.cache_dir, ignore_errors=True)
    with stopwatch() as total:
        with stopwatch() as decode:
            test = load_set(test_rows, index, cfg.image_size, cfg.cache_dir)
            stores = {
                mix: load_set(items, index, cfg.image_size, cfg.cache_dir)
                for mix, items in train_sets.items()
            }
        with stopwatch() as features:
            precompute_features(MODEL, seeds, [test, *stores.values()], len(index), cfg)
        with stopwatch() as fits:
            for mix in train_sets:
                for seed in seeds:
                    fit(MODEL, stores[mix], test, hp, seed=seed, num_classes=len(index), train_cfg=cfg)
    shutil.rmtree(cfg.cache_dir, ignore_errors=True)
    return {"total": total(), "decode": decode(), "features": features(), "fits": fits()}


def backbone_limit(model: FrozenBackboneClassifier, unique: torch.Tensor) -> float:
    """Seconds for one backbone pass over the unique images, in the batches synthmix uses."""
    model.eval()
    with torch.inference_mode(), stopwatch() as t:
        for chunk in unique.split(FEATURE_BATCH):
            model.features(chunk.to(torch.float32))
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


def profile_rows(profile: cProfile.Profile, total: float) -> list[list[object]]:
    """Cumulative seconds of the functions that make up the synthmix path (nested rows start with -)."""
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    rows = []
    for label, file, name, caller in PROFILED:
        calls, seconds = 0, 0.0
        for (path, _, fn), (_, nc, _, ct, callers) in stats.items():
            if fn != name or not path.endswith(file):
                continue
            if caller is None:
                calls, seconds = calls + nc, seconds + ct
            else:
                for (_, _, caller_fn), (_, cnc, _, cct) in callers.items():
                    if caller_fn == caller:
                        calls, seconds = calls + cnc, seconds + cct
        if calls:
            rows.append([label, calls, seconds, f"{seconds / total:.0%}"])
    return rows


def loadavg() -> str:
    return f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "?"


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
    parser.add_argument(
        "--rounds", type=int, default=3, help="Synthmix passes, each between two limit passes."
    )
    parser.add_argument("--loop-epochs", type=int, default=1, help="Epochs of the study's loop (0: skip it).")
    parser.add_argument("--no-profile", action="store_true", help="Skip the separate cProfile pass.")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores).")
    parser.add_argument("--no-append", action="store_true", help="Print only; leave RESULTS.md alone.")
    args = parser.parse_args()

    threads = set_threads(args.threads)
    machine = describe_machine(threads)
    command = command_line()
    entry = MODELS[MODEL]
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
        weights_file = write_resnet50_weights(root / "resnet50.pth")
        unique_items = {i.sha256: i for s in train_sets.values() for i in s} | {
            r.sha256: r for r in test_rows
        }

        rows, phases, rounds_rows, loop_rows, profiles = [], [], [], [], []
        for size in args.sizes:
            load_before = loadavg()
            cfg = TrainConfig(
                image_size=size,
                cache_dir=root / f"cache-{size}",
                resnet50=ResNetConfig(epochs=args.epochs, weights=str(weights_file)),
            )
            hp = fixed_hyperparameters(MODEL, cfg)
            unique = load_set(list(unique_items.values()), index, size, root / f"limit-cache-{size}").images
            weights = entry.weights(cfg.resnet50)
            limit_model = entry.build(len(index), size, hp.dropout, cfg.resnet50, weights, 0)
            assert isinstance(limit_model, FrozenBackboneClassifier)

            # Warm-up, untimed: the limit's kernels, and synthmix's one-off imports and first-call set-up
            # (a small grid: the first images of two mixes, one seed, one epoch).
            backbone_limit(limit_model, unique[: 2 * FEATURE_BATCH])
            small = {mix: items[:16] for mix, items in list(train_sets.items())[:2]}
            small_hp = Hyperparameters(hp.lr, hp.weight_decay, 1, hp.batch_size, hp.dropout)
            synthmix_grid(small, test_rows[:16], index, seeds[:1], small_hp, cfg)

            limits = [backbone_limit(limit_model, unique)]
            ours: list[dict[str, float]] = []
            for k in range(args.rounds):
                ours.append(synthmix_grid(train_sets, test_rows, index, seeds, hp, cfg))
                limits.append(backbone_limit(limit_model, unique))
                bracket = (limits[k] + limits[k + 1]) / 2
                rounds_rows.append([size, k + 1, limits[k], ours[k]["total"], limits[k + 1],
                                    ours[k]["total"] / bracket])  # fmt: skip
                print(markdown_table(ROUND_HEADER, rounds_rows[-1:]), flush=True)
            ratios = [r[-1] for r in rounds_rows if r[0] == size]
            totals = [o["total"] for o in ours]
            load_after = loadavg()
            rows.append([
                size, len(unique), median(limits), min(limits), median(totals), min(totals),
                median(ratios), min(totals) / min(limits), f"{load_before} -> {load_after}",
            ])  # fmt: skip
            phases.append([size, median(totals), *(median([o[p] for o in ours]) for p in PHASES),
                           median([o["features"] for o in ours]) / median(limits)])  # fmt: skip
            print(markdown_table(HEADER, rows[-1:]), flush=True)

            if args.loop_epochs:
                loop_mix = grid[0]
                loop_train = load_set(train_sets[loop_mix], index, size, root / f"limit-cache-{size}")
                loop_test = load_set(test_rows, index, size, root / f"limit-cache-{size}")
                model = entry.build(len(index), size, hp.dropout, cfg.resnet50, weights, 0)
                measured = study_loop(model, loop_train, loop_test, hp, args.loop_epochs, seed=0)
                per_forward = measured / (args.loop_epochs * (len(loop_train) + len(loop_test)))
                grid_forwards = (
                    len(seeds) * args.epochs * sum(len(s) + len(test_rows) for s in train_sets.values())
                )
                full = per_forward * grid_forwards
                loop_rows.append([
                    size, f"{measured:.3g} s ({loop_mix.name}, seed 0, {args.loop_epochs} epoch(s))",
                    f"{full:,.0f} s (extrapolated)", full / median(totals),
                ])  # fmt: skip

            if not args.no_profile:
                profile = cProfile.Profile()
                profile.enable()
                profiled = synthmix_grid(train_sets, test_rows, index, seeds, hp, cfg)
                profile.disable()
                profiles.append((size, profile_rows(profile, profiled["total"]), profiled["total"]))
            del limit_model
            forget_process_caches()

    grid_text = ", ".join(m.name for m in grid)
    fits = len(grid) * len(seeds)
    loop_text = (
        f"""The study's loop was run on the preloaded uint8 tensors (no decoding charged to it) for the mix, seed and
epochs named, then extrapolated per forward pass to the whole grid: {len(seeds)} seeds x {args.epochs} epochs x
(each mix's training images + the {len(test_rows)} test images); the last column divides by synthmix's median.

{markdown_table(LOOP_HEADER, loop_rows)}
"""
        if loop_rows
        else ""
    )
    profile_tables = "\n\n".join(
        f"Where synthmix's time went at {size} px (a separate pass under cProfile, {total:.3g} s with the "
        "profiler's overhead; cumulative seconds, rows starting with - are inside the row above them):\n\n"
        + markdown_table(["function", "calls", "seconds", "share of the profiled pass"], top)
        for size, top, total in profiles
    )
    body = f"""Data: the embedded digits, 10 classes x ({args.train} train + {args.test} test) real + {args.synthetic}
synthetic a class (left-over digits stand in for generated images), resized to each size. Grid: {grid_text}
x {len(seeds)} seeds = {fits} fits of {args.epochs} head epochs, batch {hp.batch_size}. Goal: synthmix within 1.2x of the limit.

- limit: one backbone pass over the unique images (decoded beforehand, not charged), batches of
  {FEATURE_BATCH}, inference mode, {threads} threads.
- synthmix: the train stage's path from cold image and feature caches and empty model caches (as in a
  fresh process): `load_images` (test + each mix), `precompute_features` once with {threads} threads (it
  also builds the trunk and reads the weights file), then {fits} `fit` calls, one after another in this
  process, each single-threaded as fit runs them.
- order: after an untimed warm-up of both, limit, then {args.rounds} x (synthmix, limit), no profiler. "ratio,
  median" is the median over rounds of synthmix / mean of the two limit passes around it (the headline);
  "ratio, best/best" divides the fastest synthmix pass by the fastest limit pass.

{markdown_table(HEADER, rows)}

Every round (seconds):

{markdown_table(ROUND_HEADER, rounds_rows)}

synthmix's phases (medians over rounds, seconds; "features / limit" is precompute_features over the limit's median):

{markdown_table(PHASE_HEADER, phases)}

{loop_text}
{profile_tables}
"""
    print(body)
    if not args.no_append:
        append_results(
            "Frozen ResNet50 over the study's grid: synthmix vs one backbone pass", command, machine, body
        )


PHASES = ("decode", "features", "fits")
HEADER = [
    "px",
    "unique images",
    "limit, median (s)",
    "limit, best (s)",
    "synthmix, median (s)",
    "synthmix, best (s)",
    "ratio, median",
    "ratio, best/best",
    "1-min load avg (start -> end)",
]
ROUND_HEADER = ["px", "round", "limit before", "synthmix", "limit after", "synthmix / mean(limits)"]
PHASE_HEADER = [
    "px",
    "synthmix total",
    "`load_images` (cold)",
    "`precompute_features`",
    "fits",
    "features / limit",
]
LOOP_HEADER = ["px", "study loop, measured", "study loop, full grid", "study loop / synthmix"]

if __name__ == "__main__":
    main()

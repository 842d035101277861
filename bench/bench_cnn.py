"""CNN epoch throughput: synthmix's loader vs torchvision ImageFolder + PIL decode every epoch vs compute alone.

One mix's training set (real + synthetic images of every class) trains the study's CNN for a few epochs
three ways, same model, same batches of params.yaml's size, same optimizer:

- compute alone: the batches already decoded, resized, cast to float and sliced; the lower bound.
- synthmix: `images.load_images` (the decoded-image cache, warm: every epoch, mix and seed after the
  first finds it filled) then `fit.fit`, which indexes one float tensor per batch. The cold first
  decode is reported too, once per image for the whole study.
- ImageFolder: torchvision's `ImageFolder` + `DataLoader` (PIL open, RGB, resize, to tensor) on every
  image of every epoch: the obvious way.

Data handling's share of an epoch is (epoch - compute alone) / epoch; the goal is under 10%.

Run from the repository root:  .venv/bin/python bench/bench_cnn.py [--sizes 32 128] [--epochs 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
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

from synthmix.config.hparams import Hyperparameters, fixed_hyperparameters
from synthmix.config.params import CNNConfig, TrainConfig
from synthmix.data.images import LabelledImages, load_images
from synthmix.data.mixes import Mix, TrainingImage, training_images
from synthmix.data.real import read_manifest
from synthmix.generate.manifest import read_synthetic_manifest
from synthmix.models import MODELS
from synthmix.train.fit import fit

SOURCES = {
    "digits": "embedded digits (8x8 PNG)",
    "photos": "photo-like 256 px JPEG (random, smooth)",
}


def train_steps(
    model: nn.Module, batches, hp: Hyperparameters, epochs: int, seed: int
) -> float:  # batches: a callable giving one epoch's (x, y) pairs
    """Seconds per epoch of Adam + cross-entropy over `batches()`, the loop fit.fit runs."""
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    with stopwatch() as t:
        for _ in range(epochs):
            for x, y in batches():
                loss = loss_fn(model(x), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    return t() / epochs


def image_folder_tree(items: list[TrainingImage], root: Path) -> Path:
    """An ImageFolder-shaped tree of links to exactly the mix's training images."""
    for i, item in enumerate(items):
        link = root / item.label / f"{i:05d}{item.path.suffix}"
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(item.path.resolve(), link)
    return root


def measure(study: Path, mix: Mix, size: int, epochs: int, rounds: int, workers: int) -> dict[str, float]:
    from torch.utils.data import DataLoader
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    os.chdir(study)
    train_rows = read_manifest(Path("prepared/train.csv"))
    items = training_images(train_rows, read_synthetic_manifest(Path("synthetic/manifest.csv")), mix)
    classes = sorted({i.label for i in items})
    index = {c: k for k, c in enumerate(classes)}
    cfg = TrainConfig(image_size=size, cache_dir=study / f"cache-{size}", cnn=CNNConfig(epochs=epochs))
    hp = fixed_hyperparameters("cnn", cfg)

    def load() -> LabelledImages:
        return load_images(
            [i.path for i in items], [index[i.label] for i in items], [i.sha256 for i in items],
            size, cfg.cache_dir,
        )  # fmt: skip

    with stopwatch() as cold:
        images = load()
    empty = LabelledImages(
        torch.zeros(0, 3, size, size, dtype=torch.uint8), torch.zeros(0, dtype=torch.long), ()
    )

    folder = image_folder_tree(items, study / f"imagefolder-{size}")
    dataset = ImageFolder(
        str(folder), transform=transforms.Compose([transforms.Resize((size, size)), transforms.PILToTensor()])
    )
    assert dataset.classes == classes  # same label indices as synthmix's

    x_all, y_all = images.images.float(), images.labels
    order = torch.randperm(len(y_all), generator=torch.Generator().manual_seed(0))
    preloaded = [(x_all[b], y_all[b]) for b in order.split(hp.batch_size)]

    def image_folder_batches():
        loader = DataLoader(dataset, batch_size=hp.batch_size, shuffle=True, num_workers=workers)
        return ((x.float(), y) for x, y in loader)

    entry = MODELS["cnn"]

    def model() -> nn.Module:  # seed 0, as fit builds it
        return entry.build(len(classes), size, hp.dropout, cfg.cnn, entry.weights(cfg.cnn), 0)

    train_steps(model(), lambda: preloaded, hp, 1, 0)  # warm-up: one-off kernel set-up is no one's cost
    best: dict[str, float] = {}
    for _ in range(rounds):  # interleaved rounds, best of each: other work on the machine hits all alike
        runs = {
            "compute": lambda: train_steps(model(), lambda: preloaded, hp, epochs, 0),
            "image_folder": lambda: train_steps(model(), image_folder_batches, hp, epochs, 0),
        }
        for name, run in runs.items():
            best[name] = min(best.get(name, float("inf")), run())
        with stopwatch() as ours:
            warm = load()
            fit("cnn", warm, empty, hp, seed=0, num_classes=len(classes), train_cfg=cfg)
        best["synthmix"] = min(best.get("synthmix", float("inf")), ours() / epochs)
        with stopwatch() as warm_load:
            load()
        best["warm_load"] = min(best.get("warm_load", float("inf")), warm_load())
    best["cold_load"] = cold()
    best["images"] = len(items)
    shutil.rmtree(folder)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 128], help="CNN input sizes in pixels.")
    parser.add_argument("--sources", nargs="+", default=list(SOURCES), choices=list(SOURCES))
    parser.add_argument("--real", type=int, default=30, help="Real training images per class in the mix.")
    parser.add_argument("--synthetic", type=int, default=30, help="Synthetic images per class in the mix.")
    parser.add_argument("--epochs", type=int, default=3, help="Epochs timed per way and round.")
    parser.add_argument("--rounds", type=int, default=2, help="Interleaved rounds; the best is kept.")
    parser.add_argument("--workers", type=int, default=0, help="ImageFolder DataLoader num_workers.")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores).")
    parser.add_argument("--no-append", action="store_true", help="Print only; leave RESULTS.md alone.")
    args = parser.parse_args()

    threads = set_threads(args.threads)
    machine = describe_machine(threads)
    command = command_line()
    mix = Mix(args.real, args.synthetic)
    rows = []
    with tempfile.TemporaryDirectory(prefix="synthmix-bench-cnn-") as tmp:
        for source in args.sources:
            study = make_study_dir(
                Path(tmp) / source,
                "digits" if source == "digits" else "random",
                10,
                args.real,
                10,
                args.synthetic,
                image_px=256,
                suffix=".jpg",
            ).root
            for size in args.sizes:
                r = measure(study, mix, size, args.epochs, args.rounds, args.workers)
                rows.append([
                    SOURCES[source], size, r["images"], r["compute"], r["synthmix"],
                    f"{(r['synthmix'] - r['compute']) / r['synthmix']:.1%}", r["image_folder"],
                    f"{(r['image_folder'] - r['compute']) / r['image_folder']:.1%}",
                    r["image_folder"] / r["synthmix"], r["warm_load"], r["cold_load"],
                ])  # fmt: skip
                print(markdown_table(HEADER, rows[-1:]), flush=True)
    body = f"""One epoch of the study's CNN on mix {mix.name} (10 classes), batch {TrainConfig().batch_size}, seconds
per epoch (best of {args.rounds} interleaved rounds of {args.epochs} epochs). "data share" = (epoch - compute
alone) / epoch; goal: synthmix under 10%. synthmix's epoch includes `load_images` from the warm cache
and `fit` (model building, the float cast, per-batch indexing), spread over the {args.epochs} epochs;
ImageFolder's DataLoader used num_workers={args.workers}. The cold first decode (once per image and size for
the whole study) is in the last column.

{markdown_table(HEADER, rows)}
"""
    print(body)
    if not args.no_append:
        append_results("CNN epoch throughput", command, machine, body)


HEADER = [
    "images",
    "px",
    "train images",
    "compute alone (s/epoch)",
    "synthmix (s/epoch)",
    "synthmix data share",
    "ImageFolder (s/epoch)",
    "ImageFolder data share",
    "ImageFolder / synthmix",
    "synthmix warm load (s, once)",
    "synthmix cold decode (s, once)",
]

if __name__ == "__main__":
    main()

"""Augmentation throughput: the CPU's per-image policy (augment.py) vs the batched one (device_augment.py).

One training batch of photo-like images (`--size` px, `--batch` images) is augmented afresh, as a +aug
run augments every batch, both ways on the CPU:

- per image: `augment.augment_batch`, torchvision.transforms.v2 one image at a time under its own seed
  (what fit runs on the CPU, unchanged);
- batched: `device_augment.augment_on_device`, the whole batch at once, on `--device` (default the
  CPU; what fit runs on CUDA, where it is meant to be measured: `--device cuda`).

Each policy: params.yaml's (crop, rotation, colour jitter, RandAugment 2 ops) and the same without
RandAugment. Images/s are the best of `--repeats` batches; the ratio is batched / per image.

Run from the repository root:  .venv/bin/python bench/bench_augment.py [--size 128] [--batch 256] [--threads 1 2]
[--device cuda]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from common import (
    append_results,
    best_of,
    command_line,
    describe_machine,
    markdown_table,
    photo_like,
    set_threads,
)

from synthmix.config.params import AugmentConfig
from synthmix.train.augment import augment_batch
from synthmix.train.device_augment import augment_on_device

POLICIES = {
    "params.yaml's": AugmentConfig(),
    "without RandAugment": AugmentConfig(randaugment_ops=0),
}


def images(batch: int, size: int) -> torch.Tensor:
    rng = np.random.default_rng(0)
    return torch.stack(
        [torch.from_numpy(photo_like(rng, size).copy()).permute(2, 0, 1) for _ in range(batch)]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="*", default=[1, 2], help="torch threads, one run each")
    parser.add_argument("--device", default="cpu", help="where the batched policy runs: cpu or cuda")
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()
    machine = describe_machine(max(args.threads))  # before the runs: the load they started under
    batch = images(args.batch, args.size)
    device = torch.device(args.device)
    on_device = batch.to(device)

    def batched(cfg: AugmentConfig, generator: torch.Generator) -> None:
        augment_on_device(on_device, generator, cfg)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    rows = []
    for threads in args.threads:
        set_threads(threads)
        for name, cfg in POLICIES.items():
            generator, on = torch.Generator().manual_seed(0), torch.Generator(device).manual_seed(0)
            augment_batch(batch[:2], generator, cfg), batched(cfg, on)  # warm up
            per_image = best_of(args.repeats, lambda cfg=cfg, g=generator: augment_batch(batch, g, cfg))
            together = best_of(args.repeats, lambda cfg=cfg, g=on: batched(cfg, g))
            rate, fast = args.batch / per_image, args.batch / together
            rows.append([threads, name, f"{rate:,.0f}", f"{fast:,.0f}", f"{fast / rate:.2f}x"])
            print(rows[-1], flush=True)
    header = ["threads", "policy", "per image, CPU (images/s)", f"batched, {device.type} (images/s)", "ratio"]
    table = markdown_table(header, rows)
    print(table)
    if not args.no_record:
        body = (
            f"{args.batch} photo-like images at {args.size} px a batch, augmented afresh each call, best of "
            f"{args.repeats}; the per-image policy on the CPU, the batched one on {device} (ratio: batched / "
            "per image).\n\n" + table
        )
        append_results("Augmentation: per image (CPU) vs batched", command_line(), machine, body)


if __name__ == "__main__":
    main()

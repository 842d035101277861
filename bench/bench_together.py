"""Runs trained together vs one at a time: the same K runs of the study's CNN and of a frozen ResNet50's
head, through `synthmix.train.fit.fit` (each run alone, in this process, as the train stage runs them
on a GPU without train.together) and `synthmix.train.together.fit_together` (all K as one stacked
network), timed in the same run on the same device, with the largest logit difference between the two.

Data: K training sets of random photo-like images (per-class colour, plus noise), one test set; ResNet50
with random weights (speed does not depend on them), its features precomputed once before either
timing (the stage does the same), so the head timings compare the training loops alone.

Run from the repository root:
  .venv/bin/python bench/bench_together.py                                   (the CPU: small sizes)
  .venv/bin/python bench/bench_together.py --device cuda --runs 18 --classes 90 --per-class 45 \\
      --image-size 128 --cnn-epochs 5 --resnet-epochs 5                      (a GPU: the preset's shape)
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from common import append_results, command_line, describe_machine, markdown_table, set_threads, stopwatch

from synthmix.config.compute import ComputeConfig, resolve_compute
from synthmix.config.hparams import fixed_hyperparameters
from synthmix.config.params import TrainConfig
from synthmix.data.images import LabelledImages
from synthmix.train.features import precompute_features
from synthmix.train.fit import fit
from synthmix.train.together import TogetherRun, fit_together


def labelled(n: int, classes: int, size: int, seed: int) -> LabelledImages:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    colour = torch.rand(classes, 3, 1, 1, generator=g) * 200
    noise = torch.randint(0, 56, (n, 3, size, size), generator=g).float()
    pixels = (colour[labels] + noise).clamp(0, 255).to(torch.uint8)
    return LabelledImages(pixels, labels, tuple(f"{seed:08x}{i:056x}" for i in range(n)))


def bench(model: str, args: argparse.Namespace, cfg: TrainConfig, compute) -> list[object]:
    hp = fixed_hyperparameters(model, cfg)
    hp = type(hp)(**{**hp.as_dict(), "epochs": args.cnn_epochs if model == "cnn" else args.resnet_epochs})
    classes = args.classes
    # the preset's mixes differ in size: runs of 1x, 1.5x and 2x the real count, in turn
    sizes = [classes * args.per_class * (2 + k % 3) // 2 for k in range(args.runs)]
    runs = [TogetherRun(labelled(n, classes, args.image_size, k), seed=k % 3) for k, n in enumerate(sizes)]
    test = labelled(classes * args.test_per_class, classes, args.image_size, 999)
    if model != "cnn":
        precompute_features(model, [0, 1, 2], [test, *(r.train for r in runs)], classes, cfg, compute)

    def alone() -> list:
        return [
            fit(model, r.train, test, hp, seed=r.seed, num_classes=classes, train_cfg=cfg, compute=compute)
            for r in runs
        ]

    def together() -> list:
        return fit_together(model, runs, test, hp, num_classes=classes, train_cfg=cfg, compute=compute)

    timings = {}
    for name, fn in (("alone", alone), ("together", together)):
        if compute.is_cuda:
            torch.cuda.synchronize()
        with stopwatch() as elapsed:
            results = fn()
            if compute.is_cuda:
                torch.cuda.synchronize()
        timings[name] = (elapsed(), results)
    (t_alone, a), (t_together, b) = timings["alone"], timings["together"]
    gap = max(float((x.eval_logits - y.eval_logits).abs().max()) for x, y in zip(a, b, strict=True))
    scale = max(float(x.eval_logits.abs().max()) for x in a)
    same = sum(
        bool(torch.equal(x.eval_logits.argmax(1), y.eval_logits.argmax(1))) for x, y in zip(a, b, strict=True)
    )
    steps = sum(x.steps for x in a)
    return [
        model, args.runs, f"{hp.epochs} epochs, batch {hp.batch_size}", steps,
        t_alone, t_together, t_alone / t_together, f"{gap:.2g} (of {scale:.3g})", f"{same}/{len(a)}",
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="compute.device: cpu, cuda, cuda:N")
    parser.add_argument(
        "--dtype", default="auto", help="compute.dtype (auto: float32 on the CPU, bf16 on CUDA)"
    )
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--per-class", type=int, default=10, help="real images a class of the smallest run")
    parser.add_argument("--test-per-class", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--cnn-epochs", type=int, default=3)
    parser.add_argument("--resnet-epochs", type=int, default=3)
    parser.add_argument("--models", default="cnn,resnet50")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()
    threads = set_threads(args.threads)
    compute = resolve_compute(ComputeConfig(device=args.device, dtype=args.dtype))
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(image_size=args.image_size, cache_dir=Path(tmp), resnet50={"weights": "none"})
        rows = [bench(m, args, cfg, compute) for m in args.models.split(",")]
    header = [
        "model", "runs", "each", "steps (all runs)", "alone s", "together s", "speed-up",
        "max logit gap", "same predictions",
    ]  # fmt: skip
    table = markdown_table(header, rows)
    print(table)
    if not args.no_record:
        body = (
            f"{args.classes} classes, {args.per_class}-{args.per_class * 2} training images a class a run, "
            f"{args.image_size} px, {compute.describe()}.\n\n{table}"
        )
        append_results(
            "Runs trained together vs one at a time", command_line(), describe_machine(threads), body
        )


if __name__ == "__main__":
    main()

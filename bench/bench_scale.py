"""Scale: how the train stage's time for the whole grid grows with classes and images per class.

`train.train_stage` (the real stage: decoding, training, scoring, MLflow logging with the model, run
files) runs the study's five mixes, scaled to n images a class, on photo-like random-image trees at
10, 30 and 90 classes, with few epochs, once per model, each in a fresh folder with a cold cache. Then:

- a line per (model, n): seconds = a + b x classes, measured at 10/30/90 classes;
- a cost model fitted over every point (least squares): seconds = c0 + c1 x runs + c2 x image-epochs
  (training and test images passed per epoch, summed over runs) + c3 x unique images (decoded once,
  ResNet50 features computed once), with one extra point at more epochs so per-epoch and per-image
  costs separate; it predicts the study's own settings (90 classes, 30 real / 30 synthetic / 30 test
  a class, 3 seeds, 50 CNN and 20 ResNet50 epochs) at the image size measured.

Every point is one stage call in a fresh folder, so the machine's other load at that moment lands in it:
run on a quiet machine, and read the fit's worst error before trusting a prediction.

Run from the repository root:  .venv/bin/python bench/bench_scale.py [--classes 10 30 90] [--n 10 20]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import tempfile
from pathlib import Path

import numpy as np
import yaml
from common import (
    append_results,
    command_line,
    describe_machine,
    make_study_dir,
    markdown_table,
    set_threads,
    stopwatch,
    write_resnet50_weights,
)
from scipy.optimize import nnls

from synthmix.config.params import load_params
from synthmix.stages.train import train_stage

MODELS = ("cnn", "resnet50")
TEST_PER_CLASS = 10
STUDY = {"classes": 90, "n": 30, "test": 30, "seeds": 3, "epochs": {"cnn": 50, "resnet50": 20}}
PROFILED = (
    "fit_alone",
    "precompute_features",
    "log_training_run",
    "load_images",
    "write_results",
    "write_summaries",
)


def grid_per_class(n: int) -> list[tuple[int, int]]:
    """The study's five mixes scaled to n images a class: (real, synthetic) each."""
    return [(n, 0), (n, n // 2), (n, n), (n // 2, n), (0, n)]


def workload(classes: int, n: int, test: int, seeds: int, epochs: int) -> dict[str, float]:
    """The cost model's inputs for one grid: runs, image-epochs, unique images."""
    grid = grid_per_class(n)
    train_images = sum(r + s for r, s in grid) * classes
    return {
        "runs": len(grid) * seeds,
        "image_epochs": seeds * epochs * (train_images + len(grid) * test * classes),
        "unique": classes * (n + n + test),
    }


def write_params(study: Path, n: int, epochs: int, seeds: int, image_size: int, weights: Path) -> None:
    grid = [f"{r}r{s}s" for r, s in grid_per_class(n)]
    params = {
        "mix": "all",
        "data": {"train_per_class": n, "test_per_class": TEST_PER_CLASS},
        "generate": {"images_per_class": n},
        "study": {"mixes": grid, "models": list(MODELS), "seeds": list(range(seeds)), "baseline": grid[0]},
        "train": {
            "image_size": image_size,
            "cnn": {"epochs": epochs},
            "resnet50": {"epochs": epochs, "weights": str(weights)},
        },
    }
    (study / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def run_stage(study: Path, model: str, tag: str, profile: cProfile.Profile | None = None) -> float:
    """Seconds of the train stage for one model's grid, fresh runs/cache/MLflow, in `study`."""
    os.chdir(study)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{study / f'mlflow-{tag}.db'}"
    params = load_params(Path("params.yaml"))
    train = params.train.model_copy(
        update={"runs_dir": Path(f"runs-{tag}"), "cache_dir": Path(f".cache-{tag}")}
    )
    params = params.model_copy(update={"train": train})
    if profile:
        profile.enable()
    with stopwatch() as t:
        train_stage(params, models=[model])
    if profile:
        profile.disable()
    return t()


def profile_rows(profile: cProfile.Profile, total: float) -> list[list[object]]:
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    rows = []
    for name in PROFILED:
        entries = [(v[3], v[1]) for (_, _, fn), v in stats.items() if fn == name]
        if entries:
            seconds = sum(e[0] for e in entries)
            rows.append([f"`{name}`", sum(e[1] for e in entries), seconds, f"{seconds / total:.0%}"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--classes", type=int, nargs="+", default=[10, 30, 90])
    parser.add_argument(
        "--n", type=int, nargs="+", default=[10, 20], help="Images per class (real, synthetic)."
    )
    parser.add_argument("--epochs", type=int, default=2, help="Epochs of both models at every point.")
    parser.add_argument("--more-epochs", type=int, default=6, help="Epochs of the extra point.")
    parser.add_argument("--image-size", type=int, default=32, help="train.image_size.")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores).")
    parser.add_argument("--no-append", action="store_true", help="Print only; leave RESULTS.md alone.")
    args = parser.parse_args()

    threads = set_threads(args.threads)
    machine = describe_machine(threads)
    command = command_line()
    points: list[dict] = []
    profile = cProfile.Profile()
    profiled_total = 0.0
    largest = (max(args.classes), max(args.n))
    with tempfile.TemporaryDirectory(prefix="synthmix-bench-scale-") as tmp:
        weights = write_resnet50_weights(Path(tmp) / "resnet50.pth")  # features shared across seeds
        # Extra points vary epochs and seeds alone, so per-epoch, per-run and per-image costs separate.
        middle = args.classes[len(args.classes) // 2]
        plan = [(c, n, args.epochs, 1) for n in args.n for c in args.classes]
        plan += [(middle, max(args.n), args.more_epochs, 1), (middle, max(args.n), args.epochs, 2)]
        for classes, n, epochs, seeds in plan:
            study = make_study_dir(
                Path(tmp) / f"c{classes}-n{n}", "random", classes, n, TEST_PER_CLASS, n, image_px=64
            ).root
            write_params(study, n, epochs, seeds, args.image_size, weights)
            for model in MODELS:
                profiled = (classes, n) == largest and epochs == args.epochs and seeds == 1
                tag = f"{model}-e{epochs}-s{seeds}"
                seconds = run_stage(study, model, tag, profile if profiled else None)
                profiled_total += seconds if profiled else 0.0
                points.append({"model": model, "classes": classes, "n": n, "epochs": epochs, "seeds": seeds,
                               "seconds": seconds, **workload(classes, n, TEST_PER_CLASS, seeds, epochs)})  # fmt: skip
                print(points[-1], flush=True)

    measured = markdown_table(
        ["model", "classes", "n a class", "epochs", "seeds", "runs", "image-epochs", "unique images", "train stage (s)"],
        [[p["model"], p["classes"], p["n"], p["epochs"], p["seeds"], p["runs"], p["image_epochs"], p["unique"],
          p["seconds"]] for p in points],
    )  # fmt: skip
    lines, fits, predictions = [], [], []
    for model in MODELS:
        for n in args.n:
            at_n = [
                p
                for p in points
                if p["model"] == model and p["n"] == n and p["epochs"] == args.epochs and p["seeds"] == 1
            ]
            slope, intercept = np.polyfit([p["classes"] for p in at_n], [p["seconds"] for p in at_n], 1)
            lines.append([model, n, args.epochs, intercept, slope, intercept + slope * STUDY["classes"]])
        mine = [p for p in points if p["model"] == model]
        design = np.array([[1.0, p["runs"], p["image_epochs"], p["unique"]] for p in mine])
        # Non-negative: no cost can be negative; a plain least-squares fit of noisy seconds predicts < 0.
        coef, _ = nnls(design, np.array([p["seconds"] for p in mine]))
        predicted = design @ coef
        worst = max(abs(q - p["seconds"]) / p["seconds"] for q, p in zip(predicted, mine, strict=True))
        fits.append([model, *coef[:1], coef[1], coef[2] * 1e3, coef[3] * 1e3, f"{worst:.0%}"])
        study = workload(STUDY["classes"], STUDY["n"], STUDY["test"], STUDY["seeds"], STUDY["epochs"][model])
        seconds = coef @ np.array([1.0, study["runs"], study["image_epochs"], study["unique"]])
        predictions.append(
            [model, study["runs"], study["image_epochs"], study["unique"], seconds, seconds / 60]
        )
    body = f"""Photo-like random PNG trees (64 px, resized to {args.image_size} px), {TEST_PER_CLASS} test images a class, mixes
scaled to n a class ({", ".join(f"{r}r{s}s" for r, s in grid_per_class(max(args.n)))} for n={max(args.n)}),
1 seed (2 at one extra point), train.workers at its default (one worker process a core), each point a fresh folder (cold image cache, new MLflow store). The ResNet50 loads a weights file
(features shared across seeds, as with ImageNet's). Seconds are the whole `train_stage` call.

{measured}

A line per model and images-per-class, seconds = a + b x classes, and its 90-class value:

{markdown_table(["model", "n a class", "epochs", "a (s)", "b (s per class)", "at 90 classes (s)"], lines)}

Cost model over every point (non-negative least squares), seconds = c0 + c1 x runs + c2 x image-epochs + c3 x unique images (worst
relative error on the measured points in the last column):

{markdown_table(["model", "c0 (s)", "c1 (s per run)", "c2 (ms per image-epoch)", "c3 (ms per unique image)", "worst fit error"], fits)}

Predicted train stage at the study's settings (90 classes, 30 real / 30 synthetic / 30 test a class, the
five mixes, 3 seeds, 50 CNN / 20 ResNet50 epochs) at {args.image_size} px on this machine (extrapolated):

{markdown_table(["model", "runs", "image-epochs", "unique images", "predicted (s)", "predicted (min)"], predictions)}

Where the {profiled_total:.3g} s of the {largest[0]}-class, n={largest[1]} points (both models) went (cProfile of the
stage's main process, cumulative; `precompute_features` is ResNet50's one backbone pass over the unique images,
in the main process before runs go out; `fit_alone` is the time spent waiting for the train.workers processes
that run `fit`, so fitting itself is inside it):

{markdown_table(["function", "calls", "seconds", "share"], profile_rows(profile, profiled_total))}
"""
    print(body)
    if not args.no_append:
        append_results("Scale: train-stage time vs classes and images per class", command, machine, body)


if __name__ == "__main__":
    main()

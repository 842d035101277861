"""The study preset end to end on one GPU: every stage's seconds, images/s, GPU use, and the whole preset.

Builds, in a temporary folder, a project shaped like the study (presets/study.yaml: 90 classes of 60
real images, 30 train and 30 test a class; photo-like images made here, deterministically: a textured
shape per class on a varied background, at --image-px), with a full-size Stable Diffusion 1.5
architecture with random weights saved by save_pretrained (bench_generate.sd15_pipeline; speed does not
depend on the weights), a random CLIP ViT-B/32 for the CLIP filter and a random ResNet50 state dict
standing in for ImageNet's file (no download anywhere). Then it runs the preset's stages in dvc.yaml's
order through synthmix's own CLI, in this process (synthmix.cli.run, what `synthmix <stage>` runs):

  prepare; generate twice: first --sd-per-class images a class per replicate at the preset's sampling
  (512 px, 30 steps, guidance 7.5: the images/s that the estimate extrapolates), then, afresh, the full
  synthetic set the mixes need (30 a class per replicate, 90 with the preset's 3 seeds) at cheap
  sampling (--fill-size, --fill-steps), so that quality and train run on the preset's grid;
  quality; tune --if-enabled (off in the preset); train (cnn and resnet50 on every mix and seed);
  report.

For each stage: seconds, images/s where it applies, GPU utilisation (NVML, sampled every 0.1 s in a
thread: mean and max), peak memory (torch.cuda.max_memory_allocated in this process, and NVML's most
memory used on the GPU), then the estimate for the whole preset: the preset's sampling at the measured
rate for all of the generated set, the other stages as measured (their sizes are the preset's), against
the 15-minute goal.

What differs from a user's run of the preset: the safety checker is off (random weights would block at
random; a ViT-L/14 pass per image is under 1% of an image's cost), the weights are random, and
train.resnet50.weights is a random state-dict file (a file like ImageNet's, so the quality stage uses
ResNet50 features as it would with ImageNet's weights).

Smoke run on a CPU (8 minutes on 2 shared cores, most of it full-size Stable Diffusion on the CPU;
appends nothing):
    .venv/bin/python bench/bench_gpu_study.py --classes 3 --per-class 12 --sd-size 64 --sd-steps 2 \
        --image-size 32 --epochs 1 --fill-steps 1 --no-append

On the GPU machine (device tool): first `bash bench/gpu_wheels.sh` here, in the checkout the tool
sends (it fills .whl/, 27 wheels, 26 MB), then run with carry [".whl"] and timeout_s 500 (each stage's
line is printed as it ends, so a run cut short still shows what it measured):
    set -o pipefail; python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 || exit; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python3 -m pip list 2>/dev/null | grep -iE '^(torch|torchvision|transformers|timm|accelerate|numpy|pandas|scipy|scikit-learn|protobuf|typer|rich) '; timeout 480 python3 bench/bench_gpu_study.py --results $OUT/RESULTS.md 2>&1 | tee $OUT/log
"""

from __future__ import annotations

import argparse
import colorsys
import functools
import math
import multiprocessing
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from common import (
    RESULTS,
    append_results,
    command_line,
    describe_machine,
    markdown_table,
    photo_like,
    set_threads,
    write_resnet50_weights,
)
from PIL import Image, ImageDraw, ImageFilter

REPO = Path(__file__).resolve().parent.parent
PRESET = REPO / "presets" / "study.yaml"
GOAL_SECONDS = 15 * 60
SHAPES = ("ellipse", "rectangle", "triangle", "diamond", "ring", "star")


# --- the real set: a textured shape per class on a varied background -----------------------------


@dataclass(frozen=True)
class ClassLook:
    shape: str
    colour: np.ndarray  # RGB 0-255 of the shape
    stripe_angle: float
    stripe_period: float  # pixels per stripe cycle, at 128 px
    background: tuple[np.ndarray, np.ndarray]  # the gradient's two ends


def class_look(k: int, seed: int = 0) -> ClassLook:
    rng = np.random.default_rng([seed, k])

    def rgb(hue: float, saturation: float, value: float) -> np.ndarray:
        return np.array(colorsys.hsv_to_rgb(hue % 1.0, saturation, value)) * 255

    hue = k * 0.618034  # golden-ratio hues: neighbouring classes far apart on the colour wheel
    return ClassLook(
        SHAPES[k % len(SHAPES)],
        rgb(hue, rng.uniform(0.5, 0.95), rng.uniform(0.65, 1.0)),
        float(rng.uniform(0, math.pi)),
        float(rng.uniform(5, 24)),
        (rgb(hue + 0.5, rng.uniform(0.1, 0.4), rng.uniform(0.3, 0.7)), rgb(rng.uniform(0, 1), 0.2, 0.9)),
    )


def _outline(shape: str, rng: np.random.Generator, size: int) -> list[list[tuple[float, float]]]:
    """The shape's polygon(s) at a random place, size, aspect and rotation (a ring: outer, then hole)."""
    cx, cy = rng.uniform(0.3, 0.7, 2) * size
    radius, aspect, turn = rng.uniform(0.18, 0.34) * size, rng.uniform(0.7, 1.3), rng.uniform(0, 2 * math.pi)
    corners = {"triangle": 3, "rectangle": 4, "diamond": 4, "star": 10}.get(shape, 48)
    t = np.arange(corners) * 2 * math.pi / corners + (math.pi / 4 if shape == "rectangle" else 0)
    r = np.where(np.arange(corners) % 2, 0.45, 1.0) if shape == "star" else np.ones(corners)

    def ring(scale: float) -> list[tuple[float, float]]:
        x, y = scale * radius * r * np.cos(t) * aspect, scale * radius * r * np.sin(t)
        return list(
            zip(
                cx + x * math.cos(turn) - y * math.sin(turn),
                cy + x * math.sin(turn) + y * math.cos(turn),
                strict=True,
            )
        )

    return [ring(1.0), ring(0.55)] if shape == "ring" else [ring(1.0)]


@functools.lru_cache(maxsize=2)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    return yy, xx


def photo(look: ClassLook, rng: np.random.Generator, size: int) -> np.ndarray:
    """One image of a class: background gradient with smooth clutter and grain, the class's striped
    shape with a soft edge, lighting varied per image. Compresses and decodes like a photo, not noise."""
    yy, xx = _grid(size)
    direction = rng.uniform(0, 2 * math.pi)
    ramp = np.clip(0.5 + (xx - 0.5) * math.cos(direction) + (yy - 0.5) * math.sin(direction), 0, 1)[..., None]
    low, high = (c.astype(np.float32) for c in look.background)
    background = low + (high - low) * ramp + 0.45 * (photo_like(rng, size).astype(np.float32) - 128)
    mask_image = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask_image)
    for fill, polygon in zip((255, 0), _outline(look.shape, rng, size), strict=False):
        draw.polygon(polygon, fill=fill)
    blurred = mask_image.filter(ImageFilter.GaussianBlur(size / 160))
    mask = np.asarray(blurred, dtype=np.float32)[..., None] / 255
    along = (xx * math.cos(look.stripe_angle) + yy * math.sin(look.stripe_angle)) * (128 / look.stripe_period)
    stripes = 0.7 + 0.3 * np.sin(2 * math.pi * along + rng.uniform(0, 2 * math.pi))[..., None]
    shape = look.colour.astype(np.float32) * stripes * rng.uniform(0.8, 1.1)
    grain = rng.standard_normal((size, size, 3), dtype=np.float32) * 4
    pixels = background + mask * (shape - background) + grain
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _write_class(data_dir: Path, k: int, per_class: int, size: int, seed: int) -> None:
    folder = data_dir / f"c{k:03d}"
    folder.mkdir(parents=True, exist_ok=True)
    look = class_look(k, seed)
    for i in range(per_class):
        Image.fromarray(photo(look, np.random.default_rng([seed, k, i]), size)).save(folder / f"{i:04d}.png")


def write_real_set(data_dir: Path, classes: int, per_class: int, size: int, seed: int = 0) -> None:
    """data_dir/c<k>/<i>.png: `per_class` images of each of `classes` classes, the same on every run
    (each image seeded by class and index), a class per process. Call it before torch is imported:
    the processes are forked."""
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(min(classes, os.cpu_count() or 1), mp_context=context) as pool:
        futures = [pool.submit(_write_class, data_dir, k, per_class, size, seed) for k in range(classes)]
        for future in futures:
            future.result()


# --- the models: random weights, saved as the stages load them ------------------------------------


def save_sd15(target: Path, device: str) -> None:
    """bench_generate's SD1.5 architecture, built on `device` (random init on a GPU takes a second, not a
    minute), saved as the stage loads it there: the fp16 variant on CUDA, fp32 on the CPU."""
    import torch
    from bench_generate import sd15_pipeline

    torch.manual_seed(0)
    scratch = target.parent / "sd15-tokenizer"
    scratch.mkdir(parents=True, exist_ok=True)
    with torch.device(device):
        pipe = sd15_pipeline(scratch)
    if device == "cuda":
        pipe.to(torch.float16).save_pretrained(target, variant="fp16")
    else:
        pipe.save_pretrained(target)
    del pipe


def save_clip(target: Path, tokenizer_dir: Path) -> None:
    """A random CLIP ViT-B/32 (transformers' default CLIPConfig: openai/clip-vit-base-patch32's shapes)
    with its processor, for the quality stage's CLIP filter."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    torch.manual_seed(0)
    CLIPModel(CLIPConfig()).save_pretrained(target)
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
    CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tokenizer).save_pretrained(target)


# --- params.yaml: the preset, at this run's sizes -------------------------------------------------


def scale_counts(text: str, factor: float) -> str:
    """Every count in a mix name times `factor`, e.g. 30r15s x 0.2 -> 6r3s (the preset at fewer images)."""
    return re.sub(r"\d+", lambda m: str(round(int(m.group()) * factor)), text)


def study_params(args: argparse.Namespace, models: dict[str, Path]) -> dict:
    """presets/study.yaml with this run's sizes (counts scaled when --per-class is not 60), the local
    models, and the sampling of the timed generation."""
    params = yaml.safe_load(PRESET.read_text())
    data, study, train = params["data"], params["study"], params["train"]
    factor = args.per_class / (data["train_per_class"] + data["test_per_class"])
    for key in ("train_per_class", "test_per_class", "extra_per_class", "pool_per_class"):
        data[key] = round(data[key] * factor)
    study["mixes"] = [scale_counts(m, factor) for m in study["mixes"]]
    study["baseline"] = scale_counts(study["baseline"], factor)
    params["generate"]["images_per_class"] = round(params["generate"]["images_per_class"] * factor)
    t2i = params["generate"]["text2image"]
    t2i.update(model=str(models["sd15"]), safety_checker=False)
    t2i.update(
        {
            k: v
            for k, v in {"size": args.sd_size, "steps": args.sd_steps, "batch_size": args.sd_batch}.items()
            if v is not None
        }
    )
    train["resnet50"]["weights"] = str(models["resnet50"])
    if args.image_size:
        train["image_size"] = args.image_size
    if args.epochs:
        train["cnn"]["epochs"] = train["resnet50"]["epochs"] = args.epochs
    params["quality"]["clip_score"]["model"] = str(models["clip"])
    return params


# --- measuring a stage ----------------------------------------------------------------------------


def _nvml_handle():
    """NVML's handle of the GPU torch uses (CUDA_VISIBLE_DEVICES' first), or None (no GPU, no NVML)."""
    try:
        import pynvml
        import torch

        if not torch.cuda.is_available():
            return None
        pynvml.nvmlInit()
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
        return pynvml.nvmlDeviceGetHandleByIndex(int(visible) if visible.isdigit() else 0)
    except Exception:  # no pynvml, no driver: the figures read n/a
        return None


@dataclass
class Measured:
    """What one stage took: seconds, GPU samples, peak memory, and (generation) when images appeared."""

    name: str
    seconds: float = 0.0
    images: int | None = None  # images the stage made or went through, where that applies
    utilisation: list[int] = field(default_factory=list)
    nvml_peak_gib: float | None = None
    torch_peak_gib: float | None = None
    counts: list[tuple[float, int]] = field(default_factory=list)  # (seconds since start, images so far)

    @property
    def first_image(self) -> float | None:
        return next((t for t, n in self.counts if n > 0), None)

    @property
    def last_image(self) -> float | None:
        final = self.counts[-1][1] if self.counts else 0
        return next((t for t, n in self.counts if n == final), None) if final else None

    def steady_rate(self) -> float | None:
        """Images/s from the first image written to the last: the sampling, without loading and
        compilation before it or the manifest's work after it."""
        first, last = self.first_image, self.last_image
        if first is None or last is None or last <= first:
            return None
        start = next(n for t, n in self.counts if t == first)
        return (self.counts[-1][1] - start) / (last - first)


def measure(name: str, stage: Callable[[], None], count: Callable[[], int] | None = None) -> Measured:
    """Run `stage`, sampling GPU utilisation and memory every 0.1 s (and `count` every 0.5 s)."""
    import torch

    cuda = torch.cuda.is_available()
    handle = _nvml_handle()
    result, stop, peak = Measured(name), threading.Event(), [0]
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()

    def sample() -> None:
        pynvml = __import__("pynvml") if handle is not None else None
        last_count = -1.0
        while not stop.wait(0.1):
            now = time.perf_counter() - start
            if pynvml is not None:
                result.utilisation.append(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
                peak[0] = max(peak[0], pynvml.nvmlDeviceGetMemoryInfo(handle).used)
            if count is not None and now - last_count >= 0.5:
                result.counts.append((now, count()))
                last_count = now

    thread = threading.Thread(target=sample, daemon=True)
    if handle is not None or count is not None:
        thread.start()
    try:
        stage()
    finally:
        if cuda:
            torch.cuda.synchronize()
        result.seconds = time.perf_counter() - start
        stop.set()
        if thread.is_alive():
            thread.join()
    if count is not None:
        result.counts.append((result.seconds, count()))
    if cuda:
        result.torch_peak_gib = torch.cuda.max_memory_allocated() / 2**30
    if handle is not None:
        result.nvml_peak_gib = peak[0] / 2**30
    return result


def cli_stage(*argv: str) -> Callable[[], None]:
    """`synthmix <argv>` in this process (the CLI's own run(): params.yaml read and checked, compute.*
    resolved, the stage called, its summary printed); a non-zero exit stops the bench."""
    from synthmix import cli

    def stage() -> None:
        code = cli.run(list(argv))
        if code:
            raise SystemExit(f"`synthmix {' '.join(argv)}` exited {code}")

    return stage


def png_count(folder: Path) -> Callable[[], int]:
    return lambda: sum(1 for _ in folder.glob("*/*.png"))


def decode_seconds(paths: list[Path], size: int) -> float:
    """Seconds per image to decode and resize a PNG as the image cache does (data.real.decode_array)."""
    from synthmix.data.real import decode_array

    if not paths:
        return 0.0
    start = time.perf_counter()
    for path in paths:
        decode_array(path, size)
    return (time.perf_counter() - start) / len(paths)


def training_throughput(runs_dir: Path) -> tuple[int, int]:
    """(finished runs, training images seen: optimiser steps x batch size, summed over runs; a frozen
    backbone's head sees its features)."""
    from synthmix.runs.rundir import discover_runs

    runs, _ = discover_runs(runs_dir)
    seen = sum(r.record.optimizer_steps * int(r.record.hyperparameters.get("batch_size", 0)) for r in runs)
    return len(runs), seen


# --- the run --------------------------------------------------------------------------------------


def _cell(value: float | None, digits: str = ".1f") -> str:
    return "n/a" if value is None else format(value, digits)


def stage_row(m: Measured) -> list[object]:
    util = m.utilisation
    return [
        m.name,
        _cell(m.seconds),
        "" if m.images is None else m.images,
        "" if m.images is None or not m.seconds else _cell(m.images / m.seconds),
        _cell(sum(util) / len(util) if util else None, ".0f"),
        _cell(max(util) if util else None, ".0f"),
        _cell(m.torch_peak_gib, ".2f"),
        _cell(m.nvml_peak_gib, ".2f"),
    ]


STAGE_HEADER = ["stage", "seconds", "images", "images/s", "GPU util mean %", "GPU util max %",
                "peak torch GiB", "peak GPU GiB (NVML)"]  # fmt: skip


def build_project(root: Path, args: argparse.Namespace) -> tuple[list[list[object]], dict]:
    """The study-shaped project under root: data/, models/, params.yaml (the training set's sampling)
    and params-sampling.yaml (the preset's sampling). Returns the set-up timings and params.yaml.
    The real set is written first, before torch is imported (its processes are forked)."""
    models = {"sd15": root / "models" / "sd15", "clip": root / "models" / "clip",
              "resnet50": root / "models" / "resnet50-random.pth"}  # fmt: skip
    timings: list[list[object]] = []

    def timed(what: str, step: Callable[[], object]) -> None:
        start = time.perf_counter()
        step()
        timings.append([what, time.perf_counter() - start])
        print(f"set-up: {what} in {timings[-1][1]:.1f} s", flush=True)

    timed(f"real set: {args.classes} classes x {args.per_class} images at {args.image_px} px",
          lambda: write_real_set(root / "data", args.classes, args.per_class, args.image_px))  # fmt: skip
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    timed(f"SD1.5 architecture, random weights, saved ({'fp16' if device == 'cuda' else 'fp32'})",
          lambda: save_sd15(models["sd15"], device))  # fmt: skip
    timed(
        "CLIP ViT-B/32, random weights, saved",
        lambda: save_clip(models["clip"], models["sd15"] / "tokenizer"),
    )
    models["resnet50"].parent.mkdir(parents=True, exist_ok=True)
    timed("ResNet50 random state dict", lambda: write_resnet50_weights(models["resnet50"]))
    sampling = study_params(args, models)
    per_replicate = sampling["generate"]["images_per_class"]
    sampling["generate"]["images_per_class"] = min(args.sd_per_class, per_replicate)
    if args.sd_batch is None:
        # A chunk is one class's images (padded to the batch): at the auto batch (up to 32) a class's
        # few timed images would fill a tenth of it. The batch is then that count, so the rate is that
        # of a smaller batch than the preset's: the estimate errs slow.
        per_class = sampling["generate"]["images_per_class"] * len(sampling["study"]["seeds"])
        sampling["generate"]["text2image"]["batch_size"] = per_class
    sampling["study"]["mixes"] = [sampling["study"]["baseline"]]  # a mix may ask only for images made
    (root / "params-sampling.yaml").write_text(yaml.safe_dump(sampling, sort_keys=False))
    params = study_params(args, models)
    fill = params["generate"]["text2image"]
    # the fill pass only makes the images quality and train need: no compile of its new shape to pay
    fill.update(
        size=min(args.fill_size, fill["size"]),
        steps=args.fill_steps,
        batch_size=args.fill_batch,
        compile_mode="none",
    )
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return timings, params


def run_study(
    args: argparse.Namespace, params: dict, started: float
) -> tuple[list[Measured], dict[str, float]]:
    """Every stage in dvc.yaml's order, measured (each printed as it ends: a run cut short still says
    what it measured); and the figures the estimate needs."""
    synthetic = Path(params["generate"]["out_dir"])
    image_size = params["train"]["image_size"]
    done: list[Measured] = []

    def stage(
        name: str, run: Callable[[], None], count=None, images: Callable[[], int] | None = None
    ) -> Measured:
        print(f"--- {name}", flush=True)
        m = measure(name, run, count)
        m.images = images() if images else m.counts[-1][1] if count else None
        done.append(m)
        cells = ", ".join(f"{h} {v}" for h, v in zip(STAGE_HEADER, stage_row(m), strict=True))
        print(f"{cells}; bench wall time so far {time.perf_counter() - started:.0f} s", flush=True)
        return m

    stage("prepare", cli_stage("prepare"), images=lambda: args.classes * args.per_class)
    sampling = cli_stage("generate", "--params", "params-sampling.yaml")
    stage("generate: the preset's sampling", sampling, png_count(synthetic))
    sampled_paths = sorted(synthetic.glob("*/*.png"))[: args.decode_sample]
    figures = {"decode_sampled": decode_seconds(sampled_paths, image_size)}
    shutil.rmtree(synthetic)  # the training set is made afresh, not resumed from the images above
    shutil.rmtree("samples", ignore_errors=True)
    fill = stage("generate: the training set (cheap sampling)", cli_stage("generate"), png_count(synthetic))
    figures["decode_fill"] = decode_seconds(
        sorted(synthetic.glob("*/*.png"))[: len(sampled_paths)], image_size
    )
    stage("quality", cli_stage("quality"), images=lambda: fill.images)
    stage("tune --if-enabled", cli_stage("tune", "--if-enabled"))
    runs_dir = Path(params["train"]["runs_dir"])
    stage(
        "train (images = training images seen)",
        cli_stage("train"),
        images=lambda: training_throughput(runs_dir)[1],
    )
    figures["runs"] = training_throughput(runs_dir)[0]
    stage("report", cli_stage("report"))
    return done, figures


def estimate(stages: list[Measured], figures: dict[str, float]) -> tuple[list[list[object]], float, str]:
    """The whole preset: every generated image at the preset's sampling rate, the rest as measured."""
    by_name = {m.name.split(" (")[0]: m for m in stages}
    sampled, fill = by_name["generate: the preset's sampling"], by_name["generate: the training set"]
    rate = sampled.steady_rate() or sampled.images / sampled.seconds
    full = fill.images
    penalty = max(0.0, figures["decode_sampled"] - figures["decode_fill"])  # bigger PNGs decode slower
    to_first = sampled.first_image or 0.0
    tail = fill.seconds - (fill.last_image or fill.seconds)
    generate = to_first + full / rate + tail + full * penalty
    rows: list[list[object]] = []
    total = 0.0
    for m in stages:
        if m is sampled:
            how = (f"{to_first:.1f} s to the first image (loading, compiling, first batch) + {full} images at "
                   f"{rate:.2f}/s (first to last image written) + {tail:.1f} s after the last image (manifest, "
                   f"near-copy check, grids: the training set's) + {full} x {penalty * 1000:.1f} ms decoding "
                   "full-size PNGs in the near-copy check")  # fmt: skip
            rows.append(
                ["generate (the preset's 30 a class per replicate)", _cell(m.seconds), _cell(generate), how]
            )
            total += generate
        elif m is fill:
            continue  # stands in for part of the row above
        elif m.name == "quality":
            value = m.seconds + full * penalty
            rows.append(["quality", _cell(m.seconds), _cell(value), f"as measured + {full} x {penalty * 1000:.1f} ms decoding full-size PNGs into the image cache"])  # fmt: skip
            total += value
        else:
            rows.append([m.name, _cell(m.seconds), _cell(m.seconds), "as measured"])
            total += m.seconds
    return rows, total, f"{rate:.2f} images/s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=90, help="Classes of the real set (the study: 90).")
    parser.add_argument("--per-class", type=int, default=60, help="Real images a class (the study: 60, half train, half test); the preset's counts scale with it.")  # fmt: skip
    parser.add_argument("--image-px", type=int, default=192, help="Side of the real images in pixels.")
    parser.add_argument("--sd-per-class", type=int, default=2, help="Images a class per replicate at the preset's sampling (timed; 6 a class with 3 seeds, sampled as one batch of 6).")  # fmt: skip
    parser.add_argument(
        "--sd-size", type=int, default=None, help="Override generate.text2image.size (smoke runs)."
    )
    parser.add_argument(
        "--sd-steps", type=int, default=None, help="Override generate.text2image.steps (smoke runs)."
    )
    parser.add_argument("--sd-batch", type=int, default=None, help="Override generate.text2image.batch_size.")
    parser.add_argument("--fill-size", type=int, default=128, help="Size of the training set's images (at most the sampling's).")  # fmt: skip
    parser.add_argument("--fill-steps", type=int, default=2, help="Steps of the training set's sampling.")
    parser.add_argument("--fill-batch", type=int, default=32, help="Batch of the training set's sampling.")
    parser.add_argument(
        "--image-size", type=int, default=None, help="Override train.image_size (smoke runs)."
    )
    parser.add_argument("--epochs", type=int, default=None, help="Override both models' epochs (smoke runs).")
    parser.add_argument("--decode-sample", type=int, default=100, help="PNGs timed for the decode cost.")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores).")
    parser.add_argument("--results", type=Path, default=RESULTS, help="Where the section is appended.")
    parser.add_argument("--no-append", action="store_true", help="Print only; append nothing.")
    parser.add_argument("--keep", action="store_true", help="Keep the project folder (its path is printed).")
    args = parser.parse_args()

    preset_sizes = (args.classes, args.per_class, args.sd_size, args.sd_steps, args.image_size, args.epochs) == (90, 60, None, None, None, None)  # fmt: skip
    root = Path(tempfile.mkdtemp(prefix="synthmix-gpu-study-")).resolve()
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"  # the project's own store
    here = Path.cwd()
    started = time.perf_counter()
    try:
        setup, params = build_project(root, args)
        machine = describe_machine(set_threads(args.threads))
        os.chdir(root)
        stages, figures = run_study(args, params, started)
    finally:
        os.chdir(here)
        if args.keep:
            print(f"Project kept at {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    rows, total, rate = estimate(stages, figures)
    t2i = params["generate"]["text2image"]
    sampling = yaml.safe_load(PRESET.read_text())["generate"]["text2image"]
    sampling.update({k: v for k, v in {"size": args.sd_size, "steps": args.sd_steps, "batch_size": args.sd_batch}.items() if v is not None})  # fmt: skip
    if args.sd_batch is None:
        sampling["batch_size"] = (
            f"{args.sd_per_class * len(params['study']['seeds'])} (a class's timed images)"
        )
    verdict = (
        f"**Estimate for the whole preset: {total:.0f} s ({total / 60:.1f} min) against the 15-minute goal: "
        f"{'met' if total <= GOAL_SECONDS else 'not met'}.**"
        if preset_sizes
        else f"Smoke sizes, not the preset's: the same sum is {total:.0f} s, no estimate of the preset."
    )
    body = f"""{args.classes} classes x {args.per_class} real images ({args.image_px} px, procedural), presets/study.yaml's
stages in dvc.yaml's order through `synthmix.cli.run` in one process. Timed sampling:
{sampling["size"]} px, {sampling["steps"]} steps, guidance {sampling["guidance_scale"]}, batch {sampling["batch_size"]},
{args.sd_per_class} image(s) a class per replicate; the training set: {t2i["size"]} px, steps {t2i["steps"]}, batch
{t2i["batch_size"]}, {params["generate"]["images_per_class"]} a class per replicate. Random weights throughout (SD1.5
architecture, CLIP ViT-B/32, ResNet50 state-dict file), safety checker off. GPU utilisation: NVML's busy
percentage sampled every 0.1 s; peak torch: max_memory_allocated in this process; peak GPU: NVML's most
memory used on the device. The train stage trained {figures["runs"]:.0f} runs. Decoding a PNG as the image cache does: {figures["decode_sampled"] * 1000:.1f} ms
at the timed sampling's size, {figures["decode_fill"] * 1000:.1f} ms at the training set's.

{markdown_table(STAGE_HEADER, [stage_row(m) for m in stages])}

The whole preset, from these figures (sampling rate {rate}):

{markdown_table(["stage", "measured s", "preset estimate s", "how"], rows)}

{verdict}

Set-up, not counted: {"; ".join(f"{what} {seconds:.1f} s" for what, seconds in setup)}; wall time of the
bench {time.perf_counter() - started:.0f} s.
"""
    print(body)
    if not args.no_append:
        append_results("The study preset on one GPU: every stage, and the whole preset's estimate",
                       command_line(), machine, body, args.results)  # fmt: skip


if __name__ == "__main__":
    main()

"""Shared by the bench scripts: timing, the machine's description, study-shaped data sets, RESULTS.md.

Benches are scripts, not tests: each prints a small table and appends it, with the command that made
it and the machine it ran on, to bench/RESULTS.md. Ratios measured in one run are the figures to trust;
absolute seconds depend on the machine and on whatever else shares it.
"""

from __future__ import annotations

import fcntl
import os
import platform
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
RESULTS_HEADER = """# synthmix benchmarks

Each section below was appended by a script in `bench/` and names the command that produced it and the
machine it ran on. Compare ratios within a section (measured in the same run, on the same machine);
absolute seconds move with the machine and with whatever else was running on it.
"""

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # benches never download weights
os.environ.setdefault("SYNTHMIX_QUIET", "1")  # no progress bars in timed loops


# --- threads, timing -----------------------------------------------------------------------------


def set_threads(threads: int | None) -> int:
    """Pin torch's intra-op threads (default: every core torch sees) so runs are comparable."""
    import torch

    count = threads or os.cpu_count() or 1
    torch.set_num_threads(count)
    return count


@contextmanager
def stopwatch():
    """`with stopwatch() as t: ...` then t() gives the elapsed seconds (also inside the block)."""
    start = time.perf_counter()
    end: list[float] = []
    yield lambda: (end[0] if end else time.perf_counter()) - start
    end.append(time.perf_counter())


def best_of(repeats: int, fn: Callable[[], object]) -> float:
    """Fastest of `repeats` calls of fn, in seconds: the least disturbed by other work on the machine."""
    times = []
    for _ in range(repeats):
        with stopwatch() as elapsed:
            fn()
        times.append(elapsed())
    return min(times)


def median(values: Sequence[float]) -> float:
    return float(np.median(values))


# --- the machine and the command ------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_machine(threads: int) -> str:
    import torch

    try:
        memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        memory_gib = float("nan")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu_model()}, {os.cpu_count()} cores, {memory_gib:.0f} GiB RAM, {gpu}; Python "
        f"{platform.python_version()}, torch {torch.__version__} with {threads} threads; "
        f"1-min load average {load:.1f} when the bench started"
    )


def command_line() -> str:
    """The command that ran this bench, as a user would retype it from the repository root."""
    script = Path(sys.argv[0]).resolve()
    try:
        script = script.relative_to(Path.cwd().resolve())
    except ValueError:
        script = script.relative_to(RESULTS.parent.parent)
    return shlex.join([".venv/bin/python", str(script), *sys.argv[1:]])


# --- tables and RESULTS.md ------------------------------------------------------------------------


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
        return str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def append_results(title: str, command: str, machine: str, body: str, results: Path = RESULTS) -> None:
    """Append one section to RESULTS.md (created with its header if missing).

    Append-only under an exclusive lock: other benches (and other people) append to the same file, so
    nothing already there is rewritten.
    """
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = (
        f"\n## {title}\n\n- Command: `{command}`\n- Machine: {machine}\n- When: {stamp}\n\n{body.strip()}\n"
    )
    results.parent.mkdir(parents=True, exist_ok=True)
    with open(results, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        if not fh.read(1):
            fh.write(RESULTS_HEADER)
        fh.write(section)
        fcntl.flock(fh, fcntl.LOCK_UN)
    print(f"Appended '{title}' to {results}")


# --- a ResNet50 weights file ----------------------------------------------------------------------


def write_resnet50_weights(path: Path, seed: int = 0) -> Path:
    """A random torchvision ResNet50 state dict at `path`, standing in for ImageNet's file (benches are
    offline): like ImageNet's weights, one file's backbone features are shared by every seed."""
    import torch
    from torchvision.models import resnet50

    torch.manual_seed(seed)
    torch.save(resnet50(weights=None).state_dict(), path)
    return path


# --- study-shaped data sets in a temporary folder -------------------------------------------------


@dataclass(frozen=True)
class StudyDir:
    """A throwaway repository-shaped folder: data/, prepared/{train,test}.csv, synthetic/ + manifest."""

    root: Path
    classes: int
    train_per_class: int
    test_per_class: int
    synthetic_per_class: int


def photo_like(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth random RGB image (coarse noise, bilinear-upsampled): compresses like a photo, not like noise."""
    coarse = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse, "RGB").resize((size, size), Image.Resampling.BILINEAR))


def write_random_tree(root: Path, classes: int, per_class: int, size: int, suffix: str, seed: int) -> None:
    """root/c<k>/<i>.<suffix>: distinct photo-like images, `per_class` in each of `classes` classes."""
    rng = np.random.default_rng(seed)
    for k in range(classes):
        folder = root / f"c{k:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image = Image.fromarray(photo_like(rng, size), "RGB")
            image.save(folder / f"{i:04d}{suffix}", **({"quality": 90} if suffix == ".jpg" else {}))


def make_study_dir(
    root: Path,
    source: str,
    classes: int,
    train_per_class: int,
    test_per_class: int,
    synthetic_per_class: int,
    image_px: int = 64,
    suffix: str = ".png",
) -> StudyDir:
    """A study-shaped folder under `root` (paths inside are relative to it, as in the repository).

    source "digits": the embedded handwritten digits (10 classes); the digits the split leaves over
    stand in for generated images. source "random": photo-like random images of image_px pixels.
    The split is synthmix's own (split.prepare_split); the synthetic manifest is written by its owner,
    synthmix.generate.manifest.
    """
    from synthmix.core.files import sha256_file
    from synthmix.data.importing import write_default_data
    from synthmix.data.split import SplitSizes, prepare_split
    from synthmix.generate.manifest import SyntheticRow, write_synthetic_manifest

    root.mkdir(parents=True, exist_ok=True)
    here = Path.cwd()
    os.chdir(root)
    try:
        pool = Path("pool")
        if source == "digits":
            write_default_data(pool)
            if classes != 10:
                raise ValueError("the embedded digits have 10 classes")
        elif source == "random":
            write_random_tree(
                pool, classes, train_per_class + test_per_class + synthetic_per_class, image_px, suffix, 0
            )
        else:
            raise ValueError(f"unknown source {source!r}")
        # Real set: the first train+test files of each class; the rest stand in for generated images.
        real_count = train_per_class + test_per_class
        synthetic_rows: list[SyntheticRow] = []
        for class_dir in sorted(p for p in pool.iterdir() if p.is_dir()):
            files = sorted(class_dir.iterdir())
            if len(files) < real_count + synthetic_per_class:
                raise ValueError(f"class {class_dir.name} has only {len(files)} images")
            (Path("data") / class_dir.name).mkdir(parents=True, exist_ok=True)
            for f in files[:real_count]:
                shutil.move(f, Path("data") / class_dir.name / f.name)
            for index, f in enumerate(files[real_count : real_count + synthetic_per_class]):
                target = Path("synthetic") / class_dir.name / f"{index:04d}{f.suffix}"
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(f, target)
                synthetic_rows.append(
                    SyntheticRow(target, class_dir.name, index, 0, "bench", "bench", "", "", 0, 0.0, 0,
                                 sha256_file(target))
                )  # fmt: skip
        shutil.rmtree(pool)
        prepare_split(Path("data"), Path("prepared"), SplitSizes(train_per_class, test_per_class), seed=0)
        write_synthetic_manifest(synthetic_rows, Path("synthetic/manifest.csv"))
    finally:
        os.chdir(here)
    return StudyDir(root, classes, train_per_class, test_per_class, synthetic_per_class)

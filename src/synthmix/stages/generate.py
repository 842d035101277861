"""The generate stage: the synthetic image set, one folder per class, reproducible and resumable.

Image i of class c is drawn from its own seed, derived from (generate.seed, c, i). Work is cut into
fixed chunks, per class, of `chunk_size` consecutive indices (the last one padded past
images_per_class and the padding thrown away), and a chunk is always sampled whole: batched
arithmetic can differ in the last bits with the batch's composition, and this way every image is
computed in the same batch whatever the process count, the resume point or images_per_class.
Chunks are dealt round-robin to the processes of `accelerate launch`.

Every PNG is written under a temporary name and renamed, and carries its own record (settings digest,
seed, retries; see `manifest`), so a rerun keeps exactly the finished images whose settings match and
redoes the rest; synthetic/ ends up holding only the PNGs and manifest.csv.

The manifest marks the images no mix may train on (`manifest.usable`): those the safety checker still
blocks after the retries, and near-copies of a test image (data/copies.py, the check that keeps
copies apart across the real split).
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from synthmix.config.compute import Compute, resolve_compute
from synthmix.config.params import flatten, to_dict
from synthmix.core.errors import UserError
from synthmix.core.files import sha256_file
from synthmix.core.progress import progress
from synthmix.data import copies
from synthmix.data.copies import Fingerprints, fingerprint
from synthmix.data.real import SplitRow, load_rgb, read_manifest
from synthmix.data.split import read_split_summary
from synthmix.generate.manifest import (
    MANIFEST_NAME,
    ImageRecord,
    SyntheticRow,
    image_path,
    read_record,
    remove_strays,
    write_image,
    write_synthetic_manifest,
)
from synthmix.generate.samples import write_sample_grids
from synthmix.generate.sources import (
    LEARNS_FROM_POOL,
    SOURCES,
    ImageKey,
    ImageSource,
    LogMetric,
    SourceRequest,
)
from synthmix.runs import tracking
from synthmix.runs.environment import environment_params, watch_system

if TYPE_CHECKING:
    from synthmix.config.params import GenerateConfig, Params

SAMPLES_DIR = Path("samples")


@dataclass
class GenerateSummary:
    generated: int = 0
    reused: int = 0
    retries: int = 0
    blocked: int = 0
    classes: int = 0
    seconds: float = 0.0
    warmup_seconds: float = 0.0  # compiling before the first image (text2image's fast path), in seconds
    near_test: int = 0  # near-copies of a test image, flagged in the manifest
    is_main_process: bool = True
    manifest: Path | None = None
    name: str = ""  # the generator's
    blocked_keys: list[ImageKey] = field(default_factory=list)


# --- pure planning --------------------------------------------------------------------------------


def image_seed(base_seed: int, label: str, index: int) -> int:
    """The seed of image `index` of class `label`: independent of batch, process and run order."""
    digest = hashlib.sha256(f"synthetic:{base_seed}:{label}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 2  # headroom below 2**63 for retries (seed + r)


def plan_chunks(classes: Sequence[str], images_per_class: int, chunk_size: int) -> list[tuple[ImageKey, ...]]:
    """Per class, blocks of `chunk_size` consecutive indices covering 0..images_per_class-1.

    The last block runs past images_per_class (padding, sampled and discarded) so that an image's
    batch depends only on its index and the chunk size.
    """
    chunks = []
    for label in classes:
        for start in range(0, images_per_class, chunk_size):
            chunks.append(tuple(ImageKey(label, i) for i in range(start, start + chunk_size)))
    return chunks


def shard(chunks: Sequence[tuple[ImageKey, ...]], process_index: int, num_processes: int) -> list:
    """Round-robin: process p takes chunks p, p+n, p+2n, ..."""
    return list(chunks[process_index::num_processes])


def source_ranks(params: Params) -> int:
    """How many real training ranks image-to-image starts from: the smallest positive real count of the
    study's mixes (so every mix with real images holds the sources of its synthetic images), or every
    training image when no mix has real images."""
    return min((mix.real for mix in params.study.mixes if mix.real > 0), default=params.data.train_per_class)


def settings_digest(source_settings: dict[str, Any], base_seed: int) -> str:
    payload = json.dumps({"settings": source_settings, "seed": base_seed}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


# --- the stage ------------------------------------------------------------------------------------


def generate_stage(
    params: Params, names: Sequence[str] = (), compute: Compute | None = None
) -> list[GenerateSummary]:
    """Run the generate stage as configured, for every generator of generate.* and generate.generators
    (or only `names`), one after the other, each its own set; under `accelerate launch` each process
    does its share. A generator whose images are finished with its settings only has its manifest
    rewritten, so adding a generator generates only its images.

    A generator trained here (the DDPM) learns from prepared/pool.csv, real images the classifier never
    sees, when every class has its full pool (split.json), else from prepared/train.csv; image-to-image
    starts from prepared/train.csv. prepared/test.csv is read after generation, to flag synthetic
    images that nearly copy a test image. It makes generate.images_per_class images a class for each
    study seed when study.redraw holds generator_seed (Params.synthetic_per_class), else once. The first
    generator writes synthetic/<class>/<index:04d>.png, synthetic/manifest.csv, samples/<class>.png and
    samples/grid.png, another one the same under synthetic/@<name>/ and samples/@<name>/; a DDPM's
    checkpoints go to its ddpm.checkpoint_dir (with /@<name> for another generator). Every network
    runs on `compute` (compute.* resolved: the CLI's, else resolved here); under `accelerate launch`
    with several processes on CUDA, each on its own GPU.
    """
    compute = compute or resolve_compute(params.compute)
    compute.enable_fast_kernels()  # TF32 on CUDA
    unknown = [n for n in names if n not in params.generate.names]
    if unknown:
        raise UserError(
            f"No generator '{unknown[0]}' in params.yaml (generate.name / generate.generators has: "
            f"{', '.join(params.generate.names)}). Name one of those, or add it to generate.generators."
        )
    real = _RealSplit.read(params.data.prepared_dir)
    chosen = names or params.generate.names
    summaries = [_generate_one(params, params.generate.single(n), real, compute) for n in chosen]
    for trained in (params.generate.ddpm.checkpoint_dir, params.generate.lora.checkpoint_dir):
        trained.mkdir(parents=True, exist_ok=True)  # DVC outputs, even when no generator trains there
    return summaries


@dataclass
class _RealSplit:
    """The prepared split as every generator of one stage run uses it, read once."""

    train: list[SplitRow]
    pool: list[SplitRow] | None  # the generator's pool when every class has its full one (split.json)
    test: list[SplitRow]

    @classmethod
    def read(cls, prepared_dir: Path) -> _RealSplit:
        pool = (
            read_manifest(prepared_dir / "pool.csv")
            if read_split_summary(prepared_dir).generator_pool
            else None
        )
        return cls(_training_rows(prepared_dir / "train.csv"), pool, read_manifest(prepared_dir / "test.csv"))

    @functools.cached_property
    def test_prints(self) -> Fingerprints:
        """Fingerprints of the test images, for flag_test_copies (computed on first use)."""
        return Fingerprints.stack([fingerprint(load_rgb(r.path)) for r in self.test])


def _generate_one(params: Params, cfg: GenerateConfig, real: _RealSplit, compute: Compute) -> GenerateSummary:
    """One generator's set (cfg = params.generate.single(name))."""

    from accelerate import PartialState

    started = time.monotonic()
    train_rows = real.train
    classes = sorted({r.label for r in train_rows})
    learn_rows = real.pool if cfg.generator in LEARNS_FROM_POOL and real.pool is not None else train_rows
    total = params.synthetic_per_class
    state = PartialState()
    if compute.is_cuda and state.num_processes > 1:  # accelerate's processes: one GPU each
        compute = replace(compute, device=state.device)
    summary = GenerateSummary(classes=len(classes), is_main_process=state.is_main_process, name=cfg.name)

    with _mlflow_run(state.is_main_process, cfg, compute) as log_metric:
        source: ImageSource = SOURCES[cfg.generator](
            SourceRequest(cfg, learn_rows, classes, state, log_metric, source_ranks(params), compute)
        )
        identity = compute.identity  # an image made on a GPU is not the CPU's: made again, not reused
        digest = settings_digest(
            {**source.settings(), **({} if identity is None else {"compute": identity})}, cfg.seed
        )
        chunks = plan_chunks(classes, total, source.chunk_size)
        mine = shard(chunks, state.process_index, state.num_processes)
        for chunk in progress(mine, f"Generating ({cfg.name}: {cfg.generator})"):
            wanted = [k for k in chunk if k.index < total]
            todo = [k for k in wanted if read_record(_path(cfg, k), digest) is None]
            summary.reused += len(wanted) - len(todo)
            if not todo:
                continue
            images = source.sample(chunk, [image_seed(cfg.seed, k.label, k.index) for k in chunk])
            for key, image in zip(chunk, images, strict=True):
                if key in todo:
                    record = ImageRecord(digest, image.seed, image.retries, image.blocked)
                    write_image(_path(cfg, key), image.pixels, record)
                    summary.generated += 1
        state.wait_for_everyone()

        if state.is_main_process:
            rows = _collect_rows(cfg, classes, source, digest, total)
            rows = flag_test_copies(rows, real.test, real.test_prints)
            others = [params.generate.generator_dir(n).name for n in params.generate.names if n != cfg.name]
            remove_strays(
                cfg.out_dir, classes, total, others if cfg.name == params.generate.first_name else ()
            )
            summary.manifest = cfg.out_dir / MANIFEST_NAME
            write_synthetic_manifest(rows, summary.manifest)
            summary.retries = sum(r.retries for r in rows)
            summary.blocked_keys = [ImageKey(r.label, r.index) for r in rows if r.blocked]
            summary.blocked = len(summary.blocked_keys)
            summary.near_test = sum(r.near_test_path is not None for r in rows)
            grids = write_sample_grids(train_rows, rows, samples_dir(params, cfg.name))
            summary.seconds = time.monotonic() - started
            summary.warmup_seconds = source.warmup_seconds
            log_metric("images_generated", summary.generated, None)
            log_metric("images_reused", summary.reused, None)
            log_metric("blocked_retries", summary.retries, None)
            log_metric("blocked_final", summary.blocked, None)
            log_metric("near_test_copies", summary.near_test, None)
            log_metric("generate_seconds", summary.seconds, None)
            log_metric("warmup_seconds", summary.warmup_seconds, None)
            log_metric("batch_size", source.chunk_size, None)
            _log_images(grids)
        state.wait_for_everyone()
    return summary


def samples_dir(params: Params, name: str) -> Path:
    """The sample grids of generator `name`: samples/ for the first, samples/@<name>/ for another."""
    return SAMPLES_DIR if name == params.generate.first_name else SAMPLES_DIR / f"@{name}"


def _training_rows(path: Path) -> list[SplitRow]:
    rows = [r for r in read_manifest(path) if r.split == "train"]
    if not rows:
        raise UserError(f"{path} lists no training images. Rerun `synthmix prepare` on a non-empty data set.")
    return rows


def _path(cfg: GenerateConfig, key: ImageKey) -> Path:
    return image_path(cfg.out_dir, key.label, key.index)


def flag_test_copies(
    rows: Sequence[SyntheticRow], test_rows: Sequence[SplitRow], test_prints: Fingerprints
) -> list[SyntheticRow]:
    """`rows` with near_test_path/near_test_similarity set on each image that is a near-copy
    (data/copies.py) of a test image of any class (`test_prints` in test_rows' order): the closest."""
    prints = Fingerprints.stack([fingerprint(load_rgb(r.path)) for r in rows])
    closest: dict[int, copies.Pair] = {}
    for pair in copies.find_copies(prints, test_prints):
        if pair.query not in closest or pair.aligned > closest[pair.query].aligned:
            closest[pair.query] = pair
    return [
        replace(
            row, near_test_path=test_rows[closest[i].reference].path, near_test_similarity=closest[i].aligned
        )
        if i in closest
        else replace(row, near_test_path=None, near_test_similarity=None)
        for i, row in enumerate(rows)
    ]


def _collect_rows(
    cfg: GenerateConfig, classes: Sequence[str], source: ImageSource, digest: str, total: int
) -> list[SyntheticRow]:
    """The manifest rows of the finished set in class then index order (without the test check)."""
    rows = []
    for label in classes:
        for index in range(total):
            path = image_path(cfg.out_dir, label, index)
            record = read_record(path, digest)
            if record is None:  # a bug: every process finished its share before this runs
                raise RuntimeError(f"{path} is missing after generation")
            rows.append(
                replace(
                    source.row_for(ImageKey(label, index)),
                    path=path,
                    index=index,
                    seed=record.seed,
                    retries=record.retries,
                    sha256=sha256_file(path),
                    blocked=record.blocked,
                    source_path=source.source_path(ImageKey(label, index)),
                )
            )
    return rows


# --- MLflow ---------------------------------------------------------------------------------------


@contextmanager
def _mlflow_run(enabled: bool, cfg: GenerateConfig, compute: Compute) -> Iterator[LogMetric]:
    """One generator's run of the stage on the main process (tracking.stage_run); yields
    log_metric(name, value, step)."""
    if not enabled:
        yield lambda name, value, step: None
        return
    import mlflow

    settings = {**flatten(to_dict(cfg), "generate."), **environment_params(compute.record())}
    watch_system(compute)  # MLflow's system metrics, on CUDA only
    with tracking.stage_run("generate", run_name=f"generate-{cfg.name}", params=settings):
        yield lambda name, value, step: mlflow.log_metric(name, value, step=step)


def _log_images(grids: dict[str, Path]) -> None:
    import mlflow

    if mlflow.active_run() is None:
        return
    for name, path in grids.items():
        with Image.open(path) as img:
            mlflow.log_image(img.copy(), artifact_file=f"samples/{name}.png")

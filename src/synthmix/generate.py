"""The generate stage: the synthetic image set, one folder per class, reproducible and resumable.

Image i of class c is drawn from its own seed, derived from (generate.seed, c, i). Work is cut into
fixed chunks, per class, of `chunk_size` consecutive indices (the last one padded past
images_per_class and the padding thrown away), and a chunk is always sampled whole: batched
arithmetic can differ in the last bits with the batch's composition, and this way every image is
computed in the same batch whatever the process count, the resume point or images_per_class.
Chunks are dealt round-robin to the processes of `accelerate launch`.

Every PNG is written under a temporary name and renamed, and carries its own record (settings digest,
seed, retries) in a PNG text chunk, so a rerun keeps exactly the finished images whose settings
match and redoes the rest; synthetic/ ends up holding only the PNGs and manifest.csv.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image, ImageDraw, PngImagePlugin

from synthmix.config import DDPMConfig, GenerateConfig, Params, Text2ImageConfig, flatten, to_dict
from synthmix.data import SplitRow, atomic_path, decode_array, load_rgb, read_manifest, sha256_file
from synthmix.errors import UserError
from synthmix.mixes import SyntheticRow, write_synthetic_manifest
from synthmix.progress import progress

SAMPLES_DIR = Path("samples")
MANIFEST_NAME = "manifest.csv"
PNG_RECORD_KEY = "synthmix"
_IMAGE_NAME = re.compile(r"^(\d{4,})\.png$")
GRID_COLUMNS = 8  # images per row in samples/<class>.png
OVERVIEW_COLUMNS = 5  # real and synthetic images per class in samples/grid.png


@dataclass(frozen=True, order=True)
class ImageKey:
    label: str
    index: int


@dataclass(frozen=True)
class Generated:
    pixels: np.ndarray  # uint8 HxWx3
    seed: int  # the seed that produced it (differs from image_seed after retries)
    retries: int = 0
    blocked: bool = False


@dataclass(frozen=True)
class RowTemplate:
    """The manifest columns shared by every image of a class (everything but index, seed, sha256)."""

    generator: str
    model_id: str
    revision: str
    prompt: str
    steps: int
    guidance: float


class ImageSource(Protocol):
    """A generator behind the common interface: fixed chunks in, one image per key out."""

    chunk_size: int

    def settings(self) -> dict[str, Any]: ...  # everything that determines an image, besides its seed

    def row_template(self, label: str) -> RowTemplate: ...

    def sample(self, keys: Sequence[ImageKey], seeds: Sequence[int]) -> list[Generated]: ...


@dataclass
class GenerateSummary:
    generated: int = 0
    reused: int = 0
    retries: int = 0
    blocked: int = 0
    classes: int = 0
    seconds: float = 0.0
    is_main_process: bool = True
    manifest: Path | None = None
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


def settings_digest(source_settings: dict[str, Any], base_seed: int) -> str:
    payload = json.dumps({"settings": source_settings, "seed": base_seed}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def image_path(out_dir: Path, key: ImageKey) -> Path:
    return out_dir / key.label / f"{key.index:04d}.png"


# --- the stage ------------------------------------------------------------------------------------


def generate_synthetic(params: Params) -> GenerateSummary:
    """Run the generate stage as configured; under `accelerate launch` each process does its share.

    Reads prepared/train.csv only (never the test split). Writes synthetic/<class>/<index:04d>.png,
    synthetic/manifest.csv, samples/<class>.png and samples/grid.png; the DDPM's checkpoints go to
    generate.ddpm.checkpoint_dir.
    """
    from accelerate import PartialState

    started = time.monotonic()
    cfg = params.generate
    train_rows = _training_rows(params.data.prepared_dir / "train.csv")
    classes = sorted({r.label for r in train_rows})
    state = PartialState()
    summary = GenerateSummary(classes=len(classes), is_main_process=state.is_main_process)

    with _mlflow_run(state.is_main_process, params) as log_metric:
        if cfg.generator == "ddpm":
            source: ImageSource = _ddpm_source(cfg, train_rows, classes, state, log_metric)
        else:
            source = _text2image_source(cfg, train_rows, state.device)
        digest = settings_digest(source.settings(), cfg.seed)
        chunks = plan_chunks(classes, cfg.images_per_class, source.chunk_size)
        mine = shard(chunks, state.process_index, state.num_processes)
        for chunk in progress(mine, f"Generating ({cfg.generator})"):
            wanted = [k for k in chunk if k.index < cfg.images_per_class]
            todo = [k for k in wanted if _read_record(image_path(cfg.out_dir, k), digest) is None]
            summary.reused += len(wanted) - len(todo)
            if not todo:
                continue
            images = source.sample(chunk, [image_seed(cfg.seed, k.label, k.index) for k in chunk])
            for key, image in zip(chunk, images, strict=True):
                if key in todo:
                    _write_image(image_path(cfg.out_dir, key), image, digest)
                    summary.generated += 1
        state.wait_for_everyone()

        if state.is_main_process:
            rows = _collect_rows(cfg, classes, source, digest)
            _remove_strays(cfg.out_dir, classes, cfg.images_per_class)
            summary.manifest = cfg.out_dir / MANIFEST_NAME
            write_synthetic_manifest(rows, summary.manifest)
            summary.retries = sum(r.retries for r in rows)
            summary.blocked_keys = [
                ImageKey(r.label, r.index)
                for r in rows
                if _read_record(image_path(cfg.out_dir, ImageKey(r.label, r.index)), digest)["blocked"]
            ]
            summary.blocked = len(summary.blocked_keys)
            grids = write_sample_grids(train_rows, rows, SAMPLES_DIR)
            summary.seconds = time.monotonic() - started
            log_metric("images_generated", summary.generated, None)
            log_metric("images_reused", summary.reused, None)
            log_metric("blocked_retries", summary.retries, None)
            log_metric("blocked_final", summary.blocked, None)
            log_metric("generate_seconds", summary.seconds, None)
            _log_images(grids)
        state.wait_for_everyone()
    return summary


def _training_rows(path: Path) -> list[SplitRow]:
    rows = [r for r in read_manifest(path) if r.split == "train"]
    if not rows:
        raise UserError(f"{path} lists no training images. Rerun `synthmix prepare` on a non-empty data set.")
    return rows


# --- the two generators ---------------------------------------------------------------------------


@dataclass
class DDPMSource:
    model: Any
    cfg: DDPMConfig
    class_ids: dict[str, int]
    fingerprint: str

    @property
    def chunk_size(self) -> int:
        return self.cfg.sample_batch_size

    def settings(self) -> dict[str, Any]:
        return {
            "generator": "ddpm",
            "model": self.fingerprint,
            "sample_steps": self.cfg.sample_steps,
            "chunk": self.cfg.sample_batch_size,
        }

    def row_template(self, label: str) -> RowTemplate:
        from synthmix.ddpm import MODEL_ID

        return RowTemplate("ddpm", MODEL_ID, self.fingerprint[:16], "", self.cfg.sample_steps, 0.0)

    def sample(self, keys: Sequence[ImageKey], seeds: Sequence[int]) -> list[Generated]:
        from synthmix.ddpm import sample_ddpm

        pixels = sample_ddpm(self.model, self.cfg, [self.class_ids[k.label] for k in keys], seeds)
        return [Generated(p, s) for p, s in zip(pixels, seeds, strict=True)]


def _ddpm_source(
    cfg: GenerateConfig, train_rows: Sequence[SplitRow], classes: Sequence[str], state: Any, log_metric
) -> DDPMSource:
    """Train the DDPM on the main process (the others wait), then load it everywhere."""
    from synthmix import ddpm

    class_ids = {label: i for i, label in enumerate(classes)}
    ordered = sorted(train_rows, key=lambda r: (r.label, r.rank))
    fingerprint = ddpm.model_fingerprint(cfg.ddpm, classes, [r.sha256 for r in ordered], cfg.seed)
    if state.is_main_process:
        images = np.stack([decode_array(r.path, size=cfg.ddpm.resolution) for r in ordered])
        labels = np.array([class_ids[r.label] for r in ordered])
        ddpm.train_ddpm(
            cfg.ddpm,
            images,
            labels,
            len(classes),
            cfg.seed,
            fingerprint,
            log_loss=lambda loss, step: log_metric("ddpm_loss", loss, step),
        )
    state.wait_for_everyone()
    model = ddpm.load_trained(cfg.ddpm.checkpoint_dir / ddpm.FINAL_DIR, state.device)
    return DDPMSource(model, cfg.ddpm, class_ids, fingerprint)


@dataclass
class Text2ImageSource:
    pipe: Any
    cfg: Text2ImageConfig
    init_images: dict[str, list[Path]]  # class -> real training images by rank (image mode)

    @property
    def chunk_size(self) -> int:
        return self.cfg.batch_size

    def settings(self) -> dict[str, Any]:
        return {"generator": "text2image", **to_dict(self.cfg)}

    def row_template(self, label: str) -> RowTemplate:
        from synthmix.text2image import prompt_for, revision_of

        return RowTemplate(
            "text2image",
            self.cfg.model,
            revision_of(self.cfg),
            prompt_for(self.cfg, label),
            self.cfg.steps,
            self.cfg.guidance_scale,
        )

    def sample(self, keys: Sequence[ImageKey], seeds: Sequence[int]) -> list[Generated]:
        from synthmix.text2image import sample_text2image

        label = keys[0].label  # chunks never mix classes
        init = None
        if self.cfg.mode == "image":
            # Image i starts from real training image i (cycling when there are more synthetic ones).
            reals = self.init_images[label]
            size = (self.cfg.size, self.cfg.size)
            init = [
                load_rgb(reals[k.index % len(reals)]).resize(size, Image.Resampling.BICUBIC) for k in keys
            ]
        results = sample_text2image(self.pipe, self.cfg, label, seeds, init)
        return [Generated(r.pixels, r.seed, r.retries, r.blocked) for r in results]


def _text2image_source(cfg: GenerateConfig, train_rows: Sequence[SplitRow], device: Any) -> Text2ImageSource:
    from synthmix.text2image import load_pipeline

    init_images: dict[str, list[Path]] = {}
    for row in sorted(train_rows, key=lambda r: (r.label, r.rank)):
        init_images.setdefault(row.label, []).append(row.path)
    return Text2ImageSource(load_pipeline(cfg.text2image, device), cfg.text2image, init_images)


# --- files ----------------------------------------------------------------------------------------


def _write_image(path: Path, image: Generated, digest: str) -> None:
    """Atomic PNG write; the image's own record rides along in a text chunk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngImagePlugin.PngInfo()
    record = {"digest": digest, "seed": image.seed, "retries": image.retries, "blocked": image.blocked}
    info.add_text(PNG_RECORD_KEY, json.dumps(record, sort_keys=True))
    with atomic_path(path) as tmp:
        Image.fromarray(image.pixels, "RGB").save(tmp, format="PNG", pnginfo=info, compress_level=6)


def _read_record(path: Path, digest: str) -> dict[str, Any] | None:
    """The record of a finished image made with these settings, else None (missing, other settings)."""
    if not path.exists():
        return None
    try:
        with Image.open(path) as img:
            record = json.loads(img.text.get(PNG_RECORD_KEY, "{}"))
    except (OSError, ValueError, SyntaxError):
        return None
    return record if record.get("digest") == digest else None


def _collect_rows(cfg: GenerateConfig, classes: Sequence[str], source: ImageSource, digest: str) -> list:
    rows = []
    for label in classes:
        template = source.row_template(label)
        for index in range(cfg.images_per_class):
            path = image_path(cfg.out_dir, ImageKey(label, index))
            record = _read_record(path, digest)
            if record is None:  # a bug: every process finished its share before this runs
                raise RuntimeError(f"{path} is missing after generation")
            rows.append(
                SyntheticRow(
                    path=path,
                    label=label,
                    index=index,
                    seed=record["seed"],
                    generator=template.generator,
                    model_id=template.model_id,
                    revision=template.revision,
                    prompt=template.prompt,
                    steps=template.steps,
                    guidance=template.guidance,
                    retries=record["retries"],
                    sha256=sha256_file(path),
                )
            )
    return rows


def _remove_strays(out_dir: Path, classes: Sequence[str], images_per_class: int) -> None:
    """Leave only this set in out_dir: drop old classes, indices past images_per_class, temp files."""
    keep = set(classes)
    for entry in out_dir.iterdir():
        if entry.is_dir() and entry.name not in keep:
            shutil.rmtree(entry)
        elif entry.is_file() and entry.name != MANIFEST_NAME:
            entry.unlink()
    for label in classes:
        for path in (out_dir / label).iterdir():
            match = _IMAGE_NAME.match(path.name)
            if not (match and int(match.group(1)) < images_per_class and path.is_file()):
                shutil.rmtree(path) if path.is_dir() else path.unlink()


# --- pictures -------------------------------------------------------------------------------------


def write_sample_grids(
    train_rows: Sequence[SplitRow], synthetic_rows: Sequence[SyntheticRow], samples_dir: Path
) -> dict[str, Path]:
    """samples/<class>.png (real top row, synthetic bottom row) and samples/grid.png (all classes)."""
    samples_dir.mkdir(parents=True, exist_ok=True)
    real: dict[str, list[Path]] = {}
    for row in sorted(train_rows, key=lambda r: (r.label, r.rank)):
        real.setdefault(row.label, []).append(row.path)
    synthetic: dict[str, list[Path]] = {}
    for row in sorted(synthetic_rows, key=lambda r: (r.label, r.index)):
        synthetic.setdefault(row.label, []).append(row.path)
    written: dict[str, Path] = {}
    for label in sorted(real):
        picture = _tile_rows([real[label][:GRID_COLUMNS], synthetic.get(label, [])[:GRID_COLUMNS]], tile=64)
        written[label] = _save_png(picture, samples_dir / f"{label}.png")
    overview_rows = [
        real[label][:OVERVIEW_COLUMNS] + synthetic.get(label, [])[:OVERVIEW_COLUMNS] for label in sorted(real)
    ]
    overview = _tile_rows(overview_rows, tile=32, labels=sorted(real), split_at=OVERVIEW_COLUMNS)
    written["grid"] = _save_png(overview, samples_dir / "grid.png")
    return written


def _tile_rows(
    rows: Sequence[Sequence[Path]],
    tile: int,
    labels: Sequence[str] | None = None,
    split_at: int | None = None,
) -> Image.Image:
    gap, margin = 2, (56 if labels else 0)
    divider = 6 if split_at else 0
    columns = max((len(r) for r in rows), default=1)
    width = margin + columns * (tile + gap) + divider
    canvas = Image.new("RGB", (width, len(rows) * (tile + gap)), "white")
    draw = ImageDraw.Draw(canvas)
    for r, paths in enumerate(rows):
        y = r * (tile + gap)
        if labels:
            draw.text((4, y + tile // 3), labels[r][:8], fill="black")
        for c, path in enumerate(paths):
            img = load_rgb(path)
            resample = Image.Resampling.NEAREST if img.width < tile else Image.Resampling.LANCZOS
            x = margin + c * (tile + gap) + (divider if split_at is not None and c >= split_at else 0)
            canvas.paste(img.resize((tile, tile), resample), (x, y))
    return canvas


def _save_png(picture: Image.Image, path: Path) -> Path:
    with atomic_path(path) as tmp:
        picture.save(tmp, format="PNG")
    return path


# --- MLflow ---------------------------------------------------------------------------------------


@contextmanager
def _mlflow_run(enabled: bool, params: Params) -> Iterator[Callable[[str, float, int | None], None]]:
    """An MLflow run 'generate' on the main process; yields log_metric(name, value, step)."""
    if not enabled:
        yield lambda name, value, step: None
        return
    import mlflow

    from synthmix import tracking

    tracking.configure()
    with mlflow.start_run(run_name="generate"):
        mlflow.log_params(flatten(to_dict(params.generate), "generate."))
        mlflow.set_tags(
            {
                "stage": "generate",
                "git_commit": tracking.git_commit(),
                "data_md5": tracking.dvc_file_hash(),
                "dvc_experiment": tracking.dvc_experiment(),
            }
        )
        yield lambda name, value, step: mlflow.log_metric(name, value, step=step)


def _log_images(grids: dict[str, Path]) -> None:
    import mlflow

    if mlflow.active_run() is None:
        return
    for name, path in grids.items():
        with Image.open(path) as img:
            mlflow.log_image(img.copy(), artifact_file=f"samples/{name}.png")

"""The generators behind one interface, and `SOURCES`, the registry that names them.

A source samples a fixed chunk of (class, index) keys from their seeds, one image per key, and says
what determines its images (`settings`, hashed into every PNG's record) and how the manifest
describes them (`row_for`, `source_path`). `SOURCES` maps each `generate.generator` name to the
function that builds its source; a new generator is a module with its model code and one entry here.

Provenance: the DDPM learns from the real images it is given (`LEARNS_FROM_POOL`: the stage gives it
the generator's pool, held out from the classifier, when the data has room for one, else the
training split); image-to-image starts synthetic image i
of a class from its real training image of rank `i mod source_ranks` (the stage sets source_ranks to
the smallest real count of the study's mixes, so every mix with real images holds the sources);
text-to-image sees no real image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from PIL import Image

from synthmix.config.params import to_dict
from synthmix.data.real import decode_array, load_rgb
from synthmix.generate import ddpm, text2image, text2image_fast
from synthmix.generate.manifest import SyntheticRow

if TYPE_CHECKING:
    from synthmix.config.compute import Compute
    from synthmix.config.params import DDPMConfig, GenerateConfig, Text2ImageConfig
    from synthmix.data.real import SplitRow

LogMetric = Callable[[str, float, int | None], None]  # log_metric(name, value, step)


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


def _template(label: str, *columns: Any) -> SyntheticRow:
    return SyntheticRow(Path(), label, 0, 0, *columns, 0, "")


class ImageSource(Protocol):
    """A generator behind the common interface: fixed chunks in, one image per key out."""

    chunk_size: int
    warmup_seconds: float  # compiling and the like before the first image, apart from images/s

    def settings(self) -> dict[str, Any]: ...  # everything that determines an image, besides its seed

    def row_for(self, key: ImageKey) -> SyntheticRow:
        """The manifest columns of image `key` that its generator knows (prompt, model ...); the stage
        fills in path, index, seed, retries and sha256 (dataclasses.replace)."""
        ...

    def sample(self, keys: Sequence[ImageKey], seeds: Sequence[int]) -> list[Generated]: ...

    def source_path(self, key: ImageKey) -> Path | None:
        """The real training image the image was made from, or None (made from no single image)."""
        ...


@dataclass(frozen=True)
class SourceRequest:
    """What opening any generator takes: its settings, the real rows it may learn from or start from,
    the ordered class names, accelerate's state, where to log its training loss, source_ranks
    (image-to-image starts only from real training ranks below it) and this process's device and
    precision (`compute`)."""

    cfg: GenerateConfig
    rows: Sequence[SplitRow]
    classes: Sequence[str]
    state: Any
    log_metric: LogMetric
    source_ranks: int
    compute: Compute


SourceFactory = Callable[[SourceRequest], ImageSource]


# --- the DDPM -------------------------------------------------------------------------------------


@dataclass
class DDPMSource:
    model: Any
    cfg: DDPMConfig
    class_ids: dict[str, int]
    fingerprint: str
    learned_from: str  # the split of the real images it learnt from: "pool" or "train"
    warmup_seconds: float = 0.0

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

    def row_for(self, key: ImageKey) -> SyntheticRow:
        label = key.label
        row = _template(label, "ddpm", ddpm.MODEL_ID, self.fingerprint[:16], "", self.cfg.sample_steps, 0.0)
        return replace(row, learned_from=self.learned_from)

    def sample(self, keys: Sequence[ImageKey], seeds: Sequence[int]) -> list[Generated]:
        pixels = ddpm.sample_ddpm(self.model, self.cfg, [self.class_ids[k.label] for k in keys], seeds)
        return [Generated(p, s) for p, s in zip(pixels, seeds, strict=True)]

    def source_path(self, key: ImageKey) -> Path | None:
        return None  # each image comes from the model, which learnt from every image it was given


def open_ddpm(request: SourceRequest) -> DDPMSource:
    """Train the DDPM on every image of `train_rows` (the generator's pool when the data has one, else
    the training split) on the main process (the others wait), then load it everywhere.
    `source_ranks` is for image-to-image only: the DDPM learns from all the rows it is given."""
    cfg, train_rows, classes, state = request.cfg, request.rows, request.classes, request.state
    class_ids = {label: i for i, label in enumerate(classes)}
    ordered = sorted(train_rows, key=lambda r: (r.label, r.rank))
    compute = request.compute
    fingerprint = ddpm.model_fingerprint(
        cfg.ddpm, classes, [r.sha256 for r in ordered], cfg.seed, compute.identity
    )
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
            log_loss=lambda loss, step: request.log_metric("ddpm_loss", loss, step),
            device=compute.device,
        )
    state.wait_for_everyone()
    model = ddpm.load_trained(cfg.ddpm.checkpoint_dir / ddpm.FINAL_DIR, compute.device)
    return DDPMSource(model, cfg.ddpm, class_ids, fingerprint, ordered[0].split if ordered else "train")


# --- text-to-image --------------------------------------------------------------------------------


@dataclass
class Text2ImageSource:
    pipe: Any  # a diffusers pipeline, or text2image_fast.FastPipeline around one
    cfg: Text2ImageConfig  # batch_size resolved to a number (text2image_fast.resolve_batch_size)
    sources: dict[str, list[SplitRow]]  # class -> real training rows of rank < source_ranks, by rank
    class_prompts: text2image.ClassPrompts
    model_hash: str
    kind: str = "text2image"  # the manifest's generator column: "lora" for a fine-tuned pipeline
    adapter: str = ""  # a fine-tune's fingerprint (which adapter weights), recorded in the revision
    learned_from: str = ""  # which real images a fine-tune learnt from: "pool" or "train"

    @property
    def chunk_size(self) -> int:
        return self.cfg.batch_size

    @property
    def fast(self) -> bool:
        return isinstance(self.pipe, text2image_fast.FastPipeline)

    @property
    def warmup_seconds(self) -> float:
        return (self.pipe.warmup_seconds or 0.0) if self.fast else 0.0

    def settings(self) -> dict[str, Any]:
        # the fast path's switches change how fast, not what (images within fp16 tolerance): left out,
        # so that turning them on reuses a set; the resolved batch size stays in (the chunk's bits)
        ours = {k: v for k, v in to_dict(self.cfg).items() if k not in text2image_fast.SPEED_ONLY}
        settings = {"generator": self.kind, **ours}
        if self.adapter:  # other adapter weights make other images
            settings["adapter"] = self.adapter
        if self.cfg.mode == "image":  # other source images make other images
            settings["sources"] = {label: [r.sha256 for r in rows] for label, rows in self.sources.items()}
        if self.class_prompts:  # the file's prompts, not its path, make the images
            settings["class_prompts"] = self.class_prompts
        return settings

    def prompt(self, key: ImageKey) -> str:
        return text2image.prompt_for(self.cfg, key.label, key.index, self.class_prompts)

    def row_for(self, key: ImageKey) -> SyntheticRow:
        revision = text2image.revision_of(self.cfg)
        row = _template(
            key.label,
            self.kind,
            self.cfg.model,
            f"{revision}+lora:{self.adapter[:16]}" if self.adapter else revision,
            self.prompt(key),
            self.cfg.steps,
            self.cfg.guidance_scale,
        )
        strength = self.cfg.strength if self.cfg.mode == "image" else None
        return replace(
            row,
            negative_prompt=self.cfg.negative_prompt,
            strength=strength,
            model_hash=self.model_hash,
            learned_from=self.learned_from,
        )

    def sample(self, keys: Sequence[ImageKey], seeds: Sequence[int]) -> list[Generated]:
        init = None
        if self.cfg.mode == "image":
            size = (self.cfg.size, self.cfg.size)
            init = [load_rgb(self.source_path(k)).resize(size, Image.Resampling.BICUBIC) for k in keys]
        prompts = [self.prompt(k) for k in keys]
        results = text2image.sample_text2image(self.pipe, self.cfg, prompts, seeds, init, self.fast)
        return [Generated(r.pixels, r.seed, r.retries, r.blocked) for r in results]

    def source_path(self, key: ImageKey) -> Path | None:
        """Image mode: image i starts from real training rank i mod source_ranks; text mode: None."""
        if self.cfg.mode != "image":
            return None
        reals = self.sources[key.label]
        return reals[key.index % len(reals)].path


def open_text2image(request: SourceRequest) -> Text2ImageSource:
    """Load the pipeline on every process; remember each class's real training rows of rank below
    `source_ranks`, which image mode starts from."""
    cfg, train_rows, classes = request.cfg, request.rows, request.classes
    sources: dict[str, list[SplitRow]] = {}
    for row in sorted(train_rows, key=lambda r: (r.label, r.rank)):
        if row.rank < request.source_ranks:
            sources.setdefault(row.label, []).append(row)
    pipe = text2image.load_pipeline(cfg.text2image, request.compute.device, request.compute.diffusion_dtype)
    class_prompts = text2image.read_class_prompts(cfg.text2image, classes)
    pipe, t2i = _ready(pipe, cfg.text2image, request)
    return Text2ImageSource(pipe, t2i, sources, class_prompts, text2image.model_hash(cfg.text2image))


def _ready(pipe: Any, t2i: Text2ImageConfig, request: SourceRequest) -> tuple[Any, Text2ImageConfig]:
    """The pipeline to sample with (sped up behind a FastPipeline when text2image.fast says so) and the
    settings with batch_size a number (auto: from the GPU memory left once the weights are loaded)."""
    device = request.compute.device
    if text2image_fast.fast_enabled(t2i, device):
        pipe = text2image_fast.open_fast(pipe, t2i)
    batch = text2image_fast.resolve_batch_size(t2i, device)
    if t2i.batch_size == "auto" and request.state.num_processes > 1:
        from accelerate.utils import gather_object

        # one chunking for all processes: the choice of the GPU with the least memory free
        batch = min(gather_object([batch]))
    return pipe, t2i.model_copy(update={"batch_size": batch})


def open_lora(request: SourceRequest) -> Text2ImageSource:
    """text2image's pipeline with LoRA adapters fine-tuned on `learn_rows` (the generator's pool when
    the data has one, else the training split), each image captioned with its class's first prompt;
    the main process fine-tunes (the others wait), then every process loads the adapter."""
    cfg, learn_rows, classes, state = request.cfg, request.rows, request.classes, request.state
    from synthmix.generate import lora

    t2i = cfg.text2image.model_copy(update={"mode": "text"})
    pipe = text2image.load_pipeline(t2i, request.compute.device, request.compute.diffusion_dtype)
    class_prompts = text2image.read_class_prompts(t2i, classes)
    base_hash = text2image.model_hash(t2i)
    ordered = sorted(learn_rows, key=lambda r: (r.label, r.rank))
    captions = [text2image.prompt_for(t2i, r.label, 0, class_prompts) for r in ordered]
    hashes = [r.sha256 for r in ordered]
    fingerprint = lora.lora_fingerprint(cfg.lora, t2i, base_hash, hashes, captions, cfg.seed)
    if state.is_main_process:
        images = np.stack([decode_array(r.path, size=t2i.size) for r in ordered])
        log_loss = lambda loss, step: request.log_metric("lora_loss", loss, step)  # noqa: E731
        lora.finetune(pipe, cfg.lora, images, captions, cfg.seed, fingerprint, log_loss)
    state.wait_for_everyone()
    if not state.is_main_process:
        lora.add_adapter(pipe, cfg.lora.rank)
        lora.load_final(pipe, cfg.lora.checkpoint_dir / lora.checkpoints.FINAL_DIR)
    learned_from = ordered[0].split if ordered else "train"
    pipe, t2i = _ready(pipe, t2i, request)  # after the fine-tune: it trains the plain UNet
    return Text2ImageSource(pipe, t2i, {}, class_prompts, base_hash, "lora", fingerprint, learned_from)


# --- the registry ---------------------------------------------------------------------------------

# Generators trained here from real images: they learn from the generator's pool when there is one.
LEARNS_FROM_POOL = frozenset({"ddpm", "lora"})

SOURCES: dict[str, SourceFactory] = {
    "ddpm": open_ddpm,
    "text2image": open_text2image,
    "lora": open_lora,
}

"""The text-to-image generator: any diffusers pipeline from a hub id or a local directory.

Text mode prompts the pipeline with the class label; image mode (SDEdit) starts from a real training
image of the class and re-noises it by `strength`. On CUDA the pipeline runs in fp16 (the `fp16`
weight variant when the model has one) with PyTorch's scaled-dot-product attention, and by default
through `text2image_fast` (compiled, fused, each prompt encoded once), which the stage's source
applies. An image the safety checker blocks (returned all black) is regenerated with the next seed
and counted.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from synthmix.core.errors import UserError

if TYPE_CHECKING:
    from synthmix.config.params import Text2ImageConfig


def label_to_words(label: str) -> str:
    """A class folder name as words for a prompt: `ankle_boot` and `ankle-boot` -> `ankle boot`."""
    return " ".join(label.replace("_", " ").replace("-", " ").split())


def prompt_for(
    cfg: Text2ImageConfig, label: str, index: int = 0, class_prompts: ClassPrompts | None = None
) -> str:
    """The prompt of image `index` of class `label`: the class's own prompts when the class-prompts
    file has them, else the templates (prompt_template, then prompt_templates), taken in turn."""
    prompts = (class_prompts or {}).get(label) or (cfg.prompt_template, *cfg.prompt_templates)
    return prompts[index % len(prompts)].replace("{label}", label_to_words(label))


ClassPrompts = dict[str, tuple[str, ...]]


def read_class_prompts(cfg: Text2ImageConfig, classes: Sequence[str]) -> ClassPrompts:
    """generate.text2image.class_prompts: a YAML mapping of class name to a prompt or a list of prompts
    ({label} allowed); {} when unset. Every class it names must be a class of the data set."""
    import yaml

    path = cfg.class_prompts
    if path is None:
        return {}
    fix = (
        f"Fix {path} (generate.text2image.class_prompts): a mapping such as `bat: a bat, the flying mammal`."
    )
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise UserError(
            f"{path} (generate.text2image.class_prompts) does not exist. Create it or unset the key."
        ) from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path} is not valid YAML ({exc}). {fix}") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path} holds a {type(raw).__name__}, not a mapping of class to prompt. {fix}")
    prompts: ClassPrompts = {}
    for label, value in raw.items():
        values = (value,) if isinstance(value, str) else tuple(value) if isinstance(value, list) else ()
        if not values or not all(isinstance(v, str) and v.strip() for v in values):
            raise UserError(
                f"{path}: class '{label}' maps to {value!r}, not a prompt or a list of prompts. {fix}"
            )
        if str(label) not in classes:
            raise UserError(
                f"{path} names class '{label}', which the data set does not have (its classes: "
                f"{', '.join(classes[:10])}{' ...' if len(classes) > 10 else ''}). Use a class folder's name."
            )
        prompts[str(label)] = values
    return prompts


def model_hash(cfg: Text2ImageConfig) -> str:
    """sha256 over the model's files (relative path and content of each), from its local folder or the
    Hugging Face cache's snapshot of cfg.model at cfg.revision: what exactly made the images; "" when
    its files are not on this machine."""
    root = Path(cfg.model)
    if not root.is_dir():
        from huggingface_hub import snapshot_download

        try:
            root = Path(snapshot_download(cfg.model, revision=cfg.revision, local_files_only=True))
        except Exception:
            return ""
    return _folder_hash(str(root.resolve()))


# Generators sharing a base model (a text2image one and its lora fine-tune) hash its files once a process.
@functools.lru_cache(maxsize=4)
def _folder_hash(folder: str) -> str:
    import hashlib

    from synthmix.core.files import sha256_file

    root = Path(folder)
    digest = hashlib.sha256()
    for file in sorted(f for f in root.rglob("*") if f.is_file() and ".cache" not in f.parts):
        digest.update(f"{file.relative_to(root).as_posix()}:{sha256_file(file)}\n".encode())
    return digest.hexdigest()


def revision_of(cfg: Text2ImageConfig) -> str:
    if cfg.revision:
        return cfg.revision
    return "local" if Path(cfg.model).is_dir() else "main"


def load_pipeline(cfg: Text2ImageConfig, device: Any, dtype: Any = None) -> Any:
    """Load the pipeline (text-to-image or image-to-image, by cfg.mode) through `from_pretrained`, on
    `device` in `dtype` (compute.*'s diffusion precision; None: float16 on CUDA, else float32).

    A model id that is neither a local directory nor in the Hugging Face cache while offline becomes
    a UserError saying how to make it available.
    """
    import torch
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForText2Image
    from diffusers.models.attention_processor import AttnProcessor2_0

    pipeline_class = AutoPipelineForImage2Image if cfg.mode == "image" else AutoPipelineForText2Image
    kwargs: dict[str, Any] = {"revision": cfg.revision}
    if not cfg.safety_checker:
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    on_cuda = torch.device(device).type == "cuda"
    # Always explicit: transformers 5 otherwise loads a component in the dtype its config.json names,
    # which a folder holding an fp16 variant beside fp32 weights says is float16 (fails on a CPU).
    dtype = dtype if dtype is not None else torch.float16 if on_cuda else torch.float32
    kwargs["torch_dtype"] = dtype
    half = dtype == torch.float16  # the fp16 variant's files, where the model has them
    try:
        try:
            pipe = pipeline_class.from_pretrained(
                cfg.model, **kwargs, **({"variant": "fp16"} if half else {})
            )
        except (OSError, ValueError):
            if not half:
                raise
            pipe = pipeline_class.from_pretrained(cfg.model, **kwargs)  # the model has no fp16 variant
    except (OSError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if Path(cfg.model).is_dir():
            raise UserError(
                f"generate.text2image.model '{cfg.model}' is a directory but not a loadable diffusers "
                f"pipeline ({first_line}). Point it at a folder written by a pipeline's save_pretrained "
                "(it holds model_index.json and one subfolder per component)."
            ) from None
        raise UserError(
            f"generate.text2image.model '{cfg.model}' could not be loaded ({first_line}). It is neither a "
            "local pipeline directory nor in the Hugging Face cache, and synthmix does not download "
            "while offline. Download it once on a machine with network access (e.g. `hf download "
            f"{cfg.model}`, or run `synthmix generate` once without HF_HUB_OFFLINE), or set "
            "generate.text2image.model in params.yaml to a local directory written by save_pretrained."
        ) from None
    pipe = pipe.to(device)
    if on_cuda and hasattr(pipe, "unet"):
        pipe.unet.set_attn_processor(AttnProcessor2_0())  # SDPA (flash/memory-efficient kernels)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@dataclass(frozen=True)
class Text2ImageResult:
    pixels: np.ndarray  # uint8 HxWx3
    seed: int  # the seed that produced it (base seed + retries)
    retries: int  # how many blocked (all-black) images were regenerated
    blocked: bool  # still blocked after max_retries


def is_blocked(pixels: np.ndarray, flagged: bool) -> bool:
    """The safety checker flagged it, or the image is all black (how a blocked image comes back)."""
    return bool(flagged) or int(pixels.max(initial=0)) == 0


def sample_text2image(
    pipe: Any,
    cfg: Text2ImageConfig,
    prompts: Sequence[str],
    seeds: Sequence[int],
    init_images: Sequence[Image.Image] | None = None,
    batched_retries: bool = False,
) -> list[Text2ImageResult]:
    """One image per (prompt, seed) in one batched call; blocked ones are retried one by one, or
    (`batched_retries`, the fast path's) all of a round in one call padded to the batch's size: the
    same seeds and counts, one static shape for compiled modules."""
    pixels, flagged = _call(pipe, cfg, list(prompts), list(seeds), init_images)
    if batched_retries:
        return _retry_batched(pipe, cfg, list(prompts), list(seeds), init_images, pixels, flagged)
    results = []
    for i, seed in enumerate(seeds):
        image, blocked, retries = pixels[i], is_blocked(pixels[i], flagged[i]), 0
        while blocked and retries < cfg.max_retries:
            retries += 1
            init = [init_images[i]] if init_images is not None else None
            retry_pixels, retry_flagged = _call(pipe, cfg, [prompts[i]], [seed + retries], init)
            image, blocked = retry_pixels[0], is_blocked(retry_pixels[0], retry_flagged[0])
        results.append(Text2ImageResult(image, seed + retries, retries, blocked))
    return results


def _retry_batched(
    pipe: Any,
    cfg: Text2ImageConfig,
    prompts: list[str],
    seeds: list[int],
    init_images: Sequence[Image.Image] | None,
    pixels: np.ndarray,
    flagged: list[bool],
) -> list[Text2ImageResult]:
    """Round r regenerates every image still blocked with its seed + r, in one call of the batch's
    size (the round's images repeated to fill it; the copies are dropped)."""
    images = list(pixels)
    blocked = [is_blocked(pixels[i], flagged[i]) for i in range(len(seeds))]
    retries = [0] * len(seeds)
    for attempt in range(1, cfg.max_retries + 1):
        todo = [i for i, b in enumerate(blocked) if b]
        if not todo:
            break
        take = [todo[j % len(todo)] for j in range(len(seeds))]
        init = [init_images[i] for i in take] if init_images is not None else None
        again, again_flagged = _call(
            pipe, cfg, [prompts[i] for i in take], [seeds[i] + attempt for i in take], init
        )
        for j, i in enumerate(todo):
            images[i], blocked[i], retries[i] = again[j], is_blocked(again[j], again_flagged[j]), attempt
    return [
        Text2ImageResult(images[i], seeds[i] + retries[i], retries[i], blocked[i]) for i in range(len(seeds))
    ]


def _call(
    pipe: Any,
    cfg: Text2ImageConfig,
    prompts: list[str],
    seeds: list[int],
    init_images: Sequence[Image.Image] | None,
) -> tuple[np.ndarray, list[bool]]:
    import torch

    # CPU generators: the same seed gives the same starting latents on any device.
    generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    kwargs: dict[str, Any] = {
        "prompt": prompts,
        "num_inference_steps": cfg.steps,
        "guidance_scale": cfg.guidance_scale,
        "generator": generators,
        "output_type": "np",
    }
    if cfg.negative_prompt:
        kwargs["negative_prompt"] = [cfg.negative_prompt] * len(seeds)
    if init_images is not None:
        kwargs.update(image=list(init_images), strength=cfg.strength)
    else:
        kwargs.update(height=cfg.size, width=cfg.size)
    output = pipe(**kwargs)
    pixels = np.asarray(output.images)
    if pixels.dtype != np.uint8:  # a pipeline's floats in [0, 1]; the fast path's decode gives 8-bit pixels
        pixels = (np.clip(pixels.astype(np.float32), 0.0, 1.0) * 255.0).round().astype(np.uint8)
    flagged = getattr(output, "nsfw_content_detected", None) or [False] * len(seeds)
    return pixels, [bool(f) for f in flagged]

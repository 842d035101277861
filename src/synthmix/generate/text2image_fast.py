"""Text-to-image near the hardware's limit, without changing the images: the same pipeline, sampler,
steps, guidance, resolution and seeds as `text2image`, with faster kernels (generate.text2image.fast,
on CUDA by default).

- The UNet and VAE in channels-last memory order, their attention's query/key/value projections fused
  into one matmul (diffusers' `fuse_qkv_projections`; not on a UNet carrying LoRA adapters, whose
  separate q/k/v adapters fusing would bypass).
- `torch.compile` of the UNet and the VAE decoder, fullgraph, once per stage (the pipeline is opened
  once per stage) and paid by one warm-up call on the first batch's shape, timed apart. The default
  mode is "reduce-overhead" (inductor plus CUDA graphs): every call has one static shape (a chunk is
  always sampled whole, and retries are padded to the chunk's size), so the graphs are recorded once,
  and the compile takes about a minute where "max-autotune" spends many minutes searching kernels for
  a few percent. Without classifier-free guidance (guidance_scale <= 1) a scheduler keeps the UNet's
  raw output across steps, which a CUDA graph overwrites on its next replay: then "default" (no graphs).
- The text embeddings of each distinct prompt (a class's prompt, the negative prompt) computed once
  and passed as prompt_embeds/negative_prompt_embeds instead of re-encoding every batch.
- The decode and the safety checker of a batch on the device (`decode`): the checker's input made
  there from the decoded batch, not through PIL images on the CPU, and only 8-bit pixels copied back.
- `auto_batch_size`: the batch from free GPU memory.

The CPU's default path never comes here (fast: auto), so its images stay byte-for-byte what they were.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    from synthmix.config.params import Text2ImageConfig

# Settings that change how fast images come, not which (within fp16 tolerance): not in their digest.
SPEED_ONLY = ("fast", "compile_mode")
CPU_BATCH = 4  # batch_size auto on the CPU: the old default, so CPU images keep their bits
MAX_BATCH = 32  # past this an H100's images/s no longer rises, and memory spikes grow
# What one image of a batch needs on top of the weights at 512 px in float16 (the VAE decoder's 512 px
# activations are the peak; the UNet's two guided latents at 64 px need less), with room for the
# compiled graphs' workspace. Scales with the pixel count.
IMAGE_BYTES_512 = 1 << 30
MEMORY_FRACTION = (
    0.8  # of the free memory a batch may take: the allocator's fragmentation, cuDNN's workspaces
)


def fast_enabled(cfg: Text2ImageConfig, device: Any) -> bool:
    """Whether the fast path runs: fast true, or auto on CUDA."""
    import torch

    return cfg.fast is True or (cfg.fast == "auto" and torch.device(device).type == "cuda")


def auto_batch_size(free_bytes: int, size: int, cap: int = MAX_BATCH) -> int:
    """The batch for `free_bytes` of free GPU memory at `size` px: as many images as fit, at most `cap`,
    rounded down to a power of two, so that a little more or less free memory picks the same batch (a
    resumed stage keeps its chunks). It does not depend on images_per_class, so more images a class
    keep the finished ones (the last chunk of a class is padded instead). At least 1."""
    per_image = IMAGE_BYTES_512 * (size / 512) ** 2
    fits = int(free_bytes * MEMORY_FRACTION // per_image)
    return 1 << (max(1, min(fits, cap)).bit_length() - 1)


def resolve_batch_size(cfg: Text2ImageConfig, device: Any) -> int:
    """generate.text2image.batch_size as a number: itself, or auto's choice (CPU_BATCH on the CPU,
    from the GPU's free memory, measured now, after the weights are loaded, on CUDA)."""
    import torch

    if cfg.batch_size != "auto":
        return cfg.batch_size
    device = torch.device(device)
    if device.type != "cuda":
        return CPU_BATCH
    free, _ = torch.cuda.mem_get_info(device)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)  # ours to reuse
    return auto_batch_size(free + cached, cfg.size)


def compile_mode_for(cfg: Text2ImageConfig) -> str:
    """The torch.compile mode the fast path uses: generate.text2image.compile_mode, without CUDA graphs
    when the UNet's raw output outlives the next call (no classifier-free guidance)."""
    if cfg.guidance_scale <= 1 and cfg.compile_mode == "reduce-overhead":
        return "default"
    if cfg.guidance_scale <= 1 and cfg.compile_mode == "max-autotune":
        return "max-autotune-no-cudagraphs"
    return cfg.compile_mode


def speed_up(pipe: Any, compile_mode: str = "none", backend: str = "inductor") -> None:
    """The pipeline's UNet and VAE in channels-last with fused QKV projections, and (compile_mode not
    "none") the UNet and the VAE decoder compiled in place, fullgraph (a UNet with LoRA adapters may
    break the graph in peft's adapter loop: not fullgraph). `backend` other than inductor (e.g.
    "eager", to test the tracing on a CPU) ignores the mode."""
    import torch

    unet, vae = getattr(pipe, "unet", None), getattr(pipe, "vae", None)
    adapters = bool(getattr(unet, "peft_config", None))  # LoRA adapters on to_q/to_k/to_v
    for module, fuse in ((unet, not adapters), (vae, True)):
        if module is None:
            continue
        module.to(memory_format=torch.channels_last)
        if fuse and hasattr(module, "fuse_qkv_projections"):
            module.fuse_qkv_projections()
    if compile_mode == "none":
        return
    options: dict[str, Any] = {
        "backend": backend,
        **({"mode": compile_mode} if backend == "inductor" else {}),
    }
    if unet is not None:
        unet.compile(fullgraph=not adapters, **options)
    if vae is not None:
        vae.decoder.compile(fullgraph=True, **options)


@dataclass
class FastPipeline:
    """A diffusers pipeline called like one (`pipe(**kwargs)`), with each distinct prompt's text
    embeddings computed once and the first call preceded by a timed warm-up call of the same shape
    (compiling, and recording CUDA graphs, there)."""

    pipe: Any
    guided: bool  # classifier-free guidance (guidance_scale > 1): negative embeddings are needed
    warmup_seconds: float | None = None  # None until the first call
    _embeddings: dict[str, torch.Tensor] = field(default_factory=dict)

    def embed(self, prompt: str) -> torch.Tensor:
        """The text encoder's output for `prompt`, (1, tokens, width), encoded on first use."""
        if prompt not in self._embeddings:
            device = self.pipe._execution_device
            self._embeddings[prompt] = self.pipe.encode_prompt(prompt, device, 1, False)[0]
        return self._embeddings[prompt]

    def __call__(self, **kwargs: Any) -> Any:
        kwargs = self._with_embeddings(kwargs)
        if self.warmup_seconds is None:
            started = time.monotonic()
            self._run({**kwargs, "generator": _copies(kwargs.get("generator"))})
            _synchronize(self.pipe)
            self.warmup_seconds = time.monotonic() - started
        return self._run(kwargs)

    def _run(self, kwargs: dict[str, Any]) -> Any:
        if not _encodes_like_sd(self.pipe) or kwargs.get("output_type") != "np":
            return self.pipe(**kwargs)
        latents = self.pipe(**{**kwargs, "output_type": "latent"}).images
        return decode(self.pipe, latents)

    def _with_embeddings(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        import torch

        if not _encodes_like_sd(self.pipe):  # another pipeline family: its own prompt handling
            return kwargs
        kwargs = dict(kwargs)
        prompts = kwargs.pop("prompt")
        negatives = kwargs.pop("negative_prompt", None) or [""] * len(prompts)  # the pipeline's default
        kwargs["prompt_embeds"] = torch.cat([self.embed(p) for p in prompts])
        if self.guided:
            kwargs["negative_prompt_embeds"] = torch.cat([self.embed(n) for n in negatives])
        return kwargs


@dataclass(frozen=True)
class Decoded:
    """What a pipeline call returns, as `decode` makes it: 8-bit pixels and the safety checker's flags."""

    images: np.ndarray  # uint8, (N, H, W, 3)
    nsfw_content_detected: list[bool]


def decode(pipe: Any, latents: torch.Tensor) -> Decoded:
    """What a Stable Diffusion pipeline does after its last step (the VAE's decode, the safety checker,
    8-bit pixels), kept on the device: the checker's input made by its feature extractor from the
    decoded batch as a uint8 tensor there, not from PIL images on the CPU, and the pixels rounded there
    with today's arithmetic (denormalise in the pipeline's dtype, float32 x 255, round half to even),
    so only 8-bit images cross to the CPU. A blocked image comes back all black, as the checker leaves it."""
    import torch

    vae = pipe.vae
    image = vae.decode(latents / vae.config.scaling_factor, return_dict=False)[0]
    # VaeImageProcessor's denormalise, then text2image._call's rounding to 8 bits
    levels = ((image * 0.5 + 0.5).clamp(0, 1).float() * 255.0).round()
    flagged = [False] * len(image)
    if getattr(pipe, "safety_checker", None) is not None:
        clip_input = _checker_input(pipe.feature_extractor, levels.to(torch.uint8)).to(
            image.device, image.dtype
        )
        # it blacks out what it flags in `images`: ours, not the decoder's output (a CUDA graph's buffer)
        levels, flags = pipe.safety_checker(images=levels, clip_input=clip_input)
        flagged = [bool(f) for f in flags]
    return Decoded(levels.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy(), flagged)


def _checker_input(feature_extractor: Any, pixels: torch.Tensor) -> torch.Tensor:
    """The safety checker's CLIP input from a uint8 batch (N, 3, H, W): by transformers' torchvision
    image processor on the batch's device (on a CPU tensor exactly what it makes of the PIL images
    the pipeline hands it); an older processor that takes CPU images only, on the CPU."""
    try:
        features = feature_extractor(images=pixels, return_tensors="pt", device=pixels.device)
    except (TypeError, ValueError, RuntimeError):  # e.g. "can't convert cuda:0 device type tensor to numpy"
        features = feature_extractor(images=pixels.cpu(), return_tensors="pt")
    return features.pixel_values


def open_fast(pipe: Any, cfg: Text2ImageConfig, backend: str = "inductor") -> FastPipeline:
    """`pipe` sped up in place (speed_up, with compile_mode_for(cfg)) behind a FastPipeline."""
    speed_up(pipe, compile_mode_for(cfg), backend)
    return FastPipeline(pipe, guided=cfg.guidance_scale > 1)


def _encodes_like_sd(pipe: Any) -> bool:
    """Stable Diffusion's text-to-image and image-to-image pipelines: encode_prompt(prompt, device,
    n, guided) gives the embeddings their `prompt_embeds` takes."""
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline

    return isinstance(pipe, StableDiffusionPipeline | StableDiffusionImg2ImgPipeline)


def _copies(generators: Any) -> Any:
    """Fresh generators in the same states, so the warm-up draws leave the real call's untouched."""
    import torch

    if generators is None:
        return None
    copies = []
    for generator in generators:
        copy = torch.Generator(generator.device)
        copy.set_state(generator.get_state())
        copies.append(copy)
    return copies


def _synchronize(pipe: Any) -> None:
    import torch

    device = getattr(pipe, "device", None)
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)

"""Generator throughput: DDPM images/second on CPU; Stable Diffusion 1.5 images/second on CUDA.

- ddpm: the default `generate.ddpm` settings of params.yaml (resolution, channels, DDIM steps, chunk
  size), random weights (speed does not depend on them): seconds per training step and sampled
  images per second through `synthmix.generate.ddpm.sample_ddpm`, the function the stage calls.
- text2image (only when CUDA is available): a pipeline with SD1.5's architecture built from its
  configs with random weights (nothing downloaded), saved with save_pretrained (fp32 and the fp16
  variant), then timed side by side through `synthmix.generate.text2image.sample_text2image`, the
  stage's call: diffusers' defaults (fp32, classic attention, batch 1); today's path, `load_pipeline`
  (the fp16 variant and SDPA on CUDA) at batch 4 and at generate.text2image.batch_size's choice; the
  fast path (`synthmix.generate.text2image_fast`: channels-last, fused QKV, torch.compile of the UNet
  and VAE decoder, embeddings once) at that batch. Each setting's first call (compiling, for the fast
  path) is timed apart from its images/s; then the fast path's images are compared with today's for
  the same seeds and batch. It imports synthmix's config and generate code only (pydantic, diffusers,
  transformers, torch; no MLflow, DVC or Optuna).
  A smoke run on a CPU: `--skip-ddpm --sd-device cpu --sd-size 64 --sd-steps 2 --sd-images 1
  --sd-default-images 1 --compile-backend eager`.

Run from the repository root:  .venv/bin/python bench/bench_generate.py [--threads N] [--chunks 3]
On one H100:  python bench/bench_generate.py --skip-ddpm   (512 px, 30 steps, guidance 7.5: params.yaml's)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import append_results, best_of, command_line, describe_machine, markdown_table, set_threads

from synthmix.config.params import DDPMConfig, Text2ImageConfig, load_params
from synthmix.generate import text2image_fast
from synthmix.generate.ddpm import build_unet, images_to_tensor, noise_scheduler, sample_ddpm
from synthmix.generate.text2image import load_pipeline, prompt_for, sample_text2image


def bench_ddpm(cfg: DDPMConfig, num_classes: int, chunks: int) -> list[list[object]]:
    torch.manual_seed(0)
    model = build_unet(cfg, num_classes)
    scheduler = noise_scheduler(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate)
    clean = images_to_tensor(
        torch.randint(0, 256, (cfg.batch_size, cfg.resolution, cfg.resolution, 3)).numpy().astype("uint8")
    )
    labels = torch.arange(cfg.batch_size) % num_classes

    def train_step() -> None:
        noise = torch.randn_like(clean)
        t = torch.randint(cfg.num_train_timesteps, (cfg.batch_size,))
        loss = torch.nn.functional.mse_loss(
            model(scheduler.add_noise(clean, noise, t), t, class_labels=labels).sample, noise
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    train_step()  # warm-up
    step_seconds = best_of(5, train_step)
    model.eval()
    chunk = cfg.sample_batch_size
    ids, seeds = [i % num_classes for i in range(chunk)], list(range(chunk))
    sample_ddpm(model, cfg, ids, seeds)  # warm-up
    chunk_seconds = best_of(chunks, lambda: sample_ddpm(model, cfg, ids, seeds))
    return [
        ["ddpm train step", f"batch {cfg.batch_size}, {cfg.resolution}px, {cfg.base_channels} ch", step_seconds, cfg.batch_size / step_seconds],
        ["ddpm sampling", f"chunk {chunk}, {cfg.sample_steps} DDIM steps", chunk_seconds, chunk / chunk_seconds],
        ["ddpm stage estimate", f"{cfg.train_steps} steps + {num_classes}x30 images", cfg.train_steps * step_seconds + num_classes * 30 / (chunk / chunk_seconds), float("nan")],
    ]  # fmt: skip


def sd15_pipeline(directory: Path):
    """A pipeline with Stable Diffusion 1.5's architecture (configs as published), random weights."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    unet = UNet2DConditionModel(
        sample_size=64,
        cross_attention_dim=768,
        attention_head_dim=8,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        layers_per_block=2,
    )
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=2,
        sample_size=512,
    )
    chars = sorted(set(bytes_to_unicode().values()))
    vocab = {
        "<|startoftext|>": 0,
        "<|endoftext|>": 1,
        **{t: i + 2 for i, t in enumerate(chars + [c + "</w>" for c in chars])},
    }
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer.from_pretrained(directory, model_max_length=77)
    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, bos_token_id=0, eos_token_id=1, pad_token_id=1))  # fmt: skip
    scheduler = PNDMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True
    )
    return StableDiffusionPipeline(
        unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip


def _timed(pipeline, cfg: Text2ImageConfig, batch: int, images: int, fast: bool, device: str):
    """(first call's seconds, seconds per image over the next calls, the first batch's results): the
    first call pays compiling (the fast path) and cuDNN's kernel search; then ceil(images / batch)
    calls of `batch` images, the stage's call (sample_text2image) with the same seeds each time."""
    seeds = list(range(batch))
    prompts = [prompt_for(cfg, "cat")] * batch

    def call():
        results = sample_text2image(pipeline, cfg, prompts, seeds, batched_retries=fast)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return results

    started = time.perf_counter()
    first = call()
    warmup = time.perf_counter() - started
    calls = max(1, -(-images // batch))  # at least `images`, in whole batches
    seconds = best_of(1, lambda: [call() for _ in range(calls)])
    return warmup, seconds / (calls * batch), first


def bench_text2image(
    cfg: Text2ImageConfig, images: int, default_images: int, device: str, backend: str
) -> tuple[list[list[object]], str]:
    """Side by side in one run: diffusers' defaults, today's path (load_pipeline: fp16 variant and SDPA,
    at batch 4 and at the auto batch) and the fast path (text2image_fast at the auto batch), then how far
    the fast path's images are from today's for the same seeds and batch."""
    from diffusers import StableDiffusionPipeline
    from diffusers.models.attention_processor import AttnProcessor

    rows: list[list[object]] = []
    what = f"SD1.5 {cfg.size}px, {cfg.steps} steps, guidance {cfg.guidance_scale}"
    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "sd15"
        pipe = sd15_pipeline(Path(tmp))
        pipe.save_pretrained(saved)  # fp32 weights, as a hub snapshot holds them
        pipe.to(torch.float16).save_pretrained(saved, variant="fp16")
        del pipe
        # The defaults: fp32, the classic attention processor, one image per call.
        default = StableDiffusionPipeline.from_pretrained(
            saved, torch_dtype=torch.float32, safety_checker=None, requires_safety_checker=False
        ).to(device)
        default.unet.set_attn_processor(AttnProcessor())
        default.set_progress_bar_config(disable=True)
        run_cfg = cfg.model_copy(update={"model": str(saved), "safety_checker": False})
        warmup, per_image, _ = _timed(default, run_cfg, 1, default_images, False, device)
        rows.append(
            [what, "diffusers defaults: fp32, classic attention, batch 1", warmup, per_image, 1 / per_image]
        )
        del default

        today = load_pipeline(run_cfg, device)
        batch = text2image_fast.resolve_batch_size(run_cfg, device)
        print(
            f"load_pipeline on {device}: unet dtype {today.unet.dtype}; batch_size {cfg.batch_size} -> {batch}"
        )
        today_results = None
        for size in dict.fromkeys((4, batch)):
            warmup, per_image, today_results = _timed(today, run_cfg, size, images, False, device)
            rows.append(
                [
                    what,
                    f"today's path: {today.unet.dtype}, SDPA, batch {size}",
                    warmup,
                    per_image,
                    1 / per_image,
                ]
            )
        del today

        fast = text2image_fast.open_fast(load_pipeline(run_cfg, device), run_cfg, backend=backend)
        mode = text2image_fast.compile_mode_for(run_cfg) if backend == "inductor" else f"{backend} backend"
        warmup, per_image, fast_results = _timed(fast, run_cfg, batch, images, True, device)
        print(
            f"fast path: compile and warm-up call {fast.warmup_seconds:.1f}s (first call in all {warmup:.1f}s)"
        )
        rows.append([what, f"fast path: channels-last, fused QKV, compile {mode}, embeddings once, decode on the device, batch {batch}", warmup, per_image, 1 / per_image])  # fmt: skip
    diffs = [
        np.abs(a.pixels.astype(int) - b.pixels.astype(int))
        for a, b in zip(fast_results, today_results, strict=True)
    ]
    agreement = (
        f"Same seeds, batch {batch}: the fast path's images differ from today's path's by at most "
        f"{max(int(d.max()) for d in diffs)} and on average {np.mean(diffs):.3f} levels of 255."
    )
    return rows, agreement


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores).")
    parser.add_argument("--chunks", type=int, default=3, help="DDPM sampling chunks to time (best of).")
    parser.add_argument("--classes", type=int, default=10, help="Classes of the DDPM's class embedding.")
    parser.add_argument("--sd-images", type=int, default=60, help="Images per batched text-to-image setting.")
    parser.add_argument(
        "--sd-default-images", type=int, default=4, help="Images timed with diffusers' defaults."
    )
    parser.add_argument(
        "--sd-batch", default=None, help="Override generate.text2image.batch_size (a number or auto)."
    )
    parser.add_argument("--compile-mode", default=None, help="Override generate.text2image.compile_mode.")
    parser.add_argument(
        "--compile-backend",
        default="inductor",
        help="torch.compile backend of the fast path (eager: a CPU smoke run).",
    )
    parser.add_argument("--skip-ddpm", action="store_true", help="Time text-to-image only.")
    parser.add_argument(
        "--sd-device", default="cuda", help="Device of the text-to-image part (cpu: a smoke run)."
    )
    parser.add_argument("--sd-size", type=int, default=None, help="Override generate.text2image.size.")
    parser.add_argument("--sd-steps", type=int, default=None, help="Override generate.text2image.steps.")
    args = parser.parse_args()
    threads = set_threads(args.threads)
    machine = describe_machine(threads)
    params = load_params("params.yaml")
    rows = [] if args.skip_ddpm else [[what, how, float("nan"), *rest] for what, how, *rest in bench_ddpm(params.generate.ddpm, args.classes, args.chunks)]  # fmt: skip
    batch = args.sd_batch if args.sd_batch in (None, "auto") else int(args.sd_batch)
    overrides = {
        "size": args.sd_size,
        "steps": args.sd_steps,
        "batch_size": batch,
        "compile_mode": args.compile_mode,
    }
    sd_cfg = params.generate.text2image.model_copy(
        update={k: v for k, v in overrides.items() if v is not None}
    )
    agreement = ""
    if args.sd_device != "cuda" or torch.cuda.is_available():
        sd_rows, agreement = bench_text2image(
            sd_cfg, args.sd_images, args.sd_default_images, args.sd_device, args.compile_backend
        )
        rows += sd_rows
    else:
        rows.append(["SD1.5 text-to-image", "skipped: needs CUDA", float("nan"), float("nan"), float("nan")])
    table = markdown_table(
        ["what", "settings", "first call (s)", "seconds per step / chunk / image", "images per second"], rows
    )
    print(table)
    print(agreement)
    body = (
        "Default `generate` settings of params.yaml; random weights (speed does not depend on them). "
        "`ddpm stage estimate` = train_steps x step time + 30 images a class at the measured sampling "
        "rate (the stage also decodes data, writes PNGs and logs to MLflow). Text-to-image: the first "
        "call (compiling in the fast path, paid once a stage) is timed apart from images/s. "
        f"{agreement}\n\n" + table
    )
    append_results("Synthetic image generators", command_line(), machine, body)


if __name__ == "__main__":
    main()

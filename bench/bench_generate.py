"""Generator throughput: DDPM images/second on CPU; Stable Diffusion 1.5 images/second on CUDA.

- ddpm: the default `generate.ddpm` settings of params.yaml (resolution, channels, DDIM steps, chunk
  size), random weights (speed does not depend on them): seconds per training step and sampled
  images per second through `synthmix.generate.ddpm.sample_ddpm`, the function the stage calls.
- text2image (only when CUDA is available): a pipeline with SD1.5's architecture built from its
  configs with random weights (nothing downloaded), saved with save_pretrained (fp32 and the fp16
  variant), then timed through `synthmix.generate.text2image.sample_text2image` twice: loaded with
  diffusers' defaults (fp32, classic attention, batch 1), and loaded by the project's own
  `load_pipeline` (the fp16 variant and SDPA on CUDA, batch generate.text2image.batch_size).
  `--sd-device cpu --sd-size 64 --sd-steps 2 --sd-images 1` is a smoke run of that path on a CPU.

Run from the repository root:  .venv/bin/python bench/bench_generate.py [--threads N] [--chunks 3]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from common import append_results, best_of, command_line, describe_machine, markdown_table, set_threads

from synthmix.config.params import DDPMConfig, Text2ImageConfig, load_params
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


def bench_text2image(cfg: Text2ImageConfig, images: int, device: str) -> list[list[object]]:
    """Default diffusers settings against the project's own loading path (`load_pipeline`)."""
    from diffusers import StableDiffusionPipeline
    from diffusers.models.attention_processor import AttnProcessor

    rows: list[list[object]] = []
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
        # The project's path: load_pipeline picks the fp16 variant and SDPA on CUDA; batches of cfg.batch_size.
        project_cfg = cfg.model_copy(update={"model": str(saved), "safety_checker": False})
        optimised = load_pipeline(project_cfg, device)
        print(f"load_pipeline on {device}: unet dtype {optimised.unet.dtype}, attention "
              f"{type(next(iter(optimised.unet.attn_processors.values()))).__name__}")  # fmt: skip
        settings = [
            ("diffusers defaults: fp32, classic attention, batch 1", default, cfg, 1),
            (f"load_pipeline: {optimised.unet.dtype}, SDPA, batch {cfg.batch_size}", optimised, project_cfg, cfg.batch_size),
        ]  # fmt: skip
        for name, pipeline, run_cfg, batch in settings:
            seeds = list(range(batch))
            prompts = [prompt_for(run_cfg, "cat")] * batch
            sample_text2image(pipeline, run_cfg, prompts, seeds)  # warm-up
            calls = max(1, images // batch)

            def run(p=pipeline, c=run_cfg, s=seeds, n=calls, t=prompts) -> None:
                for _ in range(n):
                    sample_text2image(p, c, t, s)
                if device == "cuda":
                    torch.cuda.synchronize()

            seconds = best_of(1, run)
            rows.append(
                [
                    f"SD1.5 {cfg.size}px, {cfg.steps} steps",
                    name,
                    seconds / (calls * batch),
                    calls * batch / seconds,
                ]
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores).")
    parser.add_argument("--chunks", type=int, default=3, help="DDPM sampling chunks to time (best of).")
    parser.add_argument("--classes", type=int, default=10, help="Classes of the DDPM's class embedding.")
    parser.add_argument("--sd-images", type=int, default=8, help="Images per text-to-image setting (CUDA).")
    parser.add_argument(
        "--sd-device", default="cuda", help="Device of the text-to-image part (cpu: a smoke run)."
    )
    parser.add_argument("--sd-size", type=int, default=None, help="Override generate.text2image.size.")
    parser.add_argument("--sd-steps", type=int, default=None, help="Override generate.text2image.steps.")
    args = parser.parse_args()
    threads = set_threads(args.threads)
    machine = describe_machine(threads)
    params = load_params("params.yaml")
    rows = bench_ddpm(params.generate.ddpm, args.classes, args.chunks)
    sd_cfg = params.generate.text2image.model_copy(
        update={k: v for k, v in {"size": args.sd_size, "steps": args.sd_steps}.items() if v is not None}
    )
    if args.sd_device != "cuda" or torch.cuda.is_available():
        rows += bench_text2image(sd_cfg, args.sd_images, args.sd_device)
    else:
        rows.append(["SD1.5 text-to-image", "skipped: needs CUDA", float("nan"), float("nan")])
    table = markdown_table(
        ["what", "settings", "seconds per step / chunk / image", "images per second"], rows
    )
    print(table)
    body = (
        "Default `generate` settings of params.yaml; random weights (speed does not depend on them). "
        "`ddpm stage estimate` = train_steps x step time + 30 images a class at the measured sampling "
        "rate (the stage also decodes data, writes PNGs and logs to MLflow).\n\n" + table
    )
    append_results("Synthetic image generators", command_line(), machine, body)


if __name__ == "__main__":
    main()

"""The offline generator: a small class-conditional DDPM trained on the real training split only.

A diffusers `UNet2DModel` with a class embedding learns to predict the noise `DDPMScheduler` added;
`DDIMScheduler` (eta=0, deterministic given the initial noise) samples from it in a few steps.
Training is resumable: every `checkpoint_every` steps the model, its EMA copy and the optimiser state
go to `<checkpoint_dir>/checkpoint-<step>/` as safetensors, and every random draw of step s comes from
a generator seeded by (seed, s), so a resumed training equals an uninterrupted one exactly. The
finished model (EMA weights) is `<checkpoint_dir>/final/`, loadable with `UNet2DModel.from_pretrained`.
The last two checkpoints are kept: one that no longer loads (a truncated file, a missing one, a garbled
fingerprint.json) is deleted with a warning naming it and training resumes from the one before (or
from scratch), and a final model that no longer loads is rebuilt from the last checkpoint the same way.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from synthmix.config.params import to_dict
from synthmix.core.errors import one_line
from synthmix.core.files import sha256_json
from synthmix.core.progress import progress
from synthmix.generate import checkpoints

if TYPE_CHECKING:
    import torch
    from diffusers import UNet2DModel

    from synthmix.config.params import DDPMConfig

MODEL_ID = "synthmix-ddpm"
FINAL_DIR = checkpoints.FINAL_DIR
CHECKPOINT_PARTS = ("model", "ema", "optimizer")  # checkpoint-<step>/<part>.safetensors
EMA_DECAY = 0.995
WARMUP_STEPS = 50
# Settings that shape the trained weights; the sampling ones (sample_steps, sample_batch_size) and
# where checkpoints live do not, so changing them must not retrain.
_TRAINING_KEYS = (
    "resolution",
    "base_channels",
    "train_steps",
    "batch_size",
    "learning_rate",
    "num_train_timesteps",
)


def model_fingerprint(
    cfg: DDPMConfig,
    classes: Sequence[str],
    image_hashes: Sequence[str],
    seed: int,
    compute: Mapping[str, str] | None = None,
) -> str:
    """Hash of everything that determines the trained weights: training settings, classes, data, seed;
    and `compute` (Compute.identity: None on the CPU in float32, whose fingerprints are unchanged)."""
    payload: dict[str, Any] = {
        "training": {k: to_dict(cfg)[k] for k in _TRAINING_KEYS},
        "classes": list(classes),
        "images": list(image_hashes),
        "seed": seed,
        "architecture": 1,  # bump when build_unet changes
    }
    if compute is not None:  # weights trained on a GPU differ from the CPU's in the last bits
        payload["compute"] = dict(compute)
    return sha256_json(payload)


def build_unet(cfg: DDPMConfig, num_classes: int) -> UNet2DModel:
    """Three resolution levels (the input is halved twice), self-attention at the middle one."""
    from diffusers import UNet2DModel

    c = cfg.base_channels
    return UNet2DModel(
        sample_size=cfg.resolution,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(c, 2 * c, 2 * c),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=math.gcd(c, 8),
        num_class_embeds=num_classes,
    )


def noise_scheduler(cfg: DDPMConfig):
    from diffusers import DDPMScheduler

    # The cosine schedule keeps small images from being noise-dominated for most timesteps.
    return DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps, beta_schedule="squaredcos_cap_v2")


def learning_rate_at(cfg: DDPMConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to 10%: a pure function of the step, so resuming needs no state."""
    if step < WARMUP_STEPS:
        return cfg.learning_rate * (step + 1) / WARMUP_STEPS
    progress_fraction = (step - WARMUP_STEPS) / max(1, cfg.train_steps - WARMUP_STEPS)
    return cfg.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress_fraction)))


def ema_decay_at(step: int) -> float:
    """Ramp the EMA decay up (the usual (1+s)/(10+s) warm-up) so early random weights fade out fast."""
    return min(EMA_DECAY, (1 + step) / (10 + step))


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 NxHxWx3 -> float NCHW in [-1, 1]."""
    import torch

    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def train_ddpm(
    cfg: DDPMConfig,
    images: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    seed: int,
    fingerprint: str,
    log_loss: Callable[[float, int], None] = lambda loss, step: None,
    on_step: Callable[[int], None] | None = None,
    device: Any = "cpu",
) -> Path:
    """Train (or resume, or reuse) the DDPM on `images` (uint8 NxHxWx3) on `device` (in float32; the
    draws come from CPU generators, so every device sees the same batches, noise and timesteps) and
    return its final directory.

    A finished model with the same fingerprint is reused; checkpoints with another fingerprint (a
    changed parameter or training set) are deleted and training starts over. A checkpoint or final
    model that does not load is deleted with a warning, and training resumes from the newest
    checkpoint that does. `on_step(step)` runs after every step (tests use it to interrupt training).
    """
    import torch
    import torch.nn.functional as F

    root = cfg.checkpoint_dir
    final = root / FINAL_DIR
    checkpoints.drop_stale(root, fingerprint, "DDPM")
    if final.is_dir():
        problem = _final_problem(final)
        if problem is None:
            return final
        checkpoints.discard(final, problem, "DDPM")
    root.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(seed)
    model = build_unet(cfg, num_classes).to(device)
    ema = build_unet(cfg, num_classes).to(device)
    ema.load_state_dict(model.state_dict())
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=0.0)
    start, saved = checkpoints.load_latest_checkpoint(root, fingerprint, CHECKPOINT_PARTS, "DDPM")
    if saved:
        model.load_state_dict(saved["model"])
        ema.load_state_dict(saved["ema"])
        optimizer.load_state_dict(checkpoints.optimizer_state(optimizer, saved["optimizer"]))
    ema.requires_grad_(False)

    scheduler = noise_scheduler(cfg)
    data = images_to_tensor(images).to(device)
    classes = torch.from_numpy(labels.astype(np.int64)).to(device)
    model.train()
    steps = checkpoints.StepLog(root, fingerprint, cfg.train_steps, cfg.checkpoint_every, log_loss, on_step)
    for step in progress(range(start, cfg.train_steps), "Training DDPM", total=cfg.train_steps - start):
        draw = torch.Generator().manual_seed(checkpoints.step_seed("ddpm", seed, step))
        batch = torch.randint(len(data), (cfg.batch_size,), generator=draw)
        clean = data[batch]
        noise = torch.randn(clean.shape, generator=draw).to(device)
        timesteps = torch.randint(cfg.num_train_timesteps, (cfg.batch_size,), generator=draw).to(device)
        predicted = model(
            scheduler.add_noise(clean, noise, timesteps), timesteps, class_labels=classes[batch]
        )
        loss = F.mse_loss(predicted.sample, noise)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(cfg, step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        with torch.no_grad():
            decay = ema_decay_at(step)
            for averaged, current in zip(ema.parameters(), model.parameters(), strict=True):
                averaged.lerp_(current, 1.0 - decay)
        steps.after(
            step + 1,
            loss.item(),
            lambda: {
                "model": model.state_dict(),
                "ema": ema.state_dict(),
                "optimizer": checkpoints.optimizer_tensors(optimizer),
            },
        )

    checkpoints.write_final(
        final, fingerprint, lambda folder: ema.save_pretrained(folder, safe_serialization=True)
    )
    return final


def load_trained(final: Path, device: Any = "cpu") -> UNet2DModel:
    from diffusers import UNet2DModel

    return UNet2DModel.from_pretrained(final).to(device).eval()


def sample_ddpm(
    model: UNet2DModel,
    cfg: DDPMConfig,
    class_ids: Sequence[int],
    seeds: Sequence[int],
) -> np.ndarray:
    """One image per (class id, seed) as uint8 NxHxWx3 with deterministic DDIM (eta=0).

    Each image's starting noise comes from its own seeded generator, so an image depends on its seed
    and class, not on its neighbours in the batch (up to the last bits of batched arithmetic, which
    the caller removes by always sampling the same batches).
    """
    import torch
    from diffusers import DDIMScheduler

    sampler = DDIMScheduler.from_config(noise_scheduler(cfg).config, timestep_spacing="trailing")
    sampler.set_timesteps(cfg.sample_steps)
    device = model.device
    shape = (3, cfg.resolution, cfg.resolution)
    noise = [torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds]
    sample = torch.stack(noise).to(device)
    labels = torch.tensor(list(class_ids), dtype=torch.long, device=device)
    with torch.no_grad():
        for t in sampler.timesteps:
            predicted = model(sample, t, class_labels=labels).sample
            sample = sampler.step(predicted, t, sample, eta=0.0).prev_sample
    pixels = ((sample.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).cpu().numpy()


# --- the final model ------------------------------------------------------------------------------


def _final_problem(final: Path) -> str | None:
    """Why the final model does not load (a missing or torn weights file, a garbled config), or None.
    Opening the weights checks that the file covers every tensor its header lists, without reading them."""
    from diffusers.utils import CONFIG_NAME, SAFETENSORS_WEIGHTS_NAME
    from safetensors import SafetensorError, safe_open

    try:
        json.loads((final / CONFIG_NAME).read_text())
        with safe_open(final / SAFETENSORS_WEIGHTS_NAME, framework="pt"):
            pass
    except (OSError, ValueError, SafetensorError) as exc:
        return one_line(exc)
    return None

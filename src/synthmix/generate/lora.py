"""A text-to-image pipeline fine-tuned with LoRA on real images of this data set (diffusers + peft).

The base pipeline's UNet gets low-rank adapters on its attention projections (peft's `LoraConfig`,
rank `lora.rank`); only they train, on the real images the generator learns from (the generator's
pool when the data has one, else the training split), each captioned with its class's prompt, with
the usual latent-diffusion objective (the VAE's latents, noise from the pipeline's scheduler, the
scheduler's prediction target). Every random draw of step s comes from a generator seeded by (seed,
s), checkpoints (adapter and optimiser state, `generate.checkpoints`) make an interrupted fine-tune
resume to the same weights, and the finished adapter is `<checkpoint_dir>/final/lora.safetensors`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from synthmix.config.params import to_dict
from synthmix.core.files import atomic_path, sha256_json
from synthmix.core.progress import progress
from synthmix.generate import checkpoints

if TYPE_CHECKING:
    from synthmix.config.params import LoRAConfig, Text2ImageConfig

ADAPTER_FILE = "lora.safetensors"
CHECKPOINT_PARTS = ("lora", "optimizer")
TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0")  # the attention projections of every block


def lora_fingerprint(
    lora: LoRAConfig,
    base: Text2ImageConfig,
    model_hash: str,
    image_hashes: Sequence[str],
    prompts: Sequence[str],
    seed: int,
) -> str:
    """Hash of everything that shapes the adapter: its settings, the base model, the images and their
    captions, the seed (not where checkpoints live, nor the sampling settings)."""
    training = {k: v for k, v in to_dict(lora).items() if k != "checkpoint_dir"}
    payload = {
        "lora": training,
        "base": [base.model, base.revision, model_hash, base.size],
        "images": list(image_hashes),
        "prompts": list(prompts),
        "seed": seed,
    }
    return sha256_json(payload)


def add_adapter(pipe: Any, rank: int) -> None:
    from peft import LoraConfig

    pipe.unet.requires_grad_(False)
    config = LoraConfig(
        r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=list(TARGET_MODULES)
    )
    pipe.unet.add_adapter(config)


def _adapter_state(pipe: Any) -> dict:
    from peft.utils import get_peft_model_state_dict

    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(pipe.unet).items()}


def _load_adapter_state(pipe: Any, state: dict) -> None:
    from peft.utils import set_peft_model_state_dict

    result = set_peft_model_state_dict(pipe.unet, state)
    unexpected = getattr(result, "unexpected_keys", None)
    if unexpected:
        raise ValueError(f"adapter state has keys this UNet lacks: {unexpected[:3]}")


def finetune(
    pipe: Any,
    cfg: LoRAConfig,
    images: np.ndarray,
    prompts: Sequence[str],
    seed: int,
    fingerprint: str,
    log_loss: Callable[[float, int], None] = lambda loss, step: None,
    on_step: Callable[[int], None] | None = None,
) -> Path:
    """Fine-tune (or resume, or reuse) adapters on `images` (uint8 NxHxWx3, the pipeline's size) with
    their `prompts`, leave them trained in `pipe`, and return the final adapter's directory."""
    import torch
    import torch.nn.functional as F

    root = cfg.checkpoint_dir
    final = root / checkpoints.FINAL_DIR
    checkpoints.drop_stale(root, fingerprint, "LoRA")
    torch.manual_seed(seed)  # the adapters' initial weights
    add_adapter(pipe, cfg.rank)
    if final.is_dir():
        try:
            load_final(pipe, final)
            return final
        except (OSError, ValueError) as exc:
            checkpoints.discard(final, str(exc).splitlines()[0], "LoRA")
    root.mkdir(parents=True, exist_ok=True)

    unet, vae, scheduler = pipe.unet, pipe.vae, pipe.scheduler
    trainable = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.learning_rate, weight_decay=0.0)
    start, saved = checkpoints.load_latest_checkpoint(root, fingerprint, CHECKPOINT_PARTS, "LoRA")
    if saved:
        _load_adapter_state(pipe, saved["lora"])
        optimizer.load_state_dict(checkpoints.optimizer_state(optimizer, saved["optimizer"]))

    with torch.no_grad():  # the frozen parts once: captions and latents' distributions
        ids = pipe.tokenizer(
            list(prompts),
            padding="max_length",
            max_length=pipe.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        captions = pipe.text_encoder(ids.to(unet.device))[0]
        pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0).to(unet.device)
        moments = vae.encode(pixels).latent_dist
    factor = vae.config.scaling_factor
    timesteps_total = scheduler.config.num_train_timesteps
    unet.train()
    steps = checkpoints.StepLog(root, fingerprint, cfg.train_steps, cfg.checkpoint_every, log_loss, on_step)
    for step in progress(range(start, cfg.train_steps), "Fine-tuning LoRA", total=cfg.train_steps - start):
        draw = torch.Generator().manual_seed(checkpoints.step_seed("lora", seed, step))
        batch = torch.randint(len(images), (cfg.batch_size,), generator=draw)
        mean, std = moments.mean[batch], moments.std[batch]
        latents = (mean + std * torch.randn(mean.shape, generator=draw).to(mean.device)) * factor
        noise = torch.randn(latents.shape, generator=draw).to(latents.device)
        t = torch.randint(timesteps_total, (cfg.batch_size,), generator=draw).to(latents.device)
        noisy = scheduler.add_noise(latents, noise, t)
        target = (
            scheduler.get_velocity(latents, noise, t)
            if scheduler.config.prediction_type == "v_prediction"
            else noise
        )
        loss = F.mse_loss(
            unet(noisy, t, encoder_hidden_states=captions[batch]).sample.float(), target.float()
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        steps.after(
            step + 1,
            loss.item(),
            lambda: {"lora": _adapter_state(pipe), "optimizer": checkpoints.optimizer_tensors(optimizer)},
        )
    unet.eval()
    checkpoints.write_final(final, fingerprint, lambda folder: _write_adapter(pipe, folder))
    return final


def load_final(pipe: Any, final: Path) -> None:
    """Load the finished adapter into `pipe`'s UNet (which already has the adapter layers)."""
    from safetensors.torch import load_file

    _load_adapter_state(pipe, load_file(final / ADAPTER_FILE))


def _write_adapter(pipe: Any, folder: Path) -> None:
    from safetensors.torch import save

    folder.mkdir(parents=True)
    data = save({k: v.contiguous() for k, v in _adapter_state(pipe).items()})
    with atomic_path(folder / ADAPTER_FILE) as path:
        path.write_bytes(data)

"""Tiny random diffusers pipelines built from configs and saved with save_pretrained, so tests load
them through the real `from_pretrained(local_dir)` path with no network."""

from __future__ import annotations

import json
from pathlib import Path


def _tiny_tokenizer(directory: Path):
    """A CLIP BPE tokenizer from a byte-level vocab.json and an empty merges.txt written here."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = sorted(set(bytes_to_unicode().values()))
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for token in chars + [c + "</w>" for c in chars]:
        vocab[token] = len(vocab)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer.from_pretrained(directory, model_max_length=77)


def build_tiny_sd(root: Path) -> Path:
    """A tiny random Stable Diffusion pipeline under `root`, saved with save_pretrained (no network):
    load it with the real `from_pretrained(root / "pipeline")` path."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=2,
        norm_num_groups=4,
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 8),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=4,
    )
    tokenizer = _tiny_tokenizer(root / "tokenizer-source")
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
            hidden_size=16,
            intermediate_size=32,
            num_attention_heads=2,
            num_hidden_layers=2,
            vocab_size=len(tokenizer),
            max_position_embeddings=77,
        )
    )
    pipe = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=DDIMScheduler(
            beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False, steps_offset=1
        ),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(root / "pipeline")
    return root / "pipeline"


def build_tiny_clip(root: Path) -> Path:
    """A tiny random CLIPModel with its tokenizer and image processor, saved in one directory (returned)."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    tokenizer = _tiny_tokenizer(root / "tokenizer-source")
    tower = {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 2, "num_hidden_layers": 2}
    config = CLIPConfig(
        text_config={
            **tower,
            "vocab_size": len(tokenizer),
            "max_position_embeddings": 77,
            # the byte-level vocab puts <|startoftext|> at 0 and <|endoftext|> (also the pad) at 1
            "bos_token_id": 0,
            "eos_token_id": 1,
            "pad_token_id": 1,
        },
        vision_config={**tower, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(root / "clip")
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(root / "clip")
    return root / "clip"


def add_tiny_safety_checker(pipeline_dir: Path, root: Path, threshold: float) -> Path:
    """The tiny pipeline at `pipeline_dir` with a tiny random safety checker and its feature extractor
    (CLIP's preprocessing at 224 px), saved under `root`; an image is flagged when its embedding's
    cosine with any concept exceeds `threshold` (the real checker's per-concept weights)."""
    import torch
    from diffusers import StableDiffusionPipeline
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    torch.manual_seed(0)
    tower = {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 2, "num_hidden_layers": 2}
    config = CLIPConfig(
        text_config=tower, vision_config={**tower, "image_size": 224, "patch_size": 32}, projection_dim=16
    )
    checker = StableDiffusionSafetyChecker(config)
    checker.concept_embeds.data = torch.randn_like(checker.concept_embeds)
    checker.special_care_embeds.data = torch.randn_like(checker.special_care_embeds)
    checker.concept_embeds_weights.data.fill_(threshold)
    checker.special_care_embeds_weights.data.fill_(1.0)  # no special care: one threshold to reason about
    pipe = StableDiffusionPipeline.from_pretrained(pipeline_dir)
    pipe.register_modules(
        safety_checker=checker,
        feature_extractor=CLIPImageProcessor(
            size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}
        ),
    )
    pipe.register_to_config(requires_safety_checker=True)
    pipe.save_pretrained(root / "pipeline-checked")
    return root / "pipeline-checked"

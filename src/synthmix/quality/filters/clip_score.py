"""The CLIP image-text score filter: a synthetic image of class `label` is scored by how well CLIP thinks
it matches a prompt such as "a photo of a {label}", and the caller rejects images below a threshold.

CLIP was trained contrastively on the cosine similarity of its image and text embeddings, so that (not a
raw dot product, whose size also tracks the embeddings' norms) is the quantity that measures agreement:
both embeddings are L2-normalised and the score is their dot product, in [-1, 1].
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

# "org/name" or "name": anything else (a leading ".", "/" or "~", deeper nesting) is meant as a path
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


class ClipUnavailable(Exception):
    """The CLIP model is not on this machine (no local directory, not in the local Hugging Face cache)."""


def load_clip(model: str) -> tuple[Any, Any]:
    """(CLIPModel, CLIPProcessor) from `model`: a local directory saved with save_pretrained, or a hub id
    found in the local Hugging Face cache only (local_files_only=True: never downloads). Raises
    ClipUnavailable with a one-sentence reason naming `model` and how to make it available."""
    from transformers import CLIPModel, CLIPProcessor

    source = str(Path(model).expanduser()) if Path(model).expanduser().exists() else model
    try:
        clip = CLIPModel.from_pretrained(source, local_files_only=True)
        processor = CLIPProcessor.from_pretrained(source, local_files_only=True)
    # OSError: not in the directory or the cache; ValueError (HFValidationError): a missing local path
    # that is not a valid hub id either. Anything else is a real fault and propagates.
    except (OSError, ValueError) as exc:
        if Path(source).is_dir():
            reason = (
                f"the CLIP model directory '{model}' does not load as a CLIPModel and CLIPProcessor "
                f"({type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}); save both "
                "there with save_pretrained, or point quality.clip_score.model at another directory."
            )
        elif not _HUB_ID.fullmatch(model):
            reason = (
                f"there is no CLIP model directory '{model}': point quality.clip_score.model at a directory "
                "saved with save_pretrained, or at a hub id in the local Hugging Face cache."
            )
        else:
            reason = (
                f"the CLIP model '{model}' is neither a local directory nor in the local Hugging Face "
                f"cache: download it with `hf download {model}` on a machine with internet (then copy the "
                "cache here), or point quality.clip_score.model at a directory saved with save_pretrained."
            )
        raise ClipUnavailable(reason) from None
    clip.eval()  # dropout off: the same image and text always score the same
    return clip, processor


def _features(output: Any) -> Any:
    """The projected embedding from get_*_features: a tensor in transformers 4.x, a
    BaseModelOutputWithPooling whose pooler_output holds it in 5.x."""
    import torch

    if isinstance(output, torch.Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    if pooled is None:  # a tuple (return_dict=False): (last_hidden_state, pooler_output, ...)
        pooled = output[1]
    return pooled


def _pil(image: np.ndarray) -> Any:
    """A PIL RGB image from a uint8 HxWx3 array."""
    from PIL import Image

    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"clip_scores needs HxWx3 RGB arrays, got shape {array.shape}")
    return Image.fromarray(array.astype(np.uint8, copy=False))


def clip_scores(
    model: Any,
    processor: Any,
    images: Sequence[np.ndarray],
    texts: Sequence[str],
    batch_size: int = 32,
) -> np.ndarray:
    """Cosine similarity (float64, shape (N,)) between image i (uint8 HxWx3 RGB array) and texts[i]
    (one text per image; identical texts are encoded once). Deterministic, torch.inference_mode, CPU,
    model.eval()."""
    import torch

    if len(images) != len(texts):
        raise ValueError(
            f"clip_scores needs one text per image, got {len(images)} images, {len(texts)} texts"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if not images:
        return np.zeros(0, dtype=np.float64)

    model.eval()
    device = next(model.parameters()).device  # CPU as load_clip returns it; inputs follow the model
    # Every image of a class shares its prompt: encode each distinct text once
    unique = list(dict.fromkeys(texts))
    index = {text: i for i, text in enumerate(unique)}

    with torch.inference_mode():
        text_embeds = []
        for start in range(0, len(unique), batch_size):
            tokens = processor.tokenizer(
                unique[start : start + batch_size], padding=True, truncation=True, return_tensors="pt"
            ).to(device)
            text_embeds.append(_features(model.get_text_features(**tokens)))
        text_emb = torch.nn.functional.normalize(torch.cat(text_embeds).to(torch.float64), dim=-1)

        scores = []
        for start in range(0, len(images), batch_size):
            # PIL images: a numpy array's channel axis is guessed, and a tiny image can be guessed wrong
            batch = [_pil(a) for a in images[start : start + batch_size]]
            pixels = processor.image_processor(images=batch, return_tensors="pt")["pixel_values"].to(device)
            image_emb = torch.nn.functional.normalize(
                _features(model.get_image_features(pixel_values=pixels)).to(torch.float64), dim=-1
            )
            rows = torch.tensor([index[t] for t in texts[start : start + batch_size]], device=device)
            scores.append((image_emb * text_emb[rows]).sum(-1))
    return torch.cat(scores).cpu().numpy().astype(np.float64)

"""The CLIP image-text score filter, on a tiny random CLIP saved with save_pretrained and loaded through
the real `load_clip(local_dir)` path: no network, a few seconds."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from synthmix.quality.filters.clip_score import ClipUnavailable, clip_scores, load_clip

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    # assorted sizes: the processor resizes and crops each to the model's 32x32
    return [rng.integers(0, 256, size=(40 + 3 * i, 36 + i, 3), dtype=np.uint8) for i in range(n)]


def _embedding(output) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def test_scores_are_cosines_of_clip_embeddings(tiny_clip: Path) -> None:
    model, processor = load_clip(str(tiny_clip))
    images = _images(5)
    texts = [
        "a photo of a cat",
        "a photo of a dog",
        "a photo of a cat",
        "a photo of a bird",
        "a photo of a dog",
    ]

    scores = clip_scores(model, processor, images, texts, batch_size=2)

    assert scores.shape == (5,) and scores.dtype == np.float64
    assert np.isfinite(scores).all()
    assert ((scores >= -1.0) & (scores <= 1.0)).all()
    assert np.array_equal(scores, clip_scores(model, processor, images, texts, batch_size=2))
    assert np.ptp(scores) > 0  # distinct images and texts score differently: not a constant

    # by hand, for image 3: the model's own embeddings, normalised, dotted
    with torch.inference_mode():
        pixels = processor.image_processor(images=[images[3]], return_tensors="pt")["pixel_values"]
        tokens = processor.tokenizer([texts[3]], padding=True, return_tensors="pt")
        image = _embedding(model.get_image_features(pixel_values=pixels))[0].double()
        text = _embedding(model.get_text_features(**tokens))[0].double()
    expected = float(image @ text / (image.norm() * text.norm()))
    assert scores[3] == pytest.approx(expected, abs=1e-6)


def test_score_does_not_depend_on_batch_size(tiny_clip: Path) -> None:
    model, processor = load_clip(str(tiny_clip))
    images = _images(7, seed=1)
    # one short and one long prompt, so the text batches pad differently
    texts = ["a photo of a cat"] * 3 + ["a blurry low resolution photo of a small striped tabby cat"] * 4

    one = clip_scores(model, processor, images, texts, batch_size=1)
    many = clip_scores(model, processor, images, texts, batch_size=32)

    np.testing.assert_allclose(one, many, atol=1e-5, rtol=0)


def test_empty_input_gives_no_scores(tiny_clip: Path) -> None:
    model, processor = load_clip(str(tiny_clip))
    assert clip_scores(model, processor, [], []).shape == (0,)


def test_a_model_not_on_this_machine_is_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    # each error names the model, says why it cannot be used and how to fix that (words no name supplies)
    with pytest.raises(ClipUnavailable) as caught:
        load_clip("no-such-org/no-such-model")
    message = str(caught.value)
    assert (
        "'no-such-org/no-such-model' is neither a local directory nor in the local Hugging Face cache"
        in message
    )
    assert "download it with `hf download no-such-org/no-such-model`" in message

    missing = tmp_path / "no" / "such" / "clip"
    with pytest.raises(ClipUnavailable) as caught:
        load_clip(str(missing))
    message = str(caught.value)
    assert f"there is no CLIP model directory '{missing}'" in message
    assert "point quality.clip_score.model at a directory saved with save_pretrained" in message

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ClipUnavailable) as caught:
        load_clip(str(empty))
    message = str(caught.value)
    assert f"'{empty}' does not load as a CLIPModel and CLIPProcessor" in message
    assert "save both there with save_pretrained" in message

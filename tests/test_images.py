"""The decoded-image store: each file decoded once, then served from the cache for every mix and seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import write_image
from synthmix.core.errors import UserError
from synthmix.core.files import sha256_file
from synthmix.data.images import LabelledImages, cached_image_path, load_images


def _tree(tmp_path, count=4):
    paths = [write_image(tmp_path / "img" / f"{i}.png", seed=i, size=10) for i in range(count)]
    return paths, [sha256_file(p) for p in paths]


def test_images_are_resized_uint8_chw_with_labels_and_keys(tmp_path):
    paths, shas = _tree(tmp_path)
    store = load_images(paths, [0, 1, 0, 1], shas, 32, tmp_path / "cache")
    assert store.images.dtype == torch.uint8 and store.images.shape == (4, 3, 32, 32)
    assert store.labels.tolist() == [0, 1, 0, 1] and store.keys == tuple(shas)
    # the same pixels the data module's decoder gives, channels first
    expected = np.asarray(Image.open(paths[2]).convert("RGB").resize((32, 32), Image.Resampling.BILINEAR))
    assert torch.equal(store.images[2], torch.from_numpy(expected.copy()).permute(2, 0, 1))


def test_second_load_reads_the_cache_not_the_files(tmp_path):
    paths, shas = _tree(tmp_path)
    first = load_images(paths, [0, 0, 1, 1], shas, 32, tmp_path / "cache")
    assert all(cached_image_path(tmp_path / "cache", s, 32).exists() for s in shas)
    for p in paths:
        p.unlink()  # a cache hit must not touch the source file
    again = load_images(paths[::-1], [1, 1, 0, 0], shas[::-1], 32, tmp_path / "cache")
    assert torch.equal(again.images, first.images.flip(0))


def test_each_size_is_cached_separately(tmp_path):
    paths, shas = _tree(tmp_path, 1)
    assert load_images(paths, [0], shas, 32, tmp_path / "c").images.shape[-1] == 32
    assert load_images(paths, [0], shas, 48, tmp_path / "c").images.shape[-1] == 48


def test_subset_keeps_images_labels_and_keys_together(tmp_path):
    paths, shas = _tree(tmp_path)
    store = load_images(paths, [0, 1, 2, 3], shas, 32, tmp_path / "cache")
    part = store.subset([3, 1])
    assert len(part) == 2 and part.labels.tolist() == [3, 1] and part.keys == (shas[3], shas[1])
    assert torch.equal(part.images[0], store.images[3])
    assert isinstance(part, LabelledImages)


def test_missing_source_file_is_a_user_error_naming_it(tmp_path):
    missing = tmp_path / "img" / "gone.png"
    with pytest.raises(UserError, match=r"gone\.png"):
        load_images([missing], [0], ["ab" * 32], 32, tmp_path / "cache")

"""The split's extra real images and the generator's pool: disjoint from what the classifier sees."""

from __future__ import annotations

from pathlib import Path

import pytest

from synthmix.data.real import read_manifest, validate_tree
from synthmix.data.split import SplitSizes, prepare_split, read_split_summary, split_records

SPLITS = ("train", "test", "extra", "pool")


def _read(prepared: Path) -> dict[str, list]:
    return {split: read_manifest(prepared / f"{split}.csv") for split in SPLITS}


def test_train_test_extra_and_pool_are_disjoint_and_sized(image_tree, tmp_path):
    root = image_tree({"a": 14, "b": 14})
    prepare_split(root, tmp_path / "prepared", SplitSizes(4, 3, 2, 5), seed=0)
    rows = _read(tmp_path / "prepared")
    for split, size in zip(SPLITS, (4, 3, 2, 5), strict=True):
        for label in ("a", "b"):
            ranks = [r.rank for r in rows[split] if r.label == label]
            assert ranks == list(range(size)), (split, label)
    paths = [r.path for split in SPLITS for r in rows[split]]
    hashes = [r.sha256 for split in SPLITS for r in rows[split]]
    assert len(set(paths)) == len(paths) == 28 and len(set(hashes)) == 28
    summary = read_split_summary(tmp_path / "prepared")
    assert summary.generator_pool and "never sees" in summary.generator_note()
    assert summary.extra_shortfall(2) is None and summary.extra_shortfall(0) is None


def test_adding_extra_and_pool_sizes_leaves_train_and_test_unchanged(image_tree):
    records, _ = validate_tree(image_tree({"a": 14, "b": 14}))
    plain, _ = split_records(records, SplitSizes(4, 3), seed=5)
    more, _ = split_records(records, SplitSizes(4, 3, 2, 5), seed=5)
    assert plain == [r for r in more if r.split in ("train", "test")]


def test_a_set_with_exactly_train_plus_test_images_has_no_extra_and_no_pool(image_tree, tmp_path):
    root = image_tree({"cat": 7, "dog": 7})
    prepare_split(root, tmp_path / "prepared", SplitSizes(4, 3, 4, 6), seed=0)
    rows = _read(tmp_path / "prepared")
    assert rows["extra"] == [] and rows["pool"] == []
    summary = read_split_summary(tmp_path / "prepared")
    reason = summary.extra_shortfall(4)
    assert reason is not None and "'cat' has 0" in reason and "'dog' has 0" in reason
    assert "Add real images" in reason
    assert not summary.generator_pool
    assert "classifier's own training split" in summary.generator_note()


def test_extra_and_pool_images_that_copy_a_classifier_image_are_left_out(image_tree, tmp_path):
    import numpy as np
    from PIL import Image

    root = image_tree({"a": 10, "b": 10})
    rng = np.random.default_rng(3)
    for path in sorted((root / "a").iterdir()):  # photo-like pictures (pixel noise has no copies)
        coarse = Image.fromarray(rng.integers(0, 256, size=(5, 5, 3), dtype=np.uint8), "RGB")
        coarse.resize((40, 40), Image.Resampling.BICUBIC).save(path)
    records, _ = validate_tree(root)
    rows, _ = split_records(records, SplitSizes(4, 3), seed=0)
    train_image = next(r.path for r in rows if r.split == "train" and r.label == "a")
    with Image.open(train_image) as img:  # a resized copy of a training photo, as JPEG
        img.convert("RGB").resize((48, 48)).save(root / "a" / "zz_copy.jpg", quality=90)
    rows, rejected = prepare_split(root, tmp_path / "prepared", SplitSizes(4, 3, 2, 10), seed=0)
    assert not any(r.path.name == "zz_copy.jpg" and r.split in ("extra", "pool") for r in rows)
    assert any(r.path.name == "zz_copy.jpg" and r.copy_of == train_image for r in rejected)


def test_a_missing_summary_says_to_rerun_prepare(tmp_path):
    from synthmix.core.errors import UserError

    with pytest.raises(UserError, match="synthmix prepare"):
        read_split_summary(tmp_path)

"""Near-copies (data/copies.py): planted copies are found, distinct look-alike scans are not, and a
copy planted in any split of the embedded digits is left out and named with its twin and scores."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from synthmix.data import copies
from synthmix.data.copies import Fingerprints, fingerprint
from synthmix.data.importing import near_copies_per_class, write_default_data
from synthmix.data.real import read_rejections, validate_tree
from synthmix.data.split import SplitSizes, copy_losses, describe_losses, prepare_split
from synthmix.report.provenance import real_copies_line


def _photo(seed: int, size: int = 96) -> Image.Image:
    """A photo-like picture: smooth coloured shapes on a plain background."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
    coarse[0, :], coarse[-1, :], coarse[:, 0], coarse[:, -1] = 255, 255, 255, 255
    return Image.fromarray(coarse, "RGB").resize((size, size), Image.Resampling.BICUBIC)


def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    img.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


TRANSFORMS = {
    "half size": lambda img: img.resize((img.width // 2, img.height // 2), Image.Resampling.LANCZOS),
    "double size": lambda img: img.resize((img.width * 2, img.height * 2), Image.Resampling.BICUBIC),
    "JPEG 50": lambda img: _jpeg(img, 50),
    "crop 8%": lambda img: img.crop((4, 3, img.width - 4, img.height - 3)),
    "rotation 3 degrees": lambda img: img.rotate(
        3, resample=Image.Resampling.BICUBIC, fillcolor=(255, 255, 255)
    ),
    "brightness 0.8": lambda img: ImageEnhance.Brightness(img).enhance(0.8),
    "contrast 1.2": lambda img: ImageEnhance.Contrast(img).enhance(1.2),
    "greyscale": lambda img: ImageOps.grayscale(img).convert("RGB"),
    "mirror": ImageOps.mirror,
}


@pytest.mark.parametrize("transform", list(TRANSFORMS))
def test_each_kind_of_copy_of_a_photo_is_found_and_named(transform):
    originals = [_photo(seed) for seed in range(40)]
    prints = Fingerprints.stack([fingerprint(img) for img in originals])
    planted = Fingerprints.stack([fingerprint(TRANSFORMS[transform](originals[i])) for i in (3, 17, 31)])
    found = copies.find_copies(planted, prints)
    assert sorted((p.query, p.reference) for p in found) == [(0, 3), (1, 17), (2, 31)]
    assert all(p.aligned >= copies.THRESHOLDS[16] and p.search >= copies.SEARCH_FLOOR for p in found)


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("digits") / "data"
    write_default_data(root)
    return root


def test_no_two_distinct_digit_scans_are_called_copies(digits_dir):
    records, _ = validate_tree(digits_dir)
    prints = Fingerprints.stack([(r.thumb, r.side) for r in records])
    assert copies.find_copies(prints, prints, same=True) == []
    assert near_copies_per_class(records) == {}


def test_a_copy_planted_in_any_split_of_the_digits_is_left_out_and_named(digits_dir, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for class_dir in digits_dir.iterdir():
        (data / class_dir.name).symlink_to(class_dir.resolve(), target_is_directory=True)
    sizes = SplitSizes(30, 30, 30, 200)  # a pool of all the rest: every image is dealt somewhere
    clean, rejected = prepare_split(data, tmp_path / "clean", sizes, seed=0)
    assert rejected == []
    # One original from each split, and a mirrored or darkened copy of each under the same class.
    originals = {split: next(r for r in clean if r.split == split and r.label == str(i)) for i, split in
                 enumerate(("train", "test", "extra", "pool"))}  # fmt: skip
    planted = {}
    for k, (split, row) in enumerate(originals.items()):
        class_dir = data / row.label
        class_dir.unlink()
        class_dir.mkdir()
        for image in (digits_dir / row.label).iterdir():
            (class_dir / image.name).symlink_to(image.resolve())
        with Image.open(row.path) as img:
            copy = (
                ImageOps.mirror(img) if k % 2 else ImageEnhance.Brightness(img.convert("RGB")).enhance(0.85)
            )
        planted[split] = class_dir / f"copy_of_{row.path.name}"
        copy.save(planted[split])
    rows, rejected = prepare_split(data, tmp_path / "prepared", sizes, seed=0)
    dealt = {r.path.name: r.split for r in rows}
    with open(tmp_path / "prepared" / "rejected.csv", newline="") as fh:
        reported = {Path(row["path"]).name: row for row in csv.DictReader(fh)}
    assert len(reported) == len(rejected) == 4  # one of each pair; nothing else
    for split, row in originals.items():
        pair = {row.path.name, planted[split].name}
        (kept,) = pair & set(dealt)
        (left_out,) = pair - {kept}
        entry = reported[left_out]
        assert Path(entry["copy_of"]).name == kept
        assert entry["reason"].startswith(f"near-copy of {entry['copy_of']} ({dealt[kept]} split")
        assert float(entry["aligned_correlation"]) >= copies.THRESHOLDS[8]
        assert float(entry["search_similarity"]) >= copies.SEARCH_FLOOR
    # The same number of images in every split: each copy left out was replaced by the next image.
    assert {s: sum(r.split == s for r in rows) for s in originals} == {
        s: sum(r.split == s for r in clean) for s in originals
    }
    lines = describe_losses(copy_losses(rejected))
    assert len(lines) == 4 and all(" lost 1 image(s) as near-copies (1 of a" in line for line in lines)
    read_back = read_rejections(tmp_path / "prepared" / "rejected.csv")
    assert sorted((r.path, r.copy_of, r.copy_split) for r in read_back) == sorted(
        (r.path, r.copy_of, r.copy_split) for r in rejected
    )
    # The report's one line on them, and on the clean split.
    line = real_copies_line(tmp_path / "prepared" / "rejected.csv")
    assert "prepare left out 4 as copies of another image ('0' 1, '1' 1, '2' 1, '3' 1)" in line
    assert "none" in real_copies_line(tmp_path / "clean" / "rejected.csv")


def test_two_copies_inside_the_pool_leave_one(tmp_path):
    root = tmp_path / "data"
    for label, seeds in (("a", range(12)), ("b", range(100, 112))):
        (root / label).mkdir(parents=True)
        for seed in seeds:
            _photo(seed, 48).save(root / label / f"{seed:03d}.png")
    with Image.open(root / "a" / "000.png") as img:
        _jpeg(img, 60).save(root / "a" / "zzz_copy.jpg")
    pair = {"000.png", "zzz_copy.jpg"}
    for seed in range(20):  # a seed that deals the first of the two into the pool
        rows, rejected = prepare_split(root, tmp_path / f"p{seed}", SplitSizes(2, 2, 0, 9), seed=seed)
        dealt = {r.path.name: r.split for r in rows if r.label == "a"}
        (kept,) = pair & set(dealt)
        if dealt[kept] == "pool":
            break
    else:
        pytest.fail("no seed put the pair in the pool")
    assert len(dealt) == 12  # the copy's place went to the next image
    (left_out,) = rejected
    assert {left_out.path.name, left_out.copy_of.name} == pair and left_out.copy_of.name == kept
    assert left_out.copy_split == "pool" and left_out.aligned >= copies.THRESHOLDS[16]


def test_import_and_prepare_say_how_many_images_each_class_loses_as_copies(in_tmp, capsys, monkeypatch):
    from synthmix.cli import run

    monkeypatch.setenv("COLUMNS", "200")
    source = in_tmp / "download"
    for label, seeds in (("shirt", range(14)), ("shoe", range(100, 114))):
        (source / label).mkdir(parents=True)
        for seed in seeds:
            _photo(seed, 48).save(source / label / f"{seed:03d}.png")
    with Image.open(source / "shoe" / "100.png") as img:  # two copies of one shoe photo
        _jpeg(img, 70).save(source / "shoe" / "copy_a.jpg")
        ImageOps.mirror(img).save(source / "shoe" / "copy_b.png")
    (in_tmp / "params.yaml").write_text(
        "data:\n  train_per_class: 4\n  test_per_class: 4\n  extra_per_class: 2\n  pool_per_class: 4\n"
        "study:\n  mixes: [4r0s, 4r4s]\n"
    )
    assert run(["data", "import", "--no-dvc", str(source)]) == 0
    out = capsys.readouterr().err
    assert "Class 'shoe': 2 image(s) are near-copies" in out and "'shirt'" not in out
    assert run(["prepare"]) == 0
    out = capsys.readouterr().err
    assert "Class 'shoe' lost 2 image(s) as near-copies (2 of a " in out and "'shirt' lost" not in out

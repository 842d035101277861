"""The real set: validation of odd files, conversion to RGB, the seeded split, copies kept out of test."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import write_image
from synthmix.core.errors import UserError
from synthmix.data import copies
from synthmix.data.importing import import_tree, write_default_data
from synthmix.data.real import decode_array, find_class_root, load_rgb, read_manifest, validate_tree
from synthmix.data.split import SplitSizes, prepare_split, split_records


def _messy_tree(root: Path) -> dict[str, Path]:
    """A class folder holding good images and every kind of bad or odd file."""
    cls = root / "wild cat (felis)"  # spaces and brackets in a class name
    cls.mkdir(parents=True)
    files = {}
    files["good"] = write_image(cls / "good.png", 1)
    files["jpeg"] = write_image(cls / "photo.JPG", 2)
    (cls / "empty.png").write_bytes(b"")
    files["empty"] = cls / "empty.png"
    full = write_image(root / "scratch.png", 3, size=64).read_bytes()
    (root / "scratch.png").unlink()
    (cls / "truncated.png").write_bytes(full[: len(full) // 2])
    files["truncated"] = cls / "truncated.png"
    (cls / "notes.txt").write_text("not an image")
    files["text"] = cls / "notes.txt"
    (cls / "fake.jpg").write_text("also not an image")
    files["fake"] = cls / "fake.jpg"
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # red, fully transparent on the left half, opaque on the right
    rgba[:, 2:, 3] = 255
    Image.fromarray(rgba, "RGBA").save(cls / "rgba.png")
    files["rgba"] = cls / "rgba.png"
    Image.new("CMYK", (4, 4), (0, 255, 255, 0)).save(cls / "cmyk.jpg", quality=100)  # pure red in CMYK
    files["cmyk"] = cls / "cmyk.jpg"
    grey16 = np.full((4, 4), 65535, dtype=np.uint16)
    grey16[0, 0] = 0
    Image.fromarray(grey16).save(cls / "grey16.png")
    files["grey16"] = cls / "grey16.png"
    palette = Image.new("P", (4, 4))
    palette.putpalette([0, 0, 255] + [0] * 765)  # index 0 = blue
    palette.save(cls / "palette.gif")
    files["palette"] = cls / "palette.gif"
    (cls / ".DS_Store").write_bytes(b"\x00\x01")
    files["hidden"] = cls / ".DS_Store"
    write_image(cls / ".hidden_dir" / "x.png", 4)
    files["hidden_dir_file"] = cls / ".hidden_dir" / "x.png"
    # EXIF orientation 6 (rotate 90 degrees clockwise): stored 8 wide x 4 high, shown 4 wide x 8 high
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (8, 4), (10, 200, 30)).save(cls / "rotated.jpg", exif=exif)
    files["rotated"] = cls / "rotated.jpg"
    other = root / "dog"
    for i in range(3):
        write_image(other / f"{i}.png", 100 + i)
    return files


def test_validation_lists_each_bad_file_with_its_reason_and_keeps_the_good_ones(tmp_path):
    files = _messy_tree(tmp_path / "messy")
    records, rejected = validate_tree(tmp_path / "messy")
    reasons = {r.path: r.reason for r in rejected}
    assert reasons[files["empty"]] == "empty file"
    assert "truncated" in reasons[files["truncated"]] or "corrupt" in reasons[files["truncated"]]
    assert "not an image" in reasons[files["text"]]
    assert "not an image" in reasons[files["fake"]]
    assert reasons[files["hidden"]] == "hidden file"
    assert reasons[files["hidden_dir_file"]] == "hidden file"
    kept = {r.path for r in records}
    for name in ("good", "jpeg", "rgba", "cmyk", "grey16", "palette", "rotated"):
        assert files[name] in kept, name
    assert {r.label for r in records} == {"wild cat (felis)", "dog"}
    assert kept.isdisjoint(reasons)


def test_odd_modes_become_correct_rgb(tmp_path):
    files = _messy_tree(tmp_path / "messy")
    rgba = np.asarray(load_rgb(files["rgba"]))
    assert rgba.shape == (4, 4, 3)
    assert tuple(rgba[0, 0]) == (255, 255, 255)  # transparent -> white background, not black
    assert tuple(rgba[0, 3]) == (255, 0, 0)
    cmyk = np.asarray(load_rgb(files["cmyk"])).astype(int)
    assert cmyk[0, 0, 0] > 200 and cmyk[0, 0, 1] < 60 and cmyk[0, 0, 2] < 60  # red stays red
    grey16 = np.asarray(load_rgb(files["grey16"]))
    assert tuple(grey16[1, 1]) == (255, 255, 255) and tuple(grey16[0, 0]) == (0, 0, 0)  # scaled, not clipped
    assert tuple(np.asarray(load_rgb(files["palette"]))[0, 0]) == (0, 0, 255)
    rotated = load_rgb(files["rotated"])
    assert rotated.size == (4, 8)  # EXIF orientation applied
    assert decode_array(files["rotated"], size=6).shape == (6, 6, 3)


def test_nested_wrapper_folders_are_descended(tmp_path, image_tree):
    image_tree({"cat": 2, "dog": 2}, root=tmp_path / "animals" / "animals")
    assert find_class_root(tmp_path / "animals") == tmp_path / "animals" / "animals"


def test_a_folder_without_classes_is_a_clear_error(tmp_path):
    (tmp_path / "flat").mkdir()
    write_image(tmp_path / "flat" / "a.png", 1)
    with pytest.raises(UserError, match="no class folders"):
        find_class_root(tmp_path / "flat")


def test_split_is_seeded_nested_disjoint_and_byte_identical(tmp_path, image_tree):
    root = image_tree({"a": 12, "b": 12, "c b": 12})
    rows1, _ = prepare_split(root, tmp_path / "p1", SplitSizes(6, 4), seed=7)
    prepare_split(root, tmp_path / "p2", SplitSizes(6, 4), seed=7)
    for name in ("train.csv", "test.csv", "rejected.csv"):
        assert (tmp_path / "p1" / name).read_bytes() == (tmp_path / "p2" / name).read_bytes()
    train = read_manifest(tmp_path / "p1" / "train.csv")
    test = read_manifest(tmp_path / "p1" / "test.csv")
    assert len(train) == 18 and len(test) == 12
    assert {r.sha256 for r in train}.isdisjoint({r.sha256 for r in test})
    # nested: a smaller training split takes exactly the first ranks of the larger one
    records, _ = validate_tree(root)
    small, _ = split_records(records, SplitSizes(3, 4), seed=7)
    for label in ("a", "b", "c b"):
        big_first3 = {r.path for r in train if r.label == label and r.rank < 3}
        assert {r.path for r in small if r.label == label and r.split == "train"} == big_first3
    other, _ = prepare_split(root, tmp_path / "p3", SplitSizes(6, 4), seed=8)
    assert [r.path for r in other] != [r.path for r in rows1]


def test_split_does_not_depend_on_file_names(tmp_path, image_tree):
    root = image_tree({"a": 8, "b": 8})
    renamed = tmp_path / "renamed"
    for path in sorted(root.rglob("*.png")):
        target = renamed / path.parent.name / ("z_" + path.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    rows_a, _ = split_records(validate_tree(root)[0], SplitSizes(4, 4), seed=0)
    rows_b, _ = split_records(validate_tree(renamed)[0], SplitSizes(4, 4), seed=0)
    assert [(r.sha256, r.split, r.rank) for r in rows_a] == [(r.sha256, r.split, r.rank) for r in rows_b]


def test_duplicate_photos_never_leak_across_the_split(tmp_path, image_tree):
    root = image_tree({"a": 6, "b": 6})
    dup = root / "a" / "copy_of_first.png"
    dup.write_bytes((root / "a" / "img_000.png").read_bytes())
    (root / "b" / "same_as_a1.png").write_bytes((root / "a" / "img_001.png").read_bytes())
    records, rejected = validate_tree(root)
    reasons = {r.path.name: r.reason for r in rejected}
    assert reasons["img_000.png"].startswith("duplicate of") or reasons["copy_of_first.png"].startswith(
        "duplicate of"
    )
    assert "ambiguous label" in reasons["same_as_a1.png"] and "ambiguous label" in reasons["img_001.png"]
    assert len({r.sha256 for r in records}) == len(records)


def _smooth_photo(path: Path, seed: int, size: int = 40) -> Path:
    """A photo-like picture: smooth shapes, not pixel noise (noise has no copy once resampled)."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, size=(5, 5, 3), dtype=np.uint8), "RGB")
    coarse.resize((size, size), Image.Resampling.BICUBIC).save(path)
    return path


def _resized_jpeg_copy(photo: Path, target: Path) -> Path:
    """The photo three times larger, re-encoded as a JPEG: other bytes, the same picture."""
    with Image.open(photo) as img:
        img.convert("RGB").resize((img.width * 3, img.height * 3), Image.Resampling.BICUBIC).save(
            target, quality=85
        )
    return target


def test_a_resized_jpeg_copy_of_a_training_photo_is_kept_out_of_the_test_split_and_reported(
    tmp_path, image_tree, monkeypatch
):
    root = image_tree({"a": 7, "b": 7})
    photo = root / "a" / "img_000.png"
    _smooth_photo(photo, seed=5)
    copy = _resized_jpeg_copy(photo, root / "a" / "copy_of_img_000.jpg")
    records, _ = validate_tree(root)
    assert len(records) == 15  # other bytes: the exact-duplicate check lets the copy through

    def splits(rows) -> dict[Path, str]:
        return {r.path: r.split for r in rows}

    # A seed whose split, with the check off (no correlation reaches 2), puts one of the two in the
    # training split and the other in the test split.
    with monkeypatch.context() as off:
        off.setattr(copies, "THRESHOLDS", dict.fromkeys(copies.THRESHOLDS, 2.0))
        seed = next(
            s
            for s in range(50)
            if {splits(split_records(records, SplitSizes(4, 2), s)[0]).get(p) for p in (photo, copy)}
            == {"train", "test"}
        )
        unchecked, _ = split_records(records, SplitSizes(4, 2), seed)
    rows, rejected = prepare_split(root, tmp_path / "prepared", SplitSizes(4, 2), seed=seed)

    (trained,) = [p for p in (photo, copy) if splits(rows).get(p) == "train"]
    twin = copy if trained == photo else photo
    assert twin not in splits(rows)  # left out, and another image of class a takes its test place
    assert sum(r.split == "test" and r.label == "a" for r in rows) == 2
    assert [r for r in rows if r.split == "train"] == [r for r in unchecked if r.split == "train"]
    with open(tmp_path / "prepared" / "rejected.csv", newline="") as fh:
        reported = {row["path"]: row for row in csv.DictReader(fh)}
    row = reported[twin.as_posix()]
    assert row["reason"].startswith(f"near-copy of {trained.as_posix()} (train split")
    assert row["copy_of"] == trained.as_posix()
    assert float(row["aligned_correlation"]) >= copies.THRESHOLDS[16]
    assert 0.5 <= float(row["search_similarity"]) <= 1.0
    assert [r.path for r in rejected] == [twin]


def test_too_few_images_names_the_class_and_its_count(tmp_path, image_tree):
    root = image_tree({"plenty": 10, "scarce one": 3})
    records, _ = validate_tree(root)
    with pytest.raises(UserError, match=r"class 'scarce one' has 3.*drop_small_classes"):
        split_records(records, SplitSizes(5, 5), seed=0)
    with pytest.warns(UserWarning, match="Dropping class 'scarce one'"), pytest.raises(UserError, match="2"):
        split_records(
            records, SplitSizes(5, 5), seed=0, drop_small_classes=True
        )  # one class left is not enough
    root2 = image_tree({"x": 10, "y": 10, "z": 2}, root=tmp_path / "three")
    with pytest.warns(UserWarning, match="'z'"):
        rows, _ = split_records(validate_tree(root2)[0], SplitSizes(5, 5), seed=0, drop_small_classes=True)
    assert {r.label for r in rows} == {"x", "y"}


def test_default_data_is_the_real_digits_and_deterministic(tmp_path):
    count = write_default_data(tmp_path / "d1")
    write_default_data(tmp_path / "d2")
    assert count == 1797
    assert sorted(p.name for p in (tmp_path / "d1").iterdir()) == [str(d) for d in range(10)]
    files1 = sorted((tmp_path / "d1").rglob("*.png"))
    assert len(files1) == 1797
    assert all(
        a.read_bytes() == (tmp_path / "d2" / a.relative_to(tmp_path / "d1")).read_bytes() for a in files1
    )
    assert np.asarray(Image.open(files1[0])).shape == (8, 8)
    # Digit scans are small and alike, yet all 1,797 are distinct: the copy check rejects none of them.
    _, near_copies = split_records(validate_tree(tmp_path / "d1")[0], SplitSizes(30, 30, 30, 60), seed=0)
    assert near_copies == []


def test_import_copies_usable_images_and_reports_the_rest(tmp_path):
    files = _messy_tree(tmp_path / "src" / "nested")
    data_dir = tmp_path / "data"
    write_image(data_dir / "old" / "x.png", 9)  # replaced only after the import succeeded
    records, _ = import_tree(tmp_path / "src", data_dir, tmp_path / "report.csv")
    imported = sorted(p.relative_to(data_dir).as_posix() for p in data_dir.rglob("*") if p.is_file())
    assert "wild cat (felis)/good.png" in imported and "old/x.png" not in imported
    assert not any(".DS_Store" in p or "notes.txt" in p for p in imported)
    assert (data_dir / "wild cat (felis)" / "rgba.png").read_bytes() == files["rgba"].read_bytes()
    with open(tmp_path / "report.csv") as fh:
        reported = {Path(row["path"]).name: row["reason"] for row in csv.DictReader(fh)}
    assert reported["empty.png"] == "empty file" and reported["notes.txt"].startswith("not an image")
    assert len(records) == len(imported)

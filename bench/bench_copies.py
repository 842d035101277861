"""Near-copy detection (synthmix.data.copies): recall on planted copies, false positives on distinct
same-class pairs, on two real sets, and the search's time at 5,400 and 100,000 images.

The sets:
- digits: scikit-learn's 1,797 handwritten digit scans (8 x 8), 10 classes, the embedded default data;
- emoji: Noto Color Emoji glyphs (Debian's fonts-noto-color-emoji, `apt-get install
  fonts-noto-color-emoji`) rendered on white at 136 x 128, one class per Unicode block, up to 60 a
  class: distinct objects on a plain background, as catalogue shots are. Glyphs whose Unicode name
  says they are a colour or direction variant of another (RED, BLUE, LEFT, RIGHT, ...) are left out:
  in greyscale, or mirrored, they are the same picture, i.e. copies by this benchmark's own
  transformations.

Positives: for `--copies` images of each set, one copy per transformation (resized 0.5-1x and 1-2x
with a random filter, JPEG quality 40-95, a crop removing up to 10% of each side, a rotation up to 5
degrees, brightness 0.7-1x and 1-1.3x, contrast 0.7-1.3x, greyscale, mirror); a copy is found when the detector, run over the
set with the copies added, confirms the pair (copy, original). Negatives: every pair of distinct
images of one class; flagged when the detector confirms it.

Run from the repository root:  .venv/bin/python bench/bench_copies.py [--copies 300] [--no-record]
"""

from __future__ import annotations

import argparse
import io
import random
import time
import unicodedata
from pathlib import Path

import numpy as np
from common import append_results, command_line, describe_machine, markdown_table, set_threads
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

from synthmix.data import copies
from synthmix.data.copies import Fingerprints, fingerprint

EMOJI_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
EMOJI_BLOCKS = {  # class -> code point range (one Unicode block or part of one)
    "faces": (0x1F600, 0x1F650),
    "animals": (0x1F400, 0x1F440),
    "food": (0x1F345, 0x1F380),
    "transport": (0x1F680, 0x1F6D0),
    "objects": (0x1F4A0, 0x1F500),
    "nature": (0x1F300, 0x1F345),
    "celebration": (0x1F380, 0x1F400),
    "people": (0x1F90C, 0x1F9FF),
    "office": (0x1F500, 0x1F5FF),
    "things": (0x1FA70, 0x1FAFF),
}
VARIANT_WORDS = (
    "RED", "ORANGE", "YELLOW", "GREEN", "BLUE", "PURPLE", "BROWN", "BLACK", "WHITE", "PINK", "GREY",
    "LEFT", "RIGHT", "FIRST QUARTER", "LAST QUARTER", "WAXING", "WANING", "FACING",
)  # fmt: skip
TRANSFORMS = (
    "smaller", "larger", "jpeg", "crop", "rotate", "darker", "brighter", "contrast", "greyscale", "mirror",
)  # fmt: skip


def digits() -> tuple[list[Image.Image], list[int]]:
    from sklearn.datasets import load_digits

    data = load_digits()
    pixels = np.round(data.images * (255.0 / 16.0)).astype(np.uint8)
    return [Image.fromarray(p, "L").convert("RGB") for p in pixels], [int(t) for t in data.target]


def emoji(per_class: int = 60) -> tuple[list[Image.Image], list[int]]:
    if not EMOJI_FONT.exists():
        raise SystemExit(f"{EMOJI_FONT} is missing: apt-get install fonts-noto-color-emoji")
    font = ImageFont.truetype(str(EMOJI_FONT), 109)
    images, labels = [], []
    for label, (first, last) in enumerate(EMOJI_BLOCKS.values()):
        seen: set[bytes] = set()
        for code in range(first, last):
            name = unicodedata.name(chr(code), "")
            if not name or any(word in name for word in VARIANT_WORDS):
                continue
            img = Image.new("RGB", (136, 128), "white")
            ImageDraw.Draw(img).text((0, 0), chr(code), font=font, embedded_color=True)
            pixels = np.asarray(img)
            if (pixels < 250).mean() < 0.02 or pixels[::8, ::8].tobytes() in seen:
                continue  # no glyph in the font (blank or the same missing-glyph box)
            seen.add(pixels[::8, ::8].tobytes())
            images.append(img)
            labels.append(label)
            if labels.count(label) == per_class:
                break
    return images, labels


def plant(img: Image.Image, transform: str, rng: random.Random) -> Image.Image:
    """A copy of `img` made by one transformation with random strength."""
    w, h = img.size
    if transform in ("smaller", "larger"):
        f = rng.uniform(0.5, 1.0) if transform == "smaller" else rng.uniform(1.0, 2.0)
        filters = (Image.Resampling.BILINEAR, Image.Resampling.BICUBIC, Image.Resampling.LANCZOS)
        return img.resize((max(1, round(w * f)), max(1, round(h * f))), rng.choice(filters))
    if transform == "jpeg":
        buffer = io.BytesIO()
        img.save(buffer, "JPEG", quality=rng.randint(40, 95))
        return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    if transform == "crop":
        fx, fy = rng.uniform(0, 0.1), rng.uniform(0, 0.1)
        left, top = rng.uniform(0, fx) * w, rng.uniform(0, fy) * h
        return img.crop((round(left), round(top), round(left + (1 - fx) * w), round(top + (1 - fy) * h)))
    if transform == "rotate":
        pixels = np.asarray(img)
        border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
        fill = tuple(int(v) for v in np.median(border, axis=0))
        return img.rotate(rng.uniform(-5, 5), resample=Image.Resampling.BICUBIC, fillcolor=fill)
    if transform in ("darker", "brighter"):
        return ImageEnhance.Brightness(img).enhance(
            rng.uniform(0.7, 1.0) if transform == "darker" else rng.uniform(1.0, 1.3)
        )
    if transform == "contrast":
        return ImageEnhance.Contrast(img).enhance(rng.uniform(0.7, 1.3))
    if transform == "greyscale":
        return ImageOps.grayscale(img).convert("RGB")
    if transform == "mirror":
        return ImageOps.mirror(img)
    raise ValueError(transform)


def same_class_pairs(labels: np.ndarray) -> set[tuple[int, int]]:
    pairs = set()
    for label in np.unique(labels):
        members = np.nonzero(labels == label)[0]
        pairs |= {(int(a), int(b)) for i, a in enumerate(members) for b in members[i + 1 :]}
    return pairs


def measure_set(name: str, images: list[Image.Image], labels: list[int], n_copies: int, seed: int) -> dict:
    rng = random.Random(seed)
    originals = rng.sample(range(len(images)), min(n_copies, len(images)))
    planted_images, planted_of, planted_kind = [], [], []
    for transform in TRANSFORMS:
        for index in originals:
            planted_images.append(plant(images[index], transform, rng))
            planted_of.append(index)
            planted_kind.append(transform)
    prints = Fingerprints.stack([fingerprint(img) for img in images])
    planted = Fingerprints.stack([fingerprint(img) for img in planted_images])
    started = time.perf_counter()
    distinct = copies.find_copies(prints, prints, same=True)
    seconds = time.perf_counter() - started
    found = copies.find_copies(planted, prints)  # each copy against the set it was made from
    hits = {(p.query, p.reference) for p in found}
    label_array = np.array(labels)
    negatives = same_class_pairs(label_array)
    false = [p for p in distinct if (min(p.query, p.reference), max(p.query, p.reference)) in negatives]
    # Calibration view: the closest distinct pairs the search proposes, by comparison side.
    rows, cols, _ = copies.search(prints, prints, same=True)
    same_class = label_array[rows] == label_array[cols]
    aligned = copies.aligned_correlation(prints, rows[same_class], prints, cols[same_class])
    sides = copies.resolution(prints.sides[rows[same_class]], prints.sides[cols[same_class]])
    planted_scores = copies.aligned_correlation(
        planted, np.arange(len(planted)), prints, np.array(planted_of)
    )
    planted_sides = copies.resolution(planted.sides, prints.sides[planted_of])
    per_kind = {}
    for transform in TRANSFORMS:
        picks = [i for i, k in enumerate(planted_kind) if k == transform]
        caught = sum((i, planted_of[i]) in hits for i in picks)
        per_kind[transform] = (caught, len(picks), float(np.quantile(planted_scores[picks], 0.01)))
    return {
        "name": name,
        "images": len(images),
        "classes": len(set(labels)),
        "per_kind": per_kind,
        "negatives": len(negatives),
        "false": false,
        "seconds": seconds,
        "closest_distinct": {
            int(r): np.sort(aligned[sides == r])[-5:][::-1].round(4).tolist() for r in np.unique(sides)
        },
        "planted_by_side": {
            int(r): float(np.quantile(planted_scores[planted_sides == r], 0.01))
            for r in np.unique(planted_sides)
        },
    }


def search_time(n: int, seed: int = 0) -> tuple[float, float, int]:
    """Seconds of the search and of the whole check over n photo-like random images (none copies)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(n, 8, 8), dtype=np.uint8).astype(np.float32)
    # Smooth 32 x 32 thumbnails: upsampled 8 x 8 noise, the structure real photos' thumbnails have.
    thumbs = np.repeat(np.repeat(base, 4, axis=1), 4, axis=2).astype(np.uint8)
    prints = Fingerprints(thumbs, np.full(n, 128, np.int64))
    started = time.perf_counter()
    rows, _, _ = copies.search(prints, prints, same=True)
    searched = time.perf_counter() - started
    copies.find_copies(prints, prints, same=True)
    return searched, time.perf_counter() - started - searched, len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--copies", type=int, default=300, help="images of each set given one copy per transform"
    )
    parser.add_argument("--sizes", type=int, nargs="*", default=[5400, 100000], help="search-time set sizes")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()
    threads = set_threads(args.threads)
    results = [
        measure_set("digits", *digits(), args.copies, 0),
        measure_set("emoji", *emoji(), args.copies, 1),
    ]
    header = ["set", "images (classes)", *TRANSFORMS, "all copies", "distinct pairs flagged"]
    rows = []
    for r in results:
        caught = sum(c for c, _, _ in r["per_kind"].values())
        total = sum(n for _, n, _ in r["per_kind"].values())
        rows.append(
            [
                r["name"],
                f"{r['images']} ({r['classes']})",
                *(f"{100 * c / n:.1f}%" for c, n, _ in r["per_kind"].values()),
                f"{100 * caught / total:.2f}% of {total}",
                f"{len(r['false'])} of {r['negatives']} ({100 * len(r['false']) / r['negatives']:.3f}%)",
            ]
        )
    body = [markdown_table(header, rows), ""]
    body.append(f"Thresholds (aligned correlation by comparison side): {copies.THRESHOLDS}.")
    for r in results:
        body.append(
            f"- {r['name']}: whole check over the set {r['seconds']:.1f} s; closest distinct same-class pairs "
            f"by side {r['closest_distinct']}; 1st percentile of planted copies by side "
            f"{ {k: round(v, 4) for k, v in r['planted_by_side'].items()} }; by transform "
            f"{ {k: round(q, 4) for k, (_, _, q) in r['per_kind'].items()} }."
        )
    timing = []
    for n in args.sizes:
        searched, confirmed, candidates = search_time(n)
        timing.append([f"{n:,}", f"{searched:.1f}", f"{confirmed:.1f}", f"{candidates:,}"])
    body += ["", markdown_table(["images", "search s", "confirm s", "candidate pairs"], timing)]
    text = "\n".join(body)
    print(text)
    if not args.no_record:
        append_results(
            "Near-copy detection: planted copies and distinct pairs",
            command_line(),
            describe_machine(threads),
            text,
        )


if __name__ == "__main__":
    main()

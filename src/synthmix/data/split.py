"""The seeded per-class split: train, test, extra real images and the generator's own pool.

Each class's images are shuffled by (data.seed, class) and dealt out in order: `train_per_class`
training images (nested ranks: 15 of them are among the first 30), then `test_per_class` test images,
then up to `extra_per_class` extra real images for the extra-real control (e.g. 60r0s), then up to
`pool_per_class` images the generator alone learns from, neither trained on nor tested by the
classifier. Every split is checked against every other and against itself: an image that is a
near-copy (data/copies.py) of one already dealt, in any split or class, is skipped and listed in
rejected.csv with its twin and both scores. A class short of train + test images fails (or is dropped);
short extra or pool images are only recorded in split.json, where `SplitSummary` reads them: a mix
the data cannot serve is skipped and the report says why; a pool too small for any class means the
generator learns from the training split instead.
"""

from __future__ import annotations

import hashlib
import json
import random
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np

from synthmix.core.errors import UserError
from synthmix.core.files import write_json
from synthmix.data import copies
from synthmix.data.copies import Fingerprints
from synthmix.data.real import (
    ImageRecord,
    Rejection,
    SplitRow,
    validate_tree,
    write_manifest,
    write_rejections,
)

SPLITS = ("train", "test", "extra", "pool")


class _HasRealCount(Protocol):
    real: int


M = TypeVar("M", bound=_HasRealCount)
SUMMARY_NAME = "split.json"


@dataclass(frozen=True)
class SplitSizes:
    """Images per class asked of each split (data.*_per_class)."""

    train: int
    test: int
    extra: int = 0
    pool: int = 0


@dataclass(frozen=True)
class SplitSummary:
    """What prepare could give each class: split.json, read by train, generate and the report."""

    asked: SplitSizes
    counts: dict[str, dict[str, int]]  # class -> split -> images

    def shortfall(self, split: str, needed: int) -> dict[str, int]:
        """Classes with fewer than `needed` images in `split`, with their count."""
        return {c: n[split] for c, n in sorted(self.counts.items()) if n[split] < needed}

    def extra_shortfall(self, extra_needed: int) -> str | None:
        """Why a mix needing `extra_needed` extra real images a class cannot run, or None if it can."""
        if extra_needed <= 0:
            return None
        short = self.shortfall("extra", extra_needed)
        if not short:
            return None
        listing = ", ".join(f"'{c}' has {n}" for c, n in list(short.items())[:5])
        more = f" and {len(short) - 5} more" if len(short) > 5 else ""
        return (
            f"it needs {extra_needed} real images a class beyond the {self.asked.train} training and "
            f"{self.asked.test} test ones, and {len(short)} of {len(self.counts)} classes have fewer "
            f"({listing}{more}). Add real images to those classes to run it."
        )

    @property
    def generator_pool(self) -> bool:
        """Whether every class has its full pool, so the generator learns from images the classifier
        never sees; else it learns from the training split."""
        return self.asked.pool > 0 and not self.shortfall("pool", self.asked.pool)

    def generator_note(self) -> str:
        """One sentence saying which real images the generator learns from, and why."""
        if self.generator_pool:
            return (
                f"The generator learns from a pool of {self.asked.pool} real images a class that the "
                "classifier never sees (neither trains nor tests on)."
            )
        if self.asked.pool == 0:
            reason = "data.pool_per_class is 0"
        else:
            short = self.shortfall("pool", self.asked.pool)
            reason = (
                f"the data has no room for a pool of {self.asked.pool} images a class ({len(short)} of "
                f"{len(self.counts)} classes have fewer after the training, test and extra images)"
            )
        return (
            f"The generator learns from the classifier's own training split, since {reason}: its images "
            "carry no knowledge from outside the real training images."
        )

    def to_json(self) -> dict[str, object]:
        return {"asked": self.asked.__dict__, "classes": self.counts}


def runnable(
    mixes: Sequence[M], prepared_dir: Path, train_per_class: int, must_run: Sequence[M] = ()
) -> list[M]:
    """`mixes` less those the prepared split cannot serve (more real images a class than the training
    and extra splits hold), each skipped with a warning that says why; the report names them too. A mix
    in `must_run` (asked for by name, or the baseline) that cannot run is a UserError instead."""
    if all(mix.real <= train_per_class for mix in mixes):
        return list(mixes)
    summary = read_split_summary(prepared_dir)
    kept = []
    for mix in mixes:
        reason = summary.extra_shortfall(mix.real - train_per_class)
        if reason is None:
            kept.append(mix)
        elif mix in must_run:
            raise UserError(f"Mix {mix} cannot run: {reason}")
        else:
            warnings.warn(f"Mix {mix} is skipped: {reason}", stacklevel=3)
    return kept


def read_split_summary(prepared_dir: Path) -> SplitSummary:
    path = prepared_dir / SUMMARY_NAME
    if not path.exists():
        raise UserError(f"{path} is missing. Rerun `synthmix prepare` (or `dvc repro prepare`) to write it.")
    raw = json.loads(path.read_text())
    return SplitSummary(SplitSizes(**raw["asked"]), {c: dict(n) for c, n in raw["classes"].items()})


def capacity_warnings(counts: dict[str, int], sizes: SplitSizes, drop_small_classes: bool) -> list[str]:
    """One warning per class the configured split cannot fully serve, naming it, its image count and
    what the split needs (smallest first): said at import, before prepare fails or skips anything."""
    needed = sizes.train + sizes.test
    split = f"data.train_per_class {sizes.train} + data.test_per_class {sizes.test}"
    outcome = (
        "prepare will drop it (data.drop_small_classes is true)"
        if drop_small_classes
        else "prepare will stop on it: add images, lower those two, or set data.drop_small_classes: true"
    )
    out = []
    for label, count in sorted(counts.items(), key=lambda item: (item[1], item[0])):
        if count < needed:
            out.append(f"Class '{label}' has {count} images; the split needs {needed} ({split}): {outcome}.")
        elif sizes.extra and count < needed + sizes.extra:
            out.append(
                f"Class '{label}' has {count} images; the extra-real control needs {needed + sizes.extra} "
                f"({split} + data.extra_per_class {sizes.extra}): mixes with more real images than "
                f"{sizes.train} a class (e.g. {sizes.train + sizes.extra}r0s) "
                "will be skipped."
            )
        elif sizes.pool and count < needed + sizes.extra + sizes.pool:
            out.append(
                f"Class '{label}' has {count} images; the generator's pool needs "
                f"{needed + sizes.extra + sizes.pool} (+ data.pool_per_class {sizes.pool}): without it the "
                "generator learns from the training split, and the report says so."
            )
    return out


def split_records(
    records: Sequence[ImageRecord], sizes: SplitSizes, seed: int, drop_small_classes: bool = False
) -> tuple[list[SplitRow], list[Rejection]]:
    """The seeded split of `records` (see the module docstring), and the images left out as copies.

    The order depends only on the seed, the class name and the content hashes (not on file names or
    listing order).
    """
    orders: dict[str, list[ImageRecord]] = defaultdict(list)
    for record in sorted(records, key=lambda r: r.sha256):
        orders[record.label].append(record)
    for label in orders:
        random.Random(_class_seed(seed, label)).shuffle(orders[label])
    dealer = _Dealer([r for order in orders.values() for r in order])
    trains, tests, rests = {}, {}, {}
    for label, order in orders.items():
        trains[label], rests[label] = dealer.deal(order, sizes.train, "train")
    for label in orders:
        tests[label], rests[label] = dealer.deal(rests[label], sizes.test, "test")
    needed = sizes.train + sizes.test
    small = {
        c: len(o) - dealer.lost(c)
        for c, o in orders.items()
        if len(trains[c]) < sizes.train or len(tests[c]) < sizes.test
    }
    if small and not drop_small_classes:
        listing = "; ".join(f"class '{label}' has {count}" for label, count in sorted(small.items()))
        raise UserError(
            f"Too few usable images for a {sizes.train}/{sizes.test} split ({needed} per class "
            f"needed; near-copies of another image do not count, see data/copies.py): {listing}. Add "
            "images to those classes, lower data.train_per_class / data.test_per_class in params.yaml, or "
            "set data.drop_small_classes: true to leave them out."
        )
    for label in sorted(small):
        warnings.warn(
            f"Dropping class '{label}': {small[label]} usable images, {needed} needed "
            "(data.drop_small_classes is true).",
            stacklevel=2,
        )
    kept_classes = sorted(set(orders) - set(small))
    if len(kept_classes) < 2:
        raise UserError(
            f"Only {len(kept_classes)} class(es) have enough images for the split; a classifier needs at "
            "least 2. Add images or lower data.train_per_class / data.test_per_class."
        )
    rows: list[SplitRow] = []
    for label in kept_classes:
        extra, rest = dealer.deal(rests[label], sizes.extra, "extra")
        pool, _ = dealer.deal(rest, sizes.pool, "pool")
        parts = {"train": trains[label], "test": tests[label], "extra": extra, "pool": pool}
        for split, records_of_split in parts.items():
            rows += [
                SplitRow(r.path, label, r.sha256, split, rank) for rank, r in enumerate(records_of_split)
            ]
    return rows, dealer.rejections(set(kept_classes))


class _Dealer:
    """Deals images into splits, skipping each near-copy of an image already dealt (in any split or
    class): copies are grouped once over every image (`copies.groups`)."""

    def __init__(self, records: Sequence[ImageRecord]) -> None:
        self.records = list(records)
        self.index = {id(r): i for i, r in enumerate(self.records)}
        self.prints = Fingerprints.stack([(r.thumb, r.side) for r in self.records])
        self.group = copies.groups(self.prints)
        self.dealt: dict[int, tuple[int, str]] = {}  # group -> (the image dealt, its split)
        self.skipped: list[tuple[int, int, str]] = []  # (image, the twin dealt, the twin's split)

    def deal(
        self, candidates: Sequence[ImageRecord], count: int, split: str
    ) -> tuple[list[ImageRecord], list[ImageRecord]]:
        """The first `count` candidates that copy no image dealt so far, and the candidates not reached."""
        chosen: list[ImageRecord] = []
        for position, record in enumerate(candidates):
            if len(chosen) == count:
                return chosen, list(candidates[position:])
            i = self.index[id(record)]
            twin = self.dealt.get(self.group[i])
            if twin is None:
                self.dealt[self.group[i]] = (i, split)
                chosen.append(record)
            else:
                self.skipped.append((i, *twin))
        return chosen, []

    def lost(self, label: str) -> int:
        return sum(self.records[i].label == label for i, _, _ in self.skipped)

    def rejections(self, classes: set[str]) -> list[Rejection]:
        """Each skipped copy of a kept class, naming its twin and the pair's two scores."""
        skipped = [s for s in self.skipped if self.records[s[0]].label in classes]
        images, twins = [i for i, _, _ in skipped], [t for _, t, _ in skipped]
        pair_scores = copies.scores(self.prints, images, self.prints, twins)
        direct = copies.is_copy(
            np.array([aligned for _, aligned in pair_scores]),
            self.prints.sides[images],
            self.prints.sides[twins],
        )
        out = []
        for (i, t, split), (search, aligned), joined in zip(skipped, pair_scores, direct, strict=True):
            record, twin = self.records[i], self.records[t]
            where = f"{split} split" + (f", class '{twin.label}'" if twin.label != record.label else "")
            through = "" if joined else ", joined to it through another copy"
            why = f"near-copy of {twin.path.as_posix()} ({where}; aligned correlation {aligned:.4f}{through})"
            out.append(Rejection(record.path, why, twin.path, split, search, aligned))
        return out


def copy_losses(rejected: Sequence[Rejection]) -> dict[str, dict[str, int]]:
    """Class -> the split of the twin -> images of that class left out as its near-copies."""
    losses: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in rejected:
        if r.copy_split is not None:
            losses[r.path.parent.name][r.copy_split] += 1
    return {label: dict(by_split) for label, by_split in sorted(losses.items())}


def describe_losses(losses: dict[str, dict[str, int]], limit: int = 10) -> list[str]:
    """One line per class that lost images as near-copies, most first: how many, and copies of what."""
    ranked = sorted(losses.items(), key=lambda item: (-sum(item[1].values()), item[0]))
    lines = [
        f"Class '{label}' lost {sum(by.values())} image(s) as near-copies ("
        + ", ".join(
            f"{n} of {'an' if split[0] in 'aeiou' else 'a'} {split} image" for split, n in sorted(by.items())
        )
        + ")."
        for label, by in ranked[:limit]
    ]
    if len(ranked) > limit:
        lines.append(f"... and {len(ranked) - limit} more classes (prepared/rejected.csv lists every pair).")
    return lines


def _class_seed(seed: int, label: str) -> int:
    # Per-class seeds: adding or dropping one class leaves every other class's split unchanged.
    return int.from_bytes(hashlib.sha256(f"{seed}:{label}".encode()).digest()[:8], "big")


def prepare_split(
    data_dir: Path,
    out_dir: Path,
    sizes: SplitSizes,
    seed: int,
    drop_small_classes: bool = False,
) -> tuple[list[SplitRow], list[Rejection]]:
    """Validate the real set; write train.csv, test.csv, extra.csv, pool.csv, split.json and
    rejected.csv (every file left out, with the reason)."""
    if not data_dir.exists():
        raise UserError(
            f"The real image folder {data_dir} does not exist. Run `synthmix data default` for the "
            f"embedded digits, `synthmix data import PATH` for your own images, or `dvc pull`."
        )
    records, rejected = validate_tree(data_dir)
    rows, near_copies = split_records(records, sizes, seed, drop_small_classes)
    rejected += near_copies
    for split in SPLITS:
        write_manifest([r for r in rows if r.split == split], out_dir / f"{split}.csv")
    counts = {label: dict.fromkeys(SPLITS, 0) for label in sorted({r.label for r in rows})}
    for row in rows:
        counts[row.label][row.split] += 1
    write_json(SplitSummary(sizes, counts).to_json(), out_dir / SUMMARY_NAME)
    write_rejections(rejected, out_dir / "rejected.csv")
    return rows, rejected

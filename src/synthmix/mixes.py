"""Real/synthetic mixes: the `<N>r<M>s` notation, parsed in exactly one place."""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from synthmix.errors import UserError

if TYPE_CHECKING:
    from synthmix.data import SplitRow
    from synthmix.generate.manifest import SyntheticRow

T = TypeVar("T")
_MIX_PATTERN = re.compile(r"^(\d+)r(\d+)s$")


@dataclass(frozen=True, order=True)
class Mix:
    """`real` real and `synthetic` generated training images per class, e.g. 30r15s."""

    real: int
    synthetic: int

    @classmethod
    def parse(cls, text: str) -> Mix:
        match = _MIX_PATTERN.match(str(text).strip())
        if not match:
            raise UserError(
                f"Mix '{text}' is malformed. Write a mix as <N>r<M>s, N real and M synthetic training "
                "images per class, e.g. 30r15s or 0r30s."
            )
        mix = cls(int(match.group(1)), int(match.group(2)))
        if mix.real + mix.synthetic == 0:
            raise UserError(f"Mix '{text}' has no training images; use at least one real or synthetic image.")
        return mix

    @property
    def name(self) -> str:
        return f"{self.real}r{self.synthetic}s"

    def __str__(self) -> str:
        return self.name

    def check_feasible(self, train_per_class: int, synthetic_per_class: int) -> None:
        """Fail before any work when the mix asks for more images than a class has."""
        if self.real > train_per_class:
            raise UserError(
                f"Mix {self.name} asks for {self.real} real training images per class, but the split has "
                f"only {train_per_class} (data.train_per_class in params.yaml). Lower the mix's real "
                f"count to at most {train_per_class} or raise data.train_per_class."
            )
        if self.synthetic > synthetic_per_class:
            raise UserError(
                f"Mix {self.name} asks for {self.synthetic} synthetic images per class, but generation makes "
                f"only {synthetic_per_class} (generate.images_per_class in params.yaml). Lower the mix's "
                f"synthetic count or raise generate.images_per_class."
            )


# --- the training set of a mix --------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingImage:
    """One image of a mix's training set; `source` is 'real' or 'synthetic'."""

    path: Path
    label: str
    sha256: str
    source: str


REDRAWABLE = ("real_subset", "synthetic_subset")  # what a replicate may draw afresh (study.redraw)


@dataclass(frozen=True)
class Draw:
    """Which images a replicate takes: its seed, and which subsets it draws afresh from it.

    A subset not redrawn is the fixed one (real training ranks < N, synthetic indices < M). A redrawn
    subset is the first N (or M) of the class's images in an order shuffled by (seed, class): every mix
    of one replicate shares that order, so mixes stay nested and pairs stay paired, while replicates
    differ in which real and synthetic images a partial mix holds.
    """

    seed: int = 0
    redraw: tuple[str, ...] = ()

    def order(self, items: Sequence[T], label: str, part: str) -> list[T]:
        if part not in self.redraw:
            return list(items)
        key = hashlib.sha256(f"{self.seed}:{label}:{part}".encode()).digest()[:8]
        shuffled = list(items)
        random.Random(int.from_bytes(key, "big")).shuffle(shuffled)
        return shuffled


def training_images(
    real_rows: Sequence[SplitRow], synthetic_rows: Sequence[SyntheticRow], mix: Mix, draw: Draw = Draw()
) -> list[TrainingImage]:
    """The training set of `mix`: per class, N real training images and M usable synthetic ones.

    Without redrawing (the default Draw) these are real ranks < N and the M lowest usable synthetic
    indices (SyntheticRow.usable: not blocked, not a near-copy of a test image). Nested by
    construction within one draw: a larger mix only adds images. Raises a UserError naming the class
    when a class has fewer images than the mix asks for (e.g. a synthetic set generated with fewer).
    """
    classes = sorted({r.label for r in real_rows if r.split == "train"})
    real_by_class: dict[str, list[SplitRow]] = {c: [] for c in classes}
    for r in real_rows:
        if r.split == "train":
            real_by_class[r.label].append(r)
    synth_by_class: dict[str, list[SyntheticRow]] = {c: [] for c in classes}
    for s in synthetic_rows:
        if s.label in synth_by_class and s.usable:  # never a blocked image or a copy of a test image
            synth_by_class[s.label].append(s)
    images: list[TrainingImage] = []
    for label in classes:
        real = draw.order(sorted(real_by_class[label], key=lambda r: r.rank), label, "real_subset")
        synth = draw.order(sorted(synth_by_class[label], key=lambda s: s.index), label, "synthetic_subset")
        if len(real) < mix.real:
            raise UserError(
                f"Mix {mix.name} needs {mix.real} real training images of class '{label}', but the split "
                f"has {len(real)}. Lower the mix's real count or rerun `synthmix prepare`."
            )
        if len(synth) < mix.synthetic:
            raise UserError(
                f"Mix {mix.name} needs {mix.synthetic} synthetic images of class '{label}', but the "
                f"synthetic set has {len(synth)} usable ones (blocked images and near-copies of test images "
                "are left out; synthetic/manifest.csv flags them). Rerun `synthmix generate` with a larger "
                f"generate.images_per_class than {mix.synthetic}."
            )
        # Within a class, images keep a canonical order (rank, index) whatever the draw.
        images += [
            TrainingImage(r.path, label, r.sha256, "real")
            for r in sorted(real[: mix.real], key=lambda r: r.rank)
        ]
        images += [
            TrainingImage(s.path, label, s.sha256, "synthetic")
            for s in sorted(synth[: mix.synthetic], key=lambda s: s.index)
        ]
    return images

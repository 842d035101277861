"""Mixes: the `<N>r<M>s` / `<N>r<K>a` notation (`-<generator>`, `@<vetting>` and `+aug` suffixes), parsed
in one place."""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from synthmix.core.errors import UserError

if TYPE_CHECKING:
    from synthmix.data.real import SplitRow
    from synthmix.generate.manifest import SyntheticRow

T = TypeVar("T")
GENERATOR_NAME = r"[a-z0-9][a-z0-9_]*"  # generate.generators' keys: lower case, digits, underscores
_MIX_PATTERN = re.compile(rf"^(\d+)r(\d+)([sa])(?:-({GENERATOR_NAME}))?(?:@([a-z0-9_]*))?(\+aug)?$")
ONLINE_SUFFIX = "+aug"
# How a mix's synthetic images are vetted (the @ suffix): `filtered` leaves out the images any of
# quality.filters rejects (the quality stage's quality/filters.csv), `reviewed` those a person rejected
# on the review page (vetting/decisions.csv), `vetted` both. Rejected images are skipped and the next
# ones of the replicate's block taken.
VETTINGS = ("filtered", "reviewed", "vetted")
_NOTATION = (
    "Write a mix as <N>r<M>s (N real and M synthetic training images per class, e.g. 30r15s), "
    "<N>r<K>a (N real images and K augmented copies of them per class, the augmentation control, e.g. "
    "30r30a), optionally followed by -<generator> to take the synthetic images of another generator of "
    "generate.generators than the first (e.g. 30r15s-sd15), by @filtered, @reviewed or @vetted to leave out "
    "the synthetic images the automatic filters, a reviewer or either rejected (e.g. 30r15s@filtered), and "
    "by +aug to augment every training image on the fly (e.g. 30r30s+aug)."
)


@dataclass(frozen=True, order=True)
class Mix:
    """Per class: `real` real images, `synthetic` generated ones, `augmented` augmented copies of the
    real ones (train.augment's policy, drawn once per replicate), whether every training image is
    augmented afresh each epoch (`online_augment`), which generator's images it takes (`generator`,
    "" for the first of generate.generators) and which of them it leaves out (`vetting`, one of VETTINGS,
    "" for none). E.g. 30r15s, 30r30a, 30r0s+aug, 30r15s-sd15, 30r15s@filtered."""

    real: int
    synthetic: int
    augmented: int = 0
    online_augment: bool = False
    generator: str = ""
    vetting: str = ""

    def __post_init__(self) -> None:
        if self.synthetic and self.augmented:
            raise ValueError("a mix holds synthetic images or augmented copies, not both")

    @classmethod
    def parse(cls, text: str) -> Mix:
        match = _MIX_PATTERN.match(str(text).strip())
        if not match:
            raise UserError(f"Mix '{text}' is malformed. {_NOTATION}")
        count, extra, kind, generator, vetting, online = (
            int(match.group(1)),
            int(match.group(2)),
            match.group(3),
            match.group(4) or "",
            match.group(5),
            bool(match.group(6)),
        )
        if vetting is not None and vetting not in VETTINGS:
            raise UserError(
                f"Mix '{text}' names vetting '@{vetting}'; a mix is vetted by one of "
                f"{', '.join('@' + v for v in VETTINGS)}. {_NOTATION}"
            )
        if vetting and (kind != "s" or not extra):
            raise UserError(
                f"Mix '{text}' vets its synthetic images (@{vetting}) but takes none. Vet only a mix with "
                f"synthetic images, e.g. {count}r{extra or 15}s@{vetting}."
            )
        if generator and (kind != "s" or not extra):
            raise UserError(
                f"Mix '{text}' names generator '{generator}' but takes no synthetic image. Name a generator "
                f"only on a mix with synthetic images, e.g. {count}r{extra or 15}s-{generator}."
            )
        mix = (
            cls(count, extra, 0, online, generator, vetting or "")
            if kind == "s"
            else cls(count, 0, extra, online)
        )
        if mix.real + mix.synthetic + mix.augmented == 0:
            raise UserError(f"Mix '{text}' has no training images; use at least one real or synthetic image.")
        if mix.augmented and not mix.real:
            raise UserError(
                f"Mix '{text}' asks for augmented copies of no real images. An <N>r<K>a mix needs N >= 1, "
                "e.g. 30r30a."
            )
        return mix

    @property
    def name(self) -> str:
        base = f"{self.real}r{self.augmented}a" if self.augmented else f"{self.real}r{self.synthetic}s"
        return (
            base
            + (f"-{self.generator}" if self.generator else "")
            + (f"@{self.vetting}" if self.vetting else "")
            + (ONLINE_SUFFIX if self.online_augment else "")
        )

    def with_generator(self, generator: str) -> Mix:
        """The same counts with another generator's synthetic images ("" for the first generator)."""
        return Mix(self.real, self.synthetic, self.augmented, self.online_augment, generator, self.vetting)

    def with_vetting(self, vetting: str) -> Mix:
        """The same mix with its synthetic images vetted by `vetting` ("" for none)."""
        return Mix(self.real, self.synthetic, self.augmented, self.online_augment, self.generator, vetting)

    def __str__(self) -> str:
        return self.name

    @property
    def real_only(self) -> bool:
        """Real images and nothing else: no synthetic image, no augmented copy, no online augmentation."""
        return not (self.synthetic or self.augmented or self.online_augment)

    @property
    def augments(self) -> bool:
        """Whether training sees augmented images: copies (<N>r<K>a) or on-the-fly (+aug)."""
        return bool(self.augmented or self.online_augment)

    @property
    def images_per_class(self) -> int:
        return self.real + self.synthetic + self.augmented

    def check_feasible(
        self, train_per_class: int, synthetic_per_class: int, extra_per_class: int = 0
    ) -> None:
        """Fail before any work when the mix asks for more images than the settings can ever give.

        Real counts above train_per_class take the extra real images (data.extra_per_class) held for
        the extra-real control; whether the data set has them is known only after `prepare`
        (data.SplitSummary.shortfall), and a mix it cannot serve is skipped, not failed.
        """
        if self.real > train_per_class + extra_per_class:
            raise UserError(
                f"Mix {self.name} asks for {self.real} real training images per class, but the split holds "
                f"{train_per_class} (data.train_per_class) plus {extra_per_class} extra ones for the "
                f"extra-real control (data.extra_per_class) in params.yaml. Lower the mix's real count to "
                f"at most {train_per_class + extra_per_class} or raise data.extra_per_class."
            )
        if self.synthetic > synthetic_per_class:
            raise UserError(
                f"Mix {self.name} asks for {self.synthetic} synthetic images per class, but generation makes "
                f"only {synthetic_per_class} (generate.images_per_class in params.yaml). Lower the mix's "
                f"synthetic count or raise generate.images_per_class."
            )
        if self.augmented and self.real > train_per_class:
            raise UserError(
                f"Mix {self.name} augments extra real images; an augmentation control copies the study's "
                f"own real images, so use at most {train_per_class} real (data.train_per_class)."
            )


# --- the training set of a mix --------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingImage:
    """One image of a mix's training set; `source` is 'real', 'synthetic' or 'augmented' (a copy of the
    real image at `path`, transformed by train.augment's policy drawn from `augment_seed`)."""

    path: Path
    label: str
    sha256: str
    source: str
    augment_seed: int | None = None


# What a replicate may draw afresh (study.redraw): which real images a partial mix holds, which
# synthetic images of the pool it takes, and the generator's sampling seed (its own block of the pool).
REDRAWABLE = ("real_subset", "synthetic_subset", "generator_seed")


def _seed(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:8], "big") >> 1


@dataclass(frozen=True)
class Draw:
    """Which images a replicate takes: its seed, and which subsets it draws afresh from it.

    A subset not redrawn is the fixed one (real training ranks < N, synthetic indices < M). A redrawn
    subset is the first N (or M) of the class's images in an order shuffled by (seed, class): every mix
    of one replicate shares that order, so mixes stay nested and pairs stay paired, while replicates
    differ in which real and synthetic images a partial mix holds. With `block_size` > 0 the replicate
    takes only synthetic indices in [block * block_size, (block + 1) * block_size): images sampled
    with seeds no other replicate uses (the generator's sampling seed redrawn).
    """

    seed: int = 0
    redraw: tuple[str, ...] = ()
    block: int = 0
    block_size: int = 0  # 0: the whole synthetic set is one pool shared by every replicate

    def order(self, items: Sequence[T], label: str, part: str) -> list[T]:
        if part not in self.redraw:
            return list(items)
        shuffled = list(items)
        random.Random(_seed(self.seed, label, part)).shuffle(shuffled)
        return shuffled

    def in_block(self, index: int) -> bool:
        return (
            not self.block_size or self.block * self.block_size <= index < (self.block + 1) * self.block_size
        )

    def augment_seed(self, label: str, copy: int) -> int:
        """The seed of augmented copy `copy` of class `label` in this replicate."""
        return _seed("augment", self.seed, label, copy)


def training_images(
    real_rows: Sequence[SplitRow],
    synthetic_rows: Sequence[SyntheticRow],
    mix: Mix,
    draw: Draw = Draw(),
    rejected: frozenset[str] = frozenset(),
) -> list[TrainingImage]:
    """The training set of `mix`: per class, N real images, M usable synthetic ones, K augmented copies.

    Real images are the class's training split (rows with split 'train', in the draw's order) and,
    past it, its extra real images (split 'extra', by rank) for the extra-real control. Without
    redrawing (the default Draw) these are real ranks < N and the M lowest usable synthetic indices
    of the draw's block (SyntheticRow.usable: not blocked, not a near-copy of a test image). Copy j of
    K comes from the mix's real image j mod N. Nested within one draw: a larger mix only adds images.
    `rejected` holds the sha256 of the synthetic images the mix's vetting leaves out: they are skipped
    and the next of the block taken; when too few remain, the class takes the ones left (the run
    records how many synthetic images it held, and the report says which mixes came up short).
    Raises a UserError naming the class when a class has fewer images than the mix asks for before
    vetting.
    """
    classes = sorted({r.label for r in real_rows if r.split == "train"})
    core: dict[str, list[SplitRow]] = {c: [] for c in classes}
    extra: dict[str, list[SplitRow]] = {c: [] for c in classes}
    for r in real_rows:
        if r.label in core and r.split in ("train", "extra"):
            (core if r.split == "train" else extra)[r.label].append(r)
    synth_by_class: dict[str, list[SyntheticRow]] = {c: [] for c in classes}
    for s in synthetic_rows:
        # never a blocked image or a copy of a test image; only the replicate's own block
        if s.label in synth_by_class and s.usable and draw.in_block(s.index):
            synth_by_class[s.label].append(s)
    images: list[TrainingImage] = []
    for label in classes:
        drawn = draw.order(sorted(core[label], key=lambda r: r.rank), label, "real_subset")
        real = drawn + sorted(extra[label], key=lambda r: r.rank)
        synth = draw.order(sorted(synth_by_class[label], key=lambda s: s.index), label, "synthetic_subset")
        if len(real) < mix.real:
            raise UserError(
                f"Mix {mix.name} needs {mix.real} real training images of class '{label}', but the split "
                f"has {len(drawn)} training and {len(extra[label])} extra ones. Lower the mix's real count, "
                "or raise data.extra_per_class and rerun `synthmix prepare` on a set with more images."
            )
        if len(synth) < mix.synthetic:
            raise UserError(
                f"Mix {mix.name} needs {mix.synthetic} synthetic images of class '{label}', but the "
                f"synthetic set has {len(synth)} usable ones (blocked images and near-copies of test images "
                "are left out; synthetic/manifest.csv flags them). Rerun `synthmix generate` with a larger "
                f"generate.images_per_class than {mix.synthetic}."
            )
        synth = [s for s in synth if s.sha256 not in rejected]
        # Within a class, images keep a canonical order (split, rank; index) whatever the draw.
        chosen = sorted(real[: mix.real], key=lambda r: (r.split != "train", r.rank))
        images += [TrainingImage(r.path, label, r.sha256, "real") for r in chosen]
        images += [
            TrainingImage(s.path, label, s.sha256, "synthetic")
            for s in sorted(synth[: mix.synthetic], key=lambda s: s.index)
        ]
        images += [
            TrainingImage(r.path, label, r.sha256, "augmented", draw.augment_seed(label, j))
            for j, r in ((j, chosen[j % len(chosen)]) for j in range(mix.augmented))
        ]
    return images

"""The <N>r<M>s notation, and which images a mix's training set holds in each replicate."""

from pathlib import Path

import pytest

from synthmix.data import SplitRow
from synthmix.errors import UserError
from synthmix.generate.manifest import SyntheticRow
from synthmix.mixes import REDRAWABLE, Draw, Mix, training_images


@pytest.mark.parametrize("text,real,synthetic", [("30r15s", 30, 15), ("0r30s", 0, 30), (" 30r0s ", 30, 0)])
def test_parse_reads_real_and_synthetic_counts(text, real, synthetic):
    mix = Mix.parse(text)
    assert (mix.real, mix.synthetic) == (real, synthetic)
    assert mix.name == text.strip()


@pytest.mark.parametrize("text", ["30x", "r15s", "30r", "30r15", "30R15S", "-1r2s", "0r0s", ""])
def test_malformed_mix_is_a_user_error_that_shows_the_notation(text):
    with pytest.raises(UserError, match=r"<N>r<M>s|no training images"):
        Mix.parse(text)


def test_infeasible_mix_names_the_limit_and_the_parameter():
    with pytest.raises(UserError, match=r"45 real .* only 30 .*data.train_per_class"):
        Mix.parse("45r30s").check_feasible(train_per_class=30, synthetic_per_class=30)
    with pytest.raises(UserError, match=r"generate.images_per_class"):
        Mix.parse("30r60s").check_feasible(train_per_class=30, synthetic_per_class=30)
    Mix.parse("30r30s").check_feasible(train_per_class=30, synthetic_per_class=30)


# --- a mix's training set, and what a replicate redraws -------------------------------------------

CLASSES = ("a", "b")


def _real() -> list[SplitRow]:
    return [
        SplitRow(Path(f"data/{c}/{r}.png"), c, f"{c}{r:063d}", "train", r) for c in CLASSES for r in range(10)
    ]


def _synthetic() -> list[SyntheticRow]:
    return [
        SyntheticRow(
            Path(f"synthetic/{c}/{i:04d}.png"), c, i, i, "g", "m", "", "", 1, 1.0, 0, f"s{c}{i:062d}"
        )
        for c in CLASSES
        for i in range(8)
    ]


def _names(images, source: str, label: str = "a") -> list[str]:
    return [t.path.name for t in images if t.source == source and t.label == label]


def test_without_redrawing_a_mix_takes_the_first_ranks_and_indices():
    images = training_images(_real(), _synthetic(), Mix(4, 3))
    assert _names(images, "real") == ["0.png", "1.png", "2.png", "3.png"]
    assert _names(images, "synthetic") == ["0000.png", "0001.png", "0002.png"]


def test_a_replicate_redraws_partial_subsets_and_keeps_its_mixes_nested():
    draws = [Draw(seed, REDRAWABLE) for seed in range(4)]
    partial = [training_images(_real(), _synthetic(), Mix(4, 3), d) for d in draws]
    larger = [training_images(_real(), _synthetic(), Mix(7, 6), d) for d in draws]
    # other replicates hold other real and synthetic images ...
    assert len({tuple(_names(p, "real")) for p in partial}) > 1
    assert len({tuple(_names(p, "synthetic")) for p in partial}) > 1
    # ... but within one replicate a larger mix only adds images, and counts are exact per class
    for small, big in zip(partial, larger, strict=True):
        assert {t.path for t in small} <= {t.path for t in big}
        assert len(_names(small, "real", "b")) == 4 and len(_names(small, "synthetic", "b")) == 3
    # the same seed draws the same subsets (replicates are reproducible)
    assert training_images(_real(), _synthetic(), Mix(4, 3), Draw(2, REDRAWABLE)) == partial[2]
    # a mix that takes every image has nothing to redraw
    full = {tuple(t.path for t in training_images(_real(), _synthetic(), Mix(10, 8), d)) for d in draws}
    assert len(full) == 1


def test_only_the_named_subsets_are_redrawn():
    images = [training_images(_real(), _synthetic(), Mix(4, 3), Draw(s, ("real_subset",))) for s in range(4)]
    assert all(_names(i, "synthetic") == ["0000.png", "0001.png", "0002.png"] for i in images)
    assert len({tuple(_names(i, "real")) for i in images}) > 1

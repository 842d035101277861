"""The <N>r<M>s notation, and which images a mix's training set holds in each replicate."""

from pathlib import Path

import pytest

from synthmix.core.errors import UserError
from synthmix.data.mixes import REDRAWABLE, Draw, Mix, training_images
from synthmix.data.real import SplitRow
from synthmix.generate.manifest import SyntheticRow


@pytest.mark.parametrize("text,real,synthetic", [("30r15s", 30, 15), ("0r30s", 0, 30), (" 30r0s ", 30, 0)])
def test_parse_reads_real_and_synthetic_counts(text, real, synthetic):
    mix = Mix.parse(text)
    assert (mix.real, mix.synthetic) == (real, synthetic)
    assert mix.name == text.strip()


@pytest.mark.parametrize(
    "text", ["30x", "r15s", "30r", "30r15", "30R15S", "-1r2s", "0r0s", "", "0r30a", "30r30s+", "30r30a30s"]
)
def test_malformed_mix_is_a_user_error_that_shows_the_notation(text):
    with pytest.raises(UserError, match=r"<N>r<M>s|no training images|augmented copies of no real"):
        Mix.parse(text)


@pytest.mark.parametrize(
    ("text", "fields"),
    [
        ("30r15s", (30, 15, 0, False)),
        ("30r30a", (30, 0, 30, False)),
        ("30r0s+aug", (30, 0, 0, True)),
        ("15r30s+aug", (15, 30, 0, True)),
        ("60r0s", (60, 0, 0, False)),
    ],
)
def test_the_notation_round_trips(text, fields):
    mix = Mix.parse(text)
    assert (mix.real, mix.synthetic, mix.augmented, mix.online_augment) == fields
    assert mix.name == text and Mix.parse(mix.name) == mix
    assert mix.real_only == (text == "60r0s")


def test_infeasible_mix_names_the_limit_and_the_parameter():
    with pytest.raises(UserError, match=r"45 real .* holds 30 .*data.train_per_class.* plus 0 extra"):
        Mix.parse("45r30s").check_feasible(train_per_class=30, synthetic_per_class=30)
    Mix.parse("60r0s").check_feasible(train_per_class=30, synthetic_per_class=30, extra_per_class=30)
    with pytest.raises(UserError, match=r"augments extra real images"):
        Mix.parse("60r30a").check_feasible(train_per_class=30, synthetic_per_class=30, extra_per_class=30)
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


def _extra() -> list[SplitRow]:
    return [
        SplitRow(Path(f"data/{c}/x{r}.png"), c, f"x{c}{r:062d}", "extra", r)
        for c in CLASSES
        for r in range(5)
    ]


def test_an_extra_real_mix_takes_the_whole_training_split_then_the_extra_images():
    rows = _real() + _extra()
    for draw in (Draw(), Draw(3, REDRAWABLE)):
        images = training_images(rows, [], Mix(13, 0), draw)
        assert _names(images, "real") == [f"{r}.png" for r in range(10)] + ["x0.png", "x1.png", "x2.png"]
    # the study's own mixes never touch the extra images
    assert not any(
        t.path.name.startswith("x") for t in training_images(rows, [], Mix(10, 0), Draw(3, REDRAWABLE))
    )
    with pytest.raises(UserError, match=r"'a'.* 10 training and 5 extra"):
        training_images(rows, [], Mix(16, 0))


def test_augmented_copies_cycle_through_the_mixes_real_images_with_seeds_per_replicate():
    images = training_images(_real(), _synthetic(), Mix(3, 0, 5), Draw(1, REDRAWABLE))
    real = [t for t in images if t.source == "real" and t.label == "a"]
    copies = [t for t in images if t.source == "augmented" and t.label == "a"]
    assert len(real) == 3 and len(copies) == 5
    assert [c.path for c in copies] == [real[j % 3].path for j in range(5)]
    assert len({c.augment_seed for c in copies}) == 5 and all(t.augment_seed is None for t in real)
    other = training_images(_real(), _synthetic(), Mix(3, 0, 5), Draw(2, REDRAWABLE))
    assert {c.augment_seed for c in other if c.source == "augmented"}.isdisjoint(
        {c.augment_seed for c in copies}
    )
    assert not any(t.source == "synthetic" for t in images)


def test_a_block_draw_takes_only_its_own_block_of_synthetic_images():
    synthetic = _synthetic()  # indices 0-7 a class: two blocks of 4
    first = training_images(_real(), synthetic, Mix(2, 4), Draw(0, REDRAWABLE, block=0, block_size=4))
    second = training_images(_real(), synthetic, Mix(2, 4), Draw(1, REDRAWABLE, block=1, block_size=4))
    assert _names(first, "synthetic") == ["0000.png", "0001.png", "0002.png", "0003.png"]
    assert _names(second, "synthetic") == ["0004.png", "0005.png", "0006.png", "0007.png"]
    with pytest.raises(UserError, match="4 usable"):
        training_images(_real(), synthetic, Mix(2, 5), Draw(0, REDRAWABLE, block=0, block_size=4))


# --- vetted mixes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "generator", "vetting"),
    [
        ("30r15s@filtered", "", "filtered"),
        ("30r15s-sd15@reviewed", "sd15", "reviewed"),
        ("15r30s@vetted+aug", "", "vetted"),
    ],
)
def test_a_vetted_mix_round_trips_with_its_generator_and_vetting(text, generator, vetting):
    mix = Mix.parse(text)
    assert (mix.generator, mix.vetting) == (generator, vetting)
    assert mix.name == text and Mix.parse(mix.name) == mix
    assert mix.with_vetting("").name == text.replace(f"@{vetting}", "")
    assert mix.with_generator("").vetting == vetting


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("30r15s@cleaned", "@filtered, @reviewed, @vetted"),
        ("30r0s@filtered", "takes none"),
        ("30r30a@reviewed", "takes none"),
        ("30r15s@", "@filtered"),
    ],
)
def test_an_unknown_or_pointless_vetting_is_a_user_error(text, message):
    with pytest.raises(UserError, match=message):
        Mix.parse(text)


def test_a_vetted_mix_skips_rejected_images_and_takes_the_next_ones_of_its_block():
    synthetic = _synthetic()  # two blocks of 4 a class
    rejected = frozenset(s.sha256 for s in synthetic if s.label == "a" and s.index in (1, 2))
    draw = Draw(0, (), block=0, block_size=4)
    vetted = training_images(_real(), synthetic, Mix(2, 2, vetting="filtered"), draw, rejected)
    assert _names(vetted, "synthetic") == ["0000.png", "0003.png"]
    assert _names(vetted, "synthetic", "b") == ["0000.png", "0001.png"]  # nothing of b rejected
    # too few left in the block: the class keeps the ones left, not another replicate's block
    short = training_images(_real(), synthetic, Mix(2, 4, vetting="filtered"), draw, rejected)
    assert _names(short, "synthetic") == ["0000.png", "0003.png"]
    assert len(_names(short, "synthetic", "b")) == 4

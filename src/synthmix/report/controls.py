"""What each study mix is, for the report: a control or not, and which mixes the controls answer.

The kinds of control are one registry (`CONTROLS`), asked by every part of the report that treats a
control apart (the family, the headline figure, the words); a new kind of control is one entry here.

- augmentation control (<N>r<K>a): the real images plus K augmented copies of them, as many images a
  class as the synthetic mix with the same real count (30r30a answers 30r30s);
- on-the-fly augmentation (+aug): every training image augmented afresh each epoch;
- extra-real control: real images only, more than the baseline holds (60r0s): what more real images
  would have given.

Every other mix holds N real and M synthetic images: a point on the line of its real count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from synthmix.data.mixes import Mix


@dataclass(frozen=True)
class ControlKind:
    key: str  # summary and CSV value
    label: str  # in words
    applies: Callable[[Mix, Mix], bool]  # (mix, baseline)


CONTROLS = (
    ControlKind("augmentation_control", "augmentation control", lambda m, b: m.augmented > 0),
    ControlKind("online_augmentation", "on-the-fly augmentation", lambda m, b: m.online_augment),
    ControlKind("extra_real_control", "extra-real control", lambda m, b: m.real_only and m.real > b.real),
)
SYNTHETIC, REAL_ONLY, VETTED = "synthetic", "real_only", "vetted"


def control(mix: Mix, baseline: Mix) -> ControlKind | None:
    """The kind of control `mix` is in a study with `baseline`, or None for a real/synthetic mix."""
    return next((kind for kind in CONTROLS if kind.applies(mix, baseline)), None)


def kind(mix: Mix, baseline: Mix) -> str:
    """'augmentation_control', 'online_augmentation', 'extra_real_control', 'vetted' (off the headline
    curves: it sits where its unvetted twin does), 'real_only' or 'synthetic'."""
    found = control(mix, baseline)
    if found is not None:
        return found.key
    if mix.vetting:
        return VETTED
    return REAL_ONLY if mix.real_only else SYNTHETIC


def named(mix: Mix, baseline: Mix) -> str:
    """'60r0s (extra-real control)', '30r15s@filtered (vetted)', or just the name of any other mix."""
    found = control(mix, baseline)
    if found is None and mix.vetting:
        return f"{mix} (vetted)"
    return f"{mix} ({found.label})" if found else str(mix)


def augmentation_control_for(mix: Mix, mixes: Iterable[Mix]) -> Mix | None:
    """The augmentation control answering synthetic `mix`: the same real count, as many images a class
    and the same on-the-fly augmentation, augmented copies in place of the synthetic images."""
    if not mix.synthetic:
        return None
    return next(
        (
            m
            for m in mixes
            if m.augmented
            and (m.real, m.images_per_class, m.online_augment)
            == (mix.real, mix.images_per_class, mix.online_augment)
        ),
        None,
    )


def control_pairs(mixes: Sequence[Mix]) -> tuple[tuple[Mix, Mix], ...]:
    """(augmentation control, synthetic mix) for every synthetic mix of `mixes` that has a control."""
    pairs = []
    for mix in dict.fromkeys(mixes):
        found = augmentation_control_for(mix, mixes)
        if found is not None:
            pairs.append((found, mix))
    return tuple(pairs)


# A mix's twin on each axis besides its counts: the same mix with the first generator's images, and
# the same mix unvetted. A "generator" or "vetting" comparison sets a mix against its twin.
TWINS: dict[str, Callable[[Mix], Mix]] = {
    "generator": lambda m: m.with_generator(""),
    "vetting": lambda m: m.with_vetting(""),
}


def twin_pairs(kind: str, mixes: Sequence[Mix]) -> tuple[tuple[Mix, Mix], ...]:
    """(twin, mix) for every mix of `mixes` that differs from its `kind` twin (TWINS) while the twin is
    in `mixes` too: 30r30s vs 30r30s-sd15 (generator), 30r15s vs 30r15s@filtered (vetting)."""
    twin, present = TWINS[kind], set(mixes)
    return tuple((twin(m), m) for m in dict.fromkeys(mixes) if twin(m) != m and twin(m) in present)


def generator_pairs(mixes: Sequence[Mix]) -> tuple[tuple[Mix, Mix], ...]:
    """(first generator's mix, another generator's mix with the same counts) for every mix of `mixes`
    naming a generator whose first-generator twin is in `mixes` too (30r30s vs 30r30s-sd15)."""
    return twin_pairs("generator", mixes)


def vetting_pairs(mixes: Sequence[Mix]) -> tuple[tuple[Mix, Mix], ...]:
    """(unvetted mix, the same mix vetted) for every vetted mix of `mixes` whose unvetted twin is in
    `mixes` too (30r15s vs 30r15s@filtered)."""
    return twin_pairs("vetting", mixes)


def synthetic_target(mixes: Iterable[Mix], baseline: Mix) -> Mix | None:
    """The mix adding the most synthetic images of the first generator to the baseline's real ones
    (30r30s in the default study): same real count and on-the-fly augmentation as the baseline, no
    augmented copies."""
    added = [
        m
        for m in mixes
        if m.real == baseline.real
        and not m.generator
        and not m.vetting
        and m.synthetic > baseline.synthetic
        and not m.augmented
        and m.online_augment == baseline.online_augment
    ]
    return max(added, key=lambda m: m.synthetic, default=None)


def real_only_curve(mixes: Iterable[Mix]) -> list[Mix]:
    """The real-only mixes, one per real count, by real count: the curve the exchange rate reads."""
    return sorted({m.real: m for m in mixes if m.real_only and m.real > 0}.values(), key=lambda m: m.real)


def same_size_pair(real_heavy: Mix, synthetic_heavy: Mix) -> bool:
    """The ratio comparison's pair: as many images a class, both holding real and synthetic images (no
    augmented copies, the same on-the-fly augmentation), real outnumbering synthetic in the first and
    synthetic outnumbering real in the second (e.g. 30r15s and 15r30s), from one generator."""
    a, b = real_heavy, synthetic_heavy
    return (
        a.images_per_class == b.images_per_class
        and a.generator == b.generator
        and a.vetting == b.vetting
        and not (a.augmented or b.augmented)
        and a.online_augment == b.online_augment
        and a.real > a.synthetic > 0
        and b.synthetic > b.real > 0
    )


class ExtraShortfall(Protocol):
    """What the report asks of split.SplitSummary (prepared/split.json)."""

    def extra_shortfall(self, extra_needed: int) -> str | None: ...


def not_run(
    study_mixes: Sequence[Mix],
    run_by_model: Mapping[str, set[Mix]],
    names: Mapping[str, str],
    baseline: Mix,
    train_per_class: int,
    split: ExtraShortfall | None,
) -> list[tuple[Mix, str]]:
    """(mix, line) for every study mix without runs (of every model, or of some, named), with the
    reason split.json gives; 'was not run' without a reason where it gives none or is missing."""
    lines = []
    for mix in dict.fromkeys(study_mixes):
        lacking = [m for m, mixes in run_by_model.items() if mix not in mixes]
        if not lacking:
            continue
        reason = split.extra_shortfall(mix.real - train_per_class) if split is not None else None
        if len(lacking) == len(run_by_model):
            what = f"{named(mix, baseline)} {'could not run' if reason else 'was not run'}"
        else:
            what = f"{named(mix, baseline)} has no runs of {', '.join(names.get(m, m) for m in lacking)}"
        lines.append((mix, f"{what}: {reason}" if reason else f"{what}."))
    return lines


def not_run_title(mixes: Sequence[Mix], baseline: Mix) -> str:
    """The heading over `not_run`'s lines: controls alone, or controls and other mixes."""
    kinds = {control(m, baseline) is not None for m in mixes}
    if kinds == {True}:
        return "Controls that could not run"
    return "Mixes that could not run" if kinds == {False} else "Controls and mixes that could not run"

"""The `synthmix prepare` stage: the real image folder -> the seeded split in prepared/.

Reads data.* and study.mixes; validates the real set and writes train/test/extra/pool manifests,
split.json and rejected.csv (data/split.py, data/real.py); says which mixes the split cannot serve.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from synthmix.config.params import DataConfig
from synthmix.data.mixes import Mix
from synthmix.data.split import (
    SplitSizes,
    SplitSummary,
    copy_losses,
    describe_losses,
    prepare_split,
    read_split_summary,
)


@dataclass(frozen=True)
class PrepareResult:
    classes: int
    rejected: int
    copies: dict[str, dict[str, int]]  # class -> the twin's split -> images left out as near-copies
    summary: SplitSummary
    skipped: dict[str, str]  # mix name -> why the split cannot serve it


def prepare_stage(data: DataConfig, mixes: Sequence[Mix]) -> PrepareResult:
    """Split data.dir into prepared/ and say which of `mixes` lack the extra real images they need."""
    sizes = SplitSizes(data.train_per_class, data.test_per_class, data.extra_per_class, data.pool_per_class)
    rows, rejected = prepare_split(data.dir, data.prepared_dir, sizes, data.seed, data.drop_small_classes)
    summary = read_split_summary(data.prepared_dir)
    skipped = {}
    for mix in mixes:
        reason = summary.extra_shortfall(mix.real - data.train_per_class)
        if reason:
            skipped[mix.name] = reason
    return PrepareResult(len({r.label for r in rows}), len(rejected), copy_losses(rejected), summary, skipped)


def describe(result: PrepareResult, data: DataConfig) -> list[str]:
    """The stage's summary lines, as the CLI prints them (rich markup)."""
    lines = [
        f"Split {result.classes} classes into {data.train_per_class} train / {data.test_per_class} test images "
        f"each (+ up to {data.extra_per_class} extra real, {data.pool_per_class} for the generator's pool) "
        f"-> {data.prepared_dir}/train.csv, test.csv, extra.csv, pool.csv, split.json."
    ]
    lines += [f"[yellow]Mix {mix} will be skipped: {reason}" for mix, reason in result.skipped.items()]
    lines.append(result.summary.generator_note())
    lines += [f"[yellow]{line}" for line in describe_losses(result.copies)]
    if result.rejected:
        lines.append(f"[yellow]Left out {result.rejected} files; see {data.prepared_dir}/rejected.csv.")
    return lines

"""Which cells the report compares, the paired comparisons, and the one declared family of verdicts.

Changes are paired: replicate (seed) k of one cell is compared with replicate k of the other, image by
image over the same test images (predictions.csv shares one row order). Classification metrics and the
F1 of every class get the inference of `stats.bootstrap_differences` (spread over replicates plus the
shared test-image draw, Student t); metrics known only per run (test loss) a paired t-test over
replicates.

Verdicts come from one declared family (`Family`): on the primary metric (report.primary_metric),
every mix of the study (study.mixes) against the baseline, and every synthetic study mix against the
augmentation control with its real count and size (30r30s vs 30r30a; controls.control_pairs), and
every study mix of another generator against the first generator's with the same counts (30r30s-sd15
vs 30r30s; controls.generator_pairs), per model and hyperparameter source, whether or not this report found runs for all of them; their p-values are
Holm-adjusted over the declared size. Everything else (secondary metrics, ratio and tuned-vs-fixed
comparisons, one backbone against the first of study.models on the same mix, a mix outside
study.mixes) is shown with its interval and unadjusted p-value, and is exploratory.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from synthmix.config.params import ReportConfig
from synthmix.core.errors import UserError
from synthmix.core.progress import progress
from synthmix.data.mixes import Mix
from synthmix.report import controls, stats
from synthmix.report.cells import Cell, Intervals
from synthmix.runs.evaluate import FINAL_METRICS
from synthmix.runs.rundir import Predictions, Run

# Known only per run (not per test image): compared over seeds with a paired t-test.
PER_RUN_METRICS = tuple(m for m in FINAL_METRICS if m not in stats.CLASSIFICATION_METRICS)


class Pair(NamedTuple):
    """One planned comparison: metric(b) - metric(a)."""

    # "baseline" (mix vs baseline), "augmentation" (synthetic mix vs its augmentation control),
    # "generator" (another generator's images vs the first's, same counts), "ratio" (synthetic outnumbers
    # real), "tuned" (vs fixed), "backbone" (another model vs the first model, same mix), "vetting" (a
    # vetted mix vs the same mix unvetted)
    kind: str
    a: Cell
    b: Cell


@dataclass(frozen=True)
class Family:
    """The declared family of verdicts: `metric` of every mix in `mixes` against `baseline`, and of
    every (augmentation control, synthetic mix) pair in `controls`, per model and hyperparameter source.
    `exploratory` says why this report's results are exploratory anyway (a single-mix experiment), or
    is empty."""

    metric: str
    baseline: Mix
    mixes: tuple[Mix, ...]
    exploratory: str = ""
    controls: tuple[tuple[Mix, Mix], ...] = ()
    generators: tuple[tuple[Mix, Mix], ...] = ()  # (first generator's mix, another generator's)
    vettings: tuple[tuple[Mix, Mix], ...] = ()  # (unvetted mix, the same mix vetted)

    @property
    def size(self) -> int:
        return len(self.mixes) + len(self.controls) + len(self.generators) + len(self.vettings)

    def holds(self, pair: Pair) -> bool:
        if pair.kind == "augmentation":
            return (pair.a.mix, pair.b.mix) in self.controls
        if pair.kind == "generator":
            return (pair.a.mix, pair.b.mix) in self.generators
        if pair.kind == "vetting":
            return (pair.a.mix, pair.b.mix) in self.vettings
        return pair.kind == "baseline" and pair.a.mix == self.baseline and pair.b.mix in self.mixes


def declared_family(metric: str, baseline: Mix, study_mixes: Sequence[Mix], selected: str) -> Family:
    """Every study mix but the baseline against it, and every synthetic study mix against its
    augmentation control; `selected` is params.yaml's `mix` ('all' or one mix)."""
    mixes = tuple(m for m in dict.fromkeys(study_mixes) if m != baseline)
    pairs = controls.control_pairs(study_mixes)
    generators = controls.generator_pairs(study_mixes)
    vettings = controls.vetting_pairs(study_mixes)
    declared = (
        f"{len(mixes)} mixes against {baseline}"
        + (f", {len(pairs)} against their augmentation control" if pairs else "")
        + (f", {len(generators)} against the first generator's" if generators else "")
        + (f", {len(vettings)} vetted against unvetted" if vettings else "")
    )
    exploratory = (
        ""
        if selected == "all"
        else f"this report comes from a single-mix experiment (mix={selected}), so the study's declared "
        f"family ({declared}) was not run as a whole: every result here is exploratory"
    )
    return Family(metric, baseline, mixes, exploratory, pairs, generators, vettings)


@dataclass(frozen=True)
class Comparison:
    """metric(b) - metric(a) over the replicates both cells share.

    `class_f1` holds the change in F1 of every class (class name -> Difference; empty for pairs without
    shared replicates). `p_holm` is the Holm-adjusted p-value of the primary metric within the declared
    family, NaN for a comparison outside it (`in_family` False).
    """

    model: str
    kind: str
    a: Cell
    b: Cell
    seeds: tuple[int, ...]
    differences: Mapping[str, stats.Difference] = field(hash=False)
    class_f1: Mapping[str, stats.Difference] = field(hash=False)
    in_family: bool
    p_holm: float


@dataclass(frozen=True)
class Results:
    """Everything the report states about a study: its cells, their intervals, the comparisons and
    the family that carries the verdicts."""

    cells: tuple[Cell, ...]
    intervals: Intervals = field(hash=False)
    comparisons: tuple[Comparison, ...]
    family: Family
    confidence: float
    bootstrap_samples: int

    @property
    def baseline(self) -> Mix:
        return self.family.baseline

    @property
    def primary(self) -> str:
        """The metric that carries the verdicts (report.primary_metric)."""
        return self.family.metric

    @property
    def alpha(self) -> float:
        """The significance level: a change is significant when its Holm-adjusted p is below it."""
        return 1 - self.confidence

    def significant(self, comparison: Comparison) -> bool:
        """A verdict of the declared family: Holm-adjusted p of the primary metric below alpha."""
        return comparison.in_family and comparison.p_holm < self.alpha

    @property
    def models(self) -> list[str]:
        return list(dict.fromkeys(c.model for c in self.cells))


def planned_pairs(cells: Sequence[Cell], baseline: Mix, models: Sequence[str] = ()) -> list[Pair]:
    """Every comparison the report makes, per model.

    baseline: each mix against the baseline with the same hyperparameter source;
    augmentation: each synthetic mix against the augmentation control with its real count and as many
    images a class (30r30s vs 30r30a);
    ratio: a mix where synthetic outnumbers real against one with as many images where real outnumbers
    synthetic (e.g. 15r30s vs 30r15s), same total number of images a class;
    tuned: tuned against fixed hyperparameters for the same mix;
    generator: a mix of another generator against the first generator's mix with the same counts;
    vetting: a vetted mix against the same mix unvetted (30r15s@filtered vs 30r15s);
    backbone: every model of `models` after the first against the first, same mix and source.
    """
    key = {(c.model, c.source, c.mix): c for c in cells}
    pairs: list[Pair] = []
    for cell in cells:
        base = key.get((cell.model, cell.source, baseline))
        if base is not None and cell.mix != baseline:
            pairs.append(Pair("baseline", base, cell))
    for cell in cells:
        own = [c.mix for c in cells if (c.model, c.source) == (cell.model, cell.source)]
        control = controls.augmentation_control_for(cell.mix, own)
        if control is not None:
            pairs.append(Pair("augmentation", key[(cell.model, cell.source, control)], cell))
    for cell in cells:
        pairs += [
            Pair("ratio", other, cell)
            for other in cells
            if (other.model, other.source) == (cell.model, cell.source)
            and controls.same_size_pair(other.mix, cell.mix)
        ]
    for cell in cells:
        fixed = key.get((cell.model, "fixed", cell.mix))
        if cell.source == "tuned" and fixed is not None:
            pairs.append(Pair("tuned", fixed, cell))
    for kind, twin in controls.TWINS.items():
        for cell in cells:
            other = key.get((cell.model, cell.source, twin(cell.mix)))
            if twin(cell.mix) != cell.mix and other is not None:
                pairs.append(Pair(kind, other, cell))
    for cell in cells:
        reference = key.get((models[0], cell.source, cell.mix)) if models else None
        if reference is not None and cell.model != models[0]:
            pairs.append(Pair("backbone", reference, cell))
    return pairs


def check_paired(reference: tuple[Run, Predictions], other: tuple[Run, Predictions]) -> None:
    """Two runs can be compared image by image only if they list the same test images in the same order."""
    (ref_run, ref), (run, pred) = reference, other
    if run.classes != ref_run.classes:
        raise UserError(
            f"{run.dir}/run.json lists other classes than {ref_run.dir}/run.json, so the two runs cannot be "
            "compared. Runs of one study must share the real set: rerun `synthmix train` for the stale runs."
        )
    if pred.paths != ref.paths or not np.array_equal(pred.true, ref.true):
        row = next(
            (i for i, (a, b) in enumerate(zip(ref.paths, pred.paths, strict=False)) if a != b),
            min(len(ref.paths), len(pred.paths)),
        )
        first = ref.paths[row] if row < len(ref.paths) else "(no row)"
        second = pred.paths[row] if row < len(pred.paths) else "(no row)"
        raise UserError(
            f"{run.dir}/predictions.csv does not list the same test images in the same order as "
            f"{ref_run.dir}/predictions.csv (row {row + 1}: {second} vs {first}; {len(pred.paths)} vs "
            f"{len(ref.paths)} rows), so they cannot be paired image by image. Both runs must be evaluated "
            "on the current prepared/test.csv: delete the stale run folders and rerun `synthmix train`."
        )


class _PairedPredictions:
    """predictions.csv of each run, read once and checked against the first run read of its model."""

    def __init__(self, load: Callable[[Run], Predictions]) -> None:
        self._load = load
        self._read: dict[Path, Predictions] = {}
        self._reference: dict[str, tuple[Run, Predictions]] = {}

    def __call__(self, run: Run) -> Predictions:
        if run.dir not in self._read:
            pred = self._load(run)
            ref = self._reference.setdefault(run.model, (run, pred))
            check_paired(ref, (run, pred))
            self._read[run.dir] = pred
        return self._read[run.dir]


@dataclass(frozen=True)
class _Tested:
    """One pair's differences before the Holm adjustment."""

    pair: Pair
    seeds: tuple[int, ...]
    differences: dict[str, stats.Difference]
    class_f1: dict[str, stats.Difference]


def compare_cells(
    pairs: Sequence[Pair], load: Callable[[Run], Predictions], cfg: ReportConfig, family: Family
) -> list[Comparison]:
    """Run every planned comparison; Holm-adjust the declared family's primary p-values.

    Pairs that share the same replicates are bootstrapped together in one vectorised call per model, so
    every comparison of a model sees the same resampled test images.
    """
    predicted = _PairedPredictions(load)
    groups: dict[tuple[str, tuple[int, ...]], list[Pair]] = defaultdict(list)
    for pair in pairs:
        shared = tuple(sorted(set(pair.a.seeds) & set(pair.b.seeds)))
        groups[(pair.a.model, shared)].append(pair)
    tested: list[_Tested] = []
    for (_model, seeds), members in progress(list(groups.items()), "Comparing mixes"):
        tested += _test_group(members, seeds, predicted, cfg)
    holm = _holm_in_family(tested, family)
    return [
        Comparison(
            t.pair.a.model,
            t.pair.kind,
            t.pair.a,
            t.pair.b,
            t.seeds,
            t.differences,
            t.class_f1,
            family.holds(t.pair),
            holm[i],
        )
        for i, t in enumerate(tested)
    ]


def _test_group(
    members: Sequence[Pair], seeds: tuple[int, ...], predicted: _PairedPredictions, cfg: ReportConfig
) -> list[_Tested]:
    """The pairs of one model that share `seeds`, bootstrapped together."""
    if not seeds:
        nan = stats.Difference(math.nan, math.nan, math.nan, math.nan, "no replicate in common")
        return [_Tested(p, seeds, dict.fromkeys(FINAL_METRICS, nan), {}) for p in members]
    involved = {_key(c): c for p in members for c in (p.a, p.b)}
    sets = {name: np.stack([predicted(c.run(s)).predicted for s in seeds]) for name, c in involved.items()}
    first = next(iter(involved.values()))
    boot = stats.bootstrap_differences(
        predicted(first.run(seeds[0])).true,
        sets,
        [(_key(p.a), _key(p.b)) for p in members],
        len(first.classes),
        samples=cfg.bootstrap_samples,
        confidence=cfg.confidence,
        seed=cfg.seed,
    )
    tested = []
    for p in members:
        per_run = {
            m: stats.paired_t(
                [p.a.run(s).metrics[m] for s in seeds], [p.b.run(s).metrics[m] for s in seeds], cfg.confidence
            )
            for m in PER_RUN_METRICS
        }
        changes = boot[(_key(p.a), _key(p.b))]
        class_f1 = dict(zip(first.classes, changes.class_f1, strict=True))
        tested.append(_Tested(p, seeds, {**changes.metrics, **per_run}, class_f1))
    return tested


def _key(cell: Cell) -> str:
    """A cell's name among every model's cells (a backbone pair joins two models' cells of one mix)."""
    return f"{cell.model}|{cell.name}"


def _holm_in_family(tested: Sequence[_Tested], family: Family) -> list[float]:
    """Holm-adjusted primary p-values, one family per model and hyperparameter source, adjusted over
    the declared number of mixes (members with no runs count as untested); NaN outside the family."""
    holm = [math.nan] * len(tested)
    families: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, t in enumerate(tested):
        if family.holds(t.pair):
            families[(t.pair.a.model, t.pair.b.source)].append(i)
    for members in families.values():
        p_values = [tested[i].differences[family.metric].p_value for i in members]
        for i, p in zip(members, stats.holm_adjust(p_values, family.size), strict=True):
            holm[i] = p
    return holm

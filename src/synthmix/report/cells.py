"""The study's finished runs, selected and grouped into cells: every seed of one (model, source, mix).

A cell is what the report describes with one interval per metric; `source` says whether the runs
used the fixed hyperparameters of params.yaml or the tuned ones (rundir.SOURCES).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from synthmix.config.params import Params
from synthmix.core.errors import UserError
from synthmix.data.mixes import Mix
from synthmix.report import stats
from synthmix.runs.evaluate import FINAL_METRICS
from synthmix.runs.rundir import SOURCES, Run


@dataclass(frozen=True)
class Cell:
    """Every seed of one (model, hyperparameter source, mix), ordered by seed."""

    model: str
    source: str
    mix: Mix
    runs: tuple[Run, ...]

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(r.seed for r in self.runs)

    @property
    def name(self) -> str:
        return f"{self.mix.name} {self.source}" if self.source != "fixed" else self.mix.name

    @property
    def classes(self) -> tuple[str, ...]:
        return self.runs[0].classes

    def run(self, seed: int) -> Run:
        return next(r for r in self.runs if r.seed == seed)


# One interval per cell and metric (FINAL_METRICS): the mean over seeds and its Student-t interval.
Intervals = Mapping[Cell, Mapping[str, stats.Interval]]


@dataclass(frozen=True)
class StudyRuns:
    """The runs a report is built from, and what it left out (its provenance section counts them)."""

    runs_dir: Path
    found: tuple[Run, ...]  # every finished run under runs_dir
    selected: tuple[Run, ...]  # those of this study's models, mixes and seeds
    unfinished: tuple[Path, ...]


def report_mixes(params: Params) -> list[Mix]:
    """The mixes a report may show, in study order: the baseline, the study's mixes, the selected mix."""
    return list(dict.fromkeys((params.study.baseline, *params.study.mixes, *params.selected_mixes)))


def select_runs(found: Sequence[Run], unfinished: Sequence[Path], params: Params) -> StudyRuns:
    """The finished runs of this study's models, mixes and seeds; a UserError when there are none."""
    runs_dir = params.train.runs_dir
    mixes = report_mixes(params)
    models = list(params.study.models)
    selected = tuple(
        r for r in found if r.model in models and r.mix in mixes and r.seed in params.study.seeds
    )
    if not selected:
        raise UserError(
            f"No finished runs of this study under {runs_dir}/ (looked for {runs_dir}/*/*/*/run.json with DONE "
            f"for models {', '.join(models)}, mixes {', '.join(m.name for m in mixes)}, seeds "
            f"{', '.join(map(str, params.study.seeds))}). Run `synthmix train` (or `dvc repro train`) first."
        )
    return StudyRuns(runs_dir, tuple(found), selected, tuple(unfinished))


def group_cells(runs: Iterable[Run], models: Sequence[str], mixes: Sequence[Mix]) -> list[Cell]:
    """(model, source, mix) cells in report order (models, then fixed before tuned, then mixes)."""
    by_key: dict[tuple[str, str, Mix], dict[int, Run]] = defaultdict(dict)
    for run in runs:
        seen = by_key[(run.model, run.source, run.mix)]
        if run.seed in seen:
            raise UserError(
                f"{run.dir} and {seen[run.seed].dir} are both {run.model} {run.mix} {run.source} seed "
                f"{run.seed}. Keep one of them (delete the other folder)."
            )
        seen[run.seed] = run
    order = {
        (m, s, x): (i, j, k)
        for i, m in enumerate(models)
        for j, s in enumerate(SOURCES)
        for k, x in enumerate(mixes)
    }
    return [
        Cell(model, source, mix, tuple(seeds[s] for s in sorted(seeds)))
        for (model, source, mix), seeds in sorted(by_key.items(), key=lambda item: order[item[0]])
    ]


def cell_intervals(cells: Sequence[Cell], confidence: float) -> dict[Cell, dict[str, stats.Interval]]:
    """Mean and Student-t interval over seeds of every final metric (metrics.json of each run)."""
    return {
        c: {m: stats.mean_ci([r.metrics[m] for r in c.runs], confidence) for m in FINAL_METRICS}
        for c in cells
    }


def figure_source(cells: Sequence[Cell], model: str) -> str:
    """The source the figures use for a model: fixed when it has fixed runs, else tuned."""
    return "fixed" if any(c.model == model and c.source == "fixed" for c in cells) else "tuned"

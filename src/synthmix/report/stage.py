"""The report stage: read the finished runs, compute, write reports/ whole, log it to MLflow.

Reads runs/ through synthmix.rundir, the real training split and the synthetic set (for the sample
figures); writes summary.csv, summary.md, report.md, report.html and figures/*.png into a staging
folder that replaces reports/ only once everything is written.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from synthmix import rundir, tracking
from synthmix.config import Params
from synthmix.evaluate import FINAL_METRICS
from synthmix.report import document, tables, wording
from synthmix.report.cells import StudyRuns, cell_intervals, group_cells, report_mixes, select_runs
from synthmix.report.comparisons import Results, compare_cells, declared_family, planned_pairs
from synthmix.report.study_figures import FigureInputs, FigureRef, draw_figures, read_training_images

if TYPE_CHECKING:
    from mlflow.entities import Run as MlflowRun


@dataclass(frozen=True)
class ReportResult:
    out_dir: Path
    findings: tuple[str, ...]
    figures: tuple[Path, ...]
    mlflow_run_id: str | None


def write_report(params: Params, log_to_mlflow: bool = True) -> ReportResult:
    """Build reports/ from the finished runs (paths relative to the working directory, the repo root).

    The report is written into a temporary folder and swapped in at the end, so an interrupted run
    leaves the previous report whole.
    """
    found, unfinished = rundir.discover_runs(params.train.runs_dir)
    runs = select_runs(found, unfinished, params)
    results = compute(params, runs)
    words = wording.findings(results)

    out_dir = params.report.out_dir
    staging = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    if staging.exists():
        shutil.rmtree(staging)
    (staging / "figures").mkdir(parents=True)
    try:
        figure_refs = _write_files(params, results, runs, words, staging)
        _swap_in(staging, out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    run_id = log_report(out_dir, runs.selected, results) if log_to_mlflow else None
    return ReportResult(out_dir, tuple(words), tuple(out_dir / f.path for f in figure_refs), run_id)


def compute(params: Params, runs: StudyRuns) -> Results:
    """Cells, their intervals over replicates and every planned paired comparison, with the declared
    family (report.primary_metric, every study mix against the baseline) carrying the verdicts."""
    cfg = params.report
    cells = group_cells(runs.selected, list(params.study.models), report_mixes(params))
    family = declared_family(cfg.primary_metric, params.study.baseline, params.study.mixes, params.mix)
    pairs = planned_pairs(cells, params.study.baseline)
    comparisons = compare_cells(pairs, rundir.read_predictions, cfg, family)
    return Results(
        tuple(cells),
        cell_intervals(cells, cfg.confidence),
        tuple(comparisons),
        family,
        cfg.confidence,
        cfg.bootstrap_samples,
    )


def _write_files(
    params: Params, results: Results, runs: StudyRuns, words: Sequence[str], out: Path
) -> list[FigureRef]:
    """Every file of the report into `out`; returns the figures drawn."""
    images = read_training_images(params)
    figure_refs = draw_figures(FigureInputs(results, tuple(report_mixes(params)), params.report, images, out))
    tables.write_summary_csv(tables.summary_rows(results), out / "summary.csv")
    sections = tables.sections(results)
    (out / "summary.md").write_text(document.render_summary(sections))
    doc = document.Document(
        title=wording.title(runs),
        intro=wording.introduction(results, runs),
        findings=tuple(words),
        how_to_read=wording.how_to_read(results, wording.replicate_design(params.study.redraw)),
        sections=tuple(sections),
        figures=tuple(figure_refs),
        provenance=tuple(wording.provenance(params, runs)),
        runs=tables.runs_table(results.cells),
    )
    (out / "report.md").write_text(document.render_markdown(doc))
    (out / "report.html").write_text(document.render_html(doc, out))
    return figure_refs


def _swap_in(staging: Path, out_dir: Path) -> None:
    old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    if out_dir.exists():
        os.replace(out_dir, old)
    os.replace(staging, out_dir)
    if old.exists():
        shutil.rmtree(old)


# --- MLflow --------------------------------------------------------------------------------------


def log_report(out_dir: Path, runs: Sequence[rundir.Run], results: Results) -> str:
    """Log reports/ and the means per cell to the sweep's parent run (run.json's mlflow_parent_run_id),
    else to a new 'report' run."""
    import mlflow

    metrics = {
        f"report.{c.model}.{c.source}.{c.mix}.{m}": results.intervals[c][m].mean
        for c in results.cells
        for m in FINAL_METRICS
    }
    parent = sweep_parent_run(runs)
    if parent is None:
        with tracking.stage_run("report") as active:
            _log(out_dir, metrics)
            return active.info.run_id
    mlflow.set_experiment(experiment_id=parent.info.experiment_id)
    with mlflow.start_run(run_id=parent.info.run_id) as active:
        _log(out_dir, metrics)
        return active.info.run_id


def sweep_parent_run(runs: Sequence[rundir.Run]) -> MlflowRun | None:
    """The newest active MLflow run among the runs' recorded parents, in the configured tracking store."""
    import mlflow
    from mlflow.exceptions import MlflowException

    tracking.configure()
    client = mlflow.MlflowClient()
    candidates = []
    for run_id in sorted({r.mlflow_parent_run_id for r in runs if r.mlflow_parent_run_id}):
        try:
            found = client.get_run(run_id)
        except MlflowException:
            continue  # recorded, but not in this tracking store
        if found.info.lifecycle_stage == "active":
            candidates.append(found)
    # Runs kept from earlier sweeps name older parents: the newest sweep is the one this report closes.
    return max(candidates, key=lambda r: r.info.start_time or 0, default=None)


def _log(out_dir: Path, metrics: dict[str, float]) -> None:
    import mlflow

    mlflow.log_metrics(metrics)
    mlflow.log_artifacts(str(out_dir), artifact_path="report")

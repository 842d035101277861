"""The report stage: read the finished runs, compute, write reports/ whole, log it to MLflow.

Reads runs/ through synthmix.runs.rundir, the real training split and the synthetic set (for the sample
figures) and prepared/split.json (why a mix could not run, which images the generator learned from;
the report says nothing of either when it is missing); writes summary.csv, summary.md, report.md,
report.html, figures/*.png and figures/headline.csv into a staging folder that replaces reports/ only
once everything is written.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from synthmix.config.params import Params
from synthmix.data import split
from synthmix.report import (
    answer,
    controls,
    document,
    exchange,
    headline,
    provenance,
    synthetic,
    synthetic_figures,
    tables,
    wording,
)
from synthmix.report.cells import StudyRuns, cell_intervals, group_cells, report_mixes, select_runs
from synthmix.report.comparisons import Results, compare_cells, declared_family, planned_pairs
from synthmix.report.study_figures import FigureInputs, FigureRef, draw_figures, read_training_images
from synthmix.runs import rundir, tracking
from synthmix.runs.evaluate import FINAL_METRICS

if TYPE_CHECKING:
    from mlflow.entities import Run as MlflowRun
    from mlflow.entities import RunInfo


@dataclass(frozen=True)
class Words:
    """What the report says beyond its tables: the sentences at the top, the findings, the mixes that
    could not run (with their heading) and the exchange rates behind the top's sentences."""

    summary: tuple[str, ...]
    findings: tuple[str, ...]
    not_run_title: str
    not_run: tuple[str, ...]
    rates: tuple[exchange.ExchangeRate, ...]
    split_summary: split.SplitSummary | None


@dataclass(frozen=True)
class ReportResult:
    out_dir: Path
    findings: tuple[str, ...]
    figures: tuple[Path, ...]
    mlflow_run_id: str | None
    mlflow_url: str | None = None  # the experiment's training runs in the MLflow UI


def report_stage(params: Params, log_to_mlflow: bool = True) -> ReportResult:
    """Build reports/ from the finished runs (paths relative to the working directory, the repo root).

    The report is written into a temporary folder and swapped in at the end, so an interrupted run
    leaves the previous report whole.
    """
    found, unfinished = rundir.discover_runs(params.train.runs_dir)
    runs = select_runs(found, unfinished, params)
    # Each run's predictions are read once: the baseline's serve every comparison and the exchange rate.
    load = functools.lru_cache(maxsize=None)(rundir.read_predictions)
    results = compute(params, runs, load)
    words = describe(params, results, runs, load)

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
    logged = log_report(out_dir, runs.selected, results) if log_to_mlflow else None
    said = (*words.summary, *words.findings)
    figures = tuple(out_dir / f.path for f in figure_refs)
    if logged is None:
        return ReportResult(out_dir, said, figures, None)
    return ReportResult(out_dir, said, figures, logged.run_id, tracking.experiment_url(logged.experiment_id))


def compute(
    params: Params,
    runs: StudyRuns,
    load: Callable[[rundir.Run], rundir.Predictions] = rundir.read_predictions,
) -> Results:
    """Cells, their intervals over replicates and every planned paired comparison, with the declared
    family (report.primary_metric, every study mix against the baseline and every synthetic study mix
    against its augmentation control) carrying the verdicts."""
    cfg = params.report
    cells = group_cells(runs.selected, list(params.study.models), report_mixes(params))
    family = declared_family(cfg.primary_metric, params.study.baseline, params.study.mixes, params.mix)
    pairs = planned_pairs(cells, params.study.baseline, params.study.models)
    comparisons = compare_cells(pairs, load, cfg, family)
    return Results(
        tuple(cells),
        cell_intervals(cells, cfg.confidence),
        tuple(comparisons),
        family,
        cfg.confidence,
        cfg.bootstrap_samples,
    )


def read_split(params: Params) -> split.SplitSummary | None:
    """prepared/split.json, or None when prepare has not written one (then the report is silent on it)."""
    if not (params.data.prepared_dir / split.SUMMARY_NAME).exists():
        return None
    return split.read_split_summary(params.data.prepared_dir)


def describe(
    params: Params,
    results: Results,
    runs: StudyRuns,
    load: Callable[[rundir.Run], rundir.Predictions] = rundir.read_predictions,
) -> Words:
    """Everything the report says in sentences, computed from the results."""
    rates = tuple(exchange.exchange_rates(results, load, params.report))
    split_summary = read_split(params)
    models = list(params.study.models)
    run_by_model = {m: {c.mix for c in results.cells if c.model == m} for m in models}
    names = {m: wording.model_label(m) for m in models} | wording.model_names(results.cells)
    missing = controls.not_run(
        params.selected_mixes,
        run_by_model,
        names,
        params.study.baseline,
        params.data.train_per_class,
        split_summary,
    )
    return Words(
        (*wording.caveats(results), *headline.summary(results, rates)),
        tuple(wording.findings(results)),
        controls.not_run_title([m for m, _ in missing], params.study.baseline),
        tuple(line for _, line in missing),
        rates,
        split_summary,
    )


def _write_files(
    params: Params, results: Results, runs: StudyRuns, words: Words, out: Path
) -> list[FigureRef]:
    """Every file of the report into `out`; returns the figures drawn, the headline figure first."""
    images = read_training_images(params)
    figure_refs = [
        headline.draw_headline(results, out),
        *draw_figures(FigureInputs(results, tuple(report_mixes(params)), params.report, images, out)),
    ]
    tables.write_summary_csv(tables.summary_rows(results), out / "summary.csv")
    sections = tables.sections(results)
    rate_section = exchange.section(words.rates, results)
    if rate_section is not None:
        sections.insert(min(2, len(sections)), rate_section)
    quality = synthetic.read_inputs(params)  # None when the quality stage never ran: no section, no figure
    if quality is not None:
        sections.append(synthetic.synthetic_section(quality, results, params)[0])
        figure_refs += synthetic_figures.draw_synthetic_figures(quality, out)
    (out / "summary.md").write_text(document.render_summary(sections))
    method = wording.how_to_read(results, wording.replicate_design(params.study.redraw))
    note = words.split_summary.generator_note() if words.split_summary is not None else None
    doc = document.Document(
        title=wording.title(runs),
        headline=figure_refs[0],
        verdicts=answer.verdict_table(results),
        answer=tuple(answer.sentences(results)),
        intro=wording.introduction(results, runs),
        summary=words.summary,
        findings=words.findings,
        not_run_title=words.not_run_title,
        not_run=words.not_run,
        how_to_read=f"{method} {provenance.training_method(results)}".strip(),
        sections=tuple(sections),
        figures=tuple(figure_refs[1:]),
        provenance=tuple(provenance.provenance(params, runs, note)),
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


def log_report(out_dir: Path, runs: Sequence[rundir.Run], results: Results) -> RunInfo:
    """Log reports/ and the means per cell to the sweep's parent run (run.json's mlflow_parent_run_id),
    else to a new 'report' run; returns that run's info (its id, its experiment's id)."""
    import mlflow

    metrics = {
        metric_key(f"report.{c.model}.{c.source}.{c.mix}.{m}"): results.intervals[c][m].mean
        for c in results.cells
        for m in FINAL_METRICS
    }
    parent = sweep_parent_run(runs)
    if parent is None:
        with tracking.stage_run("report") as active:
            _log(out_dir, metrics)
            return active.info
    mlflow.set_experiment(experiment_id=parent.info.experiment_id)
    with mlflow.start_run(run_id=parent.info.run_id) as active:
        _log(out_dir, metrics)
        return active.info


def metric_key(text: str) -> str:
    """`text` as an MLflow metric name, which allows only letters, digits and _-. :/ (a mix's + and @
    become _: report.cnn.fixed.30r30s_aug.accuracy)."""
    return re.sub(r"[^\w\-. :/]", "_", text)


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

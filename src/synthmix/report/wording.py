"""The report in words: numbers formatted, models named, findings and provenance as sentences.

Every sentence is computed from the runs and the comparisons, never written by hand.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from synthmix.config import Params
from synthmix.generate.manifest import SyntheticRow, read_synthetic_manifest
from synthmix.report import stats
from synthmix.report.cells import Cell, StudyRuns
from synthmix.report.comparisons import Comparison, Results
from synthmix.rundir import SOURCES, Run

METRIC_LABELS = {
    "accuracy": "accuracy",
    "precision_macro": "macro precision",
    "recall_macro": "macro recall",
    "f1_macro": "macro F1",
    "test_loss": "test loss",
}
LOWER_IS_BETTER = frozenset({"test_loss"})
NO_DIFFERENCE = "no significant difference"
# What a backbone's recorded weights mean, for the title.
_WEIGHTS_NAMES = {"imagenet": "ImageNet", "random": "random init, not ImageNet", "none": "random init"}


# --- numbers -------------------------------------------------------------------------------------


def signed(value: float, digits: int = 3) -> str:
    if math.isnan(value):
        return "n/a"
    text = f"{value:+.{digits}f}"
    return "+" + text[1:] if float(text) == 0 else text  # no "-0.000" for a change that rounds to zero


def p_text(p: float) -> str:
    if math.isnan(p):
        return "p n/a"
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def interval_text(iv: stats.Interval) -> str:
    if math.isnan(iv.low):
        return f"{iv.mean:.3f}"
    return f"{iv.mean:.3f} ({iv.low:.3f} to {iv.high:.3f})"


def change_text(k: Comparison, metric: str, alpha: float) -> str:
    """A table entry: change, interval, raw and Holm p, and * when significant."""
    d = k.differences[metric]
    if math.isnan(d.estimate):
        return "n/a"
    ci = f" ({signed(d.low)} to {signed(d.high)})" if not math.isnan(d.low) else ""
    holm = k.p_holm[metric]
    mark = " *" if not math.isnan(holm) and holm < alpha else ""
    holm_part = f", Holm {p_text(holm)}" if not math.isnan(holm) else ""
    return f"{signed(d.estimate)}{ci}, {p_text(d.p_value)}{holm_part}{mark}"


def verdict(comparison: Comparison, metric: str, alpha: float) -> str:
    """'significantly better', 'significantly worse' or 'no significant difference' (Holm-adjusted)."""
    p = comparison.p_holm[metric]
    diff = comparison.differences[metric]
    if math.isnan(p) or p >= alpha:
        return NO_DIFFERENCE
    better = diff.estimate < 0 if metric in LOWER_IS_BETTER else diff.estimate > 0
    return "significantly better" if better else "significantly worse"


def describe(comparison: Comparison, metric: str, confidence: float) -> str:
    """e.g. 'macro F1 +0.071 (95% CI +0.040 to +0.102, p=0.001, Holm p=0.004): significantly better'."""
    d = comparison.differences[metric]
    if math.isnan(d.estimate):
        return f"{METRIC_LABELS[metric]} not comparable ({d.method})"
    ci = f"{confidence:.0%} CI {signed(d.low)} to {signed(d.high)}, " if not math.isnan(d.low) else ""
    holm = comparison.p_holm[metric]
    holm_part = f", Holm {p_text(holm)}" if not math.isnan(holm) and holm != d.p_value else ""
    return (
        f"{METRIC_LABELS[metric]} {signed(d.estimate)} ({ci}{p_text(d.p_value)}{holm_part}): "
        f"{verdict(comparison, metric, 1 - confidence)}"
    )


# --- models --------------------------------------------------------------------------------------


def model_label(model: str) -> str:
    """How the report names a model: its registry label, or its name when the registry lacks it."""
    from synthmix.models import MODELS

    return MODELS[model].label if model in MODELS else model


def title_weights(runs: Sequence[Run]) -> str:
    """What each model started from, for the title: random features never pass for ImageNet ones."""
    from synthmix.models import MODELS

    parts = []
    for model in dict.fromkeys(r.model for r in runs):
        if model in MODELS and MODELS[model].trained_from_scratch:
            parts.append(f"{model_label(model)} from scratch")
            continue
        used = sorted({r.weights for r in runs if r.model == model})
        parts.append(f"{model_label(model)} backbone: {', '.join(_WEIGHTS_NAMES.get(w, w) for w in used)}")
    return "; ".join(parts)


# --- findings ------------------------------------------------------------------------------------


def findings(results: Results) -> list[str]:
    """The findings in words, each sentence computed from the comparisons."""
    out: list[str] = []
    cells = results.cells
    if cells and max(len(c.seeds) for c in cells) < 2:
        out.append(
            "Each configuration ran with a single seed, so the intervals cover the draw of test images only, "
            "not training randomness; run more seeds (study.seeds) for the full picture."
        )
    for model in results.models:
        for source in SOURCES:
            own = [c for c in cells if c.model == model and c.source == source]
            if own:
                out += _source_findings(results, own)
        for k in results.comparisons:
            if k.model == model and k.kind == "tuned":
                out.append(
                    f"{model_label(model)} {k.b.mix}: tuned vs fixed hyperparameters "
                    f"{describe(k, 'f1_macro', results.confidence)}."
                )
    return out


def _source_findings(results: Results, own: Sequence[Cell]) -> list[str]:
    """Changes against the baseline, the best mix and the ratio comparisons of one model and source."""
    model, source, baseline = own[0].model, own[0].source, results.baseline
    who = model_label(model) if source == "fixed" else f"{model_label(model)} (tuned)"
    ours = [k for k in results.comparisons if k.model == model and k.b.source == source]
    against = [k for k in ours if k.kind == "baseline"]
    out = []
    if not any(c.mix == baseline for c in own):
        out.append(f"{who}: no real-only baseline ({baseline}) runs, so no changes against it are reported.")
    out += [f"{who}: {k.b.mix} vs {k.a.mix} {describe(k, 'f1_macro', results.confidence)}." for k in against]
    out.append(f"{who}: {_best_mix(results, own, against)}.")
    for k in ours:
        if k.kind == "ratio":
            total = k.a.mix.real + k.a.mix.synthetic
            out.append(
                f"{who}: synthetic outnumbering real ({k.b.mix} vs {k.a.mix}, both {total} images a "
                f"class): {describe(k, 'f1_macro', results.confidence)}."
            )
    return out


def _best_mix(results: Results, own: Sequence[Cell], against: Sequence[Comparison]) -> str:
    """'best mix by mean macro F1 is 30r30s (0.812, 95% CI ...), significantly better than 30r0s'."""
    baseline = results.baseline
    best = max(own, key=lambda c: results.intervals[c]["f1_macro"].mean)
    iv = results.intervals[best]["f1_macro"]
    ci = f", {results.confidence:.0%} CI {iv.low:.3f} to {iv.high:.3f}" if not math.isnan(iv.low) else ""
    sentence = f"best mix by mean macro F1 is {best.mix} ({iv.mean:.3f}{ci})"
    if best.mix == baseline:
        return sentence + "; that is the real-only baseline: no mix with synthetic images beat it on average"
    vs = next((k for k in against if k.b == best), None)
    if vs is None:
        return sentence
    v = verdict(vs, "f1_macro", results.alpha)
    return sentence + (f", {v} than {baseline}" if v != NO_DIFFERENCE else f", {v} from {baseline}")


# --- the document's prose ------------------------------------------------------------------------


def title(runs: StudyRuns) -> str:
    return f"synthmix report: do synthetic training images help? ({title_weights(runs.selected)})"


def introduction(results: Results, runs: StudyRuns) -> str:
    seeds = sorted({r.seed for r in runs.selected})
    return (
        f"{len(runs.selected)} finished runs: models "
        f"{', '.join(dict.fromkeys(model_label(c.model) for c in results.cells))}; "
        f"mixes {', '.join(dict.fromkeys(c.mix.name for c in results.cells))} (N real + M synthetic training "
        f"images per class); seeds {', '.join(map(str, seeds))}; baseline {results.baseline} (real only)."
    )


def how_to_read(results: Results, bootstrap_samples: int) -> str:
    """How the changes were tested, naming the bootstrap the comparisons actually used."""
    method = next(
        (
            k.differences["accuracy"].method
            for k in results.comparisons
            if not math.isnan(k.differences["accuracy"].estimate)
        ),
        stats.BOOTSTRAP_SEEDS_METHOD,
    )
    return (
        f"How to read them: a change is the mix minus the baseline, averaged over the seeds both share. "
        f"Its {results.confidence:.0%} interval and p-value come from a {method} ({bootstrap_samples} "
        "resamples): every mix is scored on the same test images, so each image's predictions under both "
        "mixes are resampled together, which removes the difficulty of the images both mixes share and "
        "works for macro F1 too (McNemar's test covers accuracy only and gives no interval). Test loss, "
        "known only per run, uses a paired t-test over seeds. Several mixes are tested against one baseline, "
        "so the p-values of each model and metric are Holm-adjusted as one family; a change is called "
        f"significant when its adjusted p is below {results.alpha:.2g}. Intervals are not adjusted."
    )


def provenance(params: Params, runs: StudyRuns) -> list[str]:
    """What produced the report: generator, weights, seeds, code and data versions, runs read."""
    from synthmix.tracking import dvc_file_hash, git_commit

    selected = runs.selected
    weights = sorted({f"{model_label(r.model)}: {r.weights}" for r in selected})
    seeds = sorted({r.seed for r in selected})
    return [
        *generator_lines(params.generate.out_dir / "manifest.csv"),
        f"Model weights: {'; '.join(weights)}.",
        f"Seeds: {', '.join(map(str, seeds))}; bootstrap seed {params.report.seed}.",
        f"Code: git {git_commit()}; real set (data.dvc) md5 {dvc_file_hash()}.",
        f"Runs read from {runs.runs_dir}/: {len(selected)} used, "
        f"{len(runs.found) - len(selected)} finished runs outside this study's models, mixes and seeds "
        f"left out, {len(runs.unfinished)} unfinished.",
    ]


def generator_lines(manifest: Path) -> list[str]:
    """Which generator made the synthetic set, from synthetic/manifest.csv."""
    from synthmix.tracking import file_hash

    if not manifest.exists():
        return [f"No synthetic set ({manifest} is missing): only real-image mixes could run."]
    rows = read_synthetic_manifest(manifest)
    if not rows:
        return [f"{manifest} lists no images."]
    groups: dict[tuple[str, str, str], list[SyntheticRow]] = defaultdict(list)
    for r in rows:
        groups[(r.generator, r.model_id, r.revision)].append(r)
    lines = []
    for (generator, model_id, revision), group in sorted(groups.items()):
        steps = sorted({r.steps for r in group})
        guidance = sorted({r.guidance for r in group})
        lines.append(
            f"Generator {generator}, model {model_id or 'n/a'}"
            f"{f' (revision {revision})' if revision else ''}: {len(group)} images in "
            f"{len({r.label for r in group})} classes, {', '.join(map(str, steps))} steps, guidance "
            f"{', '.join(f'{g:g}' for g in guidance)}, seeds {_span(sorted({r.seed for r in group}))}, "
            f"{sum(r.retries for r in group)} retries."
        )
    lines.append(f"synthetic/manifest.csv sha256 {file_hash(manifest)[:16]}.")
    return lines


def _span(values: Sequence[int]) -> str:
    """Sorted distinct ints, briefly: a run as 'a-b', many scattered ones (per-image seeds) as a count."""
    if len(values) > 3 and values[-1] - values[0] == len(values) - 1:
        return f"{values[0]}-{values[-1]}"
    if len(values) > 6:
        return f"{len(values)} distinct per-image seeds"
    return ", ".join(map(str, values))

"""The report in words: numbers formatted, models named, findings and the method as sentences.

Every sentence is computed from the runs and the comparisons, never written by hand: a verdict only
for the declared family's primary metric, a model named by the weights its runs really used, the
baseline called "real only" only when its runs had real images alone (no synthetic image, no augmented
copy, no augmentation on the fly), p-value floors written as bounds. The provenance lines live in
provenance.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from synthmix.report import controls, stats
from synthmix.report.cells import Cell, StudyRuns
from synthmix.report.comparisons import Comparison, Results
from synthmix.runs.rundir import SOURCES, Run

METRIC_LABELS = {
    "accuracy": "accuracy",
    "precision_macro": "macro precision",
    "recall_macro": "macro recall",
    "f1_macro": "macro F1",
    "test_loss": "test loss",
}
LOWER_IS_BETTER = frozenset({"test_loss"})
NO_DIFFERENCE = "no significant difference"
NO_VARIANCE = "no variance"
POWER = 0.8  # of the smallest detectable change the report states
# What a backbone's recorded weights mean, for the title.
_WEIGHTS_NAMES = {
    "imagenet": "ImageNet",
    "pretrained": "pretrained",
    "random": "random init, not pretrained",
    "none": "random init",
}
RANDOM_WEIGHTS = frozenset({"random", "none"})  # run.json's `weights` of a randomly initialised backbone
# What a replicate may redraw (study.redraw), in words.
_REDRAW_NAMES = {
    "real_subset": "the real images of every partial mix",
    "synthetic_subset": (
        "which of the generated pool's images every mix takes (a mix taking the whole pool holds the same "
        "ones in every replicate)"
    ),
    "generator_seed": (
        "the generated images themselves (each replicate takes its own block of images, sampled with seeds "
        "no other replicate uses)"
    ),
}


# --- numbers -------------------------------------------------------------------------------------


def signed(value: float, digits: int = 3) -> str:
    if math.isnan(value):
        return "n/a"
    text = f"{value:+.{digits}f}"
    return "+" + text[1:] if float(text) == 0 else text  # no "-0.000" for a change that rounds to zero


def p_text(p: float, name: str = "p") -> str:
    """'p = 0.012', or a bound ('p < 0.001') where three decimals would print a false exact value."""
    if math.isnan(p):
        return f"{name} n/a"
    return f"{name} < 0.001" if p < 0.001 else f"{name} = {p:.3f}"


def interval_text(iv: stats.Interval) -> str:
    if math.isnan(iv.low):
        return f"{iv.mean:.3f}"
    return f"{iv.mean:.3f} ({iv.low:.3f} to {iv.high:.3f})"


def change_text(k: Comparison, metric: str, results: Results) -> str:
    """A table entry: change and interval, then the unadjusted p; for the family's primary metric also
    the Holm-adjusted p and * when significant."""
    d = k.differences[metric]
    if math.isnan(d.estimate):
        return "n/a"
    if d.no_variance:
        return f"{signed(d.estimate)}, {NO_VARIANCE}"
    ci = f" ({signed(d.low)} to {signed(d.high)})" if not math.isnan(d.low) else ""
    text = f"{signed(d.estimate)}{ci}, {p_text(d.p_value)}"
    if metric == results.primary and k.in_family:
        text += f", {p_text(k.p_holm, 'Holm p')}{' *' if results.significant(k) else ''}"
    return text


def verdict(k: Comparison, results: Results) -> str:
    """The verdict of a declared-family comparison on the primary metric: 'significantly better',
    'significantly worse', 'no significant difference' or 'no variance' (untestable); with
    '(exploratory)' when the report's family is incomplete. Empty outside the family: no verdict."""
    if not k.in_family:
        return ""
    d = k.differences[results.primary]
    if d.no_variance:
        text = f"{NO_VARIANCE}, untestable"
    elif not results.significant(k):
        text = NO_DIFFERENCE
    else:
        better = d.estimate < 0 if results.primary in LOWER_IS_BETTER else d.estimate > 0
        text = "significantly better" if better else "significantly worse"
    return f"{text} (exploratory)" if results.family.exploratory else text


def describe(k: Comparison, metric: str, results: Results) -> str:
    """e.g. 'macro F1 +0.071 (95% CI +0.040 to +0.102, p = 0.001, Holm p = 0.004): significantly
    better'; outside the family: '... unadjusted p = 0.21; exploratory, outside the declared family'."""
    d = k.differences[metric]
    label = METRIC_LABELS[metric]
    if math.isnan(d.estimate):
        return f"{label} not comparable ({d.method})"
    if d.no_variance:
        return (
            f"{label} {signed(d.estimate)} ({NO_VARIANCE}: every replicate and every resample of the test "
            "images gives the same change, so there is nothing to test it against)"
        )
    ci = f"{results.confidence:.0%} CI {signed(d.low)} to {signed(d.high)}, " if not math.isnan(d.low) else ""
    if k.in_family and metric == results.primary:
        holm = p_text(k.p_holm, "Holm p")
        return f"{label} {signed(d.estimate)} ({ci}{p_text(d.p_value)}, {holm}): {verdict(k, results)}"
    outside = "exploratory, outside the declared family"
    return f"{label} {signed(d.estimate)} ({ci}unadjusted {p_text(d.p_value)}; {outside})"


def detectable(k: Comparison, results: Results) -> float:
    """The smallest change of the primary metric this comparison detects with 80% power at the Holm
    threshold of a lone effect in the family (alpha / family size)."""
    return stats.minimum_detectable(
        k.differences[results.primary], results.alpha / max(results.family.size, 1), POWER
    )


# --- models and the baseline ---------------------------------------------------------------------


def model_label(model: str) -> str:
    """How the report names a model: its registry label, or its name when the registry lacks it."""
    from synthmix.models import MODELS

    return MODELS[model].label if model in MODELS else model


def model_name(model: str, runs: Sequence[Run]) -> str:
    """The model's label, marked '(random init)' when its runs used a randomly initialised backbone:
    random features never pass for pretrained ones."""
    from synthmix.models import MODELS

    label = model_label(model)
    if model in MODELS and MODELS[model].trained_from_scratch:
        return label
    weights = {r.weights for r in runs if r.model == model}
    if weights and weights <= RANDOM_WEIGHTS:
        return f"{label} (random init)"
    if weights & RANDOM_WEIGHTS:
        return f"{label} (random init in some runs)"
    return label


def model_names(cells: Sequence[Cell]) -> dict[str, str]:
    """model -> how the report names it, from the weights its cells' runs recorded."""
    runs = [r for c in cells for r in c.runs]
    return {m: model_name(m, runs) for m in dict.fromkeys(c.model for c in cells)}


def baseline_name(results: Results) -> str:
    """'30r0s (real only)' when the baseline is a real-only mix and every baseline run recorded no
    synthetic image and no augmented copy; else just its name."""
    runs = [r for c in results.cells if c.mix == results.baseline for r in c.runs]
    real = results.baseline.real_only and all(
        r.record.synthetic_images == 0 and r.record.augmented_images == 0 for r in runs
    )
    if runs and real:
        return f"{results.baseline} (real only)"
    return str(results.baseline)


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


def caveats(results: Results) -> list[str]:
    """What holds for every result of the report, said before any of them: the family was not run as
    a whole, or each configuration had a single replicate."""
    out: list[str] = []
    cells = results.cells
    if results.family.exploratory:
        out.append(results.family.exploratory[0].upper() + results.family.exploratory[1:] + ".")
    if cells and max(len(c.seeds) for c in cells) < 2:
        out.append(
            "Each configuration ran with a single replicate, so the intervals cover the draw of test images "
            "only, given that one training run; run more replicates (study.seeds) for the full picture."
        )
    return out


def findings(results: Results) -> list[str]:
    """The findings in words, each sentence computed from the comparisons (caveats() comes first)."""
    out: list[str] = []
    cells = results.cells
    names = model_names(cells)
    for model in results.models:
        for source in SOURCES:
            own = [c for c in cells if c.model == model and c.source == source]
            if own:
                out += _source_findings(results, own, names[model])
        for k in results.comparisons:
            if k.model == model and k.kind == "tuned":
                out.append(
                    f"{names[model]} {k.b.mix}: tuned vs fixed hyperparameters "
                    f"{describe(k, results.primary, results)}."
                )
    return out


def _source_findings(results: Results, own: Sequence[Cell], name: str) -> list[str]:
    """Changes against the baseline, the best mix, the detectable change and the ratio comparisons of
    one model and hyperparameter source."""
    source, baseline, primary = own[0].source, results.baseline, results.primary
    who = name if source == "fixed" else f"{name} (tuned)"
    ours = [k for k in results.comparisons if k.model == own[0].model and k.b.source == source]
    against = [k for k in ours if k.kind == "baseline"]
    out = []
    if not any(c.mix == baseline for c in own):
        out.append(f"{who}: no baseline ({baseline}) runs, so no changes against it are reported.")
    missing = [m for m in results.family.mixes if m not in {c.mix for c in own}]
    if against and missing:
        out.append(
            f"{who}: no runs of {', '.join(map(str, missing))}; they stay in the declared family, so the "
            f"Holm adjustment still counts {results.family.size} tests."
        )
    out += [f"{who}: {k.b.mix} vs {k.a.mix} {describe(k, primary, results)}." for k in against]
    out += [
        f"{who}: {k.b.mix} vs the augmentation control {k.a.mix} (as many images a class, augmented copies "
        f"of the real images in place of synthetic ones) {describe(k, primary, results)}."
        for k in ours
        if k.kind == "augmentation"
    ]
    out += [
        f"{who}: {k.b.mix} vs {k.a.mix} (another generator's synthetic images in place of the first "
        f"generator's, the same counts) {describe(k, primary, results)}."
        for k in ours
        if k.kind == "generator"
    ]
    out += [
        f"{who}: {k.b.mix} vs {k.a.mix} (the same mix with the synthetic images its vetting rejected left "
        f"out and the next ones taken) {describe(k, primary, results)}."
        for k in ours
        if k.kind == "vetting"
    ]
    out.append(f"{who}: {_best_mix(results, own, against)}.")
    declared = [k for k in ours if k.in_family]
    mde = [v for v in (detectable(k, results) for k in declared) if not math.isnan(v)]
    if mde:
        size = f"{min(mde):.3f}" if len(mde) == 1 else f"{min(mde):.3f} to {max(mde):.3f}"
        out.append(
            f"{who}: the smallest change in {METRIC_LABELS[primary]} this design detects with "
            f"{POWER:.0%} power is {size} (two-sided, at the Holm threshold of a lone effect, "
            f"{results.alpha:.2g}/{results.family.size}, from each comparison's standard error and "
            "degrees of freedom); a smaller true change would likely be called no significant difference."
        )
    for k in ours:
        if k.kind == "ratio":
            total = k.a.mix.images_per_class
            out.append(
                f"{who}: synthetic outnumbering real ({k.b.mix} vs {k.a.mix}, both {total} images a "
                f"class): {describe(k, primary, results)}."
            )
    return out


def _best_mix(results: Results, own: Sequence[Cell], against: Sequence[Comparison]) -> str:
    """'highest mean macro F1: 30r30s (0.812), selected on the test set, so ...'."""
    primary, baseline = results.primary, results.baseline
    pick = min if primary in LOWER_IS_BETTER else max
    best = pick(own, key=lambda c: results.intervals[c][primary].mean)
    mean = results.intervals[best][primary].mean
    sentence = (
        f"best mix by mean {METRIC_LABELS[primary]} is {best.mix} ({mean:.3f}), selected on the test set: "
        "a description of this test set, not a confirmatory result"
    )
    if best.mix == baseline:
        return sentence + "; it is the baseline: no other mix beat it on average"
    vs = next((k for k in against if k.b == best and k.in_family), None)
    if vs is None:
        return sentence
    return (
        sentence + f" (its verdict against {baseline} is the Holm-adjusted one above: {verdict(vs, results)})"
    )


# --- the document's prose ------------------------------------------------------------------------


def title(runs: StudyRuns) -> str:
    return f"synthmix report: do synthetic training images help? ({title_weights(runs.selected)})"


def introduction(results: Results, runs: StudyRuns) -> str:
    seeds = sorted({r.seed for r in runs.selected})
    return (
        f"{len(runs.selected)} finished runs: models {', '.join(model_names(results.cells).values())}; "
        f"mixes {', '.join(dict.fromkeys(c.mix.name for c in results.cells))} ({_notation(results)}); "
        f"replicates (seeds) {', '.join(map(str, seeds))}; baseline "
        f"{baseline_name(results)}; primary metric {METRIC_LABELS[results.primary]}."
    )


def _notation(results: Results) -> str:
    """What the mix names mean, for the notations the report's mixes use."""
    mixes = {c.mix for c in results.cells}
    parts = ["NrMs: N real + M synthetic training images per class"]
    if any(m.augmented for m in mixes):
        parts.append("NrKa: N real images + K augmented copies of them, the augmentation control")
    if any(m.online_augment for m in mixes):
        parts.append("+aug: every training image augmented afresh each epoch")
    labelled = [controls.named(m, results.baseline) for m in dict.fromkeys(c.mix for c in results.cells)]
    named = [n for n in labelled if "(" in n]
    return "; ".join(parts) + (f"; controls: {', '.join(named)}" if named else "")


def replicate_design(redraw: Sequence[str]) -> str:
    """What one replicate redraws, from study.redraw, in words."""
    parts = ["the classifier's initialisation and batch order", *(_REDRAW_NAMES.get(r, r) for r in redraw)]
    listed = parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"
    return f"each replicate (seed) draws afresh {listed}; the train/test split is the same for all"


def how_to_read(results: Results, design: str) -> str:
    """The method paragraph: exactly how the changes were estimated, tested and turned into verdicts."""
    family = results.family
    against = f"{', '.join(f'{b} vs {a}' for a, b in family.controls)}"
    controlled = f", and each synthetic study mix against its augmentation control ({against})"
    alpha = results.alpha
    primary = METRIC_LABELS[results.primary]
    return (
        f"How to read them. Replicate design: {design}. A change is a mix minus the baseline, paired "
        "replicate by replicate (the same seed) and image by image (every run is scored on the same test "
        "images): for each replicate the difference of the metric on the full test set, then the mean of "
        "those differences. Its standard error adds two parts: the spread of the per-replicate differences "
        "(their variance over the S replicates, divided by S: what a replicate redraws, plus each "
        "replicate's own test-image noise) and the test-image draw that all replicates share (the mean covariance "
        "between two different replicates' differences under a paired bootstrap over test images, "
        f"{results.bootstrap_samples} resamples, each drawing the images once for every replicate and both "
        f"mixes). The {results.confidence:.0%} interval and the p-value are Student t with S - 1 degrees of "
        "freedom when the replicates' spread is the larger part, else Welch-Satterthwaite degrees of "
        "freedom (S - 1 and test images - 1); with a single replicate only the bootstrap part remains, "
        "conditional on that training run. tests/test_stats.py simulates studies with no true change and "
        "checks that under 7% of them are called significant at 5%, with 3, 5 and 10 replicates. Test loss, "
        "known only per run, uses a paired t-test over replicates. Verdicts use one metric, "
        f"{primary} (report.primary_metric), and one declared family per model and hyperparameter source: "
        f"every study mix ({', '.join(map(str, family.mixes))}) against {family.baseline}"
        f"{controlled if family.controls else ''}, {family.size} "
        f"tests, Holm-adjusted over all {family.size} even when some have no runs; a change is significant "
        f"when its adjusted p is below {alpha:.2g}. Other metrics, the ratio and the tuned-vs-fixed "
        "comparisons are shown with intervals and unadjusted p-values, as exploratory results, never as "
        "verdicts. Intervals are not adjusted for multiplicity. The smallest detectable change is "
        f"(t at 1 - {alpha:.2g}/(2 x {family.size}) + t at {POWER:.0%}) x standard error: the true change "
        f"found significant with {POWER:.0%} power if it were the only one in the family. p-values below "
        "0.001 are written p < 0.001; a change with no variance at all has no p-value."
    )


def finite(value: float | None) -> bool:
    """A number to show: not None, not NaN or infinite."""
    return value is not None and math.isfinite(value)  # quality.json writes NaN as null


def value_text(value: float | None, spec: str) -> str:
    return format(value, spec) if finite(value) else "n/a"

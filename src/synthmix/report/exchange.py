"""The exchange rate: how many real images a class the synthetic images of a mix are worth.

Per model, the real-only mixes (at least two real counts, e.g. 30r0s and 60r0s) give the primary
metric as a function of real images a class, linearly interpolated between adjacent counts. For the
mix adding the most synthetic images to the baseline's real ones (30r30s), the exchange rate is
k = x - N: x the real count at which real-only training reaches that mix's metric, N the mix's real
count. "30 synthetic images a class are worth about k real ones."

The interval is a percentile bootstrap that resamples replicates and test images at once: each
resample draws replicate indices (the same for every mix: a replicate's mixes share their draws) and
test-image indices (the same for every mix and replicate: every run is scored on the same images),
recomputes every mix's metric, its mean over the drawn replicates and k. The replicate draw's spread
is rescaled by sqrt(S / (S - 1)), since a bootstrap over S values understates their variance by
(S - 1) / S. A resample whose metric lies
beyond the real-only range is censored to the range's end (k can only be known inside it), and the
words say when the interval reaches an end. The data cannot support an estimate when there are fewer
than two real-only counts, when the real-only curve does not rise from each count to the next, or
when the mix's metric lies beyond the real-only range (then only a bound is given).
tests/test_report_controls.py checks the estimator on curves with a known k, and its coverage by
simulation: with 5 replicates and 300 test images the 95% interval covers the true k in about 99% of
studies (conservative: the image draw also moves each replicate's own image noise, already in the
replicates' spread); with 3 replicates whose spread dominates the test-image draw, in as few as 80%
(a bootstrap over 3 values cannot know their spread well), which the report says.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
from scipy import sparse

from synthmix.config.params import ReportConfig
from synthmix.data.mixes import Mix
from synthmix.report import controls, stats
from synthmix.report.cells import Cell, figure_source
from synthmix.report.comparisons import Results
from synthmix.report.tables import Section, Table
from synthmix.report.wording import METRIC_LABELS, model_names
from synthmix.runs.rundir import Predictions, Run

MAX_SAMPLES = 2000  # bootstrap resamples at most: every resample re-scores every run
ESTIMATED, ABOVE, BELOW, TOO_FEW, NOT_INCREASING, NO_REPLICATES = (
    "estimated",
    "above the range",
    "below the range",
    "fewer than two real-only counts",
    "real-only curve not rising",
    "no replicate in common",
)
_BLOCK_ENTRIES = 2**23  # resampled weights held at once (resamples x images)


@dataclass(frozen=True)
class Estimate:
    """k (the estimate; for ABOVE / BELOW the bound it passes) and its interval (NaN unless
    ESTIMATED); `share_beyond`: resamples whose mix lies beyond the real-only range, that way."""

    status: str
    k: float
    low: float = math.nan
    high: float = math.nan
    censored_low: bool = False
    censored_high: bool = False
    share_beyond: float = math.nan


# --- the estimator (pure numpy) ------------------------------------------------------------------


def matched_real(real: Sequence[float], curve: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The real count at which the piecewise-linear real-only curve first reaches `target`, censored
    to [real[0], real[-1]]. `curve` (..., P) holds the metric at the increasing counts `real`;
    `target` (...). A curve that dips is read through its running maximum (the first crossing)."""
    x = np.asarray(real, dtype=np.float64)
    y = np.maximum.accumulate(np.asarray(curve, dtype=np.float64), axis=-1)
    t = np.asarray(target, dtype=np.float64)
    reached = y[..., 1:] >= t[..., None]  # (..., P - 1): segment j ends at or above the target
    j = np.where(reached.any(-1), reached.argmax(-1), x.size - 2)
    y0 = np.take_along_axis(y, j[..., None], -1)[..., 0]
    y1 = np.take_along_axis(y, j[..., None] + 1, -1)[..., 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        inside = x[j] + (t - y0) / (y1 - y0) * (x[j + 1] - x[j])
    return np.where(t <= y[..., 0], x[0], np.where(t >= y[..., -1], x[-1], inside))


def point_estimate(real: Sequence[int], curve: Sequence[float], target: float, mix_real: int) -> Estimate:
    """k from the means, or why the data cannot support it (with the bound where there is one)."""
    if len(real) < 2:
        return Estimate(TOO_FEW, math.nan)
    if any(b <= a for a, b in pairwise(curve)):
        return Estimate(NOT_INCREASING, math.nan)
    if target > curve[-1]:
        return Estimate(ABOVE, real[-1] - mix_real)
    if target < curve[0]:
        return Estimate(BELOW, real[0] - mix_real)
    x = float(matched_real(real, np.asarray(curve), np.asarray(target)))
    return Estimate(ESTIMATED, x - mix_real)


def resampled_means(
    y_true: np.ndarray,
    predictions: np.ndarray,
    n_classes: int,
    metric: str,
    *,
    samples: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(full, draws): every mix's metric averaged over replicates, on the data (M,) and in each of
    `samples` resamples (samples, M) drawing replicates and test images with replacement, the same
    draw for every mix. `predictions` (M mixes, S replicates, n images) of class indices."""
    pred = np.asarray(predictions, dtype=np.int64)
    m_count, s_count, n = pred.shape
    y = np.asarray(y_true, dtype=np.int64)
    eye = np.eye(n_classes, dtype=np.float32)
    truth = eye[y]
    blocks = [truth]
    for row in pred.reshape(-1, n):
        blocks += [truth * (row == y)[:, None], eye[row]]
    indicators = sparse.csr_matrix(np.hstack(blocks).T)  # (classes * (1 + 2 M S), images)

    def means(counts: np.ndarray, replicate_weights: np.ndarray) -> np.ndarray:
        true = counts[:, None, None, :n_classes]
        rest = counts[:, n_classes:].reshape(len(counts), m_count, s_count, 2, n_classes)
        values = stats.metrics_from_counts(rest[..., 0, :], rest[..., 1, :], true)[metric]  # (r, M, S)
        drawn = (values * replicate_weights[:, None, :]).sum(-1) / s_count
        every = values.mean(-1)
        # the replicate draw's spread, rescaled by sqrt(S / (S - 1)): a bootstrap over S values
        # understates their variance by (S - 1) / S, which is much with the 3 replicates of a study
        return every + math.sqrt(s_count / (s_count - 1)) * (drawn - every) if s_count > 1 else every

    full = means(np.asarray(indicators.sum(axis=1), dtype=np.float64).T, np.ones((1, s_count)))[0]
    rng = np.random.default_rng(seed)
    block = max(1, min(samples, _BLOCK_ENTRIES // max(n, 1)))
    draws = []
    for start in range(0, samples, block):
        r = min(block, samples - start)
        replicates = rng.multinomial(s_count, np.full(s_count, 1 / s_count), size=r).astype(np.float64)
        images = rng.integers(0, n, size=(r, n)) + (np.arange(r) * n)[:, None]
        weights = np.bincount(images.ravel(), minlength=r * n).reshape(r, n).astype(np.float32)
        counts = np.asarray((indicators @ weights.T).T, dtype=np.float64)  # exact: counts < 2**24
        draws.append(means(counts, replicates))
    return full, np.concatenate(draws)


def estimate(
    real: Sequence[int], mix_real: int, full: np.ndarray, draws: np.ndarray, confidence: float
) -> Estimate:
    """The exchange rate and its percentile interval from `resampled_means`' output, whose columns
    are the real-only mixes (counts `real`, increasing) and then the synthetic mix."""
    point = point_estimate(real, [float(v) for v in full[:-1]], float(full[-1]), mix_real)
    if point.status in (TOO_FEW, NOT_INCREASING):
        return point
    curve, target = np.maximum.accumulate(draws[:, :-1], axis=-1), draws[:, -1]
    if point.status != ESTIMATED:
        beyond = target > curve[:, -1] if point.status == ABOVE else target < curve[:, 0]
        return Estimate(point.status, point.k, share_beyond=float(beyond.mean()))
    k = matched_real(real, draws[:, :-1], target) - mix_real
    tail = (1 - confidence) / 2
    low, high = (float(v) for v in np.quantile(k, [tail, 1 - tail]))
    ends = (real[0] - mix_real, real[-1] - mix_real)
    return Estimate(ESTIMATED, point.k, low, high, low <= ends[0], high >= ends[1])


# --- the study's exchange rates ------------------------------------------------------------------


@dataclass(frozen=True)
class ExchangeRate:
    """One model's exchange rate: the real-only cells (by real count), the synthetic mix's cell, the
    metric's mean of each (on the replicates all of them share) and the estimate."""

    model: str
    curve: tuple[Cell, ...]
    target: Cell
    means: tuple[float, ...]  # the curve's means, then the target's
    estimate: Estimate
    samples: int
    replicates: int = 0  # shared by every mix of the estimate


def exchange_rates(
    results: Results, load: Callable[[Run], Predictions], cfg: ReportConfig
) -> list[ExchangeRate]:
    """Per model (its figures' hyperparameter source), the exchange rate of the synthetic mix with the
    baseline's real count and the most synthetic images; none for a model without such a mix, nor when
    the study declares fewer than two real-only counts (it did not set out to measure one)."""
    samples = min(cfg.bootstrap_samples, MAX_SAMPLES)
    if len(_declared_curve(results)) < 2:
        return []
    out = []
    for model in results.models:
        source = figure_source(results.cells, model)
        own = {c.mix: c for c in results.cells if c.model == model and c.source == source}
        target_mix = controls.synthetic_target(own, results.baseline)
        if target_mix is None:
            continue
        target = own[target_mix]
        curve = tuple(own[m] for m in controls.real_only_curve(own))
        seeds = sorted(set(target.seeds).intersection(*(c.seeds for c in curve)))
        if len(curve) < 2 or not seeds:
            status = TOO_FEW if len(curve) < 2 else NO_REPLICATES
            out.append(ExchangeRate(model, curve, target, (), Estimate(status, math.nan), samples))
            continue
        cells = (*curve, target)
        pred = np.stack([np.stack([load(c.run(s)).predicted for s in seeds]) for c in cells])
        full, draws = resampled_means(
            load(target.run(seeds[0])).true,
            pred,
            len(target.classes),
            results.primary,
            samples=samples,
            seed=cfg.seed,
        )
        real = [c.mix.real for c in curve]
        found = estimate(real, target_mix.real, full, draws, results.confidence)
        means = tuple(float(v) for v in full)
        out.append(ExchangeRate(model, curve, target, means, found, samples, len(seeds)))
    return out


def _declared_curve(results: Results) -> list[Mix]:
    """The study's real-only mixes (whether or not they have runs)."""
    return controls.real_only_curve((results.baseline, *results.family.mixes))


def _count(value: float) -> str:
    """Images a class: whole above 10, one decimal below (a small study's counts are small)."""
    text = f"{value:.0f}" if abs(value) >= 10 else f"{value:.1f}".removesuffix(".0")
    return "0" if text in ("-0", "-0.0") else text


def sentence(rate: ExchangeRate, results: Results) -> str:
    """The exchange rate in words, or why the data cannot support one (with its bound where known)."""
    who = model_names(results.cells)[rate.model]
    mix, est, label = rate.target.mix, rate.estimate, METRIC_LABELS[results.primary]
    if est.status == TOO_FEW:
        have = [c.mix for c in rate.curve]
        missing = ", ".join(str(m) for m in _declared_curve(results) if m not in have)
        listed = f"only {', '.join(map(str, have))} has runs" if have else "none has runs"
        return (
            f"{who}: no exchange rate for {mix}: it takes real-only runs at two real counts at least, and "
            f"of the study's real-only mixes {listed} (no runs of {missing})."
        )
    if est.status == NO_REPLICATES:
        return f"{who}: no exchange rate for {mix}: its runs and the real-only ones share no replicate."
    points = ", ".join(f"{c.mix} {v:.3f}" for c, v in zip(rate.curve, rate.means, strict=False))
    first, last, mean = rate.curve[0], rate.curve[-1], rate.means[-1]
    if est.status == NOT_INCREASING:
        return (
            f"{who}: no exchange rate for {mix}: the real-only {label} does not rise with every added real "
            f"image count ({points}, means over replicates), so it cannot price synthetic images in real ones."
        )
    worth = f"its {mix.synthetic} synthetic images a class"  # the bound's sentences
    share = (
        f"as in {est.share_beyond:.0%} of {rate.samples} bootstrap resamples of replicates and test images"
    )
    if est.status == ABOVE:
        return (
            f"{who}: on average {mix} ({label} {mean:.3f}) scores above {last.mix} ({rate.means[-2]:.3f}), the most "
            f"real images the study measured ({share}): {worth} are worth more than {_count(est.k)} real "
            "ones, beyond what the study measured, so no number is given."
        )
    if est.status == BELOW:
        bound = (
            f"no more than {_count(est.k)} real ones"
            if est.k >= 0
            else f"less than {_count(est.k)} real ones"
        )
        return (
            f"{who}: on average {mix} ({label} {mean:.3f}) scores below {first.mix} ({rate.means[0]:.3f}), "
            f"the fewest real images on the real-only curve ({share}): {worth} are worth {bound}, and "
            "the study cannot say how much less."
        )
    ci = f"{results.confidence:.0%} CI {_count(est.low)} to {_count(est.high)}"
    ends = []
    if est.censored_low:
        ends.append(f"its lower end is the fewest real images on the real-only curve ({first.mix})")
    if est.censored_high:
        ends.append(f"its upper end is the most real images the study measured ({last.mix})")
    censored = (
        f"; {' and '.join(ends)}: resamples beyond count as that end, so the true interval may be wider"
        if ends
        else ""
    )
    return (
        f"{who}: {mix.synthetic} synthetic images a class ({mix}, {label} {mean:.3f}) are worth about "
        f"{_count(est.k)} real ones "
        f"({ci}{censored}): real-only training reaches that {label} at about "
        f"{_count(est.k + mix.real)} real images a class, interpolating linearly between the real-only "
        f"mixes ({points}); interval from {rate.samples} bootstrap resamples of replicates and test images."
    )


def _few_replicates(rates: Sequence[ExchangeRate]) -> str:
    few = min((r.replicates for r in rates if r.estimate.status == ESTIMATED), default=5)
    if few >= 5:
        return ""
    if few == 1:
        return " With a single replicate the interval covers the test-image draw only, given that one training run."
    return (
        f" With {few} replicates the bootstrap knows their spread poorly: where replicates differ more than "
        "the test-image draw moves them, the interval is narrower than it should be (by simulation, a 95% "
        "interval from 3 such replicates covers the true rate as little as about 80% of the time)."
    )


def section(rates: Sequence[ExchangeRate], results: Results) -> Section | None:
    """The exchange-rate table, one row per model; None when no model has one."""
    if not rates:
        return None
    names, label = model_names(results.cells), METRIC_LABELS[results.primary]
    rows = []
    for r in rates:
        est, means = r.estimate, r.means
        points = ", ".join(f"{c.mix} {v:.3f}" for c, v in zip(r.curve, means, strict=False))
        k = {ESTIMATED: f"{_count(est.k)}", ABOVE: f"> {_count(est.k)}", BELOW: f"<= {_count(est.k)}"}
        ci = f"{_count(est.low)} to {_count(est.high)}" if est.status == ESTIMATED else ""
        rows.append(
            (
                names[r.model],
                r.target.mix.name,
                f"{means[-1]:.3f}" if means else "",
                points or ", ".join(c.mix.name for c in r.curve),
                k.get(est.status, "n/a"),
                ci,
                est.status,
            )
        )
    header = ("model", "mix", label, f"real-only {label}", "worth (real images a class)", "CI", "estimate")
    return Section(
        "Exchange rate",
        f"How many real images a class the synthetic images of the mix are worth: the real count at which "
        f"real-only training reaches the mix's {label} (linear between the real-only mixes, means over "
        f"the replicates all of them share), minus the mix's real count. {results.confidence:.0%} "
        "percentile interval from a bootstrap over replicates and test images jointly; a resample beyond "
        "the real-only range counts as its end. Where the mix lies beyond the range only a bound is given."
        + _few_replicates(rates),
        (Table(header, tuple(rows)),),
    )

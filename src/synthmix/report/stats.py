"""The statistics behind the report: intervals over seeds and paired tests over the same test images.

Pure numpy/scipy, no files. Predictions are integer class indices; a prediction set is an array of
shape (seeds, images) whose rows are paired image by image with every other set's rows (the runs'
predictions.csv share one row order) and seed by seed (row k is training seed k in every mix).

Why a paired bootstrap and not McNemar: every mix is scored on the *same* test images, so the honest
question is how the difference would move if those images had been a different draw, with each
image's predictions from both mixes kept together (pairing removes the image-difficulty variance the
two mixes share). Resampling images works for every metric (macro F1 included, which McNemar cannot
test) and gives a confidence interval for the difference, not only a p-value. With several seeds,
each resample also draws the seeds with replacement (the same draw for both mixes), so the interval
covers training randomness as well as the test-set draw; a study that ran once (one seed) gets the
test-image part only. McNemar's exact test is offered per seed for accuracy: the test a single-run
study could have used.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy import stats as scipy_stats

CLASSIFICATION_METRICS = ("accuracy", "precision_macro", "recall_macro", "f1_macro")

BOOTSTRAP_METHOD = "paired bootstrap over test images"
BOOTSTRAP_SEEDS_METHOD = "paired bootstrap over test images and seeds"
SEED_T_METHOD = "paired t-test over seeds"

# Resampling works on blocks of (resamples x images) weights of about this many entries (32 MB float32).
_BLOCK_ENTRIES = 8_000_000


@dataclass(frozen=True)
class Interval:
    """A mean over seeds and its t-based confidence interval (NaN bounds with a single seed)."""

    mean: float
    low: float
    high: float
    n: int


@dataclass(frozen=True)
class Difference:
    """`estimate` = metric(b) - metric(a), with its confidence interval and two-sided p-value."""

    estimate: float
    low: float
    high: float
    p_value: float
    method: str

    def significant(self, alpha: float) -> bool:
        return bool(self.p_value < alpha)


def mean_ci(values: Sequence[float] | np.ndarray, confidence: float) -> Interval:
    """Mean and Student-t confidence interval over seeds; one value gives NaN bounds (no spread known)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(v.mean())
    if v.size < 2:
        return Interval(mean, math.nan, math.nan, 1)
    half = float(scipy_stats.t.ppf((1 + confidence) / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return Interval(mean, mean - half, mean + half, int(v.size))


def metrics_from_counts(tp: np.ndarray, predicted: np.ndarray, true: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy and macro precision/recall/F1 from per-class counts (last axis = class).

    Macro averages run over every class of the data set; a class never predicted has precision 0
    (scikit-learn's zero_division=0), so these equal sklearn's values on a test set holding every class.
    """
    tp, predicted, true = (np.asarray(a, dtype=np.float64) for a in (tp, predicted, true))
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(true > 0, tp / true, 0.0)
        f1 = np.where(predicted + true > 0, 2 * tp / (predicted + true), 0.0)
    return {
        "accuracy": tp.sum(-1) / true.sum(-1),
        "precision_macro": precision.mean(-1),
        "recall_macro": recall.mean(-1),
        "f1_macro": f1.mean(-1),
    }


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict[str, float]:
    """The four classification metrics of one prediction set on the full test set."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    true = np.bincount(y_true, minlength=n_classes)
    predicted = np.bincount(y_pred, minlength=n_classes)
    tp = np.bincount(y_true[y_true == y_pred], minlength=n_classes)
    return {k: float(v) for k, v in metrics_from_counts(tp, predicted, true).items()}


def bootstrap_differences(
    y_true: np.ndarray,
    predictions: Mapping[str, np.ndarray],
    pairs: Sequence[tuple[str, str]],
    n_classes: int,
    *,
    samples: int,
    confidence: float,
    seed: int = 0,
    resample_seeds: bool = True,
) -> dict[tuple[str, str], dict[str, Difference]]:
    """Paired bootstrap of metric(b) - metric(a), averaged over seeds, for each pair (a, b).

    `predictions[name]` has shape (seeds, images). Each resample draws test images with replacement,
    the same draw for every prediction set and seed, and (when `resample_seeds` and there are several
    seeds) draws seed indices with replacement, the same draw for both sets of a pair. The estimate is
    the seed-averaged difference on the full test set; the interval is the bootstrap percentile
    interval; the p-value is twice the smaller share of resampled differences on either side of zero
    (with the +1 correction), i.e. the smallest level at which that interval excludes zero.

    Vectorised: per block of resamples, one (resamples x images) matrix of draw counts times one
    sparse indicator matrix holding, for every prediction set and seed, each image's true class, and
    its class again if predicted right, and its predicted class; so the cost grows with images x sets
    x seeds, not with the number of classes or pairs.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    n = y_true.size
    names = list(dict.fromkeys(name for pair in pairs for name in pair))
    sets = {name: np.atleast_2d(np.asarray(predictions[name], dtype=np.int64)) for name in names}
    n_seeds = {s.shape[0] for s in sets.values()}
    if len(n_seeds) != 1 or any(s.shape[1] != n for s in sets.values()):
        raise ValueError("every prediction set needs the same (seeds, images) shape as y_true's images")
    (s_count,) = n_seeds
    indicators_t = _indicators(y_true, [sets[name] for name in names], n_classes)

    def metrics_of(counts: np.ndarray) -> dict[str, np.ndarray]:
        """counts (r, K) -> metric name -> (r, sets, seeds)."""
        true = counts[:, None, None, :n_classes]
        rest = counts[:, n_classes:].reshape(counts.shape[0], len(names), s_count, 2, n_classes)
        return metrics_from_counts(rest[..., 0, :], rest[..., 1, :], true)

    index = {name: i for i, name in enumerate(names)}
    full = metrics_of(np.asarray(indicators_t.sum(axis=1)).T)
    rng = np.random.default_rng(seed)
    # Both the (resamples x images) weights and the (resamples x counts) result must fit the budget;
    # with 90 classes the counts are the larger of the two.
    block = max(1, min(samples, _BLOCK_ENTRIES // max(n, indicators_t.shape[0], 1)))
    resampled: dict[tuple[str, str], dict[str, list[np.ndarray]]] = {
        pair: {m: [] for m in CLASSIFICATION_METRICS} for pair in pairs
    }
    for start in range(0, samples, block):
        r = min(block, samples - start)
        draws = rng.integers(0, n, size=(r, n), dtype=np.int32)
        draws += (np.arange(r, dtype=np.int32) * n)[:, None]
        weights = np.bincount(draws.ravel(), minlength=r * n).reshape(r, n).astype(np.float32)
        counts = (indicators_t @ weights.T).T  # (r, K); exact: integer counts < 2**24
        values = metrics_of(counts)
        seed_draw = rng.integers(0, s_count, size=(r, s_count)) if resample_seeds and s_count > 1 else None
        for a, b in pairs:
            for metric in CLASSIFICATION_METRICS:
                diff = values[metric][:, index[b]] - values[metric][:, index[a]]  # (r, seeds)
                if seed_draw is not None:
                    diff = np.take_along_axis(diff, seed_draw, axis=1)
                resampled[(a, b)][metric].append(diff.mean(axis=1))
    method = BOOTSTRAP_SEEDS_METHOD if resample_seeds and s_count > 1 else BOOTSTRAP_METHOD
    out: dict[tuple[str, str], dict[str, Difference]] = {}
    for a, b in pairs:
        out[(a, b)] = {}
        for metric in CLASSIFICATION_METRICS:
            deltas = np.concatenate(resampled[(a, b)][metric])
            estimate = float((full[metric][0, index[b]] - full[metric][0, index[a]]).mean())
            out[(a, b)][metric] = _percentile_difference(estimate, deltas, confidence, method)
    return out


def _indicators(y_true: np.ndarray, sets: Sequence[np.ndarray], n_classes: int) -> sparse.csr_matrix:
    """(classes * (1 + 2 * sets * seeds), images), sparse: each image's true class, then per set and
    seed its class again if predicted right (true positives) and its predicted class."""
    eye = np.eye(n_classes, dtype=np.float32)
    truth = eye[y_true]
    blocks = [truth]
    for rows in sets:
        for row in rows:
            blocks.append(truth * (row == y_true)[:, None])  # true positives by class
            blocks.append(eye[row])  # predicted as class
    return sparse.csr_matrix(np.hstack(blocks).T)


def paired_bootstrap(
    y_true: np.ndarray,
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    n_classes: int,
    *,
    samples: int,
    confidence: float,
    seed: int = 0,
    resample_seeds: bool = True,
) -> dict[str, Difference]:
    """metric(b) - metric(a) for one pair of prediction sets; see `bootstrap_differences`."""
    result = bootstrap_differences(
        y_true,
        {"a": pred_a, "b": pred_b},
        [("a", "b")],
        n_classes,
        samples=samples,
        confidence=confidence,
        seed=seed,
        resample_seeds=resample_seeds,
    )
    return result[("a", "b")]


def _percentile_difference(estimate: float, deltas: np.ndarray, confidence: float, method: str) -> Difference:
    tail = (1 - confidence) / 2
    low, high = np.quantile(deltas, [tail, 1 - tail])
    below = (1 + np.count_nonzero(deltas <= 0)) / (deltas.size + 1)
    above = (1 + np.count_nonzero(deltas >= 0)) / (deltas.size + 1)
    return Difference(estimate, float(low), float(high), float(min(1.0, 2 * min(below, above))), method)


def paired_t(values_a: Sequence[float], values_b: Sequence[float], confidence: float) -> Difference:
    """mean(b - a) over seeds paired by index, with a t interval and p-value (for metrics known only
    per run, such as test loss). NaN with a single seed; a constant difference gets p=1 if it is zero,
    else 0."""
    d = np.asarray(values_b, dtype=np.float64) - np.asarray(values_a, dtype=np.float64)
    mean = float(d.mean()) if d.size else math.nan
    if d.size < 2:
        return Difference(mean, math.nan, math.nan, math.nan, SEED_T_METHOD)
    sd = float(d.std(ddof=1))
    if sd == 0.0:
        return Difference(mean, mean, mean, 1.0 if mean == 0 else 0.0, SEED_T_METHOD)
    interval = mean_ci(d, confidence)
    p = float(2 * scipy_stats.t.sf(abs(mean) / (sd / math.sqrt(d.size)), d.size - 1))
    return Difference(mean, interval.low, interval.high, p, SEED_T_METHOD)


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values of one family of tests, in the input order.

    Controls the chance of any false "significant" across the family (here: every mix against the
    baseline, per model and metric) without assuming independence. NaN p-values (untestable, e.g. a
    single seed) are left NaN and do not count towards the family size.
    """
    p = np.asarray(p_values, dtype=np.float64)
    adjusted = np.full(p.shape, math.nan)
    tested = np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    m = order.size
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))  # step-down: never below an earlier one
        adjusted[i] = running
    return [float(v) for v in adjusted]


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> float:
    """Two-sided exact McNemar p-value: a binomial test on the images exactly one of a, b got right."""
    correct_a, correct_b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    only_a = int(np.count_nonzero(correct_a & ~correct_b))
    only_b = int(np.count_nonzero(~correct_a & correct_b))
    if only_a + only_b == 0:
        return 1.0
    return float(scipy_stats.binomtest(only_b, only_a + only_b, 0.5).pvalue)

"""The statistics behind the report: intervals over replicates, paired changes and their inference.

Pure numpy/scipy, no files. Predictions are integer class indices; a prediction set is an array of
shape (replicates, images) whose rows are paired image by image with every other set's rows (the runs'
predictions.csv share one row order) and replicate by replicate (row k is the replicate with seed k in
every mix: what a replicate redraws is the study's design, stated in the report).

What a change's interval and p-value are. For a pair of mixes (a, b) and a metric, each replicate k
gives d_k = metric(b_k) - metric(a_k) on the full test set; the change is the mean of the S values
d_k. Two things move it: what a replicate redraws (training randomness and the subsets it draws,
varying between replicates) and the draw of the test images (fixed, shared by every run). Its
variance is estimated as the sum of

- s^2 / S, the spread of the d_k (sample variance over replicates). This holds the replicate-level
  variance and the part of the test-image noise that differs between replicates;
- the part of the test-image noise that every replicate shares: the mean covariance between the
  differences of two *different* replicates when the test images are resampled. It comes from a paired
  bootstrap over test images: each resample draws the images once, with replacement, and scores every
  replicate of both mixes on that same draw.

Under a model where replicate effects and test-image effects add, the expected sum is exactly the
variance of the change (the spread's own image part is not counted twice). The interval and the
p-value are Student t. Its degrees of freedom are S - 1 when the spread is the larger part (a
conservative choice: Welch-Satterthwaite would give more, and is too generous exactly when a few
replicates happen to agree), else Welch-Satterthwaite's with S - 1 for the spread and images - 1 for
the image part (tending to the normal when the test-image draw dominates). With a single replicate
only the bootstrap part is there: the interval is conditional on that one training run.
tests/test_stats.py checks by simulation that the false-positive rate at 5% stays under 7% (replicate
noise dominating, test-image noise dominating, both; 3, 5 and 10 replicates); bench/bench_stats.py
measures coverage and power through `bootstrap_differences` on macro F1.

Why a paired bootstrap and not McNemar: every mix is scored on the same test images, so pairing removes
the image difficulty both mixes share, and resampling images works for every metric (macro F1
included, which McNemar cannot test). Metrics known only per run (test loss) use a paired t-test over
replicates, which has no image part.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy import stats as scipy_stats

CLASSIFICATION_METRICS = ("accuracy", "precision_macro", "recall_macro", "f1_macro")

REPLICATE_METHOD = "t over replicates + paired bootstrap over test images"
IMAGE_METHOD = "paired bootstrap over test images (one replicate)"
SEED_T_METHOD = "paired t-test over replicates"

# A standard error below this is float rounding of a change that has no variance at all.
_NO_SPREAD = 1e-12
# Resampling works on blocks of (resamples x images) weights of about this many entries (32 MB float32).
_BLOCK_ENTRIES = 8_000_000


@dataclass(frozen=True)
class Interval:
    """A mean over replicates and its t-based confidence interval (NaN bounds with a single one)."""

    mean: float
    low: float
    high: float
    n: int


@dataclass(frozen=True)
class Difference:
    """`estimate` = metric(b) - metric(a), with its standard error, degrees of freedom, confidence
    interval and two-sided p-value. A change with no variance at all (se 0) has a NaN p-value."""

    estimate: float
    low: float
    high: float
    p_value: float
    method: str
    se: float = math.nan
    df: float = math.nan

    def significant(self, alpha: float) -> bool:
        return bool(self.p_value < alpha)  # NaN (untestable, no variance) is never significant

    @property
    def no_variance(self) -> bool:
        return self.se == 0.0

    def covers_zero(self) -> bool:
        """True when the interval holds zero, or there is no interval."""
        return not (self.low > 0 or self.high < 0)


@dataclass(frozen=True)
class PairChanges:
    """One pair's changes: every classification metric, and F1 of every class (in class-index order)."""

    metrics: Mapping[str, Difference]
    class_f1: tuple[Difference, ...]


def mean_ci(values: Sequence[float] | np.ndarray, confidence: float) -> Interval:
    """Mean and Student-t confidence interval over replicates; one value gives NaN bounds."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(v.mean())
    if v.size < 2:
        return Interval(mean, math.nan, math.nan, 1)
    half = float(scipy_stats.t.ppf((1 + confidence) / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return Interval(mean, mean - half, mean + half, int(v.size))


# --- the inference ---------------------------------------------------------------------------------


def replicate_image_se(
    d: np.ndarray, image_cov: np.ndarray, n_images: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(estimate, standard error, degrees of freedom) of the mean over replicates of `d`.

    `d` (..., S): each replicate's difference on the full test set; `image_cov` (..., S, S): the
    covariance of those differences under resampling the test images (the paired bootstrap).
    Vectorised over leading axes. See the module docstring for what is added and why; the shared image
    part is the mean off-diagonal covariance (floored at 0), the whole bootstrap variance with S = 1.
    """
    d = np.asarray(d, dtype=np.float64)
    cov = np.asarray(image_cov, dtype=np.float64)
    s = d.shape[-1]
    estimate = d.mean(axis=-1)
    if s == 1:
        variance = np.where(cov[..., 0, 0] > _NO_SPREAD**2, cov[..., 0, 0], 0.0)
        df = np.where(variance > 0, float(n_images - 1), np.nan)
        return estimate, np.sqrt(variance), df
    between = d.var(axis=-1, ddof=1) / s
    diagonal = np.trace(cov, axis1=-2, axis2=-1)
    shared = np.maximum((cov.sum(axis=(-2, -1)) - diagonal) / (s * (s - 1)), 0.0)
    variance = np.where(between + shared > _NO_SPREAD**2, between + shared, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        satterthwaite = variance**2 / (between**2 / (s - 1) + shared**2 / max(n_images - 1, 1))
    # Where the replicates' spread is the larger part, its S - 1 degrees of freedom, not more: the
    # Satterthwaite value is too generous exactly when a few replicates happen to agree.
    df = np.where(between >= shared, float(s - 1), satterthwaite)
    return estimate, np.sqrt(variance), np.where(variance > 0, df, np.nan)


def t_inference(
    estimate: np.ndarray, se: np.ndarray, df: np.ndarray, confidence: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(low, high, two-sided p) of a t statistic; vectorised. se 0: the estimate as both bounds, p NaN."""
    estimate, se, df = (np.asarray(a, dtype=np.float64) for a in (estimate, se, df))
    ok = se > 0
    safe_se, safe_df = np.where(ok, se, 1.0), np.where(ok, df, 1.0)
    half = scipy_stats.t.ppf((1 + confidence) / 2, safe_df) * safe_se
    p = 2 * scipy_stats.t.sf(np.abs(estimate) / safe_se, safe_df)
    return (
        np.where(ok, estimate - half, estimate),
        np.where(ok, estimate + half, estimate),
        np.where(ok, np.minimum(p, 1.0), np.nan),
    )


def replicate_difference(
    d: Sequence[float] | np.ndarray, image_cov: np.ndarray, n_images: int, confidence: float
) -> Difference:
    """The Difference of one pair and metric from its per-replicate differences and image covariance."""
    d = np.asarray(d, dtype=np.float64)
    estimate, se, df = replicate_image_se(d, image_cov, n_images)
    low, high, p = t_inference(estimate, se, df, confidence)
    method = REPLICATE_METHOD if d.size > 1 else IMAGE_METHOD
    return Difference(float(estimate), float(low), float(high), float(p), method, float(se), float(df))


def minimum_detectable(difference: Difference, alpha: float, power: float = 0.8) -> float:
    """The smallest true change a two-sided t test at level `alpha` detects with `power`, given the
    difference's standard error and degrees of freedom (NaN when they are unknown)."""
    if not difference.se > 0 or math.isnan(difference.df):
        return math.nan
    t = scipy_stats.t
    return float((t.ppf(1 - alpha / 2, difference.df) + t.ppf(power, difference.df)) * difference.se)


# --- metrics from counts ---------------------------------------------------------------------------


def class_f1_from_counts(tp: np.ndarray, predicted: np.ndarray, true: np.ndarray) -> np.ndarray:
    """F1 per class (last axis) from per-class counts; 0 for a class neither present nor predicted."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(predicted + true > 0, 2 * tp / (predicted + true), 0.0)


def metrics_from_counts(tp: np.ndarray, predicted: np.ndarray, true: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy and macro precision/recall/F1 from per-class counts (last axis = class).

    Macro averages run over every class of the data set; a class never predicted has precision 0
    (scikit-learn's zero_division=0), so these equal sklearn's values on a test set holding every class.
    """
    tp, predicted, true = (np.asarray(a, dtype=np.float64) for a in (tp, predicted, true))
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(true > 0, tp / true, 0.0)
    return {
        "accuracy": tp.sum(-1) / true.sum(-1),
        "precision_macro": precision.mean(-1),
        "recall_macro": recall.mean(-1),
        "f1_macro": class_f1_from_counts(tp, predicted, true).mean(-1),
    }


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict[str, float]:
    """The four classification metrics of one prediction set on the full test set."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    true = np.bincount(y_true, minlength=n_classes)
    predicted = np.bincount(y_pred, minlength=n_classes)
    tp = np.bincount(y_true[y_true == y_pred], minlength=n_classes)
    return {k: float(v) for k, v in metrics_from_counts(tp, predicted, true).items()}


# --- the paired bootstrap over test images ---------------------------------------------------------


class _Moments:
    """Running sums of resampled per-replicate differences (shifted by the full-set value, for
    precision) and of their cross-products, enough for the covariance between replicates."""

    def __init__(self, full: np.ndarray) -> None:
        self.full = full  # (S, ...) full-set differences
        self.count = 0
        self.total = np.zeros_like(full)
        self.cross = np.zeros((full.shape[0], *full.shape))  # (S, S, ...)

    def add(self, resampled: np.ndarray) -> None:
        """resampled: (r, S, ...)."""
        x = resampled - self.full
        self.count += x.shape[0]
        self.total += x.sum(axis=0)
        self.cross += np.einsum("rs...,rt...->st...", x, x)

    def covariance(self) -> np.ndarray:
        """(S, S, ...) covariance of the resampled differences between replicates."""
        mean = self.total / self.count
        outer = np.einsum("s...,t...->st...", mean, mean)
        return (self.cross - self.count * outer) / max(self.count - 1, 1)


def bootstrap_differences(
    y_true: np.ndarray,
    predictions: Mapping[str, np.ndarray],
    pairs: Sequence[tuple[str, str]],
    n_classes: int,
    *,
    samples: int,
    confidence: float,
    seed: int = 0,
) -> dict[tuple[str, str], PairChanges]:
    """metric(b) - metric(a), averaged over replicates, for each pair (a, b), with its inference.

    `predictions[name]` has shape (replicates, images). Each of `samples` resamples draws test images
    with replacement, the same draw for every prediction set and replicate, and scores every set on it;
    the covariance between replicates of the resampled differences is the image part of
    `replicate_image_se`. The estimate is the replicate-averaged difference on the full test set.

    Vectorised: per block of resamples, one (resamples x images) matrix of draw counts times one
    sparse indicator matrix holding, for every prediction set and replicate, each image's true class,
    and its class again if predicted right, and its predicted class; so the cost grows with images x
    sets x replicates, not with the number of pairs.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    n = y_true.size
    names = list(dict.fromkeys(name for pair in pairs for name in pair))
    sets = {name: np.atleast_2d(np.asarray(predictions[name], dtype=np.int64)) for name in names}
    replicates = {s.shape[0] for s in sets.values()}
    if len(replicates) != 1 or any(s.shape[1] != n for s in sets.values()):
        raise ValueError("every prediction set needs the same (replicates, images) shape as y_true's images")
    (s_count,) = replicates
    indicators_t = _indicators(y_true, [sets[name] for name in names], n_classes)
    index = {name: i for i, name in enumerate(names)}

    def scores(counts: np.ndarray) -> dict[str, np.ndarray]:
        """counts (r, K) -> metric name -> (r, sets, replicates), and 'class_f1' -> (..., classes)."""
        true = counts[:, None, None, :n_classes]
        rest = counts[:, n_classes:].reshape(counts.shape[0], len(names), s_count, 2, n_classes)
        tp, predicted = rest[..., 0, :], rest[..., 1, :]
        return {
            **metrics_from_counts(tp, predicted, true),
            "class_f1": class_f1_from_counts(tp, predicted, true),
        }

    def differences(values: dict[str, np.ndarray], a: str, b: str) -> dict[str, np.ndarray]:
        return {key: v[:, index[b]] - v[:, index[a]] for key, v in values.items()}

    full = scores(np.asarray(indicators_t.sum(axis=1)).T.astype(np.float64))
    moments = {pair: {key: _Moments(v[0]) for key, v in differences(full, *pair).items()} for pair in pairs}
    rng = np.random.default_rng(seed)
    # Both the (resamples x images) weights and the (resamples x counts) result must fit the budget;
    # with 90 classes the counts are the larger of the two.
    block = max(1, min(samples, _BLOCK_ENTRIES // max(n, indicators_t.shape[0], 1)))
    for start in range(0, samples, block):
        r = min(block, samples - start)
        draws = rng.integers(0, n, size=(r, n), dtype=np.int32)
        draws += (np.arange(r, dtype=np.int32) * n)[:, None]
        weights = np.bincount(draws.ravel(), minlength=r * n).reshape(r, n).astype(np.float32)
        counts = (indicators_t @ weights.T).T  # (r, K); exact: integer counts < 2**24
        values = scores(np.asarray(counts, dtype=np.float64))
        for pair in pairs:
            for key, diff in differences(values, *pair).items():
                moments[pair][key].add(diff)
    out: dict[tuple[str, str], PairChanges] = {}
    for pair in pairs:
        m = moments[pair]
        metrics = {
            metric: replicate_difference(m[metric].full, m[metric].covariance(), n, confidence)
            for metric in CLASSIFICATION_METRICS
        }
        per_class_cov = m["class_f1"].covariance()  # (S, S, classes)
        class_f1 = tuple(
            replicate_difference(m["class_f1"].full[:, c], per_class_cov[:, :, c], n, confidence)
            for c in range(n_classes)
        )
        out[pair] = PairChanges(metrics, class_f1)
    return out


def _indicators(y_true: np.ndarray, sets: Sequence[np.ndarray], n_classes: int) -> sparse.csr_matrix:
    """(classes * (1 + 2 * sets * replicates), images), sparse: each image's true class, then per set
    and replicate its class again if predicted right (true positives) and its predicted class."""
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
) -> PairChanges:
    """metric(b) - metric(a) for one pair of prediction sets; see `bootstrap_differences`."""
    result = bootstrap_differences(
        y_true,
        {"a": pred_a, "b": pred_b},
        [("a", "b")],
        n_classes,
        samples=samples,
        confidence=confidence,
        seed=seed,
    )
    return result[("a", "b")]


# --- tests over replicates, multiplicity --------------------------------------------------------------


def paired_t(values_a: Sequence[float], values_b: Sequence[float], confidence: float) -> Difference:
    """mean(b - a) over replicates paired by index, with a t interval and p-value (for metrics known
    only per run, such as test loss). A single replicate: no interval, p NaN. Differences with no
    spread: no variance to test against, p NaN (never a fake 0 or 1)."""
    d = np.asarray(values_b, dtype=np.float64) - np.asarray(values_a, dtype=np.float64)
    mean = float(d.mean()) if d.size else math.nan
    if d.size < 2:
        return Difference(mean, math.nan, math.nan, math.nan, SEED_T_METHOD)
    se = float(d.std(ddof=1)) / math.sqrt(d.size)
    se = se if se > _NO_SPREAD else 0.0
    low, high, p = t_inference(mean, se, d.size - 1, confidence)
    return Difference(mean, float(low), float(high), float(p), SEED_T_METHOD, se, float(d.size - 1))


def holm_adjust(p_values: Sequence[float], family_size: int | None = None) -> list[float]:
    """Holm-Bonferroni adjusted p-values of one family of tests, in the input order.

    Controls the chance of any false "significant" across the family without assuming independence.
    NaN p-values (untestable) stay NaN. `family_size` is the declared family's size when it holds
    members not given here (a mix with no runs, an untestable change): they count as p = 1, so they
    make the adjustment stricter, never looser. By default the family is the p-values that are not NaN.
    """
    p = np.asarray(p_values, dtype=np.float64)
    adjusted = np.full(p.shape, math.nan)
    tested = np.flatnonzero(~np.isnan(p))
    if family_size is not None and family_size < tested.size:
        raise ValueError(f"a family of {family_size} cannot hold {tested.size} tested p-values")
    order = tested[np.argsort(p[tested], kind="stable")]
    m = tested.size if family_size is None else family_size
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))  # step-down: never below an earlier one
        adjusted[i] = running
    return [float(v) for v in adjusted]

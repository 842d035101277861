"""The report's statistics: intervals, the replicate + test-image inference (checked by simulating
studies with no true change), paired t and Holm against references."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from synthmix.report import stats
from synthmix.runs.evaluate import FINAL_METRICS


def _predictions(rng: np.random.Generator, y: np.ndarray, error_rate: float, n_classes: int, replicates: int):
    """(replicates, images): each replicate wrong on a different random set of images, at `error_rate`."""
    wrong = rng.random((replicates, y.size)) < error_rate
    return np.where(wrong, (y + rng.integers(1, n_classes, (replicates, y.size))) % n_classes, y)


def test_mean_ci_is_the_student_t_interval_and_one_replicate_has_no_interval():
    values = [0.81, 0.84, 0.79, 0.86]
    iv = stats.mean_ci(values, 0.95)
    low, high = scipy_stats.t.interval(0.95, 3, loc=np.mean(values), scale=scipy_stats.sem(values))
    assert (iv.mean, iv.n) == (pytest.approx(np.mean(values)), 4)
    assert (iv.low, iv.high) == (pytest.approx(low), pytest.approx(high))
    single = stats.mean_ci([0.5], 0.95)
    assert single.mean == 0.5 and math.isnan(single.low) and math.isnan(single.high)


def test_classification_metrics_equal_scikit_learn_with_zero_division_0():
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(6), 20)
    pred = _predictions(rng, y, 0.5, 6, 1)[0]
    pred[pred == 5] = 4  # class 5 is never predicted: its precision is 0, as sklearn's zero_division=0
    ours = stats.classification_metrics(y, pred, 6)
    p, r, f, _ = precision_recall_fscore_support(y, pred, average="macro", zero_division=0)
    assert ours == pytest.approx(
        {"accuracy": accuracy_score(y, pred), "precision_macro": p, "recall_macro": r, "f1_macro": f}
    )


def test_the_bootstrapped_metrics_are_the_final_metrics_computable_from_predictions():
    counts = stats.metrics_from_counts(np.array([1, 2]), np.array([2, 2]), np.array([2, 2]))
    assert tuple(counts) == stats.CLASSIFICATION_METRICS
    assert set(stats.CLASSIFICATION_METRICS) < set(FINAL_METRICS)  # the rest (test loss) needs the logits


def test_report_primary_metric_accepts_exactly_the_classification_metrics():
    from typing import get_args

    from synthmix.config.params import ReportConfig

    allowed = get_args(ReportConfig.model_fields["primary_metric"].annotation)
    assert allowed == stats.CLASSIFICATION_METRICS
    assert ReportConfig().primary_metric == "f1_macro"


# --- the inference on known numbers -----------------------------------------------------------------


def test_the_standard_error_adds_the_replicate_spread_and_the_shared_image_covariance():
    d = np.array([0.10, 0.20, 0.30])
    cov = np.array([[4.0, 1.0, 2.0], [1.0, 5.0, 3.0], [2.0, 3.0, 6.0]]) * 1e-4
    estimate, se, df = stats.replicate_image_se(d, cov, n_images=300)
    between, shared = 0.01 / 3, 2e-4  # s^2 / S and the mean off-diagonal covariance
    assert estimate == pytest.approx(0.2)
    assert se == pytest.approx(math.sqrt(between + shared))
    assert df == 2  # the replicates' spread is the larger part: S - 1, not Satterthwaite's more

    image_heavy = cov * 100  # now the shared image part dominates: Welch-Satterthwaite
    _, se, df = stats.replicate_image_se(d, image_heavy, n_images=300)
    shared = 2e-2
    assert se == pytest.approx(math.sqrt(between + shared))
    assert df == pytest.approx((between + shared) ** 2 / (between**2 / 2 + shared**2 / 299))

    _, se, df = stats.replicate_image_se(d[:1], cov[:1, :1], n_images=300)  # one replicate: image part only
    assert (se, df) == (pytest.approx(0.02), 299)


def test_t_inference_gives_the_student_t_interval_and_no_p_value_without_variance():
    low, high, p = stats.t_inference(0.05, 0.02, 4, 0.95)
    half = scipy_stats.t.ppf(0.975, 4) * 0.02
    assert (low, high) == (pytest.approx(0.05 - half), pytest.approx(0.05 + half))
    assert p == pytest.approx(2 * scipy_stats.t.sf(2.5, 4))
    low, high, p = stats.t_inference(0.0, 0.0, np.nan, 0.95)
    assert (low, high) == (0.0, 0.0) and math.isnan(p)


def test_the_minimum_detectable_change_is_found_with_the_stated_power():
    d = stats.Difference(0.0, -0.1, 0.1, 1.0, "test", se=0.02, df=7)
    mde = stats.minimum_detectable(d, 0.05, 0.8)
    assert mde == pytest.approx((scipy_stats.t.ppf(0.975, 7) + scipy_stats.t.ppf(0.8, 7)) * 0.02)
    # a true change of that size is significant in about 80% of studies (noncentral t)
    power = scipy_stats.nct.sf(scipy_stats.t.ppf(0.975, 7), 7, mde / 0.02)
    assert power == pytest.approx(0.8, abs=0.02)
    assert math.isnan(stats.minimum_detectable(stats.Difference(0, 0, 0, math.nan, "t", se=0.0), 0.05))


# --- the null simulation: false positives at alpha 0.05 ---------------------------------------------

STUDIES = 2000  # per (regime, replicates): binomial SE of a 5% rate is 0.49 points
IMAGES = 200
# (sd of each run's replicate-level shift, sd of the image x mix interaction) on the logit scale
REGIMES = {"replicate noise dominates": (0.35, 0.0), "image noise dominates": (0.0, 1.5), "both": (0.2, 1.0)}


def _null_studies(rng: np.random.Generator, replicates: int, replicate_sd: float, image_sd: float):
    """STUDIES simulated studies with no true change between mixes a and b.

    Each test image has a difficulty shared by every run and an image x mix interaction (how much
    easier it happens to be for b than for a: part of the test-image draw that every replicate shares);
    each replicate has a shift shared by both mixes (cancels in the pair) and one per run (training
    randomness); each prediction is then right or wrong at random (test-image noise of its own).
    Returns each replicate's accuracy difference (studies, S) and their covariance under resampling
    the test images (the ideal bootstrap of a mean over images), (studies, S, S).
    """
    shape = (STUDIES, replicates, IMAGES)
    difficulty = 1.0 + 1.5 * rng.standard_normal((STUDIES, 1, IMAGES))
    interaction = image_sd * rng.standard_normal((STUDIES, 1, IMAGES))
    shared = rng.standard_normal((STUDIES, replicates, 1))
    logit_a = (
        difficulty + shared + replicate_sd * rng.standard_normal((STUDIES, replicates, 1)) - interaction / 2
    )
    logit_b = (
        difficulty + shared + replicate_sd * rng.standard_normal((STUDIES, replicates, 1)) + interaction / 2
    )
    right_a = rng.random(shape) < 1 / (1 + np.exp(-logit_a))
    right_b = rng.random(shape) < 1 / (1 + np.exp(-logit_b))
    x = right_b.astype(np.float32) - right_a.astype(np.float32)  # per image: +1, 0, -1
    d = x.mean(axis=-1)
    centred = x - d[..., None]
    return d, np.einsum("qsi,qti->qst", centred, centred) / IMAGES**2


@pytest.mark.parametrize("replicates", [3, 5, 10])
@pytest.mark.parametrize("regime", list(REGIMES))
def test_false_positive_rate_under_the_null_is_at_most_7_percent(regime, replicates):
    rng = np.random.default_rng([replicates, list(REGIMES).index(regime)])
    d, cov = _null_studies(rng, replicates, *REGIMES[regime])
    estimate, se, df = stats.replicate_image_se(d, cov, IMAGES)
    _, _, p = stats.t_inference(estimate, se, df, 0.95)
    rate = float(np.mean(p < 0.05))
    binomial_se = math.sqrt(0.05 * 0.95 / STUDIES)
    print(
        f"{regime}, {replicates} replicates: false-positive rate {rate:.4f} (binomial SE {binomial_se:.4f})"
    )
    assert rate <= 0.07
    assert rate >= 0.02  # not a test that never rejects


def test_the_simulation_catches_a_test_that_ignores_the_shared_test_image_draw():
    """The same null, tested with a t over replicates alone (the spread of d, no image covariance):
    with ten replicates and image noise dominating it is far above 5%, so the bound above has teeth."""
    rng = np.random.default_rng(99)
    d, _ = _null_studies(rng, 10, *REGIMES["image noise dominates"])
    se = d.std(axis=1, ddof=1) / math.sqrt(10)
    p = 2 * scipy_stats.t.sf(np.abs(d.mean(axis=1)) / se, 9)
    assert np.mean(p < 0.05) > 0.1


def test_the_bootstrap_estimates_the_covariance_the_simulation_uses():
    """For accuracy (a mean over images) the paired bootstrap's standard error matches the one from the
    ideal bootstrap covariance that the null simulation feeds to the same formula."""
    rng = np.random.default_rng(12)
    y = np.repeat(np.arange(4), 50)
    a = _predictions(rng, y, 0.3, 4, 3)
    b = _predictions(rng, y, 0.25, 4, 3)
    result = stats.paired_bootstrap(y, a, b, 4, samples=4000, confidence=0.95, seed=3).metrics["accuracy"]
    x = (b == y).astype(float) - (a == y).astype(float)
    centred = x - x.mean(axis=1, keepdims=True)
    _, se, _ = stats.replicate_image_se(x.mean(axis=1), centred @ centred.T / y.size**2, y.size)
    assert result.se == pytest.approx(float(se), rel=0.05)
    assert result.method == stats.REPLICATE_METHOD


# --- the paired bootstrap over test images ----------------------------------------------------------


def test_identical_predictions_give_zero_change_and_no_variance():
    rng = np.random.default_rng(2)
    y = np.repeat(np.arange(4), 25)
    a = _predictions(rng, y, 0.4, 4, 3)
    result = stats.paired_bootstrap(y, a, a.copy(), 4, samples=500, confidence=0.95)
    for d in (*result.metrics.values(), *result.class_f1):
        assert (d.estimate, d.low, d.high, d.se) == (0.0, 0.0, 0.0, 0.0)
        assert d.no_variance and math.isnan(d.p_value) and not d.significant(0.05)


def test_a_truly_better_set_is_significant_and_its_estimate_is_the_replicate_mean():
    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(5), 30)
    a = _predictions(rng, y, 0.45, 5, 4)
    b = _predictions(rng, y, 0.10, 5, 4)
    result = stats.paired_bootstrap(y, a, b, 5, samples=2000, confidence=0.95, seed=7)
    for metric, d in result.metrics.items():
        expected = np.mean(
            [
                stats.classification_metrics(y, b[s], 5)[metric]
                - stats.classification_metrics(y, a[s], 5)[metric]
                for s in range(4)
            ]
        )
        assert d.estimate == pytest.approx(expected)
        assert 0 < d.low < d.estimate < d.high
        assert d.p_value < 0.01 and d.significant(0.05)
        assert d.method == stats.REPLICATE_METHOD
    worse = stats.paired_bootstrap(y, b, a, 5, samples=2000, confidence=0.95, seed=7)
    assert worse.metrics["accuracy"].estimate == pytest.approx(-result.metrics["accuracy"].estimate)
    assert worse.metrics["accuracy"].high < 0


def test_vectorised_bootstrap_equals_a_plain_loop_over_resamples():
    """Same random draws, scored one resample at a time with scikit-learn, combined by the formula."""
    rng = np.random.default_rng(4)
    y = np.repeat(np.arange(3), 10)
    a = _predictions(rng, y, 0.4, 3, 2)
    b = _predictions(rng, y, 0.3, 3, 2)
    samples = 200
    result = stats.paired_bootstrap(y, a, b, 3, samples=samples, confidence=0.9, seed=11)

    draws = np.random.default_rng(11).integers(0, y.size, size=(samples, y.size), dtype=np.int32)
    resampled = {m: [] for m in stats.CLASSIFICATION_METRICS}
    per_class = []
    for idx in draws:
        diff = [
            {
                m: stats.classification_metrics(y[idx], b[s][idx], 3)[m]
                - stats.classification_metrics(y[idx], a[s][idx], 3)[m]
                for m in resampled
            }
            for s in range(2)
        ]
        for m in resampled:
            resampled[m].append([diff[s][m] for s in range(2)])
        per_class.append(
            [
                f1_score(y[idx], b[s][idx], average=None, labels=[0, 1, 2], zero_division=0)
                - f1_score(y[idx], a[s][idx], average=None, labels=[0, 1, 2], zero_division=0)
                for s in range(2)
            ]
        )
    for m, values in resampled.items():
        full = [
            stats.classification_metrics(y, b[s], 3)[m] - stats.classification_metrics(y, a[s], 3)[m]
            for s in range(2)
        ]
        expected = stats.replicate_difference(full, np.cov(np.array(values).T), y.size, 0.9)
        assert (result.metrics[m].se, result.metrics[m].low, result.metrics[m].high) == (
            pytest.approx(expected.se),
            pytest.approx(expected.low),
            pytest.approx(expected.high),
        )
    per_class = np.array(per_class)  # (samples, replicates, classes)
    for c in range(3):
        full = [
            f1_score(y, b[s], average=None, labels=[0, 1, 2])[c]
            - f1_score(y, a[s], average=None, labels=[0, 1, 2])[c]
            for s in range(2)
        ]
        expected = stats.replicate_difference(full, np.cov(per_class[:, :, c].T), y.size, 0.9)
        assert (result.class_f1[c].estimate, result.class_f1[c].se) == (
            pytest.approx(expected.estimate),
            pytest.approx(expected.se),
        )


def test_bootstrap_in_several_blocks_still_separates_better_from_identical(monkeypatch):
    monkeypatch.setattr(stats, "_BLOCK_ENTRIES", 1000)  # forces many small blocks
    rng = np.random.default_rng(5)
    y = np.repeat(np.arange(4), 30)
    a = _predictions(rng, y, 0.5, 4, 4)
    b = _predictions(rng, y, 0.1, 4, 4)
    result = stats.bootstrap_differences(
        y, {"a": a, "b": b, "same": a.copy()}, [("a", "b"), ("a", "same")], 4, samples=1000, confidence=0.95
    )
    assert result[("a", "b")].metrics["f1_macro"].p_value < 0.01
    assert result[("a", "same")].metrics["f1_macro"].no_variance


def test_a_class_that_truly_improved_has_an_interval_above_zero_and_untouched_ones_hold_zero():
    """Classes 0 and 1 are confused only with each other, at the same rate under both sets (no true
    change); class 2, confused with 3, is almost always right under b."""
    rng = np.random.default_rng(8)
    y = np.repeat(np.arange(4), 40)
    partner = np.array([1, 0, 3, 2])

    def predictions(rate_by_class):
        wrong = rng.random((3, y.size)) < np.asarray(rate_by_class)[y]
        return np.where(wrong, partner[y], y)

    a = predictions([0.3, 0.3, 0.5, 0.3])
    b = predictions([0.3, 0.3, 0.05, 0.3])
    result = stats.paired_bootstrap(y, a, b, 4, samples=2000, confidence=0.95, seed=1)
    assert result.class_f1[2].low > 0 and not result.class_f1[2].covers_zero()
    assert result.class_f1[0].covers_zero() and result.class_f1[1].covers_zero()


def test_one_replicate_resamples_images_only_and_mismatched_shapes_are_refused():
    rng = np.random.default_rng(6)
    y = np.repeat(np.arange(3), 10)
    a = _predictions(rng, y, 0.4, 3, 1)
    b = _predictions(rng, y, 0.2, 3, 1)
    d = stats.paired_bootstrap(y, a, b, 3, samples=200, confidence=0.95).metrics["accuracy"]
    assert d.method == stats.IMAGE_METHOD and d.df == y.size - 1
    with pytest.raises(ValueError, match="same"):
        stats.paired_bootstrap(y, a, _predictions(rng, y, 0.4, 3, 2), 3, samples=100, confidence=0.95)


# --- paired t, Holm ---------------------------------------------------------------------------------


def test_paired_t_matches_scipy_and_has_no_p_value_without_spread():
    a, b = [0.31, 0.35, 0.29, 0.33], [0.25, 0.30, 0.27, 0.26]
    d = stats.paired_t(a, b, 0.95)
    reference = scipy_stats.ttest_rel(b, a)
    assert d.estimate == pytest.approx(np.mean(np.subtract(b, a)))
    assert d.p_value == pytest.approx(reference.pvalue)
    assert d.low < d.estimate < d.high < 0
    assert math.isnan(stats.paired_t([0.3], [0.2], 0.95).p_value)
    for constant in ([0.3, 0.4], [0.4, 0.5]):  # no change at all, and the same change every time
        flat = stats.paired_t([0.3, 0.4], constant, 0.95)
        assert math.isnan(flat.p_value) and flat.no_variance and not flat.significant(0.05)


def test_holm_adjustment_steps_down_keeps_order_and_skips_untestable():
    assert stats.holm_adjust([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm_adjust([0.5, 0.001]) == pytest.approx([0.5, 0.002])
    adjusted = stats.holm_adjust([0.02, math.nan, 0.9])
    assert (
        adjusted[0] == pytest.approx(0.04) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.9)
    )


def test_holm_over_a_declared_family_counts_the_members_it_was_not_given():
    # two of four declared mixes tested: the adjustment is over four, not two
    assert stats.holm_adjust([0.01, 0.02], family_size=4) == pytest.approx([0.04, 0.06])
    adjusted = stats.holm_adjust([0.01, math.nan], family_size=4)  # an untestable member still counts
    assert adjusted[0] == pytest.approx(0.04) and math.isnan(adjusted[1])
    with pytest.raises(ValueError):
        stats.holm_adjust([0.01, 0.02, 0.03], family_size=2)

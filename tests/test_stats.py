"""The report's statistics: intervals, paired bootstrap, paired t, Holm and McNemar against references."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats
from sklearn.metrics import accuracy_score, precision_recall_fscore_support

from synthmix.evaluate import FINAL_METRICS
from synthmix.report import stats


def _predictions(rng: np.random.Generator, y: np.ndarray, error_rate: float, n_classes: int, seeds: int):
    """(seeds, images): each seed gets a different random set of wrong images, at `error_rate`."""
    wrong = rng.random((seeds, y.size)) < error_rate
    return np.where(wrong, (y + rng.integers(1, n_classes, (seeds, y.size))) % n_classes, y)


def test_mean_ci_is_the_student_t_interval_and_one_seed_has_no_interval():
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


def test_identical_predictions_give_zero_change_and_p_1():
    rng = np.random.default_rng(2)
    y = np.repeat(np.arange(4), 25)
    a = _predictions(rng, y, 0.4, 4, 3)
    result = stats.paired_bootstrap(y, a, a.copy(), 4, samples=500, confidence=0.95)
    for d in result.values():
        assert (d.estimate, d.low, d.high, d.p_value) == (0.0, 0.0, 0.0, 1.0)
        assert not d.significant(0.05)


def test_a_truly_better_set_is_significant_and_its_estimate_is_the_seed_mean_of_full_set_differences():
    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(5), 30)
    a = _predictions(rng, y, 0.45, 5, 3)
    b = _predictions(rng, y, 0.10, 5, 3)
    result = stats.paired_bootstrap(y, a, b, 5, samples=2000, confidence=0.95, seed=7)
    for metric, d in result.items():
        expected = np.mean(
            [
                stats.classification_metrics(y, b[s], 5)[metric]
                - stats.classification_metrics(y, a[s], 5)[metric]
                for s in range(3)
            ]
        )
        assert d.estimate == pytest.approx(expected)
        assert 0 < d.low < d.estimate < d.high
        assert d.p_value < 0.01 and d.significant(0.05)
        assert d.method == stats.BOOTSTRAP_SEEDS_METHOD
    worse = stats.paired_bootstrap(y, b, a, 5, samples=2000, confidence=0.95, seed=7)
    assert worse["accuracy"].estimate == pytest.approx(-result["accuracy"].estimate)
    assert worse["accuracy"].high < 0


def test_vectorised_bootstrap_equals_a_plain_loop_over_resamples():
    """Same random draws, computed one resample at a time with scikit-learn-equivalent metrics."""
    rng = np.random.default_rng(4)
    y = np.repeat(np.arange(3), 10)
    a = _predictions(rng, y, 0.4, 3, 2)
    b = _predictions(rng, y, 0.3, 3, 2)
    samples = 200
    result = stats.paired_bootstrap(y, a, b, 3, samples=samples, confidence=0.9, seed=11)

    draw_rng = np.random.default_rng(11)
    draws = draw_rng.integers(0, y.size, size=(samples, y.size), dtype=np.int32)
    seed_draws = draw_rng.integers(0, 2, size=(samples, 2))
    deltas = {m: [] for m in stats.CLASSIFICATION_METRICS}
    for idx, seeds in zip(draws, seed_draws, strict=True):
        per_seed = {m: [] for m in deltas}
        for s in seeds:
            ma = stats.classification_metrics(y[idx], a[s][idx], 3)
            mb = stats.classification_metrics(y[idx], b[s][idx], 3)
            for m in deltas:
                per_seed[m].append(mb[m] - ma[m])
        for m in deltas:
            deltas[m].append(np.mean(per_seed[m]))
    for m, values in deltas.items():
        low, high = np.quantile(values, [0.05, 0.95])
        assert (result[m].low, result[m].high) == (pytest.approx(low), pytest.approx(high))


def test_bootstrap_in_several_blocks_still_separates_better_from_identical(monkeypatch):
    monkeypatch.setattr(stats, "_BLOCK_ENTRIES", 1000)  # forces many small blocks
    rng = np.random.default_rng(5)
    y = np.repeat(np.arange(4), 30)
    a = _predictions(rng, y, 0.5, 4, 2)
    b = _predictions(rng, y, 0.1, 4, 2)
    result = stats.bootstrap_differences(
        y, {"a": a, "b": b, "same": a.copy()}, [("a", "b"), ("a", "same")], 4, samples=1000, confidence=0.95
    )
    assert result[("a", "b")]["f1_macro"].p_value < 0.01
    assert result[("a", "same")]["f1_macro"].p_value == 1.0


def test_one_seed_resamples_images_only_and_mismatched_shapes_are_refused():
    rng = np.random.default_rng(6)
    y = np.repeat(np.arange(3), 10)
    a = _predictions(rng, y, 0.4, 3, 1)
    assert stats.paired_bootstrap(y, a, a, 3, samples=100, confidence=0.95)["accuracy"].method == (
        stats.BOOTSTRAP_METHOD
    )
    with pytest.raises(ValueError, match="same"):
        stats.paired_bootstrap(y, a, _predictions(rng, y, 0.4, 3, 2), 3, samples=100, confidence=0.95)


def test_paired_t_matches_scipy_and_degenerates_sensibly():
    a, b = [0.31, 0.35, 0.29, 0.33], [0.25, 0.30, 0.27, 0.26]
    d = stats.paired_t(a, b, 0.95)
    reference = scipy_stats.ttest_rel(b, a)
    assert d.estimate == pytest.approx(np.mean(np.subtract(b, a)))
    assert d.p_value == pytest.approx(reference.pvalue)
    assert d.low < d.estimate < d.high < 0
    assert math.isnan(stats.paired_t([0.3], [0.2], 0.95).p_value)
    assert stats.paired_t([0.3, 0.4], [0.3, 0.4], 0.95).p_value == 1.0


def test_holm_adjustment_steps_down_keeps_order_and_skips_untestable():
    assert stats.holm_adjust([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm_adjust([0.5, 0.001]) == pytest.approx([0.5, 0.002])
    adjusted = stats.holm_adjust([0.02, math.nan, 0.9])
    assert (
        adjusted[0] == pytest.approx(0.04) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.9)
    )


def test_mcnemar_exact_is_a_binomial_test_on_discordant_images():
    a = np.array([1, 1, 0, 0, 1, 0, 0, 0, 1, 1], dtype=bool)
    b = np.array([1, 1, 1, 1, 1, 1, 1, 0, 1, 1], dtype=bool)
    assert stats.mcnemar_exact(a, b) == pytest.approx(scipy_stats.binomtest(4, 4, 0.5).pvalue)
    assert stats.mcnemar_exact(a, a) == 1.0

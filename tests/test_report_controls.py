"""The report on a study with controls: augmentation control, extra-real control, on-the-fly augmentation.

Tiny studies (train_per_class 4: 4r0s the baseline, 4r4s, the augmentation control 4r4a and the
extra-real control 8r0s) on run folders written by synthmix.runs.rundir, as tests/test_report.py builds them.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from synthmix.config.params import load_params
from synthmix.core.files import write_json
from synthmix.data.mixes import Mix
from synthmix.data.split import SUMMARY_NAME, SplitSizes, SplitSummary
from synthmix.report import controls, exchange, stats
from synthmix.stages.report import report_stage
from test_report import CLASSES, PER_CLASS, improved, predictions, write_run

MIXES = ("4r0s", "4r4s", "4r4a", "8r0s")


def write_params(root: Path, mixes=MIXES, seeds=(0, 1, 2), **train) -> None:
    params = {
        "data": {"train_per_class": 4, "extra_per_class": 4, "pool_per_class": 8},
        "study": {"mixes": list(mixes), "models": ["cnn"], "seeds": list(seeds), "baseline": "4r0s"},
        "report": {"bootstrap_samples": 500},
        "train": train,
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def write_controls_study(root: Path, skip=(), shares=None, **run) -> None:
    """4r0s with 45% errors; by default 8r0s puts 60% of them right, 4r4s 30% (about half-way: worth
    about 2 real images a class), the augmentation control 4r4a 5%."""
    shares = shares or {"4r0s": 0.0, "8r0s": 0.6, "4r4s": 0.3, "4r4a": 0.05}
    for seed in range(3):
        base = predictions(seed, 0.45)
        for mix, share in shares.items():
            if mix not in skip:
                write_run(root, "cnn", mix, seed, improved(base, share, seed) if share else base, **run)


def write_split_json(root: Path, extra: int, pool: int) -> None:
    """prepared/split.json as `synthmix prepare` writes it: every class with `extra` extra images."""
    counts = {c: {"train": 4, "test": PER_CLASS, "extra": extra, "pool": pool} for c in CLASSES}
    write_json(
        SplitSummary(SplitSizes(4, PER_CLASS, 4, 8), counts).to_json(), root / "prepared" / SUMMARY_NAME
    )


def test_a_study_with_controls_opens_on_the_headline_figure_and_its_sentences(in_tmp):
    write_params(in_tmp)
    write_controls_study(in_tmp, augmentation="random-resized crop, rotation ±10°")
    write_split_json(in_tmp, extra=4, pool=8)
    result = report_stage(load_params(), log_to_mlflow=False)

    # the headline figure comes first, its numbers beside it
    assert result.figures[0].name == "headline.png"
    with Image.open(result.figures[0]) as img:
        assert img.format == "PNG" and min(img.size) > 100
    with open(in_tmp / "reports" / "figures" / "headline.csv", newline="") as fh:
        rows = {r["mix"]: r for r in csv.DictReader(fh)}
    assert list(next(iter(rows.values()))) == [
        "model",
        "mix",
        "real",
        "synthetic",
        "kind",
        "mean",
        "low",
        "high",
    ]
    assert {m: r["kind"] for m, r in rows.items()} == {
        "4r0s": "real_only",
        "4r4s": "synthetic",
        "4r4a": "augmentation_control",
        "8r0s": "extra_real_control",
    }
    assert float(rows["4r0s"]["low"]) < float(rows["4r0s"]["mean"]) < float(rows["4r0s"]["high"])
    md = (in_tmp / "reports" / "report.md").read_text()
    assert md.index("figures/headline.png") < md.index("figures/curves-cnn.png")

    # at the top: the synthetic mix against its augmentation control, then the exchange rate
    top = md[md.index("## At a glance") : md.index("## Findings")]
    assert re.search(
        r"CNN: does adding 4 synthetic images a class beat augmenting the real ones\? 4r4s vs the "
        r"augmentation control 4r4a \(4 real images and 4 augmented copies of them a class\) macro F1 "
        r"\+0\.\d{3} \(95% CI \+0\.\d{3} to \+0\.\d{3}, p [<=] 0\.\d{3}, Holm p [<=] 0\.\d{3}\): "
        r"significantly better, so the synthetic images beat augmentation here\.",
        top,
    )
    match = re.search(
        r"CNN: 4 synthetic images a class \(4r4s, macro F1 0\.\d{3}\) are worth about ([\d.]+) real ones "
        r"\(95% CI ([\d.]+) to ([\d.]+)\): real-only training reaches that macro F1 at about [\d.]+ real "
        r"images a class, interpolating linearly between the real-only mixes \(4r0s 0\.\d{3}, 8r0s "
        r"0\.\d{3}\); interval from 500 bootstrap resamples of replicates and test images\.",
        top,
    )
    assert match, top
    k, low, high = map(float, match.groups())
    assert 1 < k < 3 and 0 <= low < k < high <= 4
    assert (
        result.findings[: len(result.findings)] and "4r4s vs the augmentation control" in result.findings[0]
    )

    # the declared family: 3 mixes against 4r0s and 4r4s against 4r4a, Holm over all 4
    assert "every study mix (4r4s, 4r4a, 8r0s) against 4r0s, and each synthetic study mix" in md
    assert "(4r4s vs 4r4a), 4 tests" in md
    changes = md[md.index("## Changes") :]
    assert re.search(r"\| CNN \| fixed \| 4r4s vs 4r4a \| \+0\.\d{3} [^|]*Holm p [^|]*\* \|", changes)
    assert "## Exchange rate" in md and "| CNN | 4r4s |" in md
    # the controls are named as such; nothing is said of mixes that could not run
    assert "controls: 4r4a (augmentation control), 8r0s (extra-real control)" in md
    assert "could not run" not in md
    # the method: budget and augmentation policy; provenance: where the generator's images came from
    assert "Training budget: every run trained for its model's epochs (CNN 4 epochs)" in md
    assert "Augmentation policy (4r4a: random-resized crop, rotation ±10°)" in md
    assert "The generator learns from a pool of 8 real images a class that the classifier never sees" in md


def test_a_control_the_data_cannot_serve_is_listed_with_the_reason(in_tmp):
    write_params(in_tmp)
    write_controls_study(in_tmp, skip=("8r0s",))
    write_split_json(in_tmp, extra=2, pool=0)
    result = report_stage(load_params(), log_to_mlflow=False)
    md = (in_tmp / "reports" / "report.md").read_text()
    section = md[md.index("## Controls that could not run") :]
    assert section.splitlines()[2] == (
        "- 8r0s (extra-real control) could not run: it needs 4 real images a class beyond the 4 training "
        f"and {PER_CLASS} test ones, and 5 of 5 classes have fewer ('cat' has 2, 'dog' has 2, 'fox' has 2, "
        "'owl' has 2, 'yak' has 2). Add real images to those classes to run it."
    )
    assert any(
        "no exchange rate for 4r4s: it takes real-only runs at two real counts at least, and of the study's "
        "real-only mixes only 4r0s has runs (no runs of 8r0s)" in s
        for s in result.findings
    )
    assert (
        "The generator learns from the classifier's own training split, since data.pool_per_class" not in md
    )
    assert "The generator learns from the classifier's own training split, since the data has no room" in md


def test_without_split_json_a_missing_control_is_named_not_run_without_a_reason(in_tmp):
    write_params(in_tmp)
    write_controls_study(in_tmp, skip=("8r0s",))
    report_stage(load_params(), log_to_mlflow=False)
    md = (in_tmp / "reports" / "report.md").read_text()
    assert "## Controls that could not run\n\n- 8r0s (extra-real control) was not run.\n\n## Summary" in md
    assert "The generator learns" not in md  # nothing said of the pool without split.json


def test_a_compute_matched_budget_states_the_steps_each_mix_took(in_tmp):
    write_params(in_tmp, mixes=("4r0s", "4r4s", "4r0s+aug"), budget="steps")
    for seed in range(2):
        base = predictions(seed, 0.4)
        write_run(in_tmp, "cnn", "4r0s", seed, base, budget="steps", steps=12)
        write_run(in_tmp, "cnn", "4r4s", seed, improved(base, 0.2, seed), budget="steps", steps=12)
        write_run(in_tmp, "cnn", "4r0s+aug", seed, improved(base, 0.1, seed), budget="steps", steps=12)
    result = report_stage(load_params(), log_to_mlflow=False)
    md = (in_tmp / "reports" / "report.md").read_text()
    assert (
        "Training budget: compute-matched, every mix trained for as many optimiser steps as the baseline "
        "4r0s takes in its model's epochs" in md
    )
    assert "(optimiser steps a run, CNN: 4r0s 12, 4r4s 12, 4r0s+aug 12)" in md
    assert "a +aug mix augments every training image afresh each epoch" in md
    assert "baseline 4r0s (real only)" in md
    # an on-the-fly augmented mix is a control, never a point on the real-only curve
    with open(in_tmp / "reports" / "figures" / "headline.csv", newline="") as fh:
        kinds = {r["mix"]: r["kind"] for r in csv.DictReader(fh)}
    assert kinds["4r0s+aug"] == "online_augmentation"
    assert not any("exchange rate" in s for s in result.findings)  # one real-only count: not measured


@pytest.mark.parametrize(
    ("mix", "kind"),
    [
        ("30r0s", "real_only"),
        ("15r0s", "real_only"),
        ("30r30s", "synthetic"),
        ("0r30s", "synthetic"),
        ("30r30a", "augmentation_control"),
        ("30r0s+aug", "online_augmentation"),
        ("30r30s+aug", "online_augmentation"),
        ("60r0s", "extra_real_control"),
    ],
)
def test_every_mix_has_one_kind(mix, kind):
    assert controls.kind(Mix.parse(mix), Mix(30, 0)) == kind


def test_augmented_mixes_are_never_real_only_nor_ratio_pairs():
    mixes = [Mix.parse(m) for m in ("30r0s", "30r15s", "15r30s", "30r30a", "30r0s+aug", "60r0s", "15r0s")]
    assert [m.name for m in controls.real_only_curve(mixes)] == ["15r0s", "30r0s", "60r0s"]
    assert controls.synthetic_target(mixes, Mix(30, 0)) == Mix(30, 15)
    assert controls.synthetic_target([*mixes, Mix.parse("30r30s+aug")], Mix(30, 0)) == Mix(30, 15)
    assert controls.same_size_pair(Mix(30, 15), Mix(15, 30))
    assert not controls.same_size_pair(Mix(30, 0, 15), Mix(15, 30))  # 30r15a holds no synthetic image
    assert not controls.same_size_pair(Mix(30, 15, 0, True), Mix(15, 30))  # +aug on one side only
    pairs = controls.control_pairs([Mix(30, 0), Mix(30, 30), Mix(30, 0, 30), Mix(15, 30), Mix(30, 15)])
    assert pairs == ((Mix(30, 0, 30), Mix(30, 30)),)  # same real count and size only


# --- the exchange rate -------------------------------------------------------------------------------


def test_the_exchange_rate_inverts_the_real_only_curve_where_the_truth_is_known():
    real = [15, 30, 60]
    curve = np.array([0.5, 0.6, 0.8])  # linear within each segment
    assert exchange.matched_real(real, curve, np.array(0.7)) == pytest.approx(45)
    found = exchange.point_estimate(real, list(curve), 0.7, 30)
    assert found.status == exchange.ESTIMATED and found.k == pytest.approx(15)
    assert exchange.point_estimate(real, list(curve), 0.55, 30).k == pytest.approx(-7.5)
    # vectorised over resamples; beyond the range censored to its ends
    draws = np.array([[0.5, 0.6, 0.8], [0.4, 0.6, 0.7], [0.5, 0.6, 0.8], [0.5, 0.6, 0.8]])
    targets = np.array([0.6, 0.65, 0.45, 0.95])
    assert exchange.matched_real(real, draws, targets).tolist() == pytest.approx([30, 45, 15, 60])
    # a resampled curve that dips is read at its first crossing (through its running maximum)
    dipping = np.array([0.5, 0.7, 0.65, 0.9])
    assert float(exchange.matched_real([10, 20, 30, 40], dipping, np.array(0.68))) == pytest.approx(19)


def test_the_data_cannot_support_an_estimate_with_one_real_count_or_a_curve_that_does_not_rise():
    assert exchange.point_estimate([30], [0.6], 0.7, 30).status == exchange.TOO_FEW
    flat = exchange.point_estimate([30, 60], [0.6, 0.6], 0.6, 30)
    assert flat.status == exchange.NOT_INCREASING and math.isnan(flat.k)
    dips = exchange.point_estimate([15, 30, 60], [0.5, 0.65, 0.6], 0.62, 30)
    assert dips.status == exchange.NOT_INCREASING


def test_beyond_the_real_only_range_only_a_bound_is_given():
    draws = np.array([[0.6, 0.8, 0.85], [0.6, 0.8, 0.75], [0.6, 0.8, 0.9], [0.6, 0.8, 0.82]])
    above = exchange.estimate([30, 60], 30, np.array([0.6, 0.8, 0.85]), draws, 0.95)
    assert (above.status, above.k, above.share_beyond) == (exchange.ABOVE, 30, 0.75)
    assert math.isnan(above.low) and math.isnan(above.high)  # a bound, no interval
    below = exchange.estimate([30, 60], 30, np.array([0.6, 0.8, 0.55]), draws - [0, 0, 0.3], 0.95)
    assert (below.status, below.k, below.share_beyond) == (exchange.BELOW, 0, 0.75)  # 0.6 is no lower


def test_an_interval_reaching_the_range_is_censored_at_its_end_and_says_so():
    rng = np.random.default_rng(0)
    curve = np.tile([0.6, 0.8], (1000, 1))
    target = 0.78 + 0.03 * rng.standard_normal(1000)  # k about 27 of at most 30: often beyond 60r0s
    found = exchange.estimate(
        [30, 60], 30, np.array([0.6, 0.8, 0.78]), np.column_stack([curve, target]), 0.95
    )
    assert found.status == exchange.ESTIMATED and found.k == pytest.approx(27)
    assert found.high == 30 and found.censored_high and not found.censored_low
    assert 0 < found.low < 27


def test_resampled_means_score_every_mix_on_the_same_draw_of_replicates_and_images():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 90)
    one = np.where(rng.random((4, 90)) < 0.3, (y + 1) % 3, y)  # 4 replicates
    other = np.where(rng.random((4, 90)) < 0.1, (y + 2) % 3, y)
    full, draws = exchange.resampled_means(y, np.stack([one, one, other]), 3, "f1_macro", samples=300, seed=1)
    expected = np.mean([stats.classification_metrics(y, row, 3)["f1_macro"] for row in one])
    assert full[0] == full[1] == pytest.approx(expected)
    assert draws.shape == (300, 3) and np.array_equal(draws[:, 0], draws[:, 1])  # the same draws
    assert draws[:, 0].std() > 0 and abs(draws[:, 0].mean() - full[0]) < 0.02
    again = exchange.resampled_means(y, np.stack([one, one, other]), 3, "f1_macro", samples=300, seed=1)
    assert np.array_equal(again[1], draws)  # report.seed makes it reproducible


def _simulated_study(rng: np.random.Generator, replicates: int, images: int, k_true: float):
    """Accuracy of real-only training rises linearly from 0.6 (30 real) to 0.8 (60 real); the synthetic
    mix (30 real) scores as real-only training would with 30 + k_true real images. Test images have a
    difficulty every run shares; each run's accuracy varies around its mix's (a replicate effect)."""
    from scipy.stats import norm

    accuracy = np.array([0.6, 0.8, 0.6 + 0.2 * k_true / 30])
    y = rng.integers(0, 2, images)
    difficulty = rng.standard_normal(images)
    predicted = np.empty((3, replicates, images), dtype=np.int64)
    for s in range(replicates):
        for m in range(3):
            p = accuracy[m] + 0.02 * rng.standard_normal()
            correct = 0.7 * difficulty + math.sqrt(1 - 0.49) * rng.standard_normal(images) < norm.ppf(p)
            predicted[m, s] = np.where(correct, y, 1 - y)
    return y, predicted


def test_the_exchange_rate_interval_covers_the_true_rate_by_simulation():
    """200 simulated studies (5 replicates, 300 test images): the 95% interval covers the true k = 15
    at least 90% of the time, and the estimates centre on it."""
    rng = np.random.default_rng(0)
    covered, estimates = 0, []
    for _ in range(200):
        y, predicted = _simulated_study(rng, replicates=5, images=300, k_true=15)
        full, draws = exchange.resampled_means(
            y, predicted, 2, "accuracy", samples=300, seed=int(rng.integers(2**31))
        )
        found = exchange.estimate([30, 60], 30, full, draws, 0.95)
        estimates.append(found.k)
        covered += found.status == exchange.ESTIMATED and found.low <= 15 <= found.high
    assert covered / 200 >= 0.9
    assert abs(np.nanmedian(estimates) - 15) < 1.5


def test_the_report_gives_only_a_bound_when_the_synthetic_mix_beats_the_extra_real_control(in_tmp):
    write_params(in_tmp)
    write_controls_study(in_tmp, shares={"4r0s": 0.0, "8r0s": 0.3, "4r4s": 0.7, "4r4a": 0.05})
    result = report_stage(load_params(), log_to_mlflow=False)
    assert any(
        re.search(
            r"CNN: on average 4r4s \(macro F1 0\.\d{3}\) scores above 8r0s \(0\.\d{3}\), the most real images the "
            r"study measured \(as in \d+% of 500 bootstrap resamples of replicates and test images\): its 4 "
            r"synthetic images a class are worth more than 4 real ones, beyond what the study measured, so no "
            r"number is given\.",
            s,
        )
        for s in result.findings
    )
    md = (in_tmp / "reports" / "report.md").read_text()
    assert "| CNN | 4r4s | " in md and "| > 4 |  | above the range |" in md


def test_the_report_gives_no_exchange_rate_when_more_real_images_did_not_help(in_tmp):
    write_params(in_tmp)
    write_controls_study(in_tmp, shares={"4r0s": 0.3, "8r0s": 0.0, "4r4s": 0.5, "4r4a": 0.05})
    result = report_stage(load_params(), log_to_mlflow=False)
    assert any(
        re.search(
            r"CNN: no exchange rate for 4r4s: the real-only macro F1 does not rise with every added real "
            r"image count \(4r0s 0\.\d{3}, 8r0s 0\.\d{3}, means over replicates\)",
            s,
        )
        for s in result.findings
    )


def test_without_runs_of_the_augmentation_control_the_top_says_the_answer_is_unknown(in_tmp):
    write_params(in_tmp)
    write_controls_study(in_tmp, skip=("4r4a",))
    result = report_stage(load_params(), log_to_mlflow=False)
    assert result.findings[0] == (
        "CNN: whether 4r4s beats the augmentation control 4r4a is unknown: no runs of 4r4a."
    )
    md = (in_tmp / "reports" / "report.md").read_text()
    assert "- 4r4a (augmentation control) was not run." in md


def test_a_single_replicate_still_gives_an_exchange_rate_from_the_test_image_draw(in_tmp):
    write_params(in_tmp, seeds=(0,))
    write_controls_study(in_tmp)
    result = report_stage(load_params(), log_to_mlflow=False)
    assert result.findings[0].startswith("Each configuration ran with a single replicate")
    assert any(
        re.search(r"4 synthetic images a class \(4r4s, .*\) are worth about", s) for s in result.findings
    )

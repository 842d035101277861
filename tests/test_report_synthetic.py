"""The report's synthetic-data section: quality tables, filter drop counts, vetted mixes that came up
short, quality against gain in F1, and the pictures, from a hand-written quality.json and filters.csv."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import write_image
from synthmix.config.params import load_params
from synthmix.core.files import write_json
from synthmix.data.mixes import Mix
from synthmix.data.vetting import FilterRow, write_filter_rows
from synthmix.quality import BootstrapInterval, NearestSummary, Quality, rank_correlation
from synthmix.quality.files import (
    ClosestPair,
    FeatureSpace,
    FilterStatus,
    GeneratorQuality,
    QualitySummary,
    write_quality,
)
from synthmix.report import quality_gain, synthetic, synthetic_figures
from synthmix.report.cells import Cell
from synthmix.runs import rundir
from synthmix.stages.report import report_stage
from test_report import predictions, write_run

CLASSES = tuple(f"c{i:02d}" for i in range(12))
PER_CLASS = 20  # test images per class
FEATURES = FeatureSpace(
    "reference", "the penultimate layer of a CNN trained here on the real training images"
)
CLIP_REASON = "no CLIP weights on this machine (put them under models/clip to enable it)"
# Coverage ranked with no relation to the class order (Spearman rho -0.05 against it).
COVERAGE_RANKS = (5, 9, 2, 11, 7, 1, 12, 4, 8, 3, 10, 6)


def quality(kid: float | None, coverage: float, median: float, n: int = 30) -> Quality:
    """One class's quality with intervals around its KID and coverage."""
    kid_iv = None if kid is None else BootstrapInterval(kid, kid * 0.5, kid * 1.5, 0.9, 200)
    return Quality(
        n_real=n,
        n_fake=n,
        kid=kid,
        kid_std=None if kid is None else kid / 10,
        kid_interval=kid_iv,
        precision=0.81,
        recall=0.62,
        density=1.05,
        coverage=coverage,
        coverage_interval=BootstrapInterval(coverage, coverage - 0.1, coverage + 0.1, 0.9, 200),
        vendi=11.5,
        vendi_real=14.25,
        nearest=NearestSummary(0.01, median, 0.4),
        reasons=(),
    )


def write_images(root: Path) -> None:
    """The synthetic and real images quality.json and filters.csv name (relative to `root`)."""
    for c, label in enumerate(CLASSES[:3]):
        for i in range(4):
            write_image(root / "synthetic" / label / f"{i:04d}.png", seed=100 * c + i)
        write_image(root / "data" / label / "train0.png", seed=1000 + c)
    write_image(root / "data" / "c00" / "test0.png", seed=2000)


def summary() -> QualitySummary:
    """ddpm: KID rising with the class index (classes further on gain less below), coverage unrelated;
    one of its closest pairs names a synthetic image that does not exist."""
    classes = {label: quality(0.01 * (c + 1), COVERAGE_RANKS[c] / 13, 0.3) for c, label in enumerate(CLASSES)}
    pooled = quality(0.05, 0.7, 0.3, n=30 * len(CLASSES))
    overall = dataclasses.replace(pooled, kid_interval=None, coverage_interval=None)  # pooled: no intervals
    closest = (
        ClosestPair(
            "c00", Path("synthetic/c00/0000.png"), Path("data/c00/train0.png"), "c00", "train", 0.012
        ),
        ClosestPair("c01", Path("synthetic/c01/0001.png"), Path("data/c00/test0.png"), "c00", "test", 0.034),
        ClosestPair("c02", Path("synthetic/c02/9999.png"), Path("data/c02/train0.png"), "c02", "train", 0.05),
    )
    other = {label: quality(None if c == 0 else 0.02, 0.5, 0.3) for c, label in enumerate(CLASSES)}
    return QualitySummary(
        FEATURES,
        (
            FilterStatus("classifier", True, {"min_confidence": 0.5}),
            FilterStatus("clip_score", False, {}, CLIP_REASON),
            FilterStatus("blank", True, {"min_std": 0.02}),
        ),
        (
            GeneratorQuality("ddpm", classes, overall, closest, 0.35),
            GeneratorQuality("other", other, overall, (), None),
        ),
        0.973,
    )


def row(label: str, index: int, *rejected_by: str, generator: str = "ddpm") -> FilterRow:
    return FilterRow(
        generator,
        label,
        index,
        Path(f"synthetic/{label}/{index:04d}.png"),
        f"sha-{generator}-{label}-{index}",
        rejected_by,
        0.004 if "blank" in rejected_by else 0.2,
        "c02" if "classifier" in rejected_by else label,
        0.21 if "classifier" in rejected_by else 0.95,
        None,
    )


# ddpm c00: one kept, one classifier, one classifier and blank, one blocked; c01: two kept, one near_test,
# one blank (its file is missing); other c00: one kept.
FILTER_ROWS = (
    row("c00", 0),
    row("c00", 1, "classifier"),
    row("c00", 2, "classifier", "blank"),
    row("c00", 3, "blocked"),
    row("c01", 0),
    row("c01", 1),
    row("c01", 2, "near_test"),
    row("c01", 7, "blank"),
    row("c00", 0, generator="other"),
)


def write_quality_files(root: Path) -> None:
    (root / "quality").mkdir(exist_ok=True)
    write_quality(summary(), root / "quality" / "quality.json")
    write_filter_rows(FILTER_ROWS, root / "quality" / "filters.csv")


def write_params(root: Path, mixes: tuple[str, ...]) -> None:
    params = {
        "study": {"mixes": list(mixes), "models": ["cnn"], "seeds": [0, 1, 2], "baseline": "30r0s"},
        "report": {"bootstrap_samples": 200},
        "generate": {"generators": {"other": {"generator": "ddpm"}}},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def graded(baseline: np.ndarray, seed: int) -> np.ndarray:
    """The baseline's predictions with a share of each class's mistakes put right that falls with the
    class index: the first classes gain the most F1, the last the least."""
    true = np.repeat(np.arange(len(CLASSES)), PER_CLASS)
    share = np.linspace(0.95, 0.0, len(CLASSES))[true]
    fix = np.random.default_rng(500 + seed).random(true.size) < share
    return np.where(fix, true, baseline)


def shrink_synthetic(run_dir: Path, by: int) -> None:
    """A vetted run that took `by` fewer synthetic images than its mix names (its pool ran out)."""
    path = run_dir / rundir.RUN_JSON
    record = rundir.RunRecord.from_json(json.loads(path.read_text()), path)
    data = record.to_json() | {"synthetic_images": record.synthetic_images - by}
    write_json(data, path)


def write_runs(root: Path) -> None:
    """30r30s gains F1 graded by class, 30r30s-other exactly what the baseline scores, 30r15s@filtered
    as the baseline too with seed 1 ten synthetic images short."""
    for seed in range(3):
        base = predictions(seed, 0.5, CLASSES, PER_CLASS)
        run = {"classes": CLASSES, "per_class": PER_CLASS}
        write_run(root, "cnn", "30r0s", seed, base, **run)
        write_run(root, "cnn", "30r30s", seed, graded(base, seed), **run)
        write_run(root, "cnn", "30r30s-other", seed, base.copy(), **run)
        filtered = write_run(root, "cnn", "30r15s@filtered", seed, base.copy(), **run)
        if seed == 1:
            shrink_synthetic(filtered, 10)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A study whose quality stage ran, reported once; the report's folder."""
    root = tmp_path_factory.mktemp("synthetic")
    write_params(root, ("30r0s", "30r30s", "30r30s-other", "30r15s@filtered"))
    write_images(root)
    write_quality_files(root)
    write_runs(root)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        report_stage(load_params(), log_to_mlflow=False)
    return root / "reports"


def section_text(report: Path) -> str:
    md = (report / "report.md").read_text()
    start = md.index("## Synthetic images")
    return md[start : md.index("\n## ", start + 1)]


# --- the report ----------------------------------------------------------------------------------


def test_the_section_names_the_feature_space_the_filters_that_did_not_run_and_the_reference_accuracy(report):
    text = section_text(report)
    assert FEATURES.description in text and "(reference features)" in text  # the text and every table
    assert f"The clip_score filter did not run: {CLIP_REASON}." in text
    assert "Filters that ran: classifier (min_confidence=0.5); blank (min_std=0.02)." in text
    assert "reaches 97.3% accuracy on those same images, a training-set figure" in text
    assert "ddpm: a synthetic image lies at a median cosine distance of 0.300" in text
    assert "against 0.400 from a real image to its nearest other" in text
    assert "in 12 of 12 classes the synthetic median is below the real one's" in text
    assert "## Synthetic images" in (report / "summary.md").read_text()
    assert "<h2>Synthetic images</h2>" in (report / "report.html").read_text()


def test_a_class_with_strongly_rising_kid_and_falling_gain_gets_the_direction_and_unrelated_coverage_none(
    report,
):
    text = section_text(report)
    assert "Exploratory, across classes, and saying nothing causal" in text
    kid = re.search(
        r"CNN, ddpm: classes with higher KID gained less F1 from 30r0s to 30r30s \(rho (-0\.\d\d), 95% "
        r"interval (-[\d.]+) to (-[\d.]+), 12 classes\)\.",
        text,
    )
    assert kid is not None and float(kid.group(1)) < -0.7 and float(kid.group(3)) < 0
    coverage = re.search(
        r"CNN, ddpm: no monotone relation between coverage and the F1 change from 30r0s to 30r30s detectable "
        r"across 12 classes \(rho (-?[\d.]+), interval (-[\d.]+) to ([\d.]+)\)\.",
        text,
    )
    assert coverage is not None and float(coverage.group(2)) < 0 < float(coverage.group(3))
    # another generator's target is its own mix; with no change in any class there is nothing to rank
    assert "CNN, other: KID not set against the F1 change from 30r0s to 30r30s-other (" in text
    assert re.search(
        r"\| CNN \| ddpm \| 30r30s vs 30r0s \| KID \| 12 \| -0\.\d\d \| -[\d.]+ to -[\d.]+ \| p", text
    )


def test_a_vetted_mix_that_came_up_short_is_named_with_its_shortfall(report):
    text = section_text(report)
    assert (
        "CNN 30r15s@filtered could not keep its size: its vetting rejected more synthetic images than its "
        "replicate's block of generated images had to spare, so some classes took the ones left (seed 1 on "
        "170 synthetic images instead of 180 (10 short))"
    ) in text
    assert "seed 0 on" not in text and "seed 2 on" not in text


def test_the_drop_table_counts_every_filter_and_what_they_kept(report):
    text = section_text(report)
    header = "| generator | class | images | blocked | near_test | classifier | clip_score | blank | kept by the filters |"
    assert header in text
    assert "| ddpm | c00 | 4 | 1 | 0 | 2 | not run | 1 | 1 |" in text
    assert "| ddpm | c01 | 4 | 0 | 1 | 0 | not run | 1 | 2 |" in text
    assert "| ddpm | all classes | 8 | 1 | 1 | 2 | not run | 2 | 3 |" in text
    assert "ddpm: 3 of 8 (38%)" in text


def test_the_figures_are_pngs_in_the_report_with_captions(report):
    md = (report / "report.md").read_text()
    for name in ("synthetic-closest-ddpm.png", "synthetic-dropped-ddpm.png"):
        assert f"figures/{name}" in md
        with Image.open(report / "figures" / name) as img:
            assert img.format == "PNG" and min(img.size) > 100
    assert not (report / "figures" / "synthetic-closest-other.png").exists()  # no pairs: no figure
    closest = next(
        line for line in md.splitlines() if line.startswith("*ddpm: the 2 synthetic images closest")
    )
    assert "1 image file(s) could not be read and are left out (synthetic/c02/9999.png)" in closest
    dropped = next(line for line in md.splitlines() if line.startswith("*ddpm: examples of the synthetic"))
    assert "(synthetic/c01/0007.png)" in dropped and "blocked by the safety checker are not shown" in dropped
    html = (report / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') == len(list((report / "figures").glob("*.png")))


# --- the pieces, on hand-made values -------------------------------------------------------------


def test_quality_read_back_gives_a_row_per_class_with_kid_intervals_and_an_all_classes_row(in_tmp):
    write_images(in_tmp)
    write_quality_files(in_tmp)
    inputs = synthetic.read_inputs(load_params())
    assert inputs is not None and inputs.filter_rows == FILTER_ROWS
    table = synthetic.quality_table(inputs.quality.generators[0], "reference", 0.9)
    assert table.header[0] == "ddpm: class (reference features)" and table.header[3] == "KID (90% interval)"
    assert [r[0] for r in table.rows] == [*CLASSES, "all classes"]
    assert table.rows[1][1:4] == ("30", "30", "0.02 (0.01 to 0.03)")  # KID and its interval
    assert (
        table.rows[1][7]
        == f"{COVERAGE_RANKS[1] / 13:.2f} ({COVERAGE_RANKS[1] / 13 - 0.1:.2f} to {COVERAGE_RANKS[1] / 13 + 0.1:.2f})"
    )
    assert table.rows[1][8:] == ("11.5 / 14.2", "0.300 / 0.400")
    assert table.rows[-1][3] == "0.05 (sd 0.005)"  # pooled: the spread over subsets, no interval
    other = synthetic.quality_table(inputs.quality.generators[1], "reference", 0.9)
    assert other.rows[0][3] == "n/a"  # a class too small for KID


def test_drop_counts_add_up_to_the_generator_total():
    names = synthetic.filter_names(summary(), FILTER_ROWS)
    counts = synthetic.drop_counts(FILTER_ROWS, names)
    ddpm = [c for c in counts if c.generator == "ddpm"]
    total = ddpm[-1]
    assert total.label == "all classes" and total.images == sum(c.images for c in ddpm[:-1]) == 8
    assert all(total.rejected[n] == sum(c.rejected[n] for c in ddpm[:-1]) for n in names)
    assert total.kept == 3 and [c.label for c in counts] == [
        "c00",
        "c01",
        "all classes",
        "c00",
        "all classes",
    ]


def test_without_quality_json_there_is_no_section_and_the_report_still_writes(in_tmp):
    write_params(in_tmp, ("30r0s", "30r30s"))
    assert synthetic.read_inputs(load_params()) is None
    small = ("a", "b", "c")
    for seed in range(2):
        base = predictions(seed, 0.4, small, 10)
        write_run(in_tmp, "cnn", "30r0s", seed, base, classes=small, per_class=10)
        write_run(in_tmp, "cnn", "30r30s", seed, base.copy(), classes=small, per_class=10)
    result = report_stage(load_params(), log_to_mlflow=False)
    assert "Synthetic images" not in (in_tmp / "reports" / "report.md").read_text()
    assert not any("synthetic-" in p.name for p in result.figures)


def test_missing_image_files_leave_their_pictures_out_without_failing(tmp_path):
    only_missing = GeneratorQuality(
        "ddpm",
        {},
        quality(0.1, 0.5, 0.3),
        (ClosestPair("c00", tmp_path / "gone.png", tmp_path / "x.png", "c00", "test", 0.1),),
        None,
    )
    assert synthetic_figures.draw_closest(only_missing, "reference", tmp_path / "out") is None
    missing_rows = [row("c00", 9, "classifier")]  # its file does not exist
    assert synthetic_figures.draw_dropped("ddpm", missing_rows, tmp_path / "out") is None
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("with_vetted_run", "expected"),
    [
        (False, "The study has no vetted mix: add one such as 30r30s@filtered to study.mixes"),
        (True, "Every vetted mix kept its size (30r15s@filtered)"),
    ],
)
def test_the_vetting_sentence_says_every_vetted_mix_kept_its_size_or_how_to_add_one(
    with_vetted_run, expected, tmp_path
):
    cells = []
    if with_vetted_run:
        write_run(tmp_path, "cnn", "30r15s@filtered", 0, predictions(0, 0.4))
        found, _ = rundir.discover_runs(tmp_path / "runs")
        cells = [Cell("cnn", "fixed", found[0].mix, tuple(found))]
    words = synthetic.vetting_sentences(cells, [Mix.parse("30r0s"), Mix.parse("30r30s")], {"cnn": "CNN"})
    assert words[0].startswith(expected)


def test_the_direction_is_stated_only_when_the_interval_excludes_zero():
    def sentence(values: list[float]) -> str:
        gains = [0.01 * i for i in range(12)]
        rc = rank_correlation(values, gains, 200, 0.95, 0)
        qg = quality_gain.QualityGain("cnn", "ddpm", Mix(30, 0), Mix(30, 30), quality_gain.MEASURES[1], rc)
        return quality_gain.gain_sentence(qg, "CNN")

    rising = sentence([0.1 + 0.05 * i for i in range(12)])
    assert rising.startswith(
        "CNN, ddpm: classes with higher coverage gained more F1 from 30r0s to 30r30s (rho 1.00"
    )
    unrelated = sentence([r / 13 for r in COVERAGE_RANKS])
    assert (
        "no monotone relation between coverage and the F1 change from 30r0s to 30r30s detectable" in unrelated
    )

"""The report stage on runs/ folders written by the real run writer (synthmix.runs.rundir)."""

from __future__ import annotations

import csv
import dataclasses
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from conftest import write_image
from synthmix.cli import run as cli
from synthmix.config.params import load_params
from synthmix.core.errors import UserError
from synthmix.data.mixes import Mix
from synthmix.data.real import SplitRow, write_manifest
from synthmix.generate.manifest import SyntheticRow, write_synthetic_manifest
from synthmix.runs import rundir, tracking
from synthmix.runs.evaluate import evaluate
from synthmix.stages.report import report_stage

CLASSES = ("cat", "dog", "fox", "owl", "yak")
PER_CLASS = 40  # test images per class
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def write_run(
    root: Path,
    model: str,
    mix: str,
    seed: int,
    predicted: np.ndarray,
    *,
    classes=CLASSES,
    per_class: int = PER_CLASS,
    source: str = "fixed",
    done: bool = True,
    parent_run_id: str = "",
    weights: str | None = None,
    budget: str = "epochs",
    steps: int | None = None,
    augmentation: str = "crop, rotation",
) -> Path:
    """A finished run folder written by rundir.write_run, as `synthmix train` leaves it, for the given
    predictions (scored by synthmix.runs.evaluate from logits that put the prediction first)."""
    k = len(classes)
    true = np.repeat(np.arange(k), per_class)
    paths = [Path(f"data/{classes[c]}/{i:04d}.png") for c in range(k) for i in range(per_class)]
    logits = torch.nn.functional.one_hot(torch.as_tensor(predicted), k).float() * (3.0 + 0.1 * seed)
    evaluation = evaluate(logits, torch.as_tensor(true), classes)
    accuracy = evaluation.metrics["accuracy"]
    history = [(e, 2 / e, min(1, accuracy * e / 4 + 0.1), 2.2 / e, accuracy * e / 4) for e in range(1, 5)]
    m = Mix.parse(mix)
    record = rundir.RunRecord(
        model=model,
        mix=m,
        seed=seed,
        weights=weights or ("random" if model == "cnn" else "imagenet"),
        hyperparameters={"lr": 0.01, "epochs": 4, "batch_size": 32},
        hyperparameter_source=source,
        fingerprint=f"{model}{mix}{seed}{source}".ljust(16, "0"),
        classes=tuple(classes),
        train_images=k * m.images_per_class,
        real_images=k * m.real,
        synthetic_images=k * m.synthetic,
        image_size=32,
        augmented_images=k * m.augmented,
        augmentation=augmentation if m.augmented or m.online_augment else "",
        budget=budget,
        optimizer_steps=steps if steps is not None else 4 * -(-k * m.images_per_class // 32),
        mlflow_run_id=f"run-{model}-{mix}-{seed}",
        mlflow_parent_run_id=parent_run_id,
    )
    run_dir = root / "runs" / model / mix / (f"tuned-seed{seed}" if source == "tuned" else f"seed{seed}")
    rundir.write_run(run_dir, record, evaluation, history, paths, true.tolist())
    if not done:
        rundir.begin(run_dir)  # what an interrupted rerun leaves: the folder without DONE
    return run_dir


def predictions(seed: int, error_rate: float, classes=CLASSES, per_class: int = PER_CLASS) -> np.ndarray:
    """Each seed wrong on a different random set of test images, at `error_rate`."""
    rng = np.random.default_rng(seed)
    k = len(classes)
    true = np.repeat(np.arange(k), per_class)
    wrong = rng.random(true.size) < error_rate
    return np.where(wrong, (true + 1 + (seed + np.arange(true.size)) % (k - 1)) % k, true)


def improved(
    predicted: np.ndarray, share: float, seed: int, classes=CLASSES, per_class: int = PER_CLASS
) -> np.ndarray:
    """The same predictions with a random `share` of their mistakes put right: a mix that truly helps,
    by about the same amount in every replicate."""
    true = np.repeat(np.arange(len(classes)), per_class)
    fix = np.random.default_rng(1000 + seed).random(true.size) < share
    return np.where(fix, true, predicted)


def write_inputs(root: Path, classes=CLASSES) -> None:
    """Tiny prepared/train.csv and synthetic/ trees for the sample figures; the last synthetic image of
    the first class is one the safety checker blocked."""
    rows, synthetic = [], []
    for c, label in enumerate(classes):
        for i in range(4):
            real = write_image(root / "data" / label / f"train{i}.png", seed=100 * c + i)
            rows.append(SplitRow(real.relative_to(root), label, "x", "train", i))
            fake = write_image(root / "synthetic" / label / f"{i:04d}.png", seed=1000 + 100 * c + i)
            synthetic.append(
                SyntheticRow(
                    fake.relative_to(root),
                    label,
                    i,
                    7 + i,
                    "ddpm",
                    "local-ddpm",
                    "",
                    "",
                    25,
                    0.0,
                    0,
                    "y",
                    blocked=(c, i) == (0, 3),
                )
            )
    write_manifest(rows, root / "prepared" / "train.csv")
    write_synthetic_manifest(synthetic, root / "synthetic" / "manifest.csv")


def write_params(
    root: Path,
    mixes=("30r0s", "30r15s", "30r30s"),
    models=("cnn",),
    seeds=(0, 1, 2),
    baseline="30r0s",
    **report,
):
    params = {
        "study": {"mixes": list(mixes), "models": list(models), "seeds": list(seeds), "baseline": baseline},
        "report": {"bootstrap_samples": 2000, **report},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def write_study(root: Path, mixes=("30r0s", "30r15s", "30r30s"), model: str = "cnn", **run) -> None:
    """Three replicates: the first mix is the baseline, the second identical to it, the third truly
    better (most of the baseline's mistakes put right, in every replicate)."""
    for seed in range(3):
        baseline = predictions(seed, 0.45)
        write_run(root, model, mixes[0], seed, baseline, **run)
        write_run(root, model, mixes[1], seed, baseline.copy(), **run)
        write_run(root, model, mixes[2], seed, improved(baseline, 0.8, seed), **run)


@pytest.fixture
def study(in_tmp: Path) -> Path:
    """CNN: 30r30s truly better than 30r0s, 30r15s identical to it; three replicates."""
    write_params(in_tmp)
    write_inputs(in_tmp)
    write_study(in_tmp)
    return in_tmp


def read_summary(root: Path) -> dict[tuple[str, str, str], dict[str, str]]:
    with open(root / "reports" / "summary.csv", newline="") as fh:
        return {(r["model"], r["hyperparameter_source"], r["mix"]): r for r in csv.DictReader(fh)}


def test_a_truly_better_mix_is_called_significant_and_an_identical_one_is_not(study):
    result = report_stage(load_params(), log_to_mlflow=False)
    summary = read_summary(study)
    better, same = summary[("cnn", "fixed", "30r30s")], summary[("cnn", "fixed", "30r15s")]
    assert float(better["f1_macro_change"]) > 0.2 and better["f1_macro_significant"] == "True"
    assert float(better["f1_macro_change_ci_low"]) > 0 and better["family"] == "declared"
    holm = min(1, 2 * float(better["f1_macro_p"]))  # a family of two: 30r15s and 30r30s against 30r0s
    assert float(better["f1_macro_p_holm"]) == pytest.approx(holm, rel=1e-5)
    assert 0 < float(better["f1_macro_mde"]) < float(better["f1_macro_change"])
    assert float(better["f1_macro_change_df"]) >= 2
    assert "accuracy_p_holm" not in better and "accuracy_significant" not in better  # secondary: no verdict
    assert float(same["f1_macro_change"]) == 0 and same["f1_macro_p"] == "nan"  # no variance: no p-value
    assert float(same["f1_macro_change_se"]) == 0 and same["f1_macro_significant"] == "False"
    assert summary[("cnn", "fixed", "30r0s")]["f1_macro_change"] == ""  # the baseline has no change
    words = "\n".join(result.findings)
    assert re.search(
        r"CNN: 30r30s vs 30r0s macro F1 \+0\.\d{3} \(95% CI \+0\.\d{3} to \+0\.\d{3}, p [<=] 0\.\d{3}, "
        r"Holm p [<=] 0\.\d{3}\): significantly better",
        words,
    )
    assert re.search(r"30r15s vs 30r0s macro F1 \+0\.000 \(no variance: ", words)
    assert "best mix by mean macro F1 is 30r30s" in words and "selected on the test set" in words
    assert re.search(
        r"CNN: the smallest change in macro F1 this design detects with 80% power is 0\.\d{3}", words
    )
    assert "synthetic outnumbering real" not in words  # no equal-size mix with more synthetic than real
    md = (study / "reports" / "report.md").read_text()
    assert "baseline 30r0s (real only)" in md
    assert not re.search(r"p ?= ?0\.000", md)  # a floor is written as a bound, never as an exact 0
    changes = md[md.index("## Changes") :]
    assert "no variance" in changes  # test loss of the identical mix: the same in every replicate


def test_the_report_holds_the_tables_every_figure_and_provenance(study):
    result = report_stage(load_params(), log_to_mlflow=False)
    out = study / "reports"
    names = sorted(p.name for p in (out / "figures").glob("*.png"))
    kinds = ("classwise", "confusion", "curves", "metrics", "samples")
    assert names == sorted(["headline.png", *(f"{kind}-cnn.png" for kind in kinds)])
    assert result.figures[0].name == "headline.png"  # the headline figure comes first
    assert sorted(p.name for p in (out / "figures").iterdir()) == sorted([*names, "headline.csv"])
    for path in result.figures:
        with Image.open(path) as img:
            assert img.format == "PNG" and min(img.size) > 100
    md = (out / "report.md").read_text()
    assert all(f"figures/{name}" in md for name in names)
    assert "| CNN | fixed | 30r30s | 3 |" in (out / "summary.md").read_text()
    assert (
        "Generator ddpm, model local-ddpm" in md
        and "CNN: random" in md
        and "Seeds (replicates): 0, 1, 2" in md
    )
    assert "Holm" in md and "paired bootstrap over test images, 2000 resamples" in md
    assert read_summary(study)[("cnn", "fixed", "30r30s")]["f1_macro_test"] == (
        "t over replicates + paired bootstrap over test images"
    )
    assert "Replicate design: each replicate (seed) draws afresh the classifier's initialisation" in md
    # where the synthetic images' knowledge came from: the DDPM saw every real training image
    assert "Provenance: the DDPM learnt from every real training image of each class" in md
    assert "a mix taking the whole pool holds the same ones in every replicate" in md
    assert "1 still blocked by the safety checker and 0 near-copies of a test image" in md
    assert "every study mix (30r15s, 30r30s) against 30r0s, 2 tests" in md
    caption = next(line for line in md.splitlines() if line.startswith("*") and "Fig. 8" in line)
    assert re.search(
        r"95% intervals .* \d+ classes with an interval above zero, \d+ below, \d+ holding zero", caption
    )
    html = (out / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') == len(names)
    assert "figures/" not in html.replace("(the study", "")  # nothing linked, everything embedded
    assert not list(study.glob(".reports*"))  # no staging folder left behind


def _chromium() -> str:
    """Chromium's path; the test skips without it (and fails in CI, which must install it)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    found = found or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is missing in CI: run scripts/install-browser.sh before the tests.")
        pytest.skip("chromium is not installed (scripts/install-browser.sh installs it)")
    return found


def _report_dom(study: Path, tmp_path: Path, checker: str, *flags: str) -> str:
    """report.html as headless Chromium leaves it once loaded, with `checker` run on its load event."""
    chromium = _chromium()
    report_stage(load_params(), log_to_mlflow=False)
    page = (study / "reports" / "report.html").read_text()
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", checker + "</body>"))
    return subprocess.run(
        [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            *flags,
            "--virtual-time-budget=5000",
            "--dump-dom",
            probe.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=90,
    ).stdout


def test_every_figure_of_report_html_loads_in_headless_chromium(study, tmp_path):
    # The checker runs after every image has loaded or failed, and writes its verdict into the DOM.
    checker = """<script>window.addEventListener('load', () => {
      const imgs = [...document.images];
      const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
      document.body.setAttribute('data-images', ok + '/' + imgs.length); });</script>"""
    dom = _report_dom(study, tmp_path, checker)
    page = (study / "reports" / "report.html").read_text()
    match = re.search(r'data-images="(\d+)/(\d+)"', dom)
    assert match, "the page did not finish loading in chromium"
    assert match.group(1) == match.group(2) == str(page.count("<img "))


def test_predictions_in_another_order_stop_the_report_naming_both_runs(study, capsys):
    path = study / "runs" / "cnn" / "30r30s" / "seed1" / "predictions.csv"
    lines = path.read_text().splitlines()
    lines[1], lines[2] = lines[2], lines[1]
    path.write_text("\n".join(lines) + "\n")
    assert cli(["report", "--no-mlflow"]) == 2
    err = capsys.readouterr().err
    assert "runs/cnn/30r30s/seed1" in err and "runs/cnn/30r0s/seed0" in err and "same order" in err
    assert "Traceback" not in err


def test_without_a_baseline_the_report_says_so_and_shows_no_changes(in_tmp):
    write_params(in_tmp, mixes=("30r15s", "30r30s"))
    for seed in range(2):
        write_run(in_tmp, "cnn", "30r15s", seed, predictions(seed, 0.3))
        write_run(in_tmp, "cnn", "30r30s", seed, predictions(5 + seed, 0.2))
    result = report_stage(load_params(), log_to_mlflow=False)
    assert any("no baseline (30r0s) runs" in s for s in result.findings)
    assert all(r["f1_macro_change"] == "" for r in read_summary(in_tmp).values())
    # no synthetic/ or prepared/ here: the figures that need them are left out, the rest are drawn
    assert sorted(p.name for p in result.figures) == [
        "confusion-cnn.png",
        "curves-cnn.png",
        "headline.png",
        "metrics-cnn.png",
    ]


def test_tuned_runs_sit_beside_fixed_ones_and_unused_runs_are_counted(in_tmp):
    write_params(in_tmp, mixes=("30r0s", "30r15s", "15r30s"), seeds=(0, 1))
    for seed in range(2):
        write_run(in_tmp, "cnn", "30r0s", seed, predictions(seed, 0.4))
        write_run(in_tmp, "cnn", "30r15s", seed, predictions(10 + seed, 0.1))
        write_run(in_tmp, "cnn", "15r30s", seed, predictions(20 + seed, 0.4))
        write_run(in_tmp, "cnn", "30r15s", seed, predictions(30 + seed, 0.3), source="tuned")
    write_run(in_tmp, "cnn", "30r15s", 2, predictions(40, 0.0))  # seed 2 is not in this study
    write_run(in_tmp, "cnn", "30r0s", 3, predictions(41, 0.0), done=False)  # unfinished
    result = report_stage(load_params(), log_to_mlflow=False)
    summary = read_summary(in_tmp)
    assert summary[("cnn", "tuned", "30r15s")]["seeds"] == "0 1"
    assert summary[("cnn", "fixed", "30r15s")]["seeds"] == "0 1"
    words = "\n".join(result.findings)
    assert "CNN 30r15s: tuned vs fixed hyperparameters macro F1 -" in words
    assert "synthetic outnumbering real (15r30s vs 30r15s, both 45 images a class): macro F1 -" in words
    # neither is in the declared family (every mix against the baseline): no verdict, exploratory
    assert re.search(r"tuned vs fixed hyperparameters [^\n]*unadjusted p [<=] [^\n]*exploratory", words)
    assert re.search(r"synthetic outnumbering real [^\n]*exploratory, outside the declared family", words)
    md = (in_tmp / "reports" / "report.md").read_text()
    assert "## Tuned vs fixed hyperparameters" in md
    assert "30r0s vs 30r15s (the study's Figs. 4-5)" in md  # 30 real images and the most synthetic ones
    assert "1 finished runs outside this study" in md and "1 unfinished" in md


def _curves_caption(root: Path) -> str:
    md = (root / "reports" / "report.md").read_text()
    return next(line for line in md.splitlines() if line.startswith("*") and "Figs. 4-5" in line)


def test_the_figures_compare_the_baseline_with_the_mix_adding_the_most_synthetic_images(in_tmp):
    """Not a fixed 30r30s: the mix with the baseline's real count and the most synthetic images, even when
    another mix scores better; without such a mix, the best other mix. The caption says which rule."""
    write_params(in_tmp, mixes=("10r0s", "10r10s", "10r20s", "5r20s"), seeds=(0, 1), baseline="10r0s")
    for seed in range(2):
        write_run(in_tmp, "cnn", "10r0s", seed, predictions(seed, 0.4))
        write_run(in_tmp, "cnn", "10r10s", seed, predictions(10 + seed, 0.3))
        write_run(in_tmp, "cnn", "10r20s", seed, predictions(20 + seed, 0.35))
        write_run(in_tmp, "cnn", "5r20s", seed, predictions(30 + seed, 0.05))  # the best mix
    report_stage(load_params(), log_to_mlflow=False)
    caption = _curves_caption(in_tmp)
    assert "10r0s vs 10r20s" in caption
    assert "the mix with the baseline's 10 real images and the most synthetic ones" in caption

    write_params(in_tmp, mixes=("10r0s", "0r20s", "5r20s"), seeds=(0, 1), baseline="10r0s")
    for seed in range(2):
        write_run(in_tmp, "cnn", "0r20s", seed, predictions(40 + seed, 0.5))
    report_stage(load_params(), log_to_mlflow=False)
    caption = _curves_caption(in_tmp)
    assert "10r0s vs 5r20s" in caption
    assert "the best mix by mean macro F1, picked on the test set (no mix adds synthetic images" in caption


def test_the_family_is_the_study_mixes_even_when_a_report_sees_fewer_runs(in_tmp):
    """Four mixes against the baseline are declared; runs exist for one: Holm still adjusts over four."""
    write_params(in_tmp, mixes=("30r0s", "30r15s", "30r30s", "15r30s", "0r30s"))
    for seed in range(3):
        baseline = predictions(seed, 0.45)
        write_run(in_tmp, "cnn", "30r0s", seed, baseline)
        write_run(in_tmp, "cnn", "30r30s", seed, improved(baseline, 0.8, seed))
    result = report_stage(load_params(), log_to_mlflow=False)
    row = read_summary(in_tmp)[("cnn", "fixed", "30r30s")]
    assert float(row["f1_macro_p_holm"]) == pytest.approx(min(1, 4 * float(row["f1_macro_p"])), rel=1e-5)
    assert any(
        "no runs of 30r15s, 15r30s, 0r30s; they stay in the declared family" in s for s in result.findings
    )


def test_a_single_mix_experiment_says_its_results_are_exploratory(study):
    params = yaml.safe_load((study / "params.yaml").read_text())
    (study / "params.yaml").write_text(yaml.safe_dump({**params, "mix": "30r30s"}))
    result = report_stage(load_params(), log_to_mlflow=False)
    assert result.findings[0].startswith("This report comes from a single-mix experiment (mix=30r30s)")
    assert "exploratory" in result.findings[0]
    assert any(
        "30r30s vs 30r0s macro F1" in s and "significantly better (exploratory)" in s for s in result.findings
    )
    assert read_summary(study)[("cnn", "fixed", "30r30s")]["family"] == "exploratory"


def test_the_primary_metric_alone_carries_the_verdicts(study):
    params = yaml.safe_load((study / "params.yaml").read_text())
    params["report"]["primary_metric"] = "accuracy"
    (study / "params.yaml").write_text(yaml.safe_dump(params))
    result = report_stage(load_params(), log_to_mlflow=False)
    row = read_summary(study)[("cnn", "fixed", "30r30s")]
    assert row["accuracy_significant"] == "True" and "f1_macro_p_holm" not in row
    assert any("30r30s vs 30r0s accuracy +" in s and "significantly better" in s for s in result.findings)
    md = (study / "reports" / "report.md").read_text()
    assert "| accuracy (primary) |" in md and "Verdicts use one metric, accuracy" in md


def test_a_random_init_backbone_is_named_so_wherever_the_model_is_named(in_tmp):
    write_params(in_tmp, models=("resnet50",))
    write_study(in_tmp, model="resnet50", weights="random")
    result = report_stage(load_params(), log_to_mlflow=False)
    assert all(s.startswith("ResNet50 (random init)") for s in result.findings)
    md = (in_tmp / "reports" / "report.md").read_text()
    assert "| ResNet50 (random init) | fixed | 30r30s | 3 |" in md
    assert "models ResNet50 (random init);" in md
    assert "ResNet50 backbone: random init, not pretrained" in md.splitlines()[0]
    assert re.search(r"\| ResNet50 \|", md) is None  # never the bare name


def test_the_baseline_is_called_real_only_only_when_its_runs_had_no_synthetic_image(in_tmp):
    write_params(in_tmp, mixes=("30r15s", "30r30s", "15r30s"), baseline="30r15s")
    write_study(in_tmp, mixes=("30r15s", "30r30s", "15r30s"))
    report_stage(load_params(), log_to_mlflow=False)
    md = (in_tmp / "reports" / "report.md").read_text()
    assert "baseline 30r15s;" in md and "real only" not in md

    write_params(in_tmp)  # a 30r0s baseline whose runs say they held synthetic images after all
    write_study(in_tmp)
    for run_dir in in_tmp.glob("runs/cnn/30r0s/*"):
        record = rundir.read_run(run_dir).record
        rundir.finish(run_dir, dataclasses.replace(record, synthetic_images=5))
    report_stage(load_params(), log_to_mlflow=False)
    assert "baseline 30r0s;" in (in_tmp / "reports" / "report.md").read_text()


def test_p_values_below_the_printed_precision_are_bounds():
    from synthmix.report.wording import p_text

    assert (p_text(0.0004), p_text(0.0123), p_text(float("nan"))) == ("p < 0.001", "p = 0.012", "p n/a")
    assert p_text(1e-9, "Holm p") == "Holm p < 0.001"


def _logged(run_id: str) -> tuple[set[str], dict[str, float], dict[str, str]]:
    import mlflow

    client = mlflow.MlflowClient()
    run = client.get_run(run_id)
    return {a.path for a in client.list_artifacts(run_id, "report")}, run.data.metrics, run.data.tags


@pytest.mark.slow
def test_report_logs_to_the_sweep_parent_mlflow_run_and_says_where_the_ui_shows_the_runs(
    study, monkeypatch, capsys
):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{study / 'mlflow.db'}")
    tracking.configure()
    with mlflow.start_run(run_name="sweep") as parent:
        pass
    for run_dir in study.glob("runs/*/*/*"):  # the runs name the sweep as their parent, as train records it
        record = rundir.read_run(run_dir).record
        rundir.finish(run_dir, dataclasses.replace(record, mlflow_parent_run_id=parent.info.run_id))
    capsys.readouterr()
    assert cli(["report"]) == 0
    said = capsys.readouterr().err
    start = f"(start it: mlflow ui --backend-store-uri sqlite:///{study / 'mlflow.db'}): "
    assert start + tracking.experiment_url(parent.info.experiment_id) in said
    artifacts, logged, _ = _logged(parent.info.run_id)
    assert {"report/report.html", "report/summary.csv", "report/figures"} <= artifacts
    assert logged["report.cnn.fixed.30r30s.f1_macro"] > logged["report.cnn.fixed.30r0s.f1_macro"]


@pytest.mark.slow
def test_without_a_sweep_parent_the_report_logs_to_a_new_report_run(study, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{study / 'mlflow.db'}")
    result = report_stage(load_params())  # the runs name no parent run
    assert result.mlflow_run_id
    artifacts, logged, tags = _logged(result.mlflow_run_id)
    assert "report/report.md" in artifacts and "report.cnn.fixed.30r15s.f1_macro" in logged
    assert tags[tracking.STAGE] == "report" and tracking.GIT_COMMIT in tags


def test_bad_report_params_are_refused_naming_the_key(in_tmp, capsys):
    write_params(in_tmp, confidence=95)
    assert cli(["report", "--no-mlflow"]) == 2
    assert "report.confidence is 95" in capsys.readouterr().err
    write_params(in_tmp, primary_metric="test_loss")  # not a classification metric: no per-image test
    assert cli(["report", "--no-mlflow"]) == 2
    assert "report.primary_metric is 'test_loss'" in capsys.readouterr().err


def test_no_runs_is_a_user_error_saying_to_train_first(in_tmp):
    write_params(in_tmp)
    with pytest.raises(UserError, match="synthmix train"):
        report_stage(load_params(), log_to_mlflow=False)


@pytest.mark.slow
def test_a_full_size_report_has_every_figure_and_names_the_weights_in_its_title(in_tmp):
    """5 mixes x 2 models x 3 seeds x 300 test images, 10000 bootstrap resamples (its speed: bench/)."""
    classes = tuple(str(d) for d in range(10))
    mixes = ("30r0s", "30r15s", "30r30s", "15r30s", "0r30s")
    write_params(in_tmp, mixes=mixes, models=("cnn", "resnet50"), bootstrap_samples=10000)
    write_inputs(in_tmp, classes)
    for m, model in enumerate(("cnn", "resnet50")):
        for x, mix in enumerate(mixes):
            for seed in range(3):
                pred = predictions(100 * m + 10 * x + seed, 0.1 + 0.05 * x, classes, per_class=30)
                write_run(in_tmp, model, mix, seed, pred, classes=classes, per_class=30)
    result = report_stage(load_params(), log_to_mlflow=False)
    assert len(result.figures) == 11  # the headline figure, then five per model
    title = (in_tmp / "reports" / "report.md").read_text().splitlines()[0]
    assert "CNN from scratch" in title and "ResNet50 backbone: ImageNet" in title


def test_the_answer_comes_first_in_markdown_and_its_sentences_count_the_verdicts(study):
    report_stage(load_params(), log_to_mlflow=False)
    md = (study / "reports" / "report.md").read_text()
    # one order: title, headline figure, verdict table, its sentences, then the rest
    marks = ["# synthmix report", "(figures/headline.png)", "| change in macro F1", "Of ", "## Findings"]
    at = [md.index(mark) for mark in marks]
    assert at == sorted(at), dict(zip(marks, at, strict=True))
    assert md.count("figures/headline.png") == 1  # not repeated among the other figures
    rows = read_summary(study)
    planned = [r for r in rows.values() if r["family"] == "declared" and r["f1_macro_significant"] != ""]
    better = sum(r["f1_macro_significant"] == "True" and float(r["f1_macro_change"]) > 0 for r in planned)
    answer = md[md.index("Of ") :].split("\n\n")[0]
    assert answer.startswith(f"Of {len(planned)} planned comparisons of macro F1")
    assert f", {better} {'is' if better == 1 else 'are'} significantly better" in answer
    assert better == 1 and "Significantly better: CNN 30r30s vs 30r0s (+" in answer
    assert answer.count(". ") + 1 <= 3  # at most three sentences


def test_the_first_screen_at_1280_by_800_shows_the_headline_figure_and_the_verdicts(study, tmp_path):
    checker = """<script>window.addEventListener('load', () => {
      const bottom = id => { const e = document.getElementById(id);
        return e ? Math.ceil(e.getBoundingClientRect().bottom + window.scrollY) : -1; };
      const img = document.querySelector('#headline img');
      const loaded = img && img.complete && img.naturalWidth > 0 ? 1 : 0;
      document.body.setAttribute('data-screen', [window.innerWidth, window.innerHeight, loaded,
        bottom('headline'), bottom('verdicts'), bottom('answer')].join(' ')); });</script>"""
    dom = _report_dom(study, tmp_path, checker, "--window-size=1280,800")
    match = re.search(r'data-screen="(\d+) (\d+) (\d) (-?\d+) (-?\d+) (-?\d+)"', dom)
    assert match, "the page did not finish loading in chromium"
    width, height, loaded, *bottoms = map(int, match.groups())
    assert (width, loaded) == (1280, 1) and 0 < height <= 800
    headline, verdicts, answer = bottoms
    assert 0 < headline < verdicts < answer <= height, f"below the first screen ({height} px): {bottoms}"

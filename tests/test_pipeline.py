"""The study as a DVC pipeline, end to end, on tiny data in a temporary git + DVC repository.

These run the real `dvc repro`, `dvc exp run -S mix=...`, `dvc push`/`dvc pull` and `mlflow run` the way
a user does, on 3 classes of small images, so the whole module stays within a few minutes.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pytest
import yaml

from synthmix.runs import tracking
from tiny_study import PROJECT, TINY_PARAMS, all_files, copy_project, merged, sh, write_tiny_images

pytestmark = pytest.mark.slow


@pytest.fixture
def repo(study_repo: Path) -> Path:
    return study_repo


MIXES = ("6r0s", "6r4s", "3r4s", "6r4a", "6r4s@filtered", "6r4s@reviewed")


def test_repro_runs_the_whole_study_and_a_second_repro_is_a_noop(repo: Path):
    runs = sorted(p.parent.relative_to(repo / "runs").as_posix() for p in (repo / "runs").glob("*/*/*/DONE"))
    expected = sorted(f"{m}/{mix}/seed{s}" for m in ("cnn", "resnet50") for mix in MIXES for s in (0, 1))
    assert runs == expected
    # 6 images a class for each of the two seeds: the generator's sampling seed is redrawn per replicate
    assert len(list((repo / "synthetic").glob("*/*.png"))) == 3 * 6 * 2
    filters = (repo / "quality" / "filters.csv").read_text().splitlines()
    assert len(filters) == 1 + 3 * 6 * 2 and json.loads((repo / "quality_metrics.json").read_text())["ddpm"]
    assert (repo / "reports" / "report.html").stat().st_size > 0
    metrics = json.loads((repo / "metrics.json").read_text())["f1_macro"]
    assert set(metrics) == {"cnn", "resnet50"} and set(metrics["cnn"]) == set(MIXES)

    assert "up to date" in sh("dvc", "status", cwd=repo).stdout
    again = sh("dvc", "repro", cwd=repo).stdout
    assert "Running stage" not in again
    shown = sh("dvc", "metrics", "show", "--json", cwd=repo).stdout
    assert "6r4s" in shown
    plots = json.loads(sh("dvc", "plots", "show", "--json", cwd=repo).stdout)
    assert not plots.get("errors")
    assert "plots/mixes.csv" in plots["data"] and "plots/curves/cnn-6r4s.csv" in plots["data"]
    assert {"reports/figures/headline.csv", "reports/figures/headline.png"} <= set(plots["data"])


def test_exp_run_with_one_mix_trains_only_that_mix(repo: Path):
    """An augmentation control, 2r2a, runs like any other mix."""
    done_before = {p: p.stat().st_mtime_ns for p in (repo / "runs").glob("*/*/*/DONE")}
    result = sh("dvc", "exp", "run", "-S", "mix=2r2a", cwd=repo)
    assert "Running stage 'prepare'" not in result.stdout
    assert "Running stage 'generate'" not in result.stdout
    assert "Running stage 'train'" in result.stdout
    new_runs = sorted(
        p.parent.relative_to(repo / "runs").as_posix() for p in (repo / "runs").glob("*/2r2a/*/DONE")
    )
    assert new_runs == [f"{m}/2r2a/seed{s}" for m in ("cnn", "resnet50") for s in (0, 1)]
    # every run that existed before was reused, not retrained
    assert {p: p.stat().st_mtime_ns for p in done_before} == done_before
    metrics = json.loads((repo / "metrics.json").read_text())["f1_macro"]
    assert "2r2a" in metrics["cnn"]
    shown = sh("dvc", "exp", "show", "--json", cwd=repo).stdout
    assert "2r2a" in shown
    sh("git", "checkout", "--", "params.yaml", "dvc.lock", cwd=repo)
    sh("dvc", "checkout", "-q", cwd=repo, check=False)


def _train_stage_runs(repo: Path, since_ms: int) -> list:
    """The train stage's parent MLflow runs in the study's mlflow.db that began after `since_ms`."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(tracking.EXPERIMENT)
    runs = client.search_runs(
        [experiment.experiment_id], f"tags.`{tracking.STAGE}` = 'train' and tags.`{tracking.SWEEP}` = 'true'"
    )
    return [r for r in runs if r.info.start_time >= since_ms]


def test_queued_experiments_run_on_two_workers(repo: Path):
    began = int(time.time() * 1000)
    sh("dvc", "exp", "run", "--queue", "-S", "mix=2r4s,3r0s", cwd=repo)
    sh("dvc", "queue", "start", "-j", "2", cwd=repo)
    deadline = time.monotonic() + 600
    while re.search(r"\b(Queued|Running)\b", status := sh("dvc", "queue", "status", cwd=repo).stdout):
        assert time.monotonic() < deadline, status
        time.sleep(3)
    assert status.count("Success") == 2, status
    shown = sh("dvc", "exp", "show", "--json", cwd=repo).stdout
    assert "2r4s" in shown and "3r0s" in shown
    # Two workers, one job each: the two experiments' train stages ran in two processes at once (their
    # MLflow runs overlap in time), which one worker taking the jobs in turn cannot give.
    runs = _train_stage_runs(repo, began)
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs), runs
    assert {m for r in runs for m in ("2r4s", "3r0s") if m in r.info.run_name} == {"2r4s", "3r0s"}
    assert len({r.data.tags[tracking.PID] for r in runs}) == 2
    first, second = sorted(runs, key=lambda r: r.info.start_time)
    assert second.info.start_time < first.info.end_time, "the second job started after the first ended"


def test_push_then_pull_into_a_second_clone_restores_the_data_byte_for_byte(repo: Path, tmp_path: Path):
    sh("dvc", "push", "-q", cwd=repo)
    clone = tmp_path / "clone"
    sh("git", "clone", "-q", str(repo), str(clone), cwd=tmp_path)
    sh("dvc", "pull", "-q", cwd=clone)
    for folder in ("data", "synthetic"):
        assert all_files(clone / folder) == all_files(repo / folder), folder


def test_mlflow_run_train_entry_point_logs_a_run(repo: Path, tmp_path: Path):
    """`mlflow run -e train` trains the mix and logs its runs, into a tracking store of this test's own
    (the study's mlflow.db already holds runs of every mix other tests trained)."""
    import mlflow

    store = f"sqlite:///{tmp_path / 'own.db'}"
    for stale in repo.glob("runs/*/3r0s"):  # so this command is what trains them
        shutil.rmtree(stale)
    try:
        sh(
            "mlflow", "run", ".", "-e", "train", "-P", "mix=3r0s", "--env-manager", "local",
            cwd=repo, env={"MLFLOW_TRACKING_URI": store},
        )  # fmt: skip
        client = mlflow.MlflowClient(tracking_uri=store)
        experiments = client.search_experiments()
        runs = client.search_runs([e.experiment_id for e in experiments], f"tags.`{tracking.MIX}` = '3r0s'")
        logged = {(r.data.tags.get(tracking.MODEL), r.data.tags.get(tracking.SEED)): r for r in runs}
        assert set(logged) == {(m, s) for m in ("cnn", "resnet50") for s in ("0", "1")}
        assert all(r.info.status == "FINISHED" and "final_f1_macro" in r.data.metrics for r in runs)
        for (model, seed), run in logged.items():  # the very runs whose folders it wrote
            record = json.loads((repo / "runs" / model / "3r0s" / f"seed{seed}" / "run.json").read_text())
            assert record["mlflow_run_id"] == run.info.run_id
    finally:  # put the repository back as the other tests found it
        for made in repo.glob("runs/*/3r0s"):
            shutil.rmtree(made)
        sh("git", "checkout", "--", ".", cwd=repo)


# Compute-only settings: the scenario below keeps the repository's mixes, split sizes and controls.
COMPUTE_ONLY = {
    "generate": {"ddpm": TINY_PARAMS["generate"]["ddpm"]},
    "study": {"models": ["cnn"], "seeds": [0, 1]},
    "train": {"cnn": {"epochs": 2}},
    "report": {"bootstrap_samples": 200},
}


def test_a_set_of_exactly_60_images_a_class_imports_and_runs_naming_the_control_it_cannot_run(tmp_path):
    """The study's own shape: 30 train + 30 test a class leaves no extra real images (60r0s cannot run)
    and no pool (the DDPM learns from the training split). Import, then the README's next command."""
    repo = tmp_path / "repo"
    repo.mkdir()
    copy_project(repo)
    project_params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    params = merged(project_params, COMPUTE_ONLY)
    for key in ("mix", "data"):
        assert params[key] == project_params[key]
    assert params["study"]["mixes"] == project_params["study"]["mixes"]
    assert "60r0s" in params["study"]["mixes"] and "30r30a" in params["study"]["mixes"]
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("git", "init", "-q", "-b", "main", cwd=repo)
    sh("dvc", "init", "-q", cwd=repo)
    sh("dvc", "config", "core.analytics", "false", cwd=repo)
    write_tiny_images(tmp_path / "animals" / "animals", ("cat", "dog", "owl"), 60, ".jpg", seed=1)
    sh("synthmix", "data", "import", str(tmp_path / "animals"), cwd=repo)
    sh("dvc", "repro", cwd=repo)
    runs = {p.parent.parent.name for p in (repo / "runs").glob("cnn/*/*/DONE")}
    assert runs == {"30r0s", "30r15s", "30r30s", "15r30s", "0r30s", "30r30a", "30r15s@filtered"}
    report = (repo / "reports" / "report.md").read_text()
    assert "60r0s" in report and "could not run" in report
    assert "30 real images a class beyond the 30 training and 30 test ones" in " ".join(report.split())
    assert "classifier's own training split" in " ".join(report.split())

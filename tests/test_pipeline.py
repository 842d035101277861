"""The study as a DVC pipeline, end to end, on tiny data in a temporary git + DVC repository.

These run the real `dvc repro`, `dvc exp run -S mix=...`, `dvc push`/`dvc pull` and `mlflow run` the way
a user does, on 3 classes of small images, so the whole module stays within a few minutes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from synthmix import tracking

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

TINY_PARAMS = {
    "mix": "all",
    "data": {"train_per_class": 6, "test_per_class": 6},
    "generate": {
        "images_per_class": 4,
        "ddpm": {
            "resolution": 8,
            "base_channels": 8,
            "train_steps": 6,
            "batch_size": 8,
            "sample_steps": 2,
            "checkpoint_every": 3,
        },
    },
    "study": {
        "mixes": ["6r0s", "6r4s", "3r4s", "6r4a"],
        "models": ["cnn", "resnet50"],
        "seeds": [0, 1],
        "baseline": "6r0s",
    },
    "train": {"image_size": 32, "cnn": {"epochs": 2}, "resnet50": {"epochs": 2, "weights": "none"}},
    "report": {"bootstrap_samples": 200},
}


def _env(repo: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{repo / 'mlflow.db'}"
    env["HF_HUB_OFFLINE"] = "1"
    env["SYNTHMIX_QUIET"] = "1"
    return env


def sh(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(list(args), cwd=cwd, env=_env(cwd), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


def _write_tiny_images(
    root: Path, labels=("circle", "cross", "square"), count: int = 12, suffix: str = ".png", seed: int = 0
) -> None:
    """`count` distinct images a class with a class-dependent pattern, so a classifier can learn something."""
    rng = np.random.default_rng(seed)
    for c, label in enumerate(labels):
        for i in range(count):
            pixels = rng.integers(0, 80, size=(16, 16), dtype=np.uint8)
            pixels[3 + c * 4 : 7 + c * 4, 2:14] += 150
            (root / label).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels, "L").save(root / label / f"{i:02d}{suffix}", quality=95)


def _merged(base: dict, overrides: dict) -> dict:
    out = dict(base)
    for key, value in overrides.items():
        out[key] = _merged(base.get(key) or {}, value) if isinstance(value, dict) else value
    return out


def _all_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git + DVC repository shaped like synthmix's own, with tiny data and params, after `dvc repro`."""
    base = tmp_path_factory.mktemp("pipeline")
    repo = base / "repo"
    repo.mkdir()
    for name in ("dvc.yaml", ".dvcignore", "MLproject", "python_env.yaml", ".gitignore"):
        shutil.copy(PROJECT / name, repo / name)
    shutil.copytree(PROJECT / "src", repo / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    # DVC needs every parameter a stage declares in params.yaml: start from the project's file.
    params = _merged(yaml.safe_load((PROJECT / "params.yaml").read_text()), TINY_PARAMS)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("git", "init", "-q", "-b", "main", cwd=repo)
    sh("git", "config", "user.email", "test@example.com", cwd=repo)
    sh("git", "config", "user.name", "test", cwd=repo)
    sh("dvc", "init", "-q", cwd=repo)
    sh("dvc", "config", "core.analytics", "false", cwd=repo)
    sh("dvc", "remote", "add", "-d", "local", str(base / "remote"), cwd=repo)
    _write_tiny_images(repo / "data")
    sh("dvc", "add", "-q", "data", cwd=repo)
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-qm", "tiny study", cwd=repo)
    sh("dvc", "repro", cwd=repo)
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-qm", "repro", cwd=repo)
    return repo


def test_repro_runs_the_whole_study_and_a_second_repro_is_a_noop(repo: Path):
    runs = sorted(p.parent.relative_to(repo / "runs").as_posix() for p in (repo / "runs").glob("*/*/*/DONE"))
    expected = sorted(
        f"{m}/{mix}/seed{s}"
        for m in ("cnn", "resnet50")
        for mix in ("6r0s", "6r4s", "3r4s", "6r4a")
        for s in (0, 1)
    )
    assert runs == expected
    # 4 images a class for each of the two seeds: the generator's sampling seed is redrawn per replicate
    assert len(list((repo / "synthetic").glob("*/*.png"))) == 3 * 4 * 2
    assert (repo / "reports" / "report.html").stat().st_size > 0
    metrics = json.loads((repo / "metrics.json").read_text())
    assert set(metrics) == {"cnn", "resnet50"} and set(metrics["cnn"]) == {"6r0s", "6r4s", "3r4s", "6r4a"}

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
    metrics = json.loads((repo / "metrics.json").read_text())
    assert "2r2a" in metrics["cnn"]
    shown = sh("dvc", "exp", "show", "--json", cwd=repo).stdout
    assert "2r2a" in shown
    sh("git", "checkout", "--", "params.yaml", "dvc.lock", cwd=repo)
    sh("dvc", "checkout", "-q", cwd=repo, check=False)


def test_queued_experiments_run_on_two_workers(repo: Path):
    sh("dvc", "exp", "run", "--queue", "-S", "mix=2r4s,3r0s", cwd=repo)
    sh("dvc", "queue", "start", "-j", "2", cwd=repo)
    deadline = time.monotonic() + 600
    while re.search(r"\b(Queued|Running)\b", status := sh("dvc", "queue", "status", cwd=repo).stdout):
        assert time.monotonic() < deadline, status
        time.sleep(3)
    assert status.count("Success") == 2, status
    shown = sh("dvc", "exp", "show", "--json", cwd=repo).stdout
    assert "2r4s" in shown and "3r0s" in shown


def test_push_then_pull_into_a_second_clone_restores_the_data_byte_for_byte(repo: Path, tmp_path: Path):
    sh("dvc", "push", "-q", cwd=repo)
    clone = tmp_path / "clone"
    sh("git", "clone", "-q", str(repo), str(clone), cwd=tmp_path)
    sh("dvc", "pull", "-q", cwd=clone)
    for folder in ("data", "synthetic"):
        assert _all_files(clone / folder) == _all_files(repo / folder), folder


def test_mlflow_run_train_entry_point_logs_a_run(repo: Path):
    import mlflow

    sh("mlflow", "run", ".", "-e", "train", "-P", "mix=3r0s", "--env-manager", "local", cwd=repo)
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    experiments = client.search_experiments()
    runs = client.search_runs([e.experiment_id for e in experiments], f"tags.`{tracking.MIX}` = '3r0s'")
    assert {r.data.tags.get(tracking.MODEL) for r in runs} == {"cnn", "resnet50"}


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
    for name in ("dvc.yaml", ".dvcignore", "MLproject", "python_env.yaml", ".gitignore"):
        shutil.copy(PROJECT / name, repo / name)
    shutil.copytree(PROJECT / "src", repo / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    project_params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    params = _merged(project_params, COMPUTE_ONLY)
    for key in ("mix", "data"):
        assert params[key] == project_params[key]
    assert params["study"]["mixes"] == project_params["study"]["mixes"]
    assert "60r0s" in params["study"]["mixes"] and "30r30a" in params["study"]["mixes"]
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("git", "init", "-q", "-b", "main", cwd=repo)
    sh("dvc", "init", "-q", cwd=repo)
    sh("dvc", "config", "core.analytics", "false", cwd=repo)
    _write_tiny_images(tmp_path / "animals" / "animals", ("cat", "dog", "owl"), 60, ".jpg", seed=1)
    sh("synthmix", "data", "import", str(tmp_path / "animals"), cwd=repo)
    sh("dvc", "repro", cwd=repo)
    runs = {p.parent.parent.name for p in (repo / "runs").glob("cnn/*/*/DONE")}
    assert runs == {"30r0s", "30r15s", "30r30s", "15r30s", "0r30s", "30r30a"}
    report = (repo / "reports" / "report.md").read_text()
    assert "60r0s" in report and "could not run" in report
    assert "30 real images a class beyond the 30 training and 30 test ones" in " ".join(report.split())
    assert "classifier's own training split" in " ".join(report.split())

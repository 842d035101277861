"""Tuning: validation split, shared studies, resume, MLflow nesting, best-parameter file, test split unseen."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import optuna
import pytest
import yaml
from tests.conftest import write_image

from synthmix import cli, tune
from synthmix.config import TrainConfig, load_params
from synthmix.data import prepare_split, read_manifest, sha256_file
from synthmix.errors import UserError
from synthmix.mixes import Mix, SyntheticRow, TrainingImage, write_synthetic_manifest
from synthmix.train import fixed_hyperparameters, tuned_hyperparameters

CLASSES = ("a", "b", "c")


# --- a tiny project: 3 classes, 8 train + 2 test real images, 4 synthetic images per class -----------


def write_params(root: Path, storage: str, **tune_overrides) -> Path:
    tune_cfg = {
        "trials": 4,
        "storage": storage,
        "epochs": [1, 3],
        "batch_size": [8, 16],
        "pruning_startup_trials": 1,
        "pruning_warmup_epochs": 1,
        "heartbeat_seconds": 1,
        **tune_overrides,
    }
    params = {
        "data": {"train_per_class": 8, "test_per_class": 2},
        "generate": {"images_per_class": 4},
        "study": {"mixes": ["8r0s", "8r4s"], "models": ["cnn"], "seeds": [0], "baseline": "8r0s"},
        "train": {"image_size": 32, "cache_dir": ".cache"},
        "tune": tune_cfg,
    }
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.fixture(scope="module")
def mlflow_db(tmp_path_factory) -> str:
    """One MLflow store for the module: creating its tables takes seconds, each test's runs are its own."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def project(in_tmp: Path, monkeypatch: pytest.MonkeyPatch, mlflow_db: str) -> Path:
    """A prepared project in the working directory, with its own MLflow and Optuna sqlite files."""
    seed = 0
    for label in CLASSES:
        for i in range(10):
            seed += 1
            write_image(Path("data") / label / f"{i:03d}.png", seed)
    prepare_split(Path("data"), Path("prepared"), 8, 2, seed=0)
    rows = []
    for label in CLASSES:
        for i in range(4):
            seed += 1
            path = write_image(Path("synthetic") / label / f"{i:04d}.png", seed)
            rows.append(SyntheticRow(path, label, i, i, "test", "m", "", "p", 1, 1.0, 0, sha256_file(path)))
    write_synthetic_manifest(rows, Path("synthetic/manifest.csv"))
    # Absolute URIs: MLflow caches stores by URI, and a relative one would outlive this test's folder.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_db)
    write_params(in_tmp, f"sqlite:///{in_tmp / 'optuna.db'}")
    return in_tmp


def finished_trials(storage: str) -> list[optuna.trial.FrozenTrial]:
    (summary,) = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    return study.get_trials(states=tune.FINISHED)


# --- the validation split --------------------------------------------------------------------------


def _images(real: int, synthetic: int) -> list[TrainingImage]:
    return [
        TrainingImage(Path(f"{label}/{source}{i}.png"), label, f"{label}-{source}-{i:03d}", source)
        for label in CLASSES
        for source, count in (("real", real), ("synthetic", synthetic))
        for i in range(count)
    ]


def test_validation_split_is_stratified_per_class_and_source_seeded_and_disjoint():
    images = _images(real=10, synthetic=5)
    train, validation = tune.validation_split(images, fraction=0.2, seed=0)
    assert sorted(train + validation) == list(range(len(images)))
    for label in CLASSES:
        picked = [images[i] for i in validation if images[i].label == label]
        assert sum(i.source == "real" for i in picked) == 2  # 20% of 10
        assert sum(i.source == "synthetic" for i in picked) == 1  # 20% of 5
    assert tune.validation_split(images, 0.2, seed=0) == (train, validation)
    assert tune.validation_split(images, 0.2, seed=1)[1] != validation
    # The choice follows content, not listing order.
    shuffled = list(reversed(images))
    _, validation_shuffled = tune.validation_split(shuffled, 0.2, seed=0)
    assert {shuffled[i].sha256 for i in validation_shuffled} == {images[i].sha256 for i in validation}


def test_validation_split_keeps_a_training_image_in_every_group():
    images = _images(real=2, synthetic=1)
    train, validation = tune.validation_split(images, fraction=0.9, seed=0)
    for label in CLASSES:
        assert any(images[i].label == label and images[i].source == "real" for i in train)
        assert sum(images[i].label == label for i in validation) == 1  # the lone synthetic one trains


# --- the best-parameter file ----------------------------------------------------------------------


def test_best_params_merge_keeps_other_entries_and_training_reads_them(tmp_path):
    path = tmp_path / "tuned" / "best_params.yaml"
    entry = {"lr": 0.01, "weight_decay": 1e-4, "dropout": 0.3, "epochs": 7, "batch_size": 16}
    tune.write_best_params(path, "cnn", Mix(30, 0), {**entry, "value": 0.5, "trials": 20})
    tune.write_best_params(path, "cnn", Mix(30, 30), {**entry, "lr": 0.02, "value": 0.4, "trials": 20})
    tune.write_best_params(path, "resnet50", Mix(30, 0), {**entry, "value": 0.3, "trials": 5})
    content = yaml.safe_load(path.read_text())
    assert set(content) == {"cnn", "resnet50"} and set(content["cnn"]) == {"30r0s", "30r30s"}
    # What training reads with train.use_tuned: true.
    fixed = fixed_hyperparameters("cnn", TrainConfig())
    hp = tuned_hyperparameters(path, "cnn", Mix(30, 30), fixed)
    assert (hp.lr, hp.weight_decay, hp.dropout, hp.epochs, hp.batch_size) == (0.02, 1e-4, 0.3, 7, 16)
    assert [p.name for p in path.parent.iterdir() if "tmp" in p.name] == []
    path.write_text("- just\n- a list\n")
    with pytest.raises(UserError, match="not a best-parameters file"):
        tune.read_best_params(path)


# --- tuning end to end (in process) ---------------------------------------------------------------


def test_a_study_sees_only_the_mix_training_set_logs_nested_runs_and_writes_best_params(project, monkeypatch):
    params = load_params("params.yaml")
    test_rows = read_manifest(Path("prepared/test.csv"))
    # The test split is gone: a tune that read its manifest or decoded one of its images would fail.
    Path("prepared/test.csv").write_text("garbage, not a manifest\n")
    for row in test_rows:
        row.path.unlink()
    import synthmix.store

    loaded: list[str] = []
    real_load = synthmix.store.load_images

    def recording_load(paths, labels, sha256s, size, cache_dir):
        loaded.extend(sha256s)
        return real_load(paths, labels, sha256s, size, cache_dir)

    monkeypatch.setattr(synthmix.store, "load_images", recording_load)
    result = tune.tune_mix("cnn", Mix(8, 4), params, trials=4)

    assert result.finished_trials == 4 and result.trials_here == 4
    assert not {r.sha256 for r in test_rows} & set(loaded)
    expected = {r.sha256 for r in read_manifest(Path("prepared/train.csv"))}
    expected |= {sha256_file(p) for p in Path("synthetic").glob("*/*.png")}
    assert set(loaded) == expected

    entry = yaml.safe_load(Path("tuned/best_params.yaml").read_text())["cnn"]["8r4s"]
    assert set(entry) == {"lr", "weight_decay", "dropout", "epochs", "batch_size", "value", "trials"}
    assert entry["trials"] == 4 and entry["value"] == pytest.approx(result.value)
    best = optuna.load_study(study_name=result.study_name, storage=params.tune.storage).best_trial
    assert {k: entry[k] for k in best.params} == best.params
    assert 0.0 <= entry["dropout"] <= 0.6 and 1 <= entry["epochs"] <= 3 and entry["batch_size"] in (8, 16)

    client = mlflow.MlflowClient()
    children = client.search_runs(
        [client.get_experiment_by_name(tune.MLFLOW_EXPERIMENT).experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{result.mlflow_run_id}'",
    )
    assert len(children) == 4
    for run in children:
        assert set(run.data.params) >= {"lr", "weight_decay", "dropout", "epochs", "batch_size"}
        assert run.data.tags["optuna.state"] in ("COMPLETE", "PRUNED")
    completed = [run for run in children if run.data.tags["optuna.state"] == "COMPLETE"]
    assert min(run.data.metrics["objective"] for run in completed) == pytest.approx(result.value)
    figures = {f.path for f in client.list_artifacts(result.mlflow_run_id, "optuna")}
    assert "optuna/optimization_history.png" in figures
    assert ("optuna/param_importances.png" in figures) == (len(completed) >= 2)


def test_rerun_continues_the_study_without_repeating_trials(project):
    params = load_params("params.yaml")
    first = tune.tune_mix("cnn", Mix(8, 0), params, trials=1)
    client = mlflow.MlflowClient()
    # One trial: nothing to compare importances on, so that figure is skipped, with a note.
    assert {f.path for f in client.list_artifacts(first.mlflow_run_id, "optuna")} == {
        "optuna/optimization_history.png"
    }
    assert "fewer than 2" in client.get_run(first.mlflow_run_id).data.tags["param_importances"]

    more = tune.tune_mix("cnn", Mix(8, 0), params, trials=3)
    again = tune.tune_mix("cnn", Mix(8, 0), params, trials=3)
    assert (first.trials_here, more.trials_here, again.trials_here) == (1, 2, 0)
    assert first.study_name == more.study_name and first.mlflow_run_id == more.mlflow_run_id
    assert [t.number for t in finished_trials(params.tune.storage)] == [0, 1, 2]


def test_a_dead_workers_running_trial_is_failed_and_replaced(project):
    params = load_params("params.yaml")
    images = tune.mix_training_set(params, Mix(8, 0))
    storage = tune.open_storage(params.tune.storage, params.tune.heartbeat_seconds)
    study = tune.create_study(tune.study_name("cnn", Mix(8, 0), params, images), storage, params.tune)
    orphan = study.ask()  # a worker that died mid-trial: RUNNING, heartbeat gone quiet
    storage.record_heartbeat(orphan._trial_id)
    time.sleep(2.5)  # > the grace period of 2 x tune.heartbeat_seconds

    result = tune.tune_mix("cnn", Mix(8, 0), params, trials=2)
    assert result.finished_trials == 2 and result.trials_here == 2
    states = {t.number: t.state for t in study.get_trials()}
    assert states[orphan.number] == optuna.trial.TrialState.FAIL


def _sampled(sampler_seed: int, workers: int, n_trials: int) -> list[dict]:
    """Params of n_trials trials asked round-robin by `workers` samplers sharing one storage."""
    storage = optuna.storages.InMemoryStorage()
    studies = [
        optuna.create_study(
            study_name="s",
            storage=storage,
            sampler=tune.TrialSeededTPESampler(sampler_seed),
            load_if_exists=True,
        )
        for _ in range(workers)
    ]
    for number in range(n_trials):
        study = studies[number % workers]
        trial = study.ask()
        tune.suggest_hyperparameters(trial, load_params("params.yaml").tune)
        study.tell(trial, sum(trial.params.values()))
    return [t.params for t in studies[0].get_trials()]


def test_a_fixed_sampler_seed_replays_the_study_and_workers_draw_different_points(project):
    assert _sampled(0, workers=1, n_trials=12) == _sampled(0, workers=1, n_trials=12)
    assert _sampled(1, workers=1, n_trials=12) != _sampled(0, workers=1, n_trials=12)
    # Two workers with the same seed: trial numbers, not processes, seed the draws, so none repeat
    # (with one seed per process both would start with the same "random" point).
    shared = _sampled(0, workers=2, n_trials=12)
    assert len({tuple(sorted(p.items())) for p in shared}) == 12
    assert shared == _sampled(0, workers=1, n_trials=12)  # and the study is the same as one worker's


def test_a_changed_search_space_starts_a_new_study(project):
    params = load_params("params.yaml")
    images = tune.mix_training_set(params, Mix(8, 0))
    name = tune.study_name("cnn", Mix(8, 0), params, images)
    write_params(project, params.tune.storage, lr=[0.001, 0.01])
    assert tune.study_name("cnn", Mix(8, 0), load_params("params.yaml"), images) != name
    write_params(project, params.tune.storage, sampler_seed=7, trials=50)  # same space: same study
    assert tune.study_name("cnn", Mix(8, 0), load_params("params.yaml"), images) == name
    assert name.startswith("cnn-8r0s-")


# --- the command line -----------------------------------------------------------------------------


def test_cli_tunes_the_chosen_model_and_mix(project, capsys):
    assert cli.run(["tune", "--model", "cnn", "--mix", "8r4s", "--trials", "2"]) == 0
    assert set(yaml.safe_load(Path("tuned/best_params.yaml").read_text())["cnn"]) == {"8r4s"}
    assert "over 2 trials" in capsys.readouterr().err


def test_cli_if_enabled_does_nothing_but_create_the_file_when_tuning_is_off(project):
    assert cli.run(["tune", "--if-enabled"]) == 0
    assert yaml.safe_load(Path("tuned/best_params.yaml").read_text()) == {}
    assert not Path("optuna.db").exists()


@pytest.mark.parametrize(
    "args,message",
    [
        (["--mix", "8r9s"], "generate.images_per_class"),
        (["--model", "vgg"], "Unknown model 'vgg'"),
        (["--storage", "nosuchdb://x"], "Cannot open the Optuna storage"),
    ],
)
def test_cli_user_mistakes_exit_2_with_a_message(project, capsys, args, message):
    assert cli.run(["tune", "--trials", "1", *args]) == 2
    err = capsys.readouterr().err
    assert message in " ".join(err.split()) and "Traceback" not in err


# --- two workers, one study -----------------------------------------------------------------------


def _postgres_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return candidates[-1].parent if candidates else None


@pytest.fixture
def postgres_url():
    """A throwaway PostgreSQL server on a unix socket (run as the `postgres` user when we are root)."""
    bindir = _postgres_bin()
    if bindir is None:
        message = "PostgreSQL binaries not found; run scripts/install-postgres.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    pytest.importorskip("psycopg2")
    root = Path(tempfile.mkdtemp(prefix="synthmix-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root; Debian's package creates this user
        try:
            shutil.chown(root, "postgres", "postgres")
        except LookupError:
            shutil.rmtree(root)
            pytest.skip("running as root with no `postgres` user to run the server as")
        as_user = ["runuser", "-u", "postgres", "--"]
    data = root / "data"
    try:
        subprocess.run(
            [*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "start",
             "-o", f"-k {root} -c listen_addresses='' -p 5432"],
            check=True,
            capture_output=True,
        )  # fmt: skip
        yield f"postgresql+psycopg2://postgres@/postgres?host={root}&port=5432"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def shared_storage(request, project) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{project / 'shared.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.mark.slow
def test_two_workers_split_one_study_without_running_a_trial_twice(project, shared_storage):
    n_trials = 6
    # Trials long enough (8-12 epochs, no pruning) that the second worker's start-up overlaps them.
    write_params(project, shared_storage, epochs=[8, 12], pruning_startup_trials=100)
    env = {**os.environ, "SYNTHMIX_QUIET": "1"}
    command = [sys.executable, "-m", "synthmix", "tune", "--model", "cnn", "--mix", "8r0s"]
    workers = [
        subprocess.Popen([*command, "--trials", str(n_trials)], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]  # fmt: skip
    outputs = [worker.communicate(timeout=300)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs

    trials = finished_trials(shared_storage)
    assert len(trials) == n_trials
    assert sorted(t.number for t in trials) == sorted({t.number for t in trials})
    assert len({tuple(sorted(t.params.items())) for t in trials}) == n_trials
    per_worker = [int(re.search(r"\((\d+) run here\)", " ".join(out.split()))[1]) for out in outputs]
    assert sum(per_worker) == n_trials and min(per_worker) >= 1, outputs
    entry = yaml.safe_load(Path("tuned/best_params.yaml").read_text())["cnn"]["8r0s"]
    assert entry["trials"] == n_trials

"""Tuning: held-out real validation set, shared studies, resume, MLflow nesting, best-parameter file,
test split unseen."""

from __future__ import annotations

import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import mlflow
import optuna
import pytest
import sqlalchemy
import yaml
from optuna.trial import TrialState

from conftest import write_image
from synthmix import cli
from synthmix.config.params import load_params
from synthmix.core.errors import UserError
from synthmix.core.files import sha256_file
from synthmix.data.mixes import Mix
from synthmix.data.real import read_manifest
from synthmix.data.split import SplitSizes, prepare_split
from synthmix.generate.manifest import SyntheticRow, write_synthetic_manifest
from synthmix.runs import tracking
from synthmix.stages.tune import MLFLOW_EXPERIMENT, tune_mix
from synthmix.train.tune import storage as tune_storage
from synthmix.train.tune.data import study_name, tuning_sets
from synthmix.train.tune.space import TrialSeededTPESampler, suggest_hyperparameters
from synthmix.train.tune.storage import FINISHED, WAIT_SECONDS, create_study, open_storage

CLASSES = ("a", "b", "c")


# --- a tiny project: 3 classes, 8 train + 2 test real images, 4 synthetic images per class -----------


def write_params(root: Path, storage: str, cnn: dict | None = None, **tune_overrides) -> Path:
    tune_cfg = {
        "trials": 4,
        "storage": storage,
        "epochs": [1, 3],
        "batch_size": [8, 16],
        "pruning_startup_trials": 1,
        "pruning_warmup_epochs": 1,
        **tune_overrides,
    }
    params = {
        "data": {"train_per_class": 8, "test_per_class": 2},
        "generate": {"images_per_class": 4},
        "study": {"mixes": ["8r0s", "8r4s"], "models": ["cnn"], "seeds": [0], "baseline": "8r0s"},
        "train": {"image_size": 32, "cache_dir": ".cache", "cnn": cnn or {}},
        "tune": tune_cfg,
    }
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.fixture(scope="module")
def mlflow_db(tmp_path_factory) -> str:
    """One MLflow store for the module: creating its tables takes seconds, each test's runs are its own.

    The tables are created here, so that time shows as this fixture's, not as the first test's.
    """
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    mlflow.MlflowClient(uri).search_experiments()
    return uri


@pytest.fixture
def project(in_tmp: Path, monkeypatch: pytest.MonkeyPatch, mlflow_db: str) -> Path:
    """A prepared project in the working directory, with its own MLflow and Optuna sqlite files."""
    seed = 0
    for label in CLASSES:
        for i in range(10):
            seed += 1
            write_image(Path("data") / label / f"{i:03d}.png", seed)
    prepare_split(Path("data"), Path("prepared"), SplitSizes(8, 2), seed=0)
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
    return study.get_trials(states=FINISHED)


# --- the validation set ---------------------------------------------------------------------------


def test_every_mix_is_validated_on_the_same_held_out_real_images_and_tuned_on_none_of_them(project):
    params = load_params("params.yaml")
    sets = {name: tuning_sets(params, Mix.parse(name)) for name in ("0r4s", "8r4s", "8r0s", "4r4s")}
    validation = sets["0r4s"].validation
    synthetic = {sha256_file(p) for p in Path("synthetic").glob("*/*.png")}
    assert validation and not {image.sha256 for image in validation} & synthetic  # 0r30s-like: no synthetic
    assert {image.source for image in validation} == {"real"}
    # per class, the highest-ranked round(0.2 * 8) = 2 of the 8 real training images
    train_rows = read_manifest(Path("prepared/train.csv"))
    assert {image.path for image in validation} == {r.path for r in train_rows if r.rank >= 6}
    for mix_sets in sets.values():
        assert mix_sets.validation == validation  # the same validation images for every mix
        assert not {image.path for image in mix_sets.train} & {image.path for image in validation}
    assert {image.source for image in sets["0r4s"].train} == {"synthetic"}
    assert sum(image.source == "real" for image in sets["8r4s"].train) == 3 * 6
    assert sum(image.source == "real" for image in sets["4r4s"].train) == 3 * 4  # a smaller mix loses none


def test_a_validation_fraction_that_holds_out_no_image_is_a_clear_error(project):
    write_params(project, f"sqlite:///{project / 'optuna.db'}", validation_fraction=0.05)  # 0.4 of 8 -> 0
    with pytest.raises(UserError, match=r"tune.validation_fraction 0.05 holds out 0 of the 8"):
        tuning_sets(load_params("params.yaml"), Mix(8, 0))


# --- tuning end to end (in process) ---------------------------------------------------------------


@pytest.mark.slow
def test_a_study_sees_only_the_mix_training_set_logs_nested_runs_and_writes_best_params(project, monkeypatch):
    params = load_params("params.yaml")
    test_rows = read_manifest(Path("prepared/test.csv"))
    # The test split is gone: a tune that read its manifest or decoded one of its images would fail.
    Path("prepared/test.csv").write_text("garbage, not a manifest\n")
    for row in test_rows:
        row.path.unlink()
    import synthmix.data.images

    loaded: list[str] = []
    real_load = synthmix.data.images.load_images

    def recording_load(paths, labels, sha256s, size, cache_dir):
        loaded.extend(sha256s)
        return real_load(paths, labels, sha256s, size, cache_dir)

    monkeypatch.setattr(synthmix.data.images, "load_images", recording_load)
    result = tune_mix("cnn", Mix(8, 4), params, trials=4)

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
        [client.get_experiment_by_name(MLFLOW_EXPERIMENT).experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{result.mlflow_run_id}'",
    )
    assert len(children) == 4
    for run in children:
        assert set(run.data.params) >= {"lr", "weight_decay", "dropout", "epochs", "batch_size"}
        assert run.data.tags[tracking.OPTUNA_STATE] in ("COMPLETE", "PRUNED")
    completed = [run for run in children if run.data.tags[tracking.OPTUNA_STATE] == "COMPLETE"]
    assert min(run.data.metrics["objective"] for run in completed) == pytest.approx(result.value)
    figures = {f.path for f in client.list_artifacts(result.mlflow_run_id, "optuna")}
    assert "optuna/optimization_history.png" in figures
    assert ("optuna/param_importances.png" in figures) == (len(completed) >= 2)


@pytest.mark.slow
def test_rerun_continues_the_study_without_repeating_trials(project):
    params = load_params("params.yaml")
    first = tune_mix("cnn", Mix(8, 0), params, trials=1)
    client = mlflow.MlflowClient()
    # One trial: nothing to compare importances on, so that figure is skipped, with a note.
    assert {f.path for f in client.list_artifacts(first.mlflow_run_id, "optuna")} == {
        "optuna/optimization_history.png"
    }
    assert "fewer than 2" in client.get_run(first.mlflow_run_id).data.tags[tracking.PARAM_IMPORTANCES]

    more = tune_mix("cnn", Mix(8, 0), params, trials=3)
    again = tune_mix("cnn", Mix(8, 0), params, trials=3)
    assert (first.trials_here, more.trials_here, again.trials_here) == (1, 2, 0)
    assert first.study_name == more.study_name and first.mlflow_run_id == more.mlflow_run_id
    assert [t.number for t in finished_trials(params.tune.storage)] == [0, 1, 2]


@pytest.mark.slow
def test_optuna_dashboard_serves_the_tuning_storage(project):
    """`optuna-dashboard <tune.storage>` (README, Tuning) shows the studies the tune stage made."""
    import json
    import socket
    import time
    import urllib.request

    params = load_params("params.yaml")
    result = tune_mix("cnn", Mix(8, 0), params, trials=1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dashboard = Path(sys.executable).with_name("optuna-dashboard")
    command = [str(dashboard), params.tune.storage, "--host", "127.0.0.1", "--port", str(port)]
    with Path("dashboard.log").open("w") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as response:
                    studies = json.load(response)["study_summaries"]
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, Path(
                    "dashboard.log"
                ).read_text()
                time.sleep(0.5)
        assert [s["study_name"] for s in studies] == [result.study_name]
    finally:
        server.terminate()
        server.wait(timeout=30)


def _age_heartbeat(storage: optuna.storages.RDBStorage, trial_id: int) -> None:
    """Move a trial's last heartbeat far into the past, as if its worker had gone quiet long ago."""
    update = sqlalchemy.text("UPDATE trial_heartbeats SET heartbeat = :at WHERE trial_id = :trial_id")
    update = update.bindparams(sqlalchemy.bindparam("at", type_=sqlalchemy.DateTime))
    with storage.engine.begin() as connection:
        assert connection.execute(update, {"at": datetime(2000, 1, 1), "trial_id": trial_id}).rowcount == 1


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")  # study.ask(), on purpose
def test_a_dead_workers_running_trial_is_waited_for_then_failed_and_replaced(project, monkeypatch):
    params = load_params("params.yaml")
    sets = tuning_sets(params, Mix(8, 0))
    storage = open_storage(params.tune.storage, params.tune.heartbeat_seconds)
    study = create_study(study_name("cnn", Mix(8, 0), params.tune, params.train, sets), storage, params.tune)
    orphan = study.ask()  # another worker's trial, RUNNING, with a fresh heartbeat: it may still be alive
    storage.record_heartbeat(orphan._trial_id)

    waits: list[float] = []

    def time_passes(seconds: float) -> None:
        """The worker's pause: meanwhile the other worker dies, so its heartbeat goes stale."""
        waits.append(seconds)
        if len(waits) > 1:
            raise AssertionError("the worker kept waiting for a trial whose heartbeat is stale")
        _age_heartbeat(storage, orphan._trial_id)

    monkeypatch.setattr(tune_storage, "sleep", time_passes)
    result = tune_mix("cnn", Mix(8, 0), params, trials=2)

    # One trial done and the orphan alive make two: the worker waited rather than run a surplus trial,
    # then failed the orphan once its heartbeat was stale and ran the second trial in its place.
    assert waits == [WAIT_SECONDS]
    assert result.finished_trials == 2 and result.trials_here == 2
    states = {t.number: t.state for t in study.get_trials()}
    assert states[orphan.number] == TrialState.FAIL
    assert sorted(n for n, state in states.items() if state in FINISHED) == [1, 2]


def _sampled(sampler_seed: int, workers: int, n_trials: int) -> list[dict]:
    """Params of n_trials trials asked round-robin by `workers` samplers sharing one storage."""
    storage = optuna.storages.InMemoryStorage()
    studies = [
        optuna.create_study(
            study_name="s",
            storage=storage,
            sampler=TrialSeededTPESampler(sampler_seed),
            load_if_exists=True,
        )
        for _ in range(workers)
    ]
    for number in range(n_trials):
        study = studies[number % workers]
        trial = study.ask()
        suggest_hyperparameters(trial, load_params("params.yaml").tune)
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


def test_a_changed_search_space_or_fixed_setting_starts_a_new_study(project):
    params = load_params("params.yaml")
    sets = tuning_sets(params, Mix(8, 0))
    name = study_name("cnn", Mix(8, 0), params.tune, params.train, sets)
    assert name.startswith("cnn-8r0s-")

    def name_with(**overrides) -> str:
        write_params(project, params.tune.storage, **overrides)
        changed = load_params("params.yaml")
        return study_name("cnn", Mix(8, 0), changed.tune, changed.train, sets)

    assert name_with(lr=[0.001, 0.01]) != name  # another search space
    assert name_with(cnn={"conv_dropout": 0.3}) != name  # a fixed setting every trial trains with
    # What does not change a trial's value joins the same study: the sampler, the trial count, and
    # the params.yaml values of the searched fields (each trial replaces them).
    assert name_with(sampler_seed=7, trials=50) == name
    assert name_with(cnn={"lr": 0.05, "weight_decay": 0.1, "epochs": 2, "fc_dropout": 0.2}) == name


# --- the command line -----------------------------------------------------------------------------


def test_cli_tunes_the_chosen_model_and_mix(project, capsys):
    assert cli.run(["tune", "--model", "cnn", "--mix", "8r4s", "--trials", "2"]) == 0
    assert set(yaml.safe_load(Path("tuned/best_params.yaml").read_text())["cnn"]) == {"8r4s"}
    assert "over 2 trials" in capsys.readouterr().err


def test_cli_if_enabled_does_nothing_but_create_the_file_when_tuning_is_off(project):
    assert cli.run(["tune", "--if-enabled"]) == 0
    assert yaml.safe_load(Path("tuned/best_params.yaml").read_text()) == {}
    assert not Path("optuna.db").exists()


def test_cli_if_enabled_needs_no_optuna_when_tuning_is_off(project, monkeypatch):
    """dvc's tune stage on a machine without Optuna (e.g. a GPU box running a preset that does not tune)."""
    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` raises ImportError
    monkeypatch.delitem(sys.modules, "synthmix.stages.tune", raising=False)
    assert cli.run(["tune", "--if-enabled"]) == 0
    assert yaml.safe_load(Path("tuned/best_params.yaml").read_text()) == {}


@pytest.mark.parametrize(
    "args,message",
    [
        (["--mix", "8r9s"], "generate.images_per_class"),
        (["--mix", "12r0s"], "Mix 12r0s cannot run: it needs 4 real images a class beyond the 8 training"),
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


# A `synthmix tune` worker whose first trial trains only once the test says "go": it prints "trial
# running" on stdout (everything else it prints goes to stderr) and waits for that line on stdin.
WORKER = """
import sys

import synthmix.train.fit
from synthmix import cli
from synthmix.runs import tracking

handshake, sys.stdout = sys.stdout, sys.stderr
train = synthmix.train.fit.fit


def train_on_go(*args, **kwargs):
    synthmix.train.fit.fit = train  # only the first trial waits
    print("trial running", file=handshake, flush=True)
    if sys.stdin.readline() != "go\\n":
        raise SystemExit("the test stopped this worker")
    return train(*args, **kwargs)


synthmix.train.fit.fit = train_on_go
sys.exit(cli.run(sys.argv[1:]))
"""


def _read_line(worker: subprocess.Popen, timeout: float) -> str:
    """The worker's next stdout line; '' when it exits or says nothing for `timeout` seconds."""
    ready, _, _ = select.select([worker.stdout], [], [], timeout)
    return worker.stdout.readline() if ready else ""


@pytest.mark.slow
def test_two_workers_split_one_study_without_running_a_trial_twice(project, shared_storage):
    n_trials = 6
    write_params(project, shared_storage, pruning_startup_trials=100)
    command = [
        sys.executable,
        "-c",
        WORKER,
        "tune",
        "--model",
        "cnn",
        "--mix",
        "8r0s",
        "--trials",
        str(n_trials),
    ]
    logs = [project / f"worker{i}.log" for i in range(2)]
    workers = []
    try:
        for log in logs:
            with open(log, "w") as stderr:
                workers.append(subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                                stderr=stderr, text=True))  # fmt: skip
        # Each worker holds its first trial until both have one running, so they overlap by
        # construction: both joined the one study, neither finished a trial, and each claimed its own.
        for worker, log in zip(workers, logs, strict=True):
            assert _read_line(worker, timeout=300) == "trial running\n", log.read_text()
        (summary,) = optuna.get_all_study_summaries(shared_storage)
        study = optuna.load_study(study_name=summary.study_name, storage=shared_storage)
        assert [t.state for t in study.get_trials()] == [TrialState.RUNNING] * 2
        for worker in workers:
            worker.stdin.write("go\n")
            worker.stdin.close()
        codes = [worker.wait(timeout=300) for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    outputs = [" ".join(log.read_text().split()) for log in logs]
    assert codes == [0, 0], outputs

    trials = finished_trials(shared_storage)
    assert len(trials) == n_trials
    assert len({tuple(sorted(t.params.items())) for t in trials}) == n_trials
    per_worker = [int(re.search(r"\((\d+) run here\)", out)[1]) for out in outputs]
    assert sum(per_worker) == n_trials and min(per_worker) >= 1, outputs
    entry = yaml.safe_load(Path("tuned/best_params.yaml").read_text())["cnn"]["8r0s"]
    assert entry["trials"] == n_trials

"""MLflow for every stage: where runs go, one tag vocabulary, and one way to open a stage's run.

Every synthmix run carries the same `synthmix.*` tags (TAGS below), so `mlflow ui` can filter any
stage's runs the same way (e.g. `tags."synthmix.stage" = "train"`). Stages call `stage_run` and never
`mlflow.start_run` themselves; a run inside a stage's run opens with `mlflow_run`.

A run ends FINISHED when its block completes, KILLED when it is interrupted (KeyboardInterrupt: Ctrl-C,
or SIGTERM in a stage that turns it into one) and FAILED on any other error. A process killed outright
(kill -9, the OOM killer) ends nothing: its runs stay RUNNING. Each run therefore records the process
that owns it (PID, HOST, PROCESS_START), and a stage, as it starts, marks KILLED its own stage's RUNNING
runs whose process is gone, and their RUNNING child runs (`mark_dead_runs`). Only runs of this host are
checked: a process on another machine cannot be seen from here, so its runs are left as they are.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import socket
import subprocess
import threading
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from synthmix.core.files import locked

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
EXPERIMENT = "synthmix"

# The tag vocabulary: every tag synthmix sets is named here, once.
STAGE = "synthmix.stage"  # prepare | generate | tune | train | report
GIT_COMMIT = "synthmix.git_commit"
DATA_MD5 = "synthmix.data_md5"  # the md5 DVC recorded for the real set in data.dvc
SYNTHETIC_MANIFEST_SHA256 = "synthmix.synthetic_manifest_sha256"
DVC_EXPERIMENT = "synthmix.dvc_experiment"
SWEEP = "synthmix.sweep"  # "true" on a stage's parent run
MODEL = "synthmix.model"
MIX = "synthmix.mix"
SEED = "synthmix.seed"
WEIGHTS = "synthmix.weights"
HYPERPARAMETER_SOURCE = "synthmix.hyperparameter_source"
FINGERPRINT = "synthmix.fingerprint"
OPTUNA_STUDY = "synthmix.optuna_study"
OPTUNA_STATE = "synthmix.optuna_state"  # a trial's end: COMPLETE | PRUNED | FAIL
PID = "synthmix.pid"  # the process that owns the run
HOST = "synthmix.host"  # socket.gethostname() of that process
PROCESS_START = "synthmix.process_start"  # boot id and start tick (/proc): tells a reused pid apart
FOUND_DEAD = "synthmix.found_dead"  # ISO time a later stage found the run RUNNING with its process gone
BEST_PARAM = "synthmix.best."  # prefix: the best trial's value of each searched parameter
PARAM_IMPORTANCES = "synthmix.param_importances"
NOTE = "mlflow.note.content"  # the run's description in `mlflow ui`
# The experiment's kind for MLflow 3 (model training, not GenAI). Its UI reads the tag, but a fresh
# browser still opens the experiment on the GenAI overview: experiment_url asks for the training runs.
_EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
UI_ADDRESS = "http://127.0.0.1:5000"  # where `mlflow ui` serves unless told otherwise
# Each (model, mix, seed) run of the train stage, not the stage's parent run that would fold them away.
TRAINING_RUNS = f"tags.`{STAGE}` = 'train' AND tags.`{MODEL}` LIKE '%'"


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI when set, else sqlite:///mlflow.db in the working directory (the repo root)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def tracking_server() -> str | None:
    """tracking_uri() when it is a tracking server (which is also the UI); None for a local store."""
    return uri if (uri := tracking_uri()).startswith(("http://", "https://")) else None


def experiment_url(experiment_id: str, ui: str | None = None) -> str:
    """The MLflow UI page of the experiment's training runs: the runs table under 'Model training'
    (`workflowType=machine_learning`; without it MLflow 3 opens a fresh browser on its GenAI overview,
    whatever the experiment's kind tag says), one row per (model, mix, seed) run, best macro F1 first.
    `ui`: the UI's address, by default the tracking server when tracking_uri() is one, else `mlflow ui`'s."""
    from urllib.parse import quote, urlencode

    ui = ui or tracking_server() or UI_ADDRESS
    order = {
        "orderByKey": "metrics.`final_f1_macro`",
        "orderByAsc": "false",
    }  # mlflow_log logs final_<metric>
    query = {"workflowType": "machine_learning", "searchFilter": TRAINING_RUNS, **order}
    return f"{ui.rstrip('/')}/#/experiments/{experiment_id}/runs?{urlencode(query, quote_via=quote)}"


def configure(experiment: str = EXPERIMENT) -> str:
    """Point MLflow at tracking_uri() and `experiment`; returns the experiment id.

    Under `mlflow run` (which sets MLFLOW_RUN_ID for the command) the run it opened becomes the parent:
    that run's experiment is kept, or MLflow refuses to resume the run.
    """
    import mlflow

    _create_sqlite_database(tracking_uri())
    mlflow.set_tracking_uri(tracking_uri())
    outer_run = os.environ.get("MLFLOW_RUN_ID")
    if outer_run:
        experiment_id = mlflow.MlflowClient().get_run(outer_run).info.experiment_id
        mlflow.set_experiment(experiment_id=experiment_id)
    else:
        experiment_id = mlflow.set_experiment(experiment).experiment_id
    client = mlflow.MlflowClient()
    if client.get_experiment(experiment_id).tags.get(_EXPERIMENT_KIND[0]) != _EXPERIMENT_KIND[1]:
        client.set_experiment_tag(experiment_id, *_EXPERIMENT_KIND)
    return experiment_id


def _create_sqlite_database(uri: str) -> None:
    """Build a new SQLite tracking database under a temporary name, one process at a time, and rename
    it into place. MLflow creates its tables in place and without a lock: two processes opening a fresh
    mlflow.db race (one fails), and a full disk half-way leaves a database no rerun can open."""
    path = _sqlite_file(uri)
    if path is None or path.exists():
        return
    with locked(path):
        if path.exists():  # another process built it while this one waited
            return
        import mlflow

        tmp = path.with_name(f".{path.name}.init-{os.getpid()}")
        tmp.unlink(missing_ok=True)
        try:
            client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp}")
            client.search_experiments()  # creates and migrates the tables, and the Default experiment
            engine = getattr(getattr(client._tracking_client, "store", None), "engine", None)
            if engine is not None:
                engine.dispose()  # no connection keeps the temporary name
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, path)


def _sqlite_file(uri: str) -> Path | None:
    """The database file of a `sqlite:///` tracking URI; None for any other store (or an in-memory one)."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or uri.endswith(":memory:"):
        return None
    return Path(uri[len(prefix) :])


def provenance_tags(synthetic_manifest: Path | None = None) -> dict[str, str]:
    """What ties a run to its inputs: code commit, real set, synthetic set, DVC experiment."""
    tags = {
        GIT_COMMIT: git_commit(),
        DATA_MD5: dvc_file_hash(Path("data.dvc")),
        DVC_EXPERIMENT: dvc_experiment(),
    }
    if synthetic_manifest is not None:
        tags[SYNTHETIC_MANIFEST_SHA256] = file_hash(synthetic_manifest)
    return tags


@contextmanager
def stage_run(
    stage: str,
    *,
    run_name: str | None = None,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    synthetic_manifest: Path | None = None,
    experiment: str = EXPERIMENT,
) -> Iterator[Any]:
    """A stage's MLflow run with the provenance tags, `params` logged once; yields the active run.

    First marks KILLED the runs of this stage left RUNNING by a process of this host that is gone
    (`mark_dead_runs`). The run ends as `mlflow_run` ends it: FINISHED, KILLED or FAILED.
    """
    import mlflow

    with interrupts_deferred():
        experiment_id = configure(experiment)
        mark_dead_runs(mlflow.MlflowClient(), experiment_id, stage)
    all_tags = {STAGE: stage, **provenance_tags(synthetic_manifest), **(tags or {})}
    with mlflow_run(run_name=run_name or stage, tags=all_tags) as run:
        if params:
            with interrupts_deferred():
                mlflow.log_params(dict(params))
        yield run


@contextmanager
def mlflow_run(*, tags: Mapping[str, str] | None = None, **start_run: Any) -> Iterator[Any]:
    """mlflow.start_run(**start_run) with `tags` and the process tags; yields the active run.

    Ends it FINISHED when the block completes, KILLED on KeyboardInterrupt (Ctrl-C, or a SIGTERM the
    stage turned into one) and FAILED on any other exception. (MLflow's own `with` calls both FAILED.)
    Neither its start nor its end can be interrupted half done (`interrupts_deferred`).
    """
    import mlflow

    run, status = None, "FAILED"
    try:
        with interrupts_deferred():
            run = mlflow.start_run(tags={**process_tags(), **(tags or {})}, **start_run)
        yield run
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if run is not None:
            with interrupts_deferred():
                _end_run(run, status)


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) and SIGTERM back until the block ends, then deliver them as they would
    have been. For MLflow writes: interrupted inside one, MLflow leaves its SQLite database locked (the
    next write waits 20 s, then fails) and a run half recorded. Outside the main thread, which alone
    can set signal handlers, it holds nothing back."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    interrupts = (signal.SIGINT, signal.SIGTERM)
    handlers = {s: signal.signal(s, lambda signum, frame: caught.append(signum)) for s in interrupts}
    try:
        yield
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        for signum in dict.fromkeys(caught):
            signal.raise_signal(signum)


def _end_run(run: Any, status: str) -> None:
    """End `run` with `status`; first any run still open above it, and, unless it finished, its child
    runs left RUNNING: a child whose start or end an interrupt cut short, which would stay RUNNING (or
    be ended FINISHED by MLflow's exit hook)."""
    import mlflow

    while (active := mlflow.active_run()) is not None:
        mlflow.end_run(status)
        if active.info.run_id == run.info.run_id:
            break
    if status != "FINISHED":
        client = mlflow.MlflowClient()
        for child in _running_children(client, run.info.experiment_id, run.info.run_id):
            client.set_terminated(child.info.run_id, status)


def process_tags() -> dict[str, str]:
    """The tags that name the process owning a run, so a later stage can tell when it is gone."""
    return {PID: str(os.getpid()), HOST: socket.gethostname(), PROCESS_START: _process_start(os.getpid())}


def mark_dead_stage_runs(stage: str, experiment: str = EXPERIMENT) -> list[str]:
    """`mark_dead_runs` for a stage that opens no run of its own this time (it has nothing to do), so
    runs a killed stage left RUNNING still end. Creates nothing: no tracking database, no experiment."""
    uri = tracking_uri()
    database = _sqlite_file(uri)
    if database is not None and not database.exists():
        return []
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    with interrupts_deferred():
        return mark_dead_runs(client, found.experiment_id, stage) if found else []


def mark_dead_runs(client: Any, experiment_id: str, stage: str) -> list[str]:
    """Mark KILLED every RUNNING run of `stage` that a process of this host started and that process is
    gone (killed outright: nothing ended its run), and their RUNNING child runs; returns their ids.

    Each gets FOUND_DEAD (when it was found) and a note saying why. A run is left RUNNING when its pid
    is alive (and, where /proc tells, started when the run's process did), when the pid belongs to
    another user, or when it ran on another host: from here we cannot tell whether it is gone.
    """
    host = socket.gethostname()
    running = _search(
        client,
        experiment_id,
        f"attributes.status = 'RUNNING' AND tags.`{STAGE}` = '{stage}' AND tags.`{HOST}` = '{host}'",
    )
    dead = [
        r for r in running if not _process_alive(r.data.tags.get(PID, ""), r.data.tags.get(PROCESS_START, ""))
    ]
    found = datetime.now(UTC).isoformat(timespec="seconds")
    marked: list[str] = []
    for run in dead:
        children = _running_children(client, experiment_id, run.info.run_id)
        note = (
            f"synthmix found this run RUNNING at {found} with its process (pid {run.data.tags.get(PID)} on "
            f"{host}) gone, killed before it could end the run, and marked it KILLED. Runs started on "
            "another host are never marked: their processes cannot be checked from here."
        )
        for run_id in [run.info.run_id, *(c.info.run_id for c in children)]:
            if run_id in marked:
                continue
            client.set_tag(run_id, FOUND_DEAD, found)
            client.set_tag(run_id, NOTE, note)
            client.set_terminated(run_id, "KILLED")
            marked.append(run_id)
    return marked


def _running_children(client: Any, experiment_id: str, run_id: str) -> list[Any]:
    running = f"attributes.status = 'RUNNING' AND tags.`mlflow.parentRunId` = '{run_id}'"
    return _search(client, experiment_id, running)


def _search(client: Any, experiment_id: str, filter_string: str) -> list[Any]:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string, max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def _process_alive(pid: str, start: str) -> bool:
    """False only when process `pid` is certainly not the one that recorded `start`: no such process,
    or (where /proc tells) one that started at another time, i.e. a reused pid. Unsure means alive."""
    if os.name != "posix" or not pid.isdigit() or int(pid) <= 0:
        return True  # on Windows os.kill(pid, 0) would signal the process, not probe it
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: alive, another user's process
        return True
    current = _process_start(int(pid))
    return not (start and current and current != start)


def _process_start(pid: int) -> str:
    """'<boot id>:<start tick>' of a process from /proc (Linux), '' where that cannot be read."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    fields = stat[stat.rindex(")") + 2 :].split()  # after the command name, which may hold spaces
    return f"{boot}:{fields[19]}" if len(fields) > 19 else ""


@contextmanager
def quiet() -> Iterator[None]:
    """Silence MLflow's per-run notices that say nothing to a synthmix user (the pickle-format caution
    for a model we wrote ourselves, the dataset-source guess, a pandas deprecation inside MLflow)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    loggers = [logging.getLogger(name) for name in ("mlflow.pytorch", "mlflow.pyfunc", "mlflow.models")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*dataset source can be interpreted in multiple ways")
            warnings.filterwarnings("ignore", message=".*all arguments of all will be keyword-only")
            warnings.filterwarnings("ignore", message=".*An input example was not provided")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def git_commit(cwd: Path | None = None) -> str:
    """The current commit, with '-dirty' when the work tree has changes; 'unknown' outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def dvc_file_hash(dvc_file: Path = Path("data.dvc")) -> str:
    """The md5 DVC recorded for the real set in data.dvc ('untracked' when there is none)."""
    if not dvc_file.exists():
        return "untracked"
    import yaml

    outs = (yaml.safe_load(dvc_file.read_text()) or {}).get("outs") or [{}]
    return str(outs[0].get("md5", "unknown"))


def file_hash(path: Path) -> str:
    """sha256 of a file such as the synthetic set's manifest ('missing' when absent)."""
    if not path.exists():
        return "missing"
    return hashlib.sha256(path.read_bytes()).hexdigest()


def dvc_experiment() -> str:
    """The DVC experiment name when running under `dvc exp run`, so MLflow and `dvc exp show` match up."""
    return os.environ.get("DVC_EXP_NAME", "")

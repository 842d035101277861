"""`mlflow ui`'s first screen at the address synthmix gives (tracking.experiment_url), in headless
Chromium against a real `mlflow ui` on 127.0.0.1: the study's training runs, one row each, not MLflow
3's GenAI overview (where a fresh browser lands on the bare experiment address)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest

from synthmix.runs import tracking
from test_review import browsing
from test_team_mlflow import free_ports, live_processes
from tiny_study import PROJECT

pytestmark = pytest.mark.slow

RUNS = [
    f"{model}-{mix}-seed{seed}"
    for model in ("cnn", "resnet50")
    for mix in ("30r0s", "30r15s")
    for seed in (0, 1)
]
GENAI_NAVIGATION = ("Observability", "Sessions", "Judges", "Prompts")  # the GenAI side bar's entries


def log_study() -> str:
    """A train stage's parent run with one nested run per (model, mix, seed), tagged as synthmix tags
    them; returns the experiment id."""
    with tracking.stage_run("train", run_name="train", tags={tracking.SWEEP: "true"}) as parent:
        for name in RUNS:
            model, mix, seed = name.split("-")
            tags = {
                tracking.STAGE: "train",
                tracking.MODEL: model,
                tracking.MIX: mix,
                tracking.SEED: seed[4:],
            }
            with tracking.mlflow_run(run_name=name, nested=True, tags=tags):
                mlflow.log_params({"model": model, "mix": mix, "seed": seed[4:]})
                mlflow.log_metrics({"final_f1_macro": 0.5 + len(mix) / 100, "final_accuracy": 0.6})
    return parent.info.experiment_id


def start_ui(store: str, port: int, log: Path) -> subprocess.Popen:
    """`mlflow ui` in its own process group, once /health answers."""
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store]
    with log.open("w") as out:
        server = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                return server
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                stop(server, log.parent)
                pytest.fail(f"mlflow ui did not answer on port {port}:\n{log.read_text()[-2000:]}")
            time.sleep(0.2)


def stop(server: subprocess.Popen, folder: Path) -> None:
    """Stop the server's whole process group (uvicorn and its workers); wait until none is left."""
    try:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=20)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
    deadline = time.monotonic() + 10
    while live_processes(folder, server.pid) and time.monotonic() < deadline:
        time.sleep(0.1)


def test_experiment_url_is_the_readme_address_on_mlflow_ui_or_the_tracking_server(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
    local = tracking.experiment_url("7")
    assert local.startswith("http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning&")
    assert tracking.experiment_url("<id>") in (PROJECT / "README.md").read_text()  # the address it gives
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow-host:5000/")
    assert tracking.experiment_url("7").startswith("http://mlflow-host:5000/#/experiments/7/runs?")


def test_mlflow_ui_first_screen_shows_the_study_runs_not_the_genai_overview(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    experiment_id = log_study()
    tags = mlflow.MlflowClient().get_experiment(experiment_id).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"

    (port,) = free_ports(1)
    server = start_ui(store, port, tmp_path / "mlflow-ui.log")
    try:
        url = tracking.experiment_url(experiment_id, f"http://127.0.0.1:{port}")
        with browsing(tmp_path) as browser:  # a fresh profile: nothing remembered from an earlier visit
            browser.call(
                "Emulation.setDeviceMetricsOverride",
                width=1280,
                height=800,
                deviceScaleFactor=1,
                mobile=False,
            )
            browser.call("Page.navigate", url=url)
            # Either screen, once drawn: the runs table with its rows, or the GenAI side bar.
            text = "(document.body ? document.body.innerText : '')"
            every_run = f"{json.dumps(RUNS)}.every(r => {text}.includes(r))"
            genai = f"{json.dumps(GENAI_NAVIGATION)}.some(w => {text}.includes(w))"
            browser.wait_for(f"{every_run} || {genai}", timeout=40)
            time.sleep(0.5)  # the side bar and the table settle
            shot = tmp_path / "mlflow-ui-first-screen.png"
            shot.write_bytes(base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"]))
            if os.environ.get("SYNTHMIX_SCREENSHOTS"):
                Path(os.environ["SYNTHMIX_SCREENSHOTS"]).mkdir(parents=True, exist_ok=True)
                shutil.copy(shot, os.environ["SYNTHMIX_SCREENSHOTS"])
            page = browser.evaluate(text)
            where = browser.evaluate("location.hash")
            rows = browser.evaluate(  # the run names drawn inside the first screen, top to bottom
                "[...document.querySelectorAll('a')].filter(a => { const r = a.getBoundingClientRect();"
                " return r.width > 0 && r.bottom <= innerHeight && r.right <= innerWidth; })"
                ".map(a => a.textContent.trim())"
            )
    finally:
        stop(server, tmp_path)
    assert not live_processes(tmp_path, server.pid), "mlflow ui or chromium left processes behind"

    assert not [w for w in GENAI_NAVIGATION if w in page], (
        f"the GenAI side bar is showing (screenshot: {shot})"
    )
    assert f"{len(RUNS)} matching runs" in page  # each (model, mix, seed) run, the parent not among them
    assert set(RUNS) <= set(rows), f"not every run is on the first screen: {rows}"
    assert "train" not in rows  # the stage's parent run, which would fold the runs away under it
    assert where.startswith(f"#/experiments/{experiment_id}/runs?"), f"the UI went to {where}, not the runs"
    assert "workflowType=machine_learning" in where  # it stayed on Model training
    ordered = [r for r in rows if r in RUNS]
    assert ordered[:4] == [r for r in ordered if "30r15s" in r]  # best macro F1 first

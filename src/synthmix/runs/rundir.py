"""The run record: the one module that writes, reads and finds a (model, mix, seed) run's folder.

A run folder (docs/layout.md) holds run.json (what was trained, `RunRecord`), the results on the test
split (history.csv, metrics.json, per_class.csv, confusion.csv, predictions.csv) and DONE, written
last. A folder without DONE, or whose DONE carries another fingerprint, is unfinished and is redone.
Every field and column name of the format is named here and nowhere else.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from synthmix.core.errors import UserError
from synthmix.core.files import write_csv, write_json, write_text
from synthmix.data.mixes import Mix
from synthmix.runs.evaluate import FINAL_METRICS, Evaluation

RUN_JSON = "run.json"
HISTORY_CSV = "history.csv"
METRICS_JSON = "metrics.json"
PER_CLASS_CSV = "per_class.csv"
CONFUSION_CSV = "confusion.csv"
PREDICTIONS_CSV = "predictions.csv"
DONE = "DONE"
RESULT_FILES = (HISTORY_CSV, METRICS_JSON, PER_CLASS_CSV, CONFUSION_CSV, PREDICTIONS_CSV)
HISTORY_FIELDS = ("epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy")
PER_CLASS_FIELDS = ("class", "precision", "recall", "f1", "support")
PREDICTION_FIELDS = ("path", "class", "predicted", "correct")
SOURCES = ("fixed", "tuned")  # hyperparameters from params.yaml, or from tune's best_params.yaml


@dataclass(frozen=True)
class RunRecord:
    """run.json: what one run trained, on what, and where it is logged."""

    model: str
    mix: Mix
    seed: int
    weights: str  # what the model started from: "imagenet", "random", "none" or a weights file
    hyperparameters: Mapping[str, Any] = field(hash=False)
    hyperparameter_source: str  # one of SOURCES
    fingerprint: str  # hash of everything that determines the result
    classes: tuple[str, ...]
    train_images: int
    real_images: int
    synthetic_images: int
    image_size: int
    augmented_images: int  # augmented copies of real images (an <N>r<K>a mix)
    augmentation: str  # the augmentation policy (augment.describe) when the mix augments, else ""
    budget: str  # "epochs" (the model's epochs) or "steps" (the baseline mix's optimiser steps)
    optimizer_steps: int  # optimiser steps the run took
    mlflow_run_id: str = ""
    mlflow_parent_run_id: str = ""
    # where it ran (config.compute.Compute.record): device, dtype, gpu ("cpu"), library versions
    environment: Mapping[str, str] = field(default_factory=dict, hash=False)

    def with_mlflow_run(self, run_id: str) -> RunRecord:
        return replace(self, mlflow_run_id=run_id)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["mix"] = self.mix.name
        data["classes"] = list(self.classes)
        data["hyperparameters"] = dict(self.hyperparameters)
        data["environment"] = dict(self.environment)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: Path) -> RunRecord:
        optional = ("mlflow_run_id", "mlflow_parent_run_id", "environment")  # older runs lack environment
        required = [f for f in cls.__dataclass_fields__ if f not in optional]
        missing = [k for k in required if k not in data]
        if missing:
            raise UserError(
                f"{where} has no '{missing[0]}' field (docs/layout.md lists what a run records). The run "
                f"was written by another version of synthmix: delete {where.parent} and rerun `synthmix train`."
            )
        source = str(data["hyperparameter_source"])
        if source not in SOURCES:
            raise UserError(
                f"{where} says hyperparameter_source '{source}'; synthmix writes 'fixed' or 'tuned'. "
                f"Delete {where.parent} and rerun `synthmix train`."
            )
        try:
            return cls(
                model=str(data["model"]),
                mix=Mix.parse(str(data["mix"])),
                seed=int(data["seed"]),
                weights=str(data["weights"]),
                hyperparameters=dict(data["hyperparameters"] or {}),
                hyperparameter_source=source,
                fingerprint=str(data["fingerprint"]),
                classes=tuple(str(c) for c in data["classes"]),
                train_images=int(data["train_images"]),
                real_images=int(data["real_images"]),
                synthetic_images=int(data["synthetic_images"]),
                image_size=int(data["image_size"]),
                augmented_images=int(data["augmented_images"]),
                augmentation=str(data["augmentation"]),
                budget=str(data["budget"]),
                optimizer_steps=int(data["optimizer_steps"]),
                mlflow_run_id=str(data.get("mlflow_run_id") or ""),
                mlflow_parent_run_id=str(data.get("mlflow_parent_run_id") or ""),
                environment={str(k): str(v) for k, v in dict(data.get("environment") or {}).items()},
            )
        except (TypeError, ValueError, UserError) as exc:
            raise UserError(
                f"{where} holds a value synthmix cannot read ({exc}). Delete {where.parent} and rerun "
                "`synthmix train`."
            ) from None


@dataclass(frozen=True)
class Run:
    """A finished run read back: its folder, run.json and final metrics."""

    dir: Path
    record: RunRecord
    metrics: Mapping[str, float] = field(hash=False)

    model = property(lambda self: self.record.model)
    mix = property(lambda self: self.record.mix)
    seed = property(lambda self: self.record.seed)
    source = property(lambda self: self.record.hyperparameter_source)
    weights = property(lambda self: self.record.weights)
    classes = property(lambda self: self.record.classes)
    hyperparameters = property(lambda self: self.record.hyperparameters)
    fingerprint = property(lambda self: self.record.fingerprint)
    train_images = property(lambda self: self.record.train_images)
    mlflow_run_id = property(lambda self: self.record.mlflow_run_id)
    mlflow_parent_run_id = property(lambda self: self.record.mlflow_parent_run_id)


@dataclass(frozen=True)
class Predictions:
    """predictions.csv of one run as class indices, in its (shared) row order."""

    paths: tuple[str, ...]
    true: np.ndarray
    predicted: np.ndarray


# --- writing ---------------------------------------------------------------------------------------


def begin(run_dir: Path) -> None:
    """Mark the folder unfinished before anything in it changes."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / DONE).unlink(missing_ok=True)


def write_results(
    run_dir: Path,
    evaluation: Evaluation,
    history: Sequence[Sequence[float]],
    test_paths: Sequence[Path],
    test_labels: Sequence[int],
    classes: Sequence[str],
) -> None:
    """history.csv (rows in HISTORY_FIELDS order, epoch from 1), metrics.json, per_class.csv,
    confusion.csv and predictions.csv. Predictions are sorted by path, so every run lists the test
    images in the same order and runs pair image by image."""
    write_csv(HISTORY_FIELDS, ([int(r[0]), *map(float, r[1:])] for r in history), run_dir / HISTORY_CSV)
    write_json(evaluation.metrics, run_dir / METRICS_JSON)
    write_csv(
        PER_CLASS_FIELDS,
        ((c.label, c.precision, c.recall, c.f1, c.support) for c in evaluation.per_class),
        run_dir / PER_CLASS_CSV,
    )
    write_csv(
        ("true", *classes),
        ((label, *row.tolist()) for label, row in zip(classes, evaluation.confusion, strict=True)),
        run_dir / CONFUSION_CSV,
    )
    true = [int(t) for t in test_labels]
    predicted = [int(p) for p in evaluation.predicted]
    order = sorted(range(len(test_paths)), key=lambda i: Path(test_paths[i]).as_posix())
    write_csv(
        PREDICTION_FIELDS,
        (
            (
                Path(test_paths[i]).as_posix(),
                classes[true[i]],
                classes[predicted[i]],
                int(true[i] == predicted[i]),
            )
            for i in order
        ),
        run_dir / PREDICTIONS_CSV,
    )


def finish(run_dir: Path, record: RunRecord) -> None:
    """run.json, then DONE (last: from here on the run counts as finished)."""
    write_json(record.to_json(), run_dir / RUN_JSON)
    write_text(record.fingerprint + "\n", run_dir / DONE)


def write_run(
    run_dir: Path,
    record: RunRecord,
    evaluation: Evaluation,
    history: Sequence[Sequence[float]],
    test_paths: Sequence[Path],
    test_labels: Sequence[int],
) -> None:
    """A whole finished run at once (what `synthmix train` leaves, without the MLflow steps between)."""
    begin(run_dir)
    write_results(run_dir, evaluation, history, test_paths, test_labels, record.classes)
    finish(run_dir, record)


def is_finished(run_dir: Path, fingerprint: str) -> bool:
    """True when the folder holds a complete run with this fingerprint (else it is to be redone)."""
    done = run_dir / DONE
    if not done.exists() or done.read_text().strip() != fingerprint:
        return False
    try:
        recorded = json.loads((run_dir / RUN_JSON).read_text()).get("fingerprint")
    except (OSError, json.JSONDecodeError):
        return False
    return recorded == fingerprint and all((run_dir / f).exists() for f in RESULT_FILES)


# --- reading ---------------------------------------------------------------------------------------


def discover_runs(runs_dir: Path) -> tuple[list[Run], list[Path]]:
    """Finished runs under runs_dir (run.json with DONE beside it) and the unfinished run folders.

    Runs are found by globbing runs_dir/*/*/*/run.json and described by run.json, not by folder names.
    """
    finished: list[Run] = []
    unfinished: list[Path] = []
    for run_json in sorted(runs_dir.glob(f"*/*/*/{RUN_JSON}")):
        if not (run_json.parent / DONE).exists():
            unfinished.append(run_json.parent)
            continue
        finished.append(read_run(run_json.parent))
    return finished, unfinished


def read_run(run_dir: Path) -> Run:
    """One run folder's run.json and metrics.json, checked against the format."""
    record = RunRecord.from_json(_read_json(run_dir / RUN_JSON), run_dir / RUN_JSON)
    metrics = _read_json(run_dir / METRICS_JSON)
    absent = [m for m in FINAL_METRICS if m not in metrics]
    if absent:
        raise UserError(
            f"{run_dir / METRICS_JSON} has no '{absent[0]}'. Delete {run_dir} and rerun `synthmix train`."
        )
    values = {m: float("nan") if metrics[m] is None else float(metrics[m]) for m in FINAL_METRICS}
    return Run(run_dir, record, values)


def read_history(run_dir: Path) -> np.ndarray:
    """history.csv as a float array, one row per epoch, columns in HISTORY_FIELDS order."""
    path = run_dir / HISTORY_CSV
    with open(_existing(path), newline="") as fh:
        reader = csv.DictReader(fh)
        if not set(HISTORY_FIELDS) <= set(reader.fieldnames or ()):
            raise UserError(f"{path} needs columns {','.join(HISTORY_FIELDS)} (it has {reader.fieldnames}).")
        rows = [[float(r[k]) for k in HISTORY_FIELDS] for r in reader]
    if not rows:
        raise UserError(f"{path} has no epochs. Delete {run_dir} and rerun `synthmix train`.")
    return np.asarray(rows)


def read_per_class(run_dir: Path, column: str = "f1") -> dict[str, float]:
    """One column of per_class.csv by class (precision, recall, f1 or support)."""
    with open(_existing(run_dir / PER_CLASS_CSV), newline="") as fh:
        return {row["class"]: float(row[column]) for row in csv.DictReader(fh)}


def read_confusion(run_dir: Path) -> np.ndarray:
    """confusion.csv as counts (rows true class, columns predicted, in class order)."""
    with open(_existing(run_dir / CONFUSION_CSV), newline="") as fh:
        rows = list(csv.reader(fh))
    return np.asarray([[float(v) for v in r[1:]] for r in rows[1:]])


def read_predictions(run: Run) -> Predictions:
    """predictions.csv as class indices of run.json's classes, in the file's row order."""
    path = _existing(run.dir / PREDICTIONS_CSV)
    index = {c: i for i, c in enumerate(run.classes)}
    paths: list[str] = []
    true: list[int] = []
    predicted: list[int] = []
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if not {"path", "class", "predicted"} <= set(reader.fieldnames or ()):
            raise UserError(
                f"{path} needs columns {','.join(PREDICTION_FIELDS)} (it has {reader.fieldnames})."
            )
        for row in reader:
            for column in ("class", "predicted"):
                if row[column] not in index:
                    raise UserError(
                        f"{path} names class '{row[column]}' ({column} of {row['path']}), which is not among "
                        f"the run's classes in {run.dir / RUN_JSON}. Delete {run.dir} and rerun `synthmix train`."
                    )
            paths.append(row["path"])
            true.append(index[row["class"]])
            predicted.append(index[row["predicted"]])
    return Predictions(tuple(paths), np.asarray(true, dtype=np.int64), np.asarray(predicted, dtype=np.int64))


def _existing(path: Path) -> Path:
    if not path.exists():
        raise UserError(
            f"{path} is missing although its run is marked DONE. Delete {path.parent} and rerun `synthmix train`."
        )
    return path


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(_existing(path).read_text())
    except json.JSONDecodeError as exc:
        raise UserError(
            f"{path} is not valid JSON ({exc}). Delete {path.parent} and rerun `synthmix train`."
        ) from None
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a JSON object. Delete {path.parent} and rerun `synthmix train`.")
    return data

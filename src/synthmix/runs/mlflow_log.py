"""What one training run leaves in MLflow, and how a logged classifier loads back.

A nested run under the stage's sweep run holds every resolved setting, per-epoch curves with step,
final metrics, the run folder's files, the training table as a dataset input, and the model. A model
trained from scratch is logged whole (mlflow.pytorch). A frozen-backbone model is logged as its
trained head plus the backbone's identity (weights name and sha256, or the seed of a random trunk):
a pyfunc that rebuilds the backbone on load, so a study does not store one copy of ResNet50 per run.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
import torch

from synthmix.config.params import MODEL_NAMES, Params, QualityConfig, TrainConfig, flatten, to_dict
from synthmix.core.errors import UserError
from synthmix.data.mixes import TrainingImage
from synthmix.models import MODELS, FrozenBackboneClassifier, weights_from_used
from synthmix.runs import rundir, tracking
from synthmix.runs.environment import environment_params
from synthmix.runs.evaluate import Evaluation

if TYPE_CHECKING:  # the training loop's result, named in hints only: runs sit below train
    from synthmix.train.fit import FitResult

MLFLOW_BATCH = 1000  # MLflow takes at most 1000 metrics per log_batch


class FrozenBackboneModel(mlflow.pyfunc.PythonModel):
    """pyfunc: float pixels in [0, 255], (N, 3, S, S) -> logits (N, C); the backbone rebuilt on load."""

    def load_context(self, context: Any) -> None:
        config = context.model_config
        entry = MODELS[config["model"]]
        weights = weights_from_used(config["weights"], config["model"], config.get("backbone", ""))
        if weights.sha256 != config["weights_sha256"]:
            raise UserError(
                f"This model's backbone was trained with weights of sha256 {config['weights_sha256'][:16]}, but "
                f"{weights.file} has {weights.sha256[:16]}. Put the original weights file there."
            )
        model = entry.build(
            int(config["num_classes"]), int(config["image_size"]), 0.0, None, weights, int(config["seed"])
        )
        assert isinstance(model, FrozenBackboneClassifier)
        model.head.load_state_dict(torch.load(context.artifacts["head"], weights_only=True))
        self.model = model.eval()

    def predict(self, context: Any, model_input: np.ndarray, params: dict | None = None) -> np.ndarray:
        with torch.inference_mode():
            return self.model(torch.as_tensor(np.asarray(model_input, dtype=np.float32))).numpy()


def log_training_run(
    name: str,
    record: rundir.RunRecord,
    result: FitResult,
    scores: Evaluation,
    run_dir: Path,
    training: Sequence[TrainingImage],
    params: Params,
) -> str:
    """One nested run under the active sweep run; returns its id. Interrupted, it ends KILLED."""
    tags = {
        tracking.STAGE: "train",
        tracking.MODEL: record.model,
        tracking.MIX: record.mix.name,
        tracking.SEED: str(record.seed),
        tracking.WEIGHTS: record.weights,
        tracking.HYPERPARAMETER_SOURCE: record.hyperparameter_source,
        tracking.FINGERPRINT: record.fingerprint,
    }
    with tracking.quiet(), tracking.mlflow_run(run_name=name, nested=True, tags=tags) as run:
        mlflow.log_params(
            {
                "model": record.model,
                "mix": record.mix.name,
                "seed": record.seed,
                "weights": record.weights,
                "generator": (record.mix.generator or params.generate.first_name)
                if record.mix.synthetic
                else "none",
                "vetting": record.mix.vetting or "none",
                **_vetting_settings(params.quality, record.mix.vetting),
                "image_size": record.image_size,
                "train_images": record.train_images,
                "real_images": record.real_images,
                "synthetic_images": record.synthetic_images,
                "augmented_images": record.augmented_images,
                "augmentation": record.augmentation or "none",
                "budget": record.budget,
                "optimizer_steps": record.optimizer_steps,
                "num_classes": len(record.classes),
                **{f"hp.{k}": v for k, v in record.hyperparameters.items()},
                **flatten(_run_settings(params.train, record.model), "train."),
                **environment_params(record.environment),  # device, dtype, gpu, version.<library>
            }
        )
        _log_curves(run.info.run_id, result)
        mlflow.log_metrics({f"final_{k}": v for k, v in scores.metrics.items()})
        _log_training_table(training, params.data.prepared_dir, record)
        for file in rundir.RESULT_FILES:
            mlflow.log_artifact(str(run_dir / file), artifact_path="results")
        _log_model(record, result, params.train)
        return run.info.run_id


def _run_settings(train: TrainConfig, model: str) -> dict:
    """train.* as it applies to this run: the shared settings and this model's own section only (the
    other models' sections say nothing about it, and would make every run carry each model's keys)."""
    settings = to_dict(train)
    return {k: v for k, v in settings.items() if k not in MODEL_NAMES or k == model}


def _log_curves(run_id: str, result: FitResult) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    names = ("train_loss", "train_accuracy", "test_loss", "test_accuracy")
    curves = [
        Metric(key, float(value), now, s.epoch)
        for s in result.history
        for key, value in zip(names, s.as_row()[1:], strict=True)
    ]
    client = mlflow.MlflowClient()
    for start in range(0, len(curves), MLFLOW_BATCH):
        client.log_batch(run_id, metrics=curves[start : start + MLFLOW_BATCH])


def _log_training_table(
    training: Sequence[TrainingImage], prepared_dir: Path, record: rundir.RunRecord
) -> None:
    import pandas as pd

    table = pd.DataFrame(
        [
            {"path": t.path.as_posix(), "class": t.label, "sha256": t.sha256, "source": t.source}
            for t in training
        ]
    )
    dataset = mlflow.data.from_pandas(table, source=prepared_dir.as_posix(), name=f"train-{record.mix.name}")
    mlflow.log_input(dataset, context="training")


def _requirements(library: str = "torchvision") -> list[str]:
    import importlib.metadata

    import torchvision

    # Explicit requirements skip MLflow's slow inference (which loads the model in a subprocess).
    extra = (
        [f"{library}=={importlib.metadata.version(library)}"] if library in ("timm", "transformers") else []
    )
    return [
        f"torch=={torch.__version__.split('+')[0]}",
        f"torchvision=={torchvision.__version__.split('+')[0]}",
        *extra,
        "synthmix",
    ]


def _log_model(record: rundir.RunRecord, result: FitResult, train: TrainConfig) -> None:
    from mlflow.models import infer_signature

    size = record.image_size
    example = np.zeros((1, 3, size, size), dtype=np.float32)
    with torch.inference_mode():
        output = result.model.eval()(torch.from_numpy(example)).numpy()
    signature = infer_signature(example, output)
    model = result.model
    if not isinstance(model, FrozenBackboneClassifier):
        # pickle, not pt2: exporting a traced graph costs seconds per run.
        mlflow.pytorch.log_model(
            model,
            name="model",
            signature=signature,
            serialization_format="pickle",
            pip_requirements=_requirements(),
        )
        return
    entry = MODELS[record.model]
    weights = entry.weights(train.model_section(record.model))  # the run's, resolved again
    with tempfile.TemporaryDirectory() as tmp:
        head = Path(tmp) / "head.pt"
        torch.save(model.head.state_dict(), head)
        mlflow.pyfunc.log_model(
            name="model",
            python_model=FrozenBackboneModel(),
            artifacts={"head": str(head)},
            model_config={
                "model": record.model,
                "weights": record.weights,
                "weights_sha256": weights.sha256,
                "backbone": weights.arch,  # the network, where the model names one (timm's model name)
                "seed": record.seed,
                "num_classes": len(record.classes),
                "image_size": size,
            },
            signature=signature,
            pip_requirements=_requirements(entry.library),
        )


def _vetting_settings(q: QualityConfig, vetting: str) -> dict[str, str]:
    """What a vetted run's left-out images depended on: the automatic filters and their settings."""
    if vetting not in ("filtered", "vetted"):
        return {}
    return {
        "vetting.filters": ",".join(q.filters),
        "vetting.classifier.min_confidence": str(q.classifier.min_confidence),
        "vetting.clip_score.min_score": str(q.clip_score.min_score),
        "vetting.blank.min_std": str(q.blank.min_std),
    }

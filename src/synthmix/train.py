"""Training: `fit` (pure: tensors in, trained model and curves out) and the `train` stage around it.

fit is seeded and deterministic on CPU, and the split it reports on (`evaluate_on`) never influences
training: no early stopping, no model selection, the last epoch's model is the result. A frozen
ResNet50 computes each unique image's features once (cached on disk) and trains its head on them.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from synthmix import tracking
from synthmix.config import Params, TrainConfig, check_model, flatten, to_dict
from synthmix.data import SplitRow, atomic_path, read_manifest
from synthmix.errors import UserError
from synthmix.evaluate import (
    Evaluation,
    evaluate,
    read_finished_run,
    write_json,
    write_run_scores,
    write_summaries,
)
from synthmix.mixes import Mix, TrainingImage, read_synthetic_manifest, training_images
from synthmix.models import (
    BackboneWeights,
    FrozenBackboneClassifier,
    build_model,
    resolve_resnet_weights,
)
from synthmix.progress import progress
from synthmix.store import LabelledImages, load_images

EVAL_BATCH = 256
FEATURE_PREPROCESSING = "x/255, imagenet mean/std, no augmentation"


@dataclass(frozen=True)
class Hyperparameters:
    lr: float
    weight_decay: float
    epochs: int
    batch_size: int
    dropout: float  # cnn: the fc dropout; resnet50: dropout before the new head (0.0 = plain linear head)


def fixed_hyperparameters(model: str, train_cfg: TrainConfig) -> Hyperparameters:
    """The params.yaml values for `model`."""
    check_model(model)
    if model == "cnn":
        c = train_cfg.cnn
        return Hyperparameters(c.lr, c.weight_decay, c.epochs, train_cfg.batch_size, c.fc_dropout)
    r = train_cfg.resnet50
    return Hyperparameters(r.lr, r.weight_decay, r.epochs, train_cfg.batch_size, 0.0)


@dataclass(frozen=True)
class EpochStats:
    epoch: int  # from 1
    train_loss: float
    train_accuracy: float
    eval_loss: float  # on `evaluate_on` (the test split in a study run, the validation split when tuning)
    eval_accuracy: float


@dataclass
class FitResult:
    model: nn.Module  # the trained classifier: float pixels in [0, 255] (N, 3, S, S) -> logits
    history: list[EpochStats]
    weights_used: str  # "imagenet" | "random" | "<path>" | "none" (cnn: "random")
    eval_logits: torch.Tensor  # final logits on evaluate_on, (N, C) float32


def fit(
    model_name: str,
    train: LabelledImages,
    evaluate_on: LabelledImages,
    hp: Hyperparameters,
    *,
    seed: int,
    num_classes: int,
    train_cfg: TrainConfig,
    on_epoch: Callable[[EpochStats], None] | None = None,
) -> FitResult:
    """Train `model_name` on `train` for hp.epochs epochs; report each epoch on `evaluate_on`.

    `on_epoch` runs after each epoch and may raise (optuna.TrialPruned); the exception propagates.
    """
    check_model(model_name)
    if len(train) == 0:
        raise ValueError("fit needs at least one training image")
    torch.manual_seed(seed)  # model initialisation and dropout
    image_size = int(train.images.shape[-1])
    if model_name == "cnn":
        model = build_model(
            "cnn", num_classes, image_size, dropout=hp.dropout, conv_dropout=train_cfg.cnn.conv_dropout
        )
        history, logits = _train_loop(
            model, _as_float(train.images), train.labels, _as_float(evaluate_on.images), evaluate_on.labels,
            hp, seed, on_epoch,
        )  # fmt: skip
        return FitResult(model, history, "random", logits)

    weights = resolve_resnet_weights(train_cfg.resnet50.weights)
    model = build_model("resnet50", num_classes, image_size, dropout=hp.dropout, weights=weights)
    assert isinstance(model, FrozenBackboneClassifier)
    # Only the head trains: run it on cached backbone features, the same numbers the backbone gives.
    key = feature_cache_key(weights, seed, image_size)
    train_features = backbone_features(model, train, train_cfg.cache_dir, key)
    eval_features = backbone_features(model, evaluate_on, train_cfg.cache_dir, key)
    history, logits = _train_loop(
        model.head, train_features, train.labels, eval_features, evaluate_on.labels, hp, seed, on_epoch
    )
    model.eval()
    return FitResult(model, history, weights.used, logits)


def _as_float(images: torch.Tensor) -> torch.Tensor:
    return images.to(torch.float32)


@contextmanager
def single_thread() -> Iterator[None]:
    """Small models train fastest on one thread: their ops are too small to split, and splitting them
    across busy cores is up to 10x slower. One fixed thread count also keeps results bit-identical
    on machines with different core counts."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _train_loop(
    module: nn.Module,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    eval_x: torch.Tensor,
    eval_y: torch.Tensor,
    hp: Hyperparameters,
    seed: int,
    on_epoch: Callable[[EpochStats], None] | None,
) -> tuple[list[EpochStats], torch.Tensor]:
    """Adam + cross-entropy, shuffled minibatches from a seeded generator; eval after every epoch."""
    with single_thread():
        trainable = [p for p in module.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(trainable, lr=hp.lr, weight_decay=hp.weight_decay)
        loss_fn = nn.CrossEntropyLoss()
        shuffle = torch.Generator().manual_seed(seed)
        history: list[EpochStats] = []
        logits = torch.empty(0)
        n = len(train_y)
        for epoch in range(1, hp.epochs + 1):
            module.train()
            loss_sum, correct = 0.0, 0
            for batch in torch.randperm(n, generator=shuffle).split(hp.batch_size):
                x, y = train_x[batch], train_y[batch]
                out = module(x)
                loss = loss_fn(out, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                # Running train metrics over the epoch, dropout on: what the study's curves show.
                loss_sum += float(loss.detach()) * len(batch)
                correct += int((out.detach().argmax(1) == y).sum())
            logits = predict_logits(module, eval_x)
            eval_loss = float(nn.functional.cross_entropy(logits, eval_y)) if len(eval_y) else float("nan")
            eval_acc = float((logits.argmax(1) == eval_y).float().mean()) if len(eval_y) else float("nan")
            stats = EpochStats(epoch, loss_sum / n, correct / n, eval_loss, eval_acc)
            history.append(stats)
            if on_epoch is not None:
                on_epoch(stats)
        return history, logits


def predict_logits(module: nn.Module, inputs: torch.Tensor, batch_size: int = EVAL_BATCH) -> torch.Tensor:
    """Logits of `module` in eval mode, in batches (float32, (N, C))."""
    module.eval()
    with torch.inference_mode():
        parts = [module(chunk.to(torch.float32)) for chunk in inputs.split(batch_size)]
    return torch.cat(parts) if parts else torch.empty(0)


# --- the frozen backbone's feature cache ----------------------------------------------------------


def feature_cache_key(weights: BackboneWeights, seed: int, image_size: int) -> str:
    """Backbone, exact weights, input size and preprocessing: everything the features depend on."""
    identity = weights.identity if not weights.is_random else f"random-init:seed{seed}"
    import torchvision

    spec = {
        "backbone": "torchvision.resnet50",
        "weights": identity,
        "image_size": image_size,
        "preprocessing": FEATURE_PREPROCESSING,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:20]


def cached_feature_path(cache_dir: Path, key: str, sha256: str) -> Path:
    return cache_dir / "features" / key / sha256[:2] / f"{sha256}.npy"


def backbone_features(
    model: FrozenBackboneClassifier, images: LabelledImages, cache_dir: Path, key: str
) -> torch.Tensor:
    """The backbone's features of every image, computed once per unique image and cached under `key`."""
    features: dict[str, np.ndarray] = {}
    todo: dict[str, int] = {}
    for i, sha in enumerate(images.keys):
        if sha in features or sha in todo:
            continue
        path = cached_feature_path(cache_dir, key, sha)
        if path.exists():
            features[sha] = np.load(path)
        else:
            todo[sha] = i
    if todo:
        rows = torch.tensor(list(todo.values()), dtype=torch.long)
        model.eval()
        with torch.inference_mode():
            computed = torch.cat(
                [model.features(images.images[chunk].to(torch.float32)) for chunk in rows.split(64)]
            ).numpy()
        for sha, row in zip(todo, computed, strict=True):
            target = cached_feature_path(cache_dir, key, sha)
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(target) as tmp, open(tmp, "wb") as fh:
                np.save(fh, row)
            features[sha] = row
    if not images.keys:
        return torch.zeros(0, 2048)
    return torch.from_numpy(np.stack([features[sha] for sha in images.keys]))


def precompute_backbone_features(
    seeds: Sequence[int], image_sets: Sequence[LabelledImages], num_classes: int, train_cfg: TrainConfig
) -> None:
    """Cache the frozen backbone's features of every image in `image_sets` for each seed's backbone.

    The train stage calls this once, in the main process with every core, before handing runs out
    to workers: otherwise each worker builds the backbone and computes the same test and real-image
    features again. The backbone is built exactly as `fit` builds it (same seed, same draw order),
    so `fit` then finds every feature it needs under the same cache key.
    """
    weights = resolve_resnet_weights(train_cfg.resnet50.weights)
    image_size = int(image_sets[0].images.shape[-1]) if image_sets else train_cfg.image_size
    for seed in seeds:
        torch.manual_seed(seed)
        model = build_model("resnet50", num_classes, image_size, dropout=0.0, weights=weights)
        assert isinstance(model, FrozenBackboneClassifier)
        key = feature_cache_key(weights, seed, image_size)
        for images in image_sets:
            backbone_features(model, images, train_cfg.cache_dir, key)


# --- the train stage: every (model, mix, seed) run of the study, resumable -------------------------

RUN_FILES = ("run.json", "history.csv", "metrics.json", "per_class.csv", "confusion.csv", "predictions.csv")
_CODE_FILES = ("models.py", "store.py", "train.py", "evaluate.py")


@dataclass(frozen=True)
class RunSpec:
    """One run to have: a model trained on a mix with a seed and resolved hyperparameters."""

    model: str
    mix: Mix
    seed: int
    hp: Hyperparameters
    source: str  # "fixed" (params.yaml) or "tuned" (tune.best_params_file)

    def run_dir(self, runs_dir: Path) -> Path:
        prefix = "tuned-seed" if self.source == "tuned" else "seed"
        return runs_dir / self.model / self.mix.name / f"{prefix}{self.seed}"

    @property
    def summary_key(self) -> str:
        return self.model if self.source == "fixed" else f"{self.model}-tuned"


@dataclass(frozen=True)
class StageResult:
    trained: list[Path]
    skipped: list[Path]


def tuned_hyperparameters(
    best_params_file: Path, model: str, mix: Mix, fixed: Hyperparameters
) -> Hyperparameters:
    """The tuned values of (model, mix) from tune's best_params.yaml; keys it lacks keep the fixed value."""
    from synthmix.tune import read_best_params  # lazy: only tuned runs need optuna imported

    how = f"Run `synthmix tune --model {model} --mix {mix.name}` first, or set train.use_tuned: false."
    if not best_params_file.exists():
        raise UserError(f"train.use_tuned is true, but {best_params_file} does not exist. {how}")
    entry = read_best_params(best_params_file).get(model, {}).get(mix.name)
    if not isinstance(entry, dict):
        raise UserError(
            f"{best_params_file} has no tuned hyperparameters for {model} on mix {mix.name}. {how}"
        )
    values = asdict(fixed)
    for name, kind in (
        ("lr", float),
        ("weight_decay", float),
        ("dropout", float),
        ("epochs", int),
        ("batch_size", int),
    ):
        if name in entry:
            values[name] = kind(entry[name])
    return Hyperparameters(**values)


def plan_runs(
    params: Params, models: Sequence[str], mixes: Sequence[Mix], seeds: Sequence[int]
) -> list[RunSpec]:
    """Every run asked for, fixed hyperparameters first, then the tuned ones when train.use_tuned is on."""
    specs = []
    for model in models:
        fixed = fixed_hyperparameters(model, params.train)
        for mix in mixes:
            specs += [RunSpec(model, mix, seed, fixed, "fixed") for seed in seeds]
            if params.train.use_tuned:
                tuned = tuned_hyperparameters(params.tune.best_params_file, model, mix, fixed)
                specs += [RunSpec(model, mix, seed, tuned, "tuned") for seed in seeds]
    return specs


def code_version() -> str:
    """Hash of the code that determines a run's result (models, store, train, evaluate)."""
    here = Path(__file__).parent
    digest = hashlib.sha256()
    for name in _CODE_FILES:
        digest.update((here / name).read_bytes())
    return digest.hexdigest()[:16]


def run_fingerprint(
    spec: RunSpec,
    training: Sequence[TrainingImage],
    test_rows: Sequence[SplitRow],
    image_size: int,
    weights: str,
    conv_dropout: float,
    code: str,
) -> str:
    """Hash of everything that determines a run's result: a matching finished run is not redone."""
    spec_dict = {
        "model": spec.model,
        "mix": spec.mix.name,
        "seed": spec.seed,
        "hyperparameters": asdict(spec.hp),
        "image_size": image_size,
        "weights": weights,
        "conv_dropout": conv_dropout if spec.model == "cnn" else None,
        "train": [(t.path.as_posix(), t.label, t.sha256, t.source) for t in training],
        "test": [(r.path.as_posix(), r.label, r.sha256) for r in test_rows],
        "code": code,
        "torch": torch.__version__,
    }
    return hashlib.sha256(json.dumps(spec_dict, sort_keys=True).encode()).hexdigest()


def is_finished(run_dir: Path, fingerprint: str) -> bool:
    if not (run_dir / "DONE").exists() or not (run_dir / "run.json").exists():
        return False
    try:
        recorded = json.loads((run_dir / "run.json").read_text()).get("fingerprint")
    except json.JSONDecodeError:
        return False
    return recorded == fingerprint and all((run_dir / f).exists() for f in RUN_FILES)


def train_stage(
    params: Params,
    models: Sequence[str] | None = None,
    mixes: Sequence[Mix] | None = None,
    seeds: Sequence[int] | None = None,
) -> StageResult:
    """Train, score and log every (model, mix, seed) run not already finished; write the summaries.

    Everything a user can get wrong (model, mix, manifests, weights, tuned entries) is checked before
    the first run starts. The baseline mix is always included so the report can compare with it.
    """
    cfg = params.train
    models = tuple(models or params.study.models)
    for model in models:
        check_model(model)
    selected = tuple(mixes or params.selected_mixes)
    all_mixes = tuple(dict.fromkeys((*selected, params.study.baseline)))
    for mix in all_mixes:
        mix.check_feasible(params.data.train_per_class, params.generate.images_per_class)
    seeds = tuple(params.study.seeds if seeds is None else seeds)

    prepared = params.data.prepared_dir
    train_rows = read_manifest(prepared / "train.csv")
    test_rows = sorted(read_manifest(prepared / "test.csv"), key=lambda r: r.path.as_posix())
    classes = sorted({r.label for r in test_rows})
    train_classes = sorted({r.label for r in train_rows})
    if train_classes != classes:
        raise UserError(
            f"{prepared}/train.csv and test.csv list different classes ({len(train_classes)} vs "
            f"{len(classes)}). Rerun `synthmix prepare` so both come from one split."
        )
    synthetic_manifest = params.generate.out_dir / "manifest.csv"
    synthetic_rows = (
        read_synthetic_manifest(synthetic_manifest) if any(m.synthetic > 0 for m in all_mixes) else []
    )
    training = {mix: training_images(train_rows, synthetic_rows, mix) for mix in all_mixes}
    weights_used = {
        "cnn": "random",
        "resnet50": resolve_resnet_weights(cfg.resnet50.weights).used if "resnet50" in models else "",
    }
    specs = plan_runs(params, models, all_mixes, seeds)

    code = code_version()
    fingerprints = {
        spec: run_fingerprint(
            spec,
            training[spec.mix],
            test_rows,
            cfg.image_size,
            weights_used[spec.model],
            cfg.cnn.conv_dropout,
            code,
        )
        for spec in specs
    }
    todo = [s for s in specs if not is_finished(s.run_dir(cfg.runs_dir), fingerprints[s])]
    skipped = [s.run_dir(cfg.runs_dir) for s in specs if s not in todo]

    if todo:
        index = {c: i for i, c in enumerate(classes)}
        test = load_images(
            [r.path for r in test_rows], [index[r.label] for r in test_rows], [r.sha256 for r in test_rows],
            cfg.image_size, cfg.cache_dir,
        )  # fmt: skip
        stores: dict[Mix, LabelledImages] = {}
        for spec in todo:
            if spec.mix not in stores:
                images = training[spec.mix]
                stores[spec.mix] = load_images(
                    [t.path for t in images], [index[t.label] for t in images], [t.sha256 for t in images],
                    cfg.image_size, cfg.cache_dir,
                )  # fmt: skip
        frozen = [s for s in todo if s.model == "resnet50"]
        if frozen:
            precompute_backbone_features(
                sorted({s.seed for s in frozen}),
                [test, *(stores[m] for m in dict.fromkeys(s.mix for s in frozen))],
                len(classes),
                cfg,
            )
        with mlflow_sweep(params, models, all_mixes, seeds) as sweep_tags:
            for spec in todo:
                run_dir = spec.run_dir(cfg.runs_dir)
                run_dir.mkdir(parents=True, exist_ok=True)
                (run_dir / "DONE").unlink(missing_ok=True)  # from here on the folder is unfinished
            jobs = [(spec, stores[spec.mix], test, len(classes), cfg) for spec in todo]
            for spec, result in progress(_fit_all(jobs, cfg.workers), "Training runs", total=len(todo)):
                run_dir = spec.run_dir(cfg.runs_dir)
                scores = evaluate(result.eval_logits, test.labels, classes)
                write_run_scores(
                    run_dir, scores, result.history, [r.path for r in test_rows], test.labels, classes
                )
                record = {
                    "model": spec.model,
                    "mix": spec.mix.name,
                    "seed": spec.seed,
                    "weights": result.weights_used,
                    "hyperparameters": asdict(spec.hp),
                    "hyperparameter_source": spec.source,
                    "fingerprint": fingerprints[spec],
                    "classes": classes,
                    "mlflow_run_id": None,
                    "mlflow_parent_run_id": sweep_tags["parent_run_id"],
                    "train_images": len(stores[spec.mix]),
                    "real_images": sum(t.source == "real" for t in training[spec.mix]),
                    "synthetic_images": sum(t.source == "synthetic" for t in training[spec.mix]),
                    "image_size": cfg.image_size,
                }
                with _quiet_mlflow():
                    record["mlflow_run_id"] = log_run_to_mlflow(
                        spec, record, result, scores, run_dir, training[spec.mix], params, sweep_tags
                    )
                write_json(record, run_dir / "run.json")
                (run_dir / "DONE").write_text(fingerprints[spec] + "\n")  # last: the run is complete

    finished = [read_finished_run(s.run_dir(cfg.runs_dir), s.summary_key) for s in specs]
    write_summaries(finished, Path("metrics.json"), Path("plots"))
    return StageResult([s.run_dir(cfg.runs_dir) for s in todo], skipped)


FitJob = tuple[RunSpec, LabelledImages, LabelledImages, int, TrainConfig]


def _fit_job(job: FitJob) -> tuple[RunSpec, FitResult]:
    spec, train, test, num_classes, cfg = job
    return spec, fit(spec.model, train, test, spec.hp, seed=spec.seed, num_classes=num_classes, train_cfg=cfg)


def _fit_all(jobs: Sequence[FitJob], workers: int) -> Iterator[tuple[RunSpec, FitResult]]:
    """Fit every job, yielding each result as it finishes.

    Each run is single-threaded (see `single_thread`), so runs go side by side in worker processes,
    one per core by default: on 2 cores the study's 30 small runs take about half the time. Results
    do not depend on the worker count: every run is seeded on its own and computes the same ops.
    Workers are spawned, not forked, since forking a process that already used torch's thread pool
    can deadlock.
    """
    count = min(workers or os.cpu_count() or 1, len(jobs))
    if count <= 1:
        for job in jobs:
            yield _fit_job(job)
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=count, mp_context=context) as pool:
        futures = [pool.submit(_fit_job, job) for job in jobs]
        try:
            for future in as_completed(futures):
                yield future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise


# --- MLflow logging (called from the stage, so fit stays pure) ----------------------------------


@contextmanager
def mlflow_sweep(
    params: Params, models: Sequence[str], mixes: Sequence[Mix], seeds: Sequence[int]
) -> Iterator[dict[str, str]]:
    """A parent MLflow run for this sweep; yields the tags every nested run shares."""
    import mlflow

    tracking.configure()
    tags = {
        "git_commit": tracking.git_commit(),
        "data_dvc_hash": tracking.dvc_file_hash(Path("data.dvc")),
        "synthetic_manifest_hash": tracking.file_hash(params.generate.out_dir / "manifest.csv"),
        "dvc_experiment": tracking.dvc_experiment(),
    }
    sweep = (
        f"train {','.join(models)} x {','.join(m.name for m in mixes)} x seeds {','.join(map(str, seeds))}"
    )
    with mlflow.start_run(run_name=sweep, tags={**tags, "stage": "train", "sweep": "true"}) as parent:
        mlflow.log_params(flatten(to_dict(params.train), "train."))
        yield {**tags, "parent_run_id": parent.info.run_id}


@contextmanager
def _quiet_mlflow() -> Iterator[None]:
    """Silence MLflow's per-run notices that say nothing to a synthmix user (the pickle-format caution
    for a model we wrote ourselves, the dataset-source guess, a pandas deprecation inside MLflow)."""
    import logging
    import warnings

    logger = logging.getLogger("mlflow.pytorch")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*dataset source can be interpreted in multiple ways")
            warnings.filterwarnings("ignore", message=".*all arguments of all will be keyword-only")
            yield
    finally:
        logger.setLevel(level)


def log_run_to_mlflow(
    spec: RunSpec,
    record: dict,
    result: FitResult,
    scores: Evaluation,
    run_dir: Path,
    training: Sequence[TrainingImage],
    params: Params,
    sweep_tags: dict[str, str],
) -> str:
    """One nested run: every resolved setting, per-epoch curves with step, final metrics, the run's
    files, the training table as a dataset input, and the trained model with its signature."""
    import mlflow
    import pandas as pd
    from mlflow.entities import Metric
    from mlflow.models import infer_signature

    tags = {
        **sweep_tags,
        "model": spec.model,
        "mix": spec.mix.name,
        "seed": str(spec.seed),
        "weights": result.weights_used,
        "hyperparameter_source": spec.source,
        "fingerprint": record["fingerprint"],
    }
    name = f"{spec.model}-{spec.mix.name}-{'tuned-' if spec.source == 'tuned' else ''}seed{spec.seed}"
    with mlflow.start_run(run_name=name, nested=True, tags=tags) as run:
        settings = {
            "model": spec.model,
            "mix": spec.mix.name,
            "seed": spec.seed,
            "weights": result.weights_used,
            "image_size": params.train.image_size,
            "train_images": record["train_images"],
            "num_classes": len(record["classes"]),
            **{f"hp.{k}": v for k, v in asdict(spec.hp).items()},
            **flatten(to_dict(params.train), "train."),
        }
        mlflow.log_params(settings)
        now = int(time.time() * 1000)
        curves = [
            Metric(key, float(value), now, s.epoch)
            for s in result.history
            for key, value in (
                ("train_loss", s.train_loss),
                ("train_accuracy", s.train_accuracy),
                ("test_loss", s.eval_loss),
                ("test_accuracy", s.eval_accuracy),
            )
        ]
        client = mlflow.tracking.MlflowClient()
        for start in range(0, len(curves), 1000):  # MLflow takes at most 1000 metrics per batch
            client.log_batch(run.info.run_id, metrics=curves[start : start + 1000])
        mlflow.log_metrics({f"final_{k}": v for k, v in scores.metrics.items()})
        table = pd.DataFrame(
            [
                {"path": t.path.as_posix(), "class": t.label, "sha256": t.sha256, "source": t.source}
                for t in training
            ]
        )
        dataset = mlflow.data.from_pandas(
            table, source=params.data.prepared_dir.as_posix(), name=f"train-{spec.mix.name}"
        )
        mlflow.log_input(dataset, context="training")
        for file in ("history.csv", "metrics.json", "per_class.csv", "confusion.csv", "predictions.csv"):
            mlflow.log_artifact(str(run_dir / file), artifact_path="results")
        size = params.train.image_size
        example = np.zeros((1, 3, size, size), dtype=np.float32)
        with torch.inference_mode():
            output = result.model.eval()(torch.from_numpy(example)).numpy()
        import torchvision

        # pickle, not pt2: exporting a traced ResNet50 graph costs seconds per run; explicit requirements
        # skip MLflow's slow requirement inference (which loads the model in a subprocess).
        mlflow.pytorch.log_model(
            result.model,
            name="model",
            signature=infer_signature(example, output),
            serialization_format="pickle",
            pip_requirements=[
                f"torch=={torch.__version__.split('+')[0]}",
                f"torchvision=={torchvision.__version__.split('+')[0]}",
                "synthmix",
            ],
        )
        return run.info.run_id

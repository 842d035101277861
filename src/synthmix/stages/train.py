"""The train stage: plan every (model, mix, seed) run, skip the finished ones, fit the rest side by
side, score them, write their run folders and log them to MLflow.

A run is skipped when its folder is finished with the same fingerprint: a hash of everything that
determines its result (model, mix, seed, hyperparameters, the exact training and test images, weights,
the model's params section, the code that trains and scores it).
"""

from __future__ import annotations

import math
import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from synthmix.config.compute import Compute, resolve_compute
from synthmix.config.hparams import Hyperparameters, fixed_hyperparameters, tuned_hyperparameters
from synthmix.config.params import Params, TrainConfig, check_model, flatten, to_dict
from synthmix.core.errors import UserError
from synthmix.core.files import sha256_json
from synthmix.core.progress import progress
from synthmix.data import vetting
from synthmix.data.images import LabelledImages, load_images
from synthmix.data.mixes import Mix, TrainingImage, training_images
from synthmix.data.real import SplitRow, read_manifest
from synthmix.data.split import runnable
from synthmix.generate.manifest import read_synthetic_manifest
from synthmix.models import MODELS
from synthmix.runs import rundir, tracking
from synthmix.runs.environment import environment_params, watch_system
from synthmix.runs.evaluate import evaluate
from synthmix.runs.summaries import write_summaries
from synthmix.train import augment
from synthmix.train.parallel import FitJob, ProcessShare, Shared, fit_all, process_share
from synthmix.train.together import trains_together


@dataclass(frozen=True)
class RunSpec:
    """One run to have: a model trained on a mix with a seed and resolved hyperparameters."""

    model: str
    mix: Mix
    seed: int
    hp: Hyperparameters
    source: str  # "fixed" (params.yaml) or "tuned" (tune.best_params_file)
    max_steps: int | None = None  # train.budget "steps": the baseline mix's optimiser steps; else None

    def run_dir(self, runs_dir: Path) -> Path:
        prefix = "seed" if self.source == "fixed" else f"{self.source}-seed"
        return runs_dir / self.model / self.mix.name / f"{prefix}{self.seed}"

    @property
    def draw(self) -> tuple[Mix, int]:
        """The key of this run's training set: its mix and the replicate (seed) that drew it."""
        return (self.mix, self.seed)

    @property
    def name(self) -> str:
        return f"{self.model}-{self.mix.name}-{'' if self.source == 'fixed' else self.source + '-'}seed{self.seed}"


@dataclass(frozen=True)
class StageResult:
    trained: list[Path]
    skipped: list[Path]


@dataclass(frozen=True)
class StudyData:
    """What every run of a sweep shares: the classes, the test split, and the training set of each
    (mix, seed): a seed's replicate draws its own real and synthetic subsets (study.redraw)."""

    classes: tuple[str, ...]
    test_rows: tuple[SplitRow, ...]  # sorted by path: predictions pair image by image across runs
    training: dict[tuple[Mix, int], list[TrainingImage]]

    def labels(self, items: Sequence[SplitRow | TrainingImage]) -> list[int]:
        index = {c: i for i, c in enumerate(self.classes)}
        return [index[i.label] for i in items]


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
    """Hash of the code that decides a run's numbers: a change to any of it retrains every run."""
    package = Path(__file__).parents[1]
    result_code = (
        "data/images", "train/features", "train/fit", "runs/evaluate", "train/augment",
        "train/device_augment", "train/together", "train/stacked",
    )  # fmt: skip
    files = [*sorted((package / "models").glob("*.py")), *(package / f"{name}.py" for name in result_code)]
    return sha256_json([path.read_text() for path in files])[:16]


def run_fingerprint(
    spec: RunSpec,
    data: StudyData,
    cfg: TrainConfig,
    weights: str,
    code: str,
    compute: Compute | None = None,
    together: bool = False,
) -> str:
    """Hash of everything that determines a run's result: a matching finished run is not redone. A run
    on CUDA (or in bfloat16) adds its device and precision, and one trained together with others says
    so; one on the CPU in float32, trained alone, adds nothing."""
    identity = compute.identity if compute is not None else None
    return sha256_json(
        {
            "model": spec.model,
            "mix": spec.mix.name,
            "seed": spec.seed,
            "hyperparameters": spec.hp.as_dict(),
            "max_steps": spec.max_steps,
            "augment": to_dict(cfg.augment) if spec.mix.augments else None,
            "image_size": cfg.image_size,
            "weights": weights,
            "model_settings": to_dict(cfg.model_section(spec.model)),
            "train": [
                (t.path.as_posix(), t.label, t.sha256, t.source, t.augment_seed)
                for t in data.training[spec.draw]
            ],
            "test": [(r.path.as_posix(), r.label, r.sha256) for r in data.test_rows],
            "code": code,
            "torch": torch.__version__,
            **({} if identity is None else {"compute": identity}),
            **({"together": True} if together else {}),
        }
    )


def read_study_data(params: Params, mixes: Sequence[Mix], seeds: Sequence[int]) -> StudyData:
    """The split manifests and the synthetic manifest, checked, as each (mix, seed)'s training set."""
    prepared = params.data.prepared_dir
    train_rows = read_manifest(prepared / "train.csv")
    if any(m.real > params.data.train_per_class for m in mixes):  # the extra-real control
        train_rows += read_manifest(prepared / "extra.csv")
    test_rows = tuple(sorted(read_manifest(prepared / "test.csv"), key=lambda r: r.path.as_posix()))
    classes = tuple(sorted({r.label for r in test_rows}))
    train_classes = tuple(sorted({r.label for r in train_rows}))
    if train_classes != classes:
        raise UserError(
            f"{prepared}/train.csv and test.csv list different classes ({len(train_classes)} vs "
            f"{len(classes)}). Rerun `synthmix prepare` so both come from one split."
        )
    synthetic_rows = {  # each generator's set, read once, for the mixes that take its images
        name: read_synthetic_manifest(params.generate.manifest_path(name))
        for name in dict.fromkeys(m.generator for m in mixes if m.synthetic > 0)
    }
    left_out = vetting.left_out_by_mix(mixes, params.generate.first_name, params.quality.filters_path)
    training = {
        (mix, seed): training_images(
            train_rows,
            synthetic_rows.get(mix.generator, []),
            mix,
            params.replicate_draw(seed),
            left_out.get(mix, frozenset()),
        )
        for mix in mixes
        for seed in seeds
    }
    return StudyData(classes, test_rows, training)


def train_stage(
    params: Params,
    models: Sequence[str] | None = None,
    mixes: Sequence[Mix] | None = None,
    seeds: Sequence[int] | None = None,
    compute: Compute | None = None,
) -> StageResult:
    """Train, score and log every (model, mix, seed) run not already finished; write the summaries.

    Everything a user can get wrong (model, mix, manifests, weights, tuned entries) is checked before
    the first run starts. The baseline mix is always included so the report can compare with it.
    `compute`: compute.* resolved (the CLI's; else resolved here).
    """
    cfg, compute = params.train, compute or resolve_compute(params.compute)
    models = tuple(check_model(m) for m in (models or params.study.models))
    resolved = {m: MODELS[m].weights(cfg.model_section(m)) for m in models}
    # what a run records (used) and exactly which weights and network that is (e.g. a file's sha256)
    weights = {m: f"{w.used} ({w.identity})" for m, w in resolved.items()}
    selected = tuple(mixes or params.selected_mixes)
    asked = selected if mixes or params.mix != "all" else ()
    all_mixes = runnable_mixes(params, tuple(dict.fromkeys((*selected, params.study.baseline))), asked)
    seeds = tuple(params.study.seeds if seeds is None else seeds)
    data = read_study_data(params, all_mixes, seeds)
    specs = with_step_budgets(plan_runs(params, models, all_mixes, seeds), data, params)
    code = code_version()
    together = {s: _together(s, cfg, compute) for s in specs}
    fingerprints = {
        s: run_fingerprint(s, data, cfg, weights[s.model], code, compute, together[s]) for s in specs
    }
    unfinished = [s for s in specs if not rundir.is_finished(s.run_dir(cfg.runs_dir), fingerprints[s])]
    share = process_share()  # launched as several processes (one a GPU): this one's runs
    todo = share.mine(unfinished)
    if share.device is not None and compute.is_cuda:
        compute = replace(compute, device=share.device)
    if todo:
        with _sigterm_interrupts():
            _train_runs(params, data, todo, fingerprints, compute, together, share)
    else:  # no MLflow run to open, yet the runs of a stage killed after its last run still end
        tracking.mark_dead_stage_runs("train")
    share.wait()  # every process's runs are finished: the main one summarises them all
    if not share.is_main:
        return StageResult([s.run_dir(cfg.runs_dir) for s in todo], [])
    finished = [rundir.read_run(s.run_dir(cfg.runs_dir)) for s in specs]
    write_summaries(finished, Path("metrics.json"), Path("plots"), params.report.primary_metric)
    return StageResult(
        [s.run_dir(cfg.runs_dir) for s in unfinished],
        [s.run_dir(cfg.runs_dir) for s in specs if s not in unfinished],
    )


def runnable_mixes(params: Params, mixes: Sequence[Mix], asked: Sequence[Mix] = ()) -> tuple[Mix, ...]:
    """`mixes` less those the prepared split cannot serve (an extra-real control on a data set without
    extra real images), each skipped with a warning; the report names them and says why. A mix asked
    for by name (`asked`: --mix, or params `mix`) or the baseline that cannot run is an error instead."""
    for mix in mixes:
        mix.check_feasible(
            params.data.train_per_class, params.generate.images_per_class, params.data.extra_per_class
        )
    must_run = (*asked, params.study.baseline)
    return tuple(runnable(mixes, params.data.prepared_dir, params.data.train_per_class, must_run))


def with_step_budgets(specs: Sequence[RunSpec], data: StudyData, params: Params) -> list[RunSpec]:
    """Under train.budget "steps", each run's max_steps: the optimiser steps its model takes on the
    baseline mix with the same hyperparameters (fixed or tuned: its epochs x batches an epoch), so every
    mix gets the same compute."""
    if params.train.budget == "epochs":
        return list(specs)
    baseline = params.study.baseline
    out = []
    for spec in specs:
        twin = (spec.model, baseline, spec.seed, spec.source)
        base = next((s for s in specs if (s.model, s.mix, s.seed, s.source) == twin), spec)
        images = len(data.training[base.draw])
        out.append(replace(spec, max_steps=base.hp.epochs * math.ceil(images / base.hp.batch_size)))
    return out


def _train_runs(
    params: Params,
    data: StudyData,
    todo: Sequence[RunSpec],
    fingerprints: dict[RunSpec, str],
    compute: Compute,
    together: dict[RunSpec, bool],
    share: ProcessShare,
) -> None:
    from synthmix.runs.mlflow_log import log_training_run
    from synthmix.train.features import precompute_features

    cfg = params.train
    test = _load(data.test_rows, data, cfg)
    stores = {
        key: _load_training(data.training[key], data, cfg) for key in dict.fromkeys(s.draw for s in todo)
    }
    for model in dict.fromkeys(s.model for s in todo):
        if MODELS[model].frozen_backbone:  # every feature once, here, with every core
            runs = [s for s in todo if s.model == model]
            sets = [test, *(stores[k] for k in dict.fromkeys(s.draw for s in runs))]
            precompute_features(model, sorted({s.seed for s in runs}), sets, len(data.classes), cfg, compute)
    watch_system(compute)  # MLflow's system metrics, on CUDA only
    sweep = (f"process {share.index + 1} of {share.count}: " if share.count > 1 else "") + (
        f"train {','.join(dict.fromkeys(s.model for s in todo))} x "
        f"{','.join(dict.fromkeys(s.mix.name for s in todo))} x seeds "
        f"{','.join(map(str, sorted({s.seed for s in todo})))}"
    )
    manifest = params.generate.manifest_path()  # the first generator's set (each run names its own)
    with tracking.stage_run(
        "train",
        run_name=sweep,
        params={**flatten(to_dict(cfg), "train."), **environment_params(compute.record())},
        tags={tracking.SWEEP: "true"},
        synthetic_manifest=manifest,
    ) as parent:
        for spec in todo:
            rundir.begin(spec.run_dir(cfg.runs_dir))
        jobs = [
            FitJob(s, s.model, stores[s.draw], s.seed, s.hp, s.max_steps, s.mix.online_augment, together[s])
            for s in todo
        ]
        test_paths, test_labels = [r.path for r in data.test_rows], test.labels.tolist()
        workers = cfg.workers or (1 if compute.is_cuda else 0)  # one process shares the GPU, not one a core
        shared = Shared(test, len(data.classes), cfg, compute)
        with closing(fit_all(jobs, shared, workers)) as fitted:  # closed however the loop ends
            for spec, result in progress(fitted, "Training runs", total=len(todo)):
                assert isinstance(spec, RunSpec)
                with tracking.interrupts_deferred():  # a run is recorded whole, or not at all
                    run_dir = spec.run_dir(cfg.runs_dir)
                    scores = evaluate(result.eval_logits, test.labels, data.classes)
                    history = [s.as_row() for s in result.history]
                    rundir.write_results(run_dir, scores, history, test_paths, test_labels, data.classes)
                    images = data.training[spec.draw]
                    record = rundir.RunRecord(
                        model=spec.model,
                        mix=spec.mix,
                        seed=spec.seed,
                        weights=result.weights_used,
                        hyperparameters=spec.hp.as_dict(),
                        hyperparameter_source=spec.source,
                        fingerprint=fingerprints[spec],
                        classes=data.classes,
                        train_images=len(images),
                        real_images=sum(t.source == "real" for t in images),
                        synthetic_images=sum(t.source == "synthetic" for t in images),
                        image_size=cfg.image_size,
                        augmented_images=sum(t.source == "augmented" for t in images),
                        augmentation=augment.describe(cfg.augment) if spec.mix.augments else "",
                        budget=cfg.budget,
                        optimizer_steps=result.steps,
                        mlflow_parent_run_id=parent.info.run_id,
                        # "together": trained as one stacked network with the other runs of its group
                        environment=compute.record() | ({"together": "true"} if together[spec] else {}),
                    )
                    run_id = log_training_run(spec.name, record, result, scores, run_dir, images, params)
                    rundir.finish(run_dir, record.with_mlflow_run(run_id))


def _together(spec: RunSpec, cfg: TrainConfig, compute: Compute) -> bool:
    """Whether `spec` trains together with the other runs of its model and hyperparameters
    (train.together; auto: on CUDA), as far as its model and precision allow."""
    if cfg.together == "never" or (cfg.together == "auto" and not compute.is_cuda):
        return False
    return not spec.mix.online_augment and trains_together(spec.model, cfg.image_size, compute)


def _load(items: Sequence[SplitRow | TrainingImage], data: StudyData, cfg: TrainConfig) -> LabelledImages:
    return load_images(
        [i.path for i in items], data.labels(items), [i.sha256 for i in items], cfg.image_size, cfg.cache_dir
    )


def _load_training(items: Sequence[TrainingImage], data: StudyData, cfg: TrainConfig) -> LabelledImages:
    """A training set's images, its augmented copies made from their real images (augment.with_copies)."""
    return augment.with_copies(_load(items, data, cfg), [t.augment_seed for t in items], cfg.augment)


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (dvc, a scheduler, `kill`) stops the stage as Ctrl-C does, as a KeyboardInterrupt: its
    workers die at once and its MLflow runs end KILLED. (Only the main thread may set a handler.)"""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler) if main else None
    try:
        yield
    finally:
        if main:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)

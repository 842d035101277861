"""params.yaml -> typed, validated config objects, once, at the edge.

One frozen pydantic model per params.yaml group. Its field defaults are the only defaults (params.yaml
lists every key for DVC; a test keeps the two equal). `load_params` turns the first problem (unknown key,
wrong type, bad value, infeasible mix) into a UserError naming the file and the dotted key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, Field, ValidationError, model_validator

from synthmix.config.compute import (
    ComputeConfig as ComputeConfig,  # re-exported: compute.* is in config/compute.py
)
from synthmix.config.generate import (  # re-exported: the generate.* sections live in config/generate.py
    GENERATORS as GENERATORS,
)
from synthmix.config.generate import DDPMConfig as DDPMConfig
from synthmix.config.generate import GenerateConfig
from synthmix.config.generate import Generator as Generator
from synthmix.config.generate import GeneratorSpec as GeneratorSpec
from synthmix.config.generate import LoRAConfig as LoRAConfig
from synthmix.config.generate import Text2ImageConfig as Text2ImageConfig
from synthmix.config.messages import explain
from synthmix.config.models import (  # re-exported: the train.<model> sections live in config/models.py
    CLIPConfig,
    CNNConfig,
    DINOv2Config,
    ModelSection,
    ResNetConfig,
    TimmConfig,
    ViTConfig,
)
from synthmix.config.types import (
    AreaFraction,
    AsList,
    Count,
    FilePath,
    Float,
    Fraction,
    LowHigh,
    MixValue,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    Section,
    _mix,
    _require,
)
from synthmix.core.errors import UserError
from synthmix.data.mixes import REDRAWABLE, Draw, Mix
from synthmix.data.vetting import FILTERS_NAME


def _all_or_one_mix(value: str) -> str:
    if value != "all":
        _mix(value)
    return value


# --- the groups -----------------------------------------------------------------------------------


class DataConfig(Section):
    dir: FilePath = Path("data")  # the real set: one folder per class, tracked by data.dvc
    prepared_dir: FilePath = Path("prepared")  # split manifests and the validation report
    train_per_class: PositiveInt = 30
    test_per_class: PositiveInt = 30
    seed: int = 0
    drop_small_classes: bool = False  # True: drop a class with too few images (warned), else fail
    extra_per_class: Count = 30  # real images a class past train_per_class, for e.g. 60r0s (data/split.py)
    pool_per_class: Count = 60  # real images a class only the generator learns from (data/split.py)


class AugmentConfig(Section):
    """The augmentation policy (torchvision.transforms.v2), for <N>r<K>a copies and +aug mixes."""

    flip: bool = False  # random horizontal flip (off for digits: a mirrored 2 is no 2)
    # random-resized-crop area range, as fractions of the image
    crop_scale: Annotated[tuple[AreaFraction, AreaFraction], AsList, LowHigh] = (0.8, 1.0)
    rotation: Annotated[Float, Field(ge=0, le=180)] = 10.0  # degrees, either way
    color_jitter: Annotated[Float, Field(ge=0, le=1)] = 0.2  # brightness, contrast and saturation
    randaugment_ops: Count = 2  # RandAugment operations per image (0: none)
    randaugment_magnitude: Annotated[int, Field(ge=0, le=30)] = 9


class TrainConfig(Section):
    image_size: Annotated[int, Field(ge=32, description="the CNN halves it five times")] = 32
    batch_size: PositiveInt = 32
    use_tuned: bool = False  # True: take per-(model, mix) hyperparameters from tune.best_params_file
    workers: Count = 0  # runs trained side by side, one process and one thread each; 0 = one per CPU core
    # runs of one model and hyperparameters trained as one stacked network (train/together.py): auto on
    # CUDA; always (on the CPU too: equal to runs alone up to the order of sums, so they retrain); never
    together: Literal["auto", "always", "never"] = "auto"
    runs_dir: FilePath = Path("runs")  # per-(model, mix, seed) results, kept between runs
    cache_dir: FilePath = Path(".cache/synthmix")  # decoded-image and feature caches
    # epochs: every mix trains its model's epochs; steps: every mix trains as many optimiser steps as
    # the baseline mix takes in its epochs (compute-matched: a larger mix then sees fewer epochs)
    budget: Literal["epochs", "steps"] = "epochs"
    augment: AugmentConfig = AugmentConfig()
    # one ModelSection per model synthmix trains; the field name is the model's name (MODEL_NAMES)
    cnn: CNNConfig = CNNConfig()
    resnet50: ResNetConfig = ResNetConfig()
    vit_b_16: ViTConfig = ViTConfig()
    timm: TimmConfig = TimmConfig()
    clip: CLIPConfig = CLIPConfig()
    dinov2: DINOv2Config = DINOv2Config()

    def model_section(self, name: str) -> ModelSection:
        """The train.<name> section, e.g. `model_section("cnn")` is `self.cnn`."""
        return getattr(self, check_model(name))


MODEL_NAMES: tuple[str, ...] = tuple(
    name
    for name, info in TrainConfig.model_fields.items()
    if isinstance(info.annotation, type) and issubclass(info.annotation, ModelSection)
)


ModelName = Annotated[
    str, _require(lambda v: v in MODEL_NAMES, f"Unknown model. synthmix trains: {', '.join(MODEL_NAMES)}.")
]


class StudyConfig(Section):
    mixes: Annotated[tuple[MixValue, ...], AsList, Field(min_length=1)] = tuple(
        Mix.parse(m)
        for m in ("30r0s", "30r15s", "30r30s", "15r30s", "0r30s", "30r30a", "60r0s", "30r15s@filtered")
    )
    # the study's two models; the other backbones (MODEL_NAMES) are opt-in here
    models: Annotated[tuple[ModelName, ...], AsList, Field(min_length=1)] = ("cnn", "resnet50")
    seeds: Annotated[tuple[int, ...], AsList, Field(min_length=1)] = (0, 1, 2)
    baseline: MixValue = Mix(30, 0)
    # What each seed's replicate draws afresh, besides the model's initialisation and batch order: the
    # real subset of every partial mix (e.g. which 15 of 30 real images 15r30s holds), the synthetic
    # subset (which M of the generated pool), and the generator's sampling seed (each replicate gets
    # its own generate.images_per_class images a class, so generation makes that many per seed).
    # [] keeps all fixed for every seed.
    redraw: Annotated[tuple[Literal[REDRAWABLE], ...], AsList] = REDRAWABLE


class TuneConfig(Section):
    enabled: bool = False  # the dvc `tune` stage tunes only when true (it is off in a plain `dvc repro`)
    trials: PositiveInt = 20  # finished (complete + pruned) trials per (model, mix), summed over workers
    storage: str = "sqlite:///optuna.db"  # any SQLAlchemy URL; a shared PostgreSQL one lets machines help
    sampler_seed: int = 0
    seed: int = 0  # seeds every trial's training
    # of each class's real training images, the highest-ranked: every mix validates on them, none trains
    validation_fraction: Annotated[Float, Field(gt=0, lt=1)] = 0.2
    best_params_file: FilePath = Path("tuned/best_params.yaml")
    pruning_startup_trials: Count = 5  # trials that always finish before the median pruner may stop one
    pruning_warmup_epochs: Count = 3  # epochs every trial runs before it may be pruned
    heartbeat_seconds: PositiveInt = 60  # a RUNNING trial silent for 2x this long belongs to a dead worker
    lr: Annotated[tuple[PositiveFloat, PositiveFloat], AsList, LowHigh] = (1e-4, 1e-2)  # log scale
    weight_decay: Annotated[tuple[PositiveFloat, PositiveFloat], AsList, LowHigh] = (1e-6, 1e-2)  # log scale
    dropout: Annotated[tuple[Fraction, Fraction], AsList, LowHigh] = (0.0, 0.6)
    epochs: Annotated[tuple[PositiveInt, PositiveInt], AsList, LowHigh] = (5, 50)
    batch_size: Annotated[tuple[PositiveInt, ...], AsList, Field(min_length=1)] = (16, 32, 64)  # choices


class ReportConfig(Section):
    out_dir: FilePath = Path("reports")
    # of every interval; 1 - confidence is the significance level
    confidence: Annotated[Float, Field(ge=0.5, lt=1, description="e.g. 0.95 for 95% intervals")] = 0.95
    bootstrap_samples: Annotated[
        int,
        Field(ge=100, description="resamples of the test images, for the image part of each change's error"),
    ] = 10000
    seed: int = 0  # of the bootstrap's resampling
    # carries the verdicts (significant or not, Holm-adjusted); the other metrics are shown, not tested
    primary_metric: Literal["accuracy", "precision_macro", "recall_macro", "f1_macro"] = "f1_macro"
    sample_images: PositiveInt = 4  # real and synthetic images per class in the sample figures
    highlight_classes: PositiveInt = 3  # most improved and most degraded classes in the sample figures


FILTER_NAMES = ("classifier", "clip_score", "blank")


class ClassifierFilterConfig(Section):
    # A reference classifier (the study's CNN, trained on the real training images only, never the
    # pool or the test split) rejects a synthetic image it assigns to another class, or to its own with
    # a probability below min_confidence.
    min_confidence: Fraction = 0.5
    seed: int = 0


class ClipScoreFilterConfig(Section):
    # CLIP's image-text cosine similarity between an image and `prompt`; below min_score: rejected.
    # Applied only when `model` is available locally (a directory or the local Hugging Face cache).
    model: str = "openai/clip-vit-base-patch32"
    prompt: Annotated[
        str,
        _require(
            lambda v: "{label}" in v,
            "it has no {label} placeholder, so every class's images would be scored against one text. "
            "Put {label} where the class name goes, e.g. 'a photo of a {label}'.",
        ),
    ] = "a photo of a {label}"
    min_score: Annotated[Float, Field(ge=-1, le=1)] = 0.2


class BlankFilterConfig(Section):
    # A blank image (blacked out by a safety checker, a collapsed sample): the standard deviation of
    # its grey levels (0-255) below min_std.
    min_std: NonNegativeFloat = 4.0


class QualityConfig(Section):
    out_dir: FilePath = Path("quality")
    # Where quality is measured: auto takes ImageNet ResNet50 features when those weights are on this
    # machine, else the reference classifier's (trained here on real training images only).
    feature_space: Literal["auto", "reference", "resnet50"] = "auto"
    filters: Annotated[tuple[Literal[FILTER_NAMES], ...], AsList] = FILTER_NAMES  # what @filtered applies
    classifier: ClassifierFilterConfig = ClassifierFilterConfig()
    clip_score: ClipScoreFilterConfig = ClipScoreFilterConfig()
    blank: BlankFilterConfig = BlankFilterConfig()
    nearest_k: PositiveInt = 5  # neighbours of precision, recall, density and coverage
    kid_subset_size: PositiveInt = 1000  # capped at the smaller set's size
    kid_subsets: PositiveInt = 100
    bootstrap_samples: Annotated[int, Field(ge=100)] = 200  # per-class intervals of KID and coverage
    confidence: Annotated[Float, Field(ge=0.5, lt=1)] = 0.9
    closest_pairs: PositiveInt = 8  # synthetic-to-real pairs shown as pictures, per generator
    seed: int = 0

    @property
    def filters_path(self) -> Path:
        return self.out_dir / FILTERS_NAME


class Params(Section):
    """Everything in params.yaml. `mix` selects what runs: 'all' (every study mix) or one mix."""

    mix: Annotated[str, AfterValidator(_all_or_one_mix)] = "all"
    data: DataConfig = DataConfig()
    generate: GenerateConfig = GenerateConfig()
    study: StudyConfig = StudyConfig()
    train: TrainConfig = TrainConfig()
    tune: TuneConfig = TuneConfig()
    report: ReportConfig = ReportConfig()
    quality: QualityConfig = QualityConfig()
    compute: ComputeConfig = ComputeConfig()  # where the networks run (config/compute.py)

    def replicate_draw(self, seed: int) -> Draw:
        """What the replicate with `seed` draws (study.redraw). Image-to-image sources are the first real
        ranks of each class, which every mix must hold, so that mode keeps the real subset fixed. With
        the generator seed redrawn, the replicate of the b-th smallest study seed takes synthetic block b
        (a seed outside study.seeds, e.g. tune.seed, takes block 0). With any image-to-image generator
        in the study every mix keeps the fixed real subset, so mixes of all generators stay nested."""
        specs = (self.generate, *self.generate.generators.values())
        keep_real = any(spec.image_to_image for spec in specs)
        redraw = tuple(r for r in self.study.redraw if not (keep_real and r == "real_subset"))
        seeds = sorted(set(self.study.seeds))
        if "generator_seed" not in redraw:
            return Draw(seed, redraw)
        block = seeds.index(seed) if seed in seeds else 0
        return Draw(seed, redraw, block, self.generate.images_per_class)

    @property
    def synthetic_per_class(self) -> int:
        """Images generate makes per class: images_per_class, once per study seed when the generator's
        sampling seed is redrawn."""
        blocks = len(set(self.study.seeds)) if "generator_seed" in self.study.redraw else 1
        return self.generate.images_per_class * blocks

    @property
    def selected_mixes(self) -> tuple[Mix, ...]:
        return self.study.mixes if self.mix == "all" else (Mix.parse(self.mix),)

    @model_validator(mode="after")
    def _mixes_are_feasible(self) -> Params:
        selected = [] if self.mix == "all" else [("mix", Mix.parse(self.mix))]
        for key, mix in [*selected, *((f"study.mixes[{i}]", m) for i, m in enumerate(self.study.mixes))]:
            try:
                mix.check_feasible(
                    self.data.train_per_class, self.generate.images_per_class, self.data.extra_per_class
                )
            except UserError as exc:
                raise ValueError(f"{key} is '{mix}': {exc}") from None
            first, others = self.generate.first_name, list(self.generate.generators)
            if mix.generator == first:
                raise ValueError(
                    f"{key} is '{mix}': '{first}' is the first generator, whose images a mix takes without "
                    f"a suffix; write {mix.with_generator('')}."
                )
            if mix.generator and mix.generator not in others:
                known = ", ".join(others) or "none besides the first"
                raise ValueError(
                    f"{key} is '{mix}': no generator '{mix.generator}' in generate.generators (it has: "
                    f"{known}). Add it there, or name one of those."
                )
        return self


def check_model(model: str, key: str = "--model") -> str:
    if model not in MODEL_NAMES:
        raise UserError(f"Unknown model '{model}' ({key}). synthmix trains: {', '.join(MODEL_NAMES)}.")
    return model


def load_params(path: Path | str = "params.yaml") -> Params:
    """Read and validate params.yaml; a missing file means all defaults."""
    path = Path(path)
    raw: Any = {}
    if path.exists():
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise UserError(f"{path} is not valid YAML: {exc}. Fix the file's syntax.") from exc
    return params_from_dict(raw, source=str(path))


def params_from_dict(raw: Any, source: str = "params.yaml") -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise UserError(explain(exc, source, Params)) from None


def to_dict(obj: Any) -> Any:
    """A config object as plain YAML/JSON-able values (Paths and Mixes as strings)."""
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if isinstance(obj, (Path, Mix)):
        return str(obj)
    if isinstance(obj, (tuple, list)):
        return [to_dict(v) for v in obj]
    return obj


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}, for logging every resolved setting."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        out.update(
            flatten(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value}
        )
    return out

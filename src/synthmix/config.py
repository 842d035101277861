"""params.yaml -> typed, validated config objects, once, at the edge.

One frozen dataclass per params.yaml group. `load_params` reads the file, rejects unknown keys and
wrong types with a message naming the dotted key, and checks that every selected mix is feasible, so
bad parameters fail before any work starts. Code below the CLI takes these objects, never dicts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from synthmix.errors import UserError
from synthmix.mixes import Mix

MODELS = ("cnn", "resnet50")
GENERATORS = ("ddpm", "text2image")
RESNET_WEIGHTS_KEYWORDS = ("imagenet", "none", "auto")


@dataclass(frozen=True)
class DataConfig:
    dir: Path = Path("data")  # the real set: one folder per class, tracked by data.dvc
    prepared_dir: Path = Path("prepared")  # split manifests and the validation report
    train_per_class: int = 30
    test_per_class: int = 30
    seed: int = 0
    drop_small_classes: bool = False  # True: drop a class with too few images (warned), else fail

    def validate(self) -> None:
        _positive("data.train_per_class", self.train_per_class)
        _positive("data.test_per_class", self.test_per_class)


@dataclass(frozen=True)
class DDPMConfig:
    resolution: int = 16
    base_channels: int = 32
    train_steps: int = 1000  # ~1.5 min on 2 CPU cores at the defaults; digit-like samples
    batch_size: int = 32
    learning_rate: float = 1e-3
    num_train_timesteps: int = 1000
    sample_steps: int = 25  # DDIM steps
    sample_batch_size: int = 30  # the fixed chunk of indices sampled together (one class's 30 images)
    checkpoint_every: int = 200
    checkpoint_dir: Path = Path("models/ddpm")

    def validate(self) -> None:
        for key in (
            "resolution",
            "base_channels",
            "train_steps",
            "batch_size",
            "num_train_timesteps",
            "sample_steps",
            "sample_batch_size",
            "checkpoint_every",
        ):
            _positive(f"generate.ddpm.{key}", getattr(self, key))
        if self.resolution % 4:
            raise UserError(
                f"generate.ddpm.resolution is {self.resolution}; the UNet halves it twice, so use a "
                "multiple of 4 (e.g. 16 or 32)."
            )
        _positive("generate.ddpm.learning_rate", self.learning_rate)


@dataclass(frozen=True)
class Text2ImageConfig:
    model: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"  # hub id or local directory
    revision: str | None = None
    prompt_template: str = "natural scenery, wildlife photo, image of a {label}"
    negative_prompt: str = ""
    guidance_scale: float = 7.5
    steps: int = 30
    size: int = 512
    batch_size: int = 4
    mode: str = "text"  # "text": text-to-image; "image": image-to-image from each real training image
    strength: float = 0.6  # image mode only: how far from the real image (SDEdit)
    safety_checker: bool = True
    max_retries: int = 3  # regenerate a blocked (all-black) image with the next seed this often

    def validate(self) -> None:
        if "{label}" not in self.prompt_template:
            raise UserError(
                f"generate.text2image.prompt_template '{self.prompt_template}' has no {{label}} "
                "placeholder, so every class would get the same prompt. Put {label} where the class "
                "name goes, e.g. 'natural scenery, wildlife photo, image of a {label}'."
            )
        if self.mode not in ("text", "image"):
            raise UserError(
                f"generate.text2image.mode is '{self.mode}'; use 'text' (text-to-image) or 'image' "
                "(image-to-image from the real training images)."
            )
        if not 0.0 < self.strength <= 1.0:
            raise UserError(f"generate.text2image.strength is {self.strength}; use a value in (0, 1].")
        for key in ("steps", "size", "batch_size"):
            _positive(f"generate.text2image.{key}", getattr(self, key))


@dataclass(frozen=True)
class GenerateConfig:
    generator: str = "ddpm"
    images_per_class: int = 30
    seed: int = 0
    out_dir: Path = Path("synthetic")
    ddpm: DDPMConfig = field(default_factory=DDPMConfig)
    text2image: Text2ImageConfig = field(default_factory=Text2ImageConfig)

    def validate(self) -> None:
        if self.generator not in GENERATORS:
            raise UserError(
                f"generate.generator is '{self.generator}', which synthmix does not know. Use one of: "
                f"{', '.join(GENERATORS)}."
            )
        _positive("generate.images_per_class", self.images_per_class)
        self.ddpm.validate()
        self.text2image.validate()


@dataclass(frozen=True)
class CNNConfig:
    lr: float = 0.001  # study: 0.0075 (128 px); at 32 px on the digits 0.0075 never leaves chance
    weight_decay: float = 1e-4
    epochs: int = 50
    conv_dropout: float = 0.1
    fc_dropout: float = 0.5

    def validate(self) -> None:
        _positive("train.cnn.lr", self.lr)
        _positive("train.cnn.epochs", self.epochs)
        _fraction("train.cnn.conv_dropout", self.conv_dropout)
        _fraction("train.cnn.fc_dropout", self.fc_dropout)


@dataclass(frozen=True)
class ResNetConfig:
    lr: float = 0.001
    weight_decay: float = 0.001
    epochs: int = 20
    weights: str = "auto"  # imagenet | none | auto | path to a state-dict file

    def validate(self) -> None:
        _positive("train.resnet50.lr", self.lr)
        _positive("train.resnet50.epochs", self.epochs)
        if self.weights not in RESNET_WEIGHTS_KEYWORDS and not Path(self.weights).suffix:
            raise UserError(
                f"train.resnet50.weights is '{self.weights}'. Use imagenet, none, auto, or the path of a "
                "state-dict file (e.g. weights/resnet50.pth)."
            )


@dataclass(frozen=True)
class TrainConfig:
    image_size: int = 32
    batch_size: int = 32
    use_tuned: bool = False  # True: take per-(model, mix) hyperparameters from tune.best_params_file
    workers: int = 0  # runs trained side by side, one process and one thread each; 0 = one per CPU core
    runs_dir: Path = Path("runs")  # per-(model, mix, seed) results, kept between runs
    cache_dir: Path = Path(".cache/synthmix")  # decoded-image and feature caches
    cnn: CNNConfig = field(default_factory=CNNConfig)
    resnet50: ResNetConfig = field(default_factory=ResNetConfig)

    def validate(self) -> None:
        if self.image_size < 32:
            raise UserError(
                f"train.image_size is {self.image_size}; the CNN halves it five times, so use at least 32."
            )
        _positive("train.batch_size", self.batch_size)
        if self.workers < 0:
            raise UserError(f"train.workers is {self.workers}; use 0 (one per CPU core) or a positive count.")
        self.cnn.validate()
        self.resnet50.validate()


@dataclass(frozen=True)
class StudyConfig:
    mixes: tuple[Mix, ...] = tuple(Mix.parse(m) for m in ("30r0s", "30r15s", "30r30s", "15r30s", "0r30s"))
    models: tuple[str, ...] = MODELS
    seeds: tuple[int, ...] = (0, 1, 2)
    baseline: Mix = Mix(30, 0)

    def validate(self) -> None:
        for model in self.models:
            check_model(model, key="study.models")
        if not self.seeds:
            raise UserError("study.seeds is empty; list at least one seed, e.g. [0, 1, 2].")
        if not self.mixes:
            raise UserError("study.mixes is empty; list at least one mix, e.g. [30r0s, 30r30s].")


@dataclass(frozen=True)
class TuneConfig:
    enabled: bool = False  # the dvc `tune` stage tunes only when true (it is off in a plain `dvc repro`)
    trials: int = 20  # finished (complete + pruned) trials per (model, mix), summed over all workers
    storage: str = (
        "sqlite:///optuna.db"  # any SQLAlchemy URL; a shared PostgreSQL one lets many machines help
    )
    sampler_seed: int = 0
    seed: int = 0  # seeds the validation split and every trial's training
    validation_fraction: float = (
        0.2  # carved per class (and per real/synthetic source) from the mix's training set
    )
    best_params_file: Path = Path("tuned/best_params.yaml")
    pruning_startup_trials: int = 5  # trials that always run to the end before the median pruner may stop one
    pruning_warmup_epochs: int = 3  # epochs every trial runs before it may be pruned
    heartbeat_seconds: int = (
        60  # a RUNNING trial silent for 2x this long belongs to a dead worker: marked FAIL
    )
    lr: tuple[float, float] = (1e-4, 1e-2)  # log scale
    weight_decay: tuple[float, float] = (1e-6, 1e-2)  # log scale
    dropout: tuple[float, float] = (0.0, 0.6)
    epochs: tuple[int, int] = (5, 50)
    batch_size: tuple[int, ...] = (16, 32, 64)  # choices

    def validate(self) -> None:
        _positive("tune.trials", self.trials)
        _positive("tune.heartbeat_seconds", self.heartbeat_seconds)
        if self.pruning_startup_trials < 0 or self.pruning_warmup_epochs < 0:
            raise UserError(
                "tune.pruning_startup_trials and tune.pruning_warmup_epochs must be 0 or more; fix them in "
                "params.yaml."
            )
        if not 0.0 < self.validation_fraction < 1.0:
            raise UserError(
                f"tune.validation_fraction is {self.validation_fraction}; use a fraction in (0, 1), e.g. 0.2."
            )
        for key in ("lr", "weight_decay", "dropout", "epochs"):
            low, high = getattr(self, key)
            if low > high:
                raise UserError(f"tune.{key} is [{low}, {high}]; write the range as [low, high].")
        for key in ("lr", "weight_decay"):  # searched on a log scale, so 0 cannot be a bound
            _positive(f"tune.{key}[0]", getattr(self, key)[0])
        _positive("tune.epochs[0]", self.epochs[0])
        if not (self.dropout[0] >= 0.0 and self.dropout[1] < 1.0):
            raise UserError(f"tune.dropout is {list(self.dropout)}; both bounds must be in [0, 1).")
        if not self.batch_size or any(b <= 0 for b in self.batch_size):
            raise UserError(
                f"tune.batch_size is {list(self.batch_size)}; list one or more positive batch sizes, e.g. "
                "[16, 32, 64]."
            )


@dataclass(frozen=True)
class ReportConfig:
    out_dir: Path = Path("reports")
    confidence: float = 0.95  # of every interval; 1 - confidence is the significance level
    bootstrap_samples: int = 10000
    seed: int = 0  # of the bootstrap's resampling
    sample_images: int = 4  # real and synthetic images per class in the sample figures
    highlight_classes: int = 3  # most improved and most degraded classes shown in the sample figures

    def validate(self) -> None:
        if not 0.5 <= self.confidence < 1.0:
            raise UserError(
                f"report.confidence is {self.confidence}; use a level in [0.5, 1), e.g. 0.95 for 95% intervals."
            )
        if self.bootstrap_samples < 100:
            raise UserError(
                f"report.bootstrap_samples is {self.bootstrap_samples}; a percentile interval needs at least "
                "100 resamples (10000 gives stable p-values). Raise it in params.yaml."
            )
        _positive("report.sample_images", self.sample_images)
        _positive("report.highlight_classes", self.highlight_classes)


@dataclass(frozen=True)
class Params:
    """Everything in params.yaml. `mix` selects what runs: 'all' (every study mix) or one mix."""

    mix: str = "all"
    data: DataConfig = field(default_factory=DataConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    study: StudyConfig = field(default_factory=StudyConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    @property
    def selected_mixes(self) -> tuple[Mix, ...]:
        if self.mix == "all":
            return self.study.mixes
        return (Mix.parse(self.mix),)

    def validate(self) -> None:
        self.data.validate()
        self.generate.validate()
        self.study.validate()
        self.train.validate()
        self.tune.validate()
        self.report.validate()
        for mix in (*self.selected_mixes, *self.study.mixes):
            mix.check_feasible(self.data.train_per_class, self.generate.images_per_class)


def check_model(model: str, key: str = "--model") -> str:
    if model not in MODELS:
        raise UserError(f"Unknown model '{model}' ({key}). synthmix trains: {', '.join(MODELS)}.")
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
    params = params_from_dict(raw, source=str(path))
    params.validate()
    return params


def params_from_dict(raw: Any, source: str = "params.yaml") -> Params:
    return _build(Params, raw, prefix="", source=source)


def to_dict(obj: Any) -> Any:
    """A config object as plain YAML/JSON-able values (Paths and Mixes as strings)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, Mix):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (Path, Mix)):
        return str(obj)
    if isinstance(obj, tuple):
        return [to_dict(v) for v in obj]
    return obj


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}, for logging every resolved setting."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


# --- the generic, typed builder -------------------------------------------------------------------


def _build(cls: type, raw: Any, prefix: str, source: str) -> Any:
    where = prefix.rstrip(".") or "the top level"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(f"In {source}, {where} must be a mapping of keys, not {raw!r}.")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise UserError(
            f"In {source}, unknown key '{prefix}{unknown[0]}'. Known keys at {where}: "
            f"{', '.join(sorted(known))}. Check the spelling."
        )
    values = {name: _coerce(hints[name], raw[name], f"{prefix}{name}", source) for name in raw}
    return cls(**values)


def _coerce(hint: Any, value: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint) and hint is not Mix:
        return _build(hint, value, prefix=key + ".", source=source)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(inner, value, key, source)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"In {source}, {key} must be a list, not {value!r}.")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{key}[{i}]", source) for i, v in enumerate(value))
        if len(value) != len(args):
            raise UserError(f"In {source}, {key} must be a list of {len(args)} values, not {value!r}.")
        return tuple(
            _coerce(a, v, f"{key}[{i}]", source) for i, (a, v) in enumerate(zip(args, value, strict=True))
        )
    if hint is Mix:
        try:
            return Mix.parse(value)
        except UserError as exc:
            raise UserError(f"In {source}, {key}: {exc}") from None
    if hint is Path:
        if not isinstance(value, str) or not value:
            raise UserError(f"In {source}, {key} must be a path, not {value!r}.")
        return Path(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise UserError(f"In {source}, {key} must be true or false, not {value!r}.")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"In {source}, {key} must be a whole number, not {value!r}.")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 as a string
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"In {source}, {key} must be a number, not {value!r}.")
        return float(value)
    if hint is str:
        if isinstance(value, (dict, list)):
            raise UserError(f"In {source}, {key} must be a single value, not {value!r}.")
        return str(value)
    raise TypeError(f"config type {hint!r} for {key} is not supported")  # a bug, not a user error


def _positive(key: str, value: float) -> None:
    if value <= 0:
        raise UserError(f"{key} is {value}; it must be greater than 0. Fix it in params.yaml.")


def _fraction(key: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise UserError(f"{key} is {value}; it must be in [0, 1). Fix it in params.yaml.")

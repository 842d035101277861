"""The generate.* sections of params.yaml: the first generator (its kind and settings at the top level)
and any number of other named generators, each with its own synthetic set. Re-exported by `config`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import Field, PlainValidator, model_validator

from synthmix.config.types import (
    AsList,
    Count,
    FilePath,
    Float,
    PositiveFloat,
    PositiveInt,
    Section,
    _require,
)
from synthmix.data.mixes import GENERATOR_NAME

Generator = Literal["ddpm", "text2image", "lora"]
COMPILE_MODES = ("reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs", "default", "none")
GENERATORS: tuple[str, ...] = get_args(Generator)


def _batch_or_auto(value: Any) -> int | str:
    if value == "auto" or (type(value) is int and value > 0):
        return value
    raise ValueError("write a whole number above 0, or auto (from the GPU's free memory; 4 on the CPU).")


def _switch_or_auto(value: Any) -> bool | str:
    if value == "auto" or isinstance(value, bool):
        return value
    raise ValueError("write auto (on CUDA only), true or false.")


BatchOrAuto = Annotated[int | Literal["auto"], PlainValidator(_batch_or_auto)]
SwitchOrAuto = Annotated[bool | Literal["auto"], PlainValidator(_switch_or_auto)]


class DDPMConfig(Section):
    resolution: Annotated[PositiveInt, Field(multiple_of=4, description="the UNet halves it twice")] = 16
    base_channels: PositiveInt = 32
    train_steps: PositiveInt = 1000  # ~1.5 min on 2 CPU cores at the defaults; digit-like samples
    batch_size: PositiveInt = 32
    learning_rate: PositiveFloat = 1e-3
    num_train_timesteps: PositiveInt = 1000
    sample_steps: PositiveInt = 25  # DDIM steps
    sample_batch_size: PositiveInt = 30  # the fixed chunk of indices sampled together (one class's 30)
    checkpoint_every: PositiveInt = 200
    checkpoint_dir: FilePath = Path("models/ddpm")


_NO_LABEL = (
    "it has no {label} placeholder, so every class would get the same prompt. Put {label} where the "
    "class name goes, e.g. 'natural scenery, wildlife photo, image of a {label}'."
)


_PROMPTS_DIR = (
    "put the file in the prompts/ folder and give its path from the repository root, e.g. "
    "prompts/animals.yaml (dvc.yaml's generate stage depends on that folder, so an edit regenerates)."
)


class Text2ImageConfig(Section):
    model: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"  # hub id or local directory
    revision: str | None = None
    prompt_template: Annotated[str, _require(lambda v: "{label}" in v, _NO_LABEL)] = (
        "natural scenery, wildlife photo, image of a {label}"
    )
    # more templates, rotated with prompt_template: image i of a class takes template i mod their count
    prompt_templates: Annotated[
        tuple[Annotated[str, _require(lambda v: "{label}" in v, _NO_LABEL)], ...], AsList
    ] = ()
    # per-class prompts for ambiguous class names (bat, seal, turkey): a YAML file in prompts/ mapping a
    # class to its prompt or list of prompts (rotated like the templates), used instead of the templates
    class_prompts: Annotated[
        FilePath | None,
        _require(lambda v: v is None or (not v.is_absolute() and v.parts[:1] == ("prompts",)), _PROMPTS_DIR),
    ] = None
    negative_prompt: str = ""
    guidance_scale: Float = 7.5
    steps: PositiveInt = 30
    size: PositiveInt = 512
    # images sampled together (the chunk an image's bits depend on); auto: from free GPU memory on
    # CUDA (generate/text2image_fast.auto_batch_size), 4 on the CPU
    batch_size: BatchOrAuto = "auto"
    # the fast path (channels-last, fused QKV, torch.compile, prompt embeddings once per prompt,
    # retries batched): auto = on CUDA only; true also on the CPU; false never. Same sampler, steps
    # and seeds, images within fp16 tolerance, so it is not part of an image's settings digest.
    fast: SwitchOrAuto = "auto"
    # torch.compile's mode in the fast path; none = no compile (the other fast pieces stay)
    compile_mode: Literal[COMPILE_MODES] = "reduce-overhead"
    mode: Literal["text", "image"] = "text"  # or image-to-image from the smallest mix's real images
    strength: Annotated[Float, Field(gt=0, le=1)] = 0.6  # image mode only: how far from the real image
    safety_checker: bool = True
    max_retries: Count = 3  # regenerate a blocked (all-black) image with the next seed this often


class LoRAConfig(Section):
    """The lora generator: text2image's pipeline (model, prompts, sampling settings), its UNet
    fine-tuned with LoRA adapters on the real images the generator learns from."""

    rank: PositiveInt = 4
    train_steps: PositiveInt = 500
    batch_size: PositiveInt = 4
    learning_rate: PositiveFloat = 1e-4
    checkpoint_every: PositiveInt = 100
    checkpoint_dir: FilePath = Path("models/lora")


class GeneratorSpec(Section):
    """One generator: its kind and that kind's settings (generate.* for the first, generate.generators.<name>
    for each other)."""

    generator: Generator = "ddpm"
    ddpm: DDPMConfig = DDPMConfig()
    text2image: Text2ImageConfig = Text2ImageConfig()
    lora: LoRAConfig = LoRAConfig()

    @property
    def image_to_image(self) -> bool:
        """Whether each synthetic image starts from a real training image (text2image, mode image)."""
        return self.generator == "text2image" and self.text2image.mode == "image"


GeneratorName = Annotated[str, Field(pattern=rf"^{GENERATOR_NAME}$")]


class GenerateConfig(GeneratorSpec):
    """The first generator (its settings at the top level, as a mix without -<generator> takes its
    images) and any number of other named ones, each with its own synthetic set."""

    name: Annotated[str, Field(pattern=rf"^({GENERATOR_NAME})?$")] = ""  # the first's; "" = its kind
    images_per_class: PositiveInt = 30
    seed: int = 0
    out_dir: FilePath = Path("synthetic")
    generators: dict[GeneratorName, GeneratorSpec] = Field(default_factory=dict)

    @property
    def first_name(self) -> str:
        return self.name or self.generator

    @property
    def names(self) -> tuple[str, ...]:
        """Every generator's name, the first one first."""
        return (self.first_name, *self.generators)

    def generator_dir(self, name: str = "") -> Path:
        """Where a generator's set lives: out_dir for the first, out_dir/@<name> for another."""
        return self.out_dir if name in ("", self.first_name) else self.out_dir / f"@{name}"

    def manifest_path(self, name: str = "") -> Path:
        return self.generator_dir(name) / "manifest.csv"

    def single(self, name: str = "") -> GenerateConfig:
        """The settings that make generator `name`'s set alone ("" or the first's name: the first)."""
        if name in ("", self.first_name):
            return self.model_copy(update={"generators": {}, "name": self.first_name})
        spec = self.generators[name]
        ddpm = spec.ddpm.model_copy(update={"checkpoint_dir": spec.ddpm.checkpoint_dir / f"@{name}"})
        lora = spec.lora.model_copy(update={"checkpoint_dir": spec.lora.checkpoint_dir / f"@{name}"})
        return self.model_copy(
            update={
                "name": name,
                "generator": spec.generator,
                "ddpm": ddpm,
                "text2image": spec.text2image,
                "lora": lora,
                "out_dir": self.generator_dir(name),
                "generators": {},
            }
        )

    def __hash__(self) -> int:  # `generators` is a dict: hash the settings' canonical form instead
        return hash(self.model_dump_json())

    @model_validator(mode="after")
    def _names_are_distinct(self) -> GenerateConfig:
        if self.first_name in self.generators:
            raise ValueError(
                f"generators holds '{self.first_name}', the first generator's name (generate.name, or its "
                "kind when generate.name is empty). Give the other generator another name."
            )
        return self

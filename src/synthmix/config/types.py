"""The value types every params.yaml section is built from: strict (a bool is not an int, text is not a
number), with YAML's few quirks, and `Section`, the frozen base of every group."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    Strict,
    model_validator,
)

from synthmix.core.errors import UserError
from synthmix.data.mixes import Mix

_YAML_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _yaml_float(value: Any) -> Any:
    """PyYAML (YAML 1.1) reads 1e-4 as the string '1e-4'; take it as the number it means."""
    if isinstance(value, str) and _YAML_EXPONENT.fullmatch(value.strip()):
        return float(value)
    return value


def _mix(value: Any) -> Mix:
    if isinstance(value, Mix):
        return value
    if not isinstance(value, str):
        raise ValueError("write one mix as <N>r<M>s, N real and M synthetic images per class, e.g. 30r15s.")
    try:
        return Mix.parse(value)
    except UserError as exc:  # pydantic names the key of a ValueError; other exceptions escape it
        raise ValueError(str(exc)) from None


def _require(ok: Callable[[Any], bool], reason: str) -> AfterValidator:
    """A check with the reason a user reads when it fails (after the file and the key)."""

    def check(value: Any) -> Any:
        if not ok(value):
            raise ValueError(reason)
        return value

    return AfterValidator(check)


Float = Annotated[float, BeforeValidator(_yaml_float)]
PositiveFloat = Annotated[Float, Field(gt=0)]
NonNegativeFloat = Annotated[Float, Field(ge=0)]
Fraction = Annotated[Float, Field(ge=0, lt=1)]
AreaFraction = Annotated[Float, Field(gt=0, le=1)]
PositiveInt = Annotated[int, Field(gt=0)]
Count = Annotated[int, Field(ge=0)]
FilePath = Annotated[Path, BeforeValidator(lambda v: Path(v) if isinstance(v, str) and v.strip() else v)]
MixValue = Annotated[Mix, PlainValidator(_mix), PlainSerializer(str, return_type=str, when_used="json")]
AsList = Strict(False)  # strict mode takes only a tuple for a tuple field; this lets a YAML list fill it
LowHigh = _require(lambda r: r[0] <= r[1], "write the range as low, high (the smaller bound first).")


class Section(BaseModel):
    """A params.yaml group: immutable, hashable, picklable; unknown keys and loose types rejected."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", strict=True, allow_inf_nan=False, validate_default=True
    )

    @model_validator(mode="before")
    @classmethod
    def _empty_is_defaults(cls, data: Any) -> Any:
        return {} if data is None else data  # `train:` with nothing under it means all defaults

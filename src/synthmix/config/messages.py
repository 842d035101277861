"""pydantic's ValidationError -> the one-paragraph message a user sees: the file, the dotted key
(e.g. `train.cnn.lr`), the value as written and what it must be."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ValidationError

_EXPECTED = {  # error type -> what the value must be (format fields come from the error's ctx)
    "int_type": "a whole number",
    "float_type": "a number",
    "finite_number": "a finite number",
    "bool_type": "true or false",
    "string_type": "a single text value (quote it if YAML reads it as a number or a list)",
    "tuple_type": "a list",
    "model_type": "a mapping of keys",
    "is_instance_of": "a path",  # the only is-instance check here is FilePath's
    "greater_than": "greater than {gt}",
    "greater_than_equal": "{ge} or more",
    "less_than": "less than {lt}",
    "less_than_equal": "{le} or less",
    "multiple_of": "a multiple of {multiple_of}",
    "too_short": "a list of at least {min_length} values",
    "too_long": "a list of at most {max_length} values",
    "literal_error": "{expected}",
}


def explain(exc: ValidationError, source: str, root: type[BaseModel]) -> str:
    """The first error of `exc` as one paragraph naming `source` and the dotted key (`root` is the
    model that was validated, to find each field's description)."""
    error = exc.errors(include_url=False)[0]
    loc, kind, value, ctx = error["loc"], error["type"], error.get("input"), error.get("ctx", {})
    if kind == "missing" and loc and isinstance(loc[-1], int):  # a fixed-length list with too few values
        loc, kind, ctx = loc[:-1], "too_short", {"min_length": loc[-1] + 1}
    key, section, field = _dotted(loc), root, None
    for part in (p for p in loc if isinstance(p, str)):  # walk to the field (None: an unknown key)
        section = field.annotation if field else section
        field = getattr(section, "model_fields", {}).get(part)
    if kind == "extra_forbidden":
        where, known = _dotted(loc[:-1]) or "the top level", ", ".join(sorted(section.model_fields))
        return f"In {source}, unknown key '{key}'. Known keys at {where}: {known}. Check the spelling."
    if kind == "value_error":
        reason = str(ctx["error"])
        return f"In {source}, {key} is {_show(value)}: {reason}" if key else f"In {source}, {reason}"
    expected = _EXPECTED[kind].format(**ctx) if kind in _EXPECTED else error["msg"].lower()
    expected = expected.replace("at least 1 values", "at least one value")
    why = f" ({field.description})" if field and field.description else ""
    return f"In {source}, {key or 'the top level'} is {_show(value)}; it must be {expected}{why}."


def _dotted(loc: tuple[int | str, ...]) -> str:
    """('study', 'mixes', 1) -> 'study.mixes[1]'."""
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).removeprefix(".")


def _show(value: Any) -> str:
    """A value as the YAML the user wrote: true, null, 'text', [1, 2]."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return json.dumps(value) if isinstance(value, bool) or value is None else repr(value)

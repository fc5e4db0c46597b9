"""Conversion of PHIL value text to typed Python values, with range checks."""

from __future__ import annotations

import math
import re

from ..errors import ParameterError
from .phil import Auto, Definition, _split_words


def convert(definition: Definition, words: str):
    """Typed value of ``words`` for ``definition``; ParameterError naming it if invalid."""
    kind = definition.type
    name, opts = kind.name, kind.options
    path = definition.path
    text = words.strip()
    if name == "choice":
        return _choice(definition, text)
    unquoted = " ".join(_split_words(text)) if text else ""
    if unquoted in ("None", ""):
        if name in ("int", "float", "ints", "floats") and opts.get("allow_none") is False:
            raise ParameterError(f"parameter {path}: a value is required (None is not allowed)")
        return None
    if unquoted.lower() == "auto" and name in ("int", "float", "ints", "floats", "bool"):
        return Auto
    if name in ("str", "path", "reflection_table_selector", "strings"):
        return unquoted
    if name == "bool":
        lowered = unquoted.lower()
        if lowered in ("true", "yes", "1", "on"):
            return True
        if lowered in ("false", "no", "0", "off"):
            return False
        raise ParameterError(f"parameter {path}: {unquoted!r} is not True or False")
    if name in ("int", "float"):
        return _number(path, unquoted, int if name == "int" else float, opts)
    if name in ("ints", "floats"):
        items = [w for w in re.split(r"[,\s]+", unquoted) if w]
        values = [_number(path, w, int if name == "ints" else float, opts) for w in items]
        size = opts.get("size")
        if size is not None and len(values) != size:
            raise ParameterError(f"parameter {path}: expected {size} values, got {len(values)} ({unquoted!r})")
        return values
    raise ParameterError(f"parameter {path}: unsupported type {kind}")


def _number(path: str, text: str, kind, opts: dict):
    try:
        value = kind(text)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise ParameterError(f"parameter {path}: {text!r} is not {what}") from None
    if kind is float and not math.isfinite(value):
        raise ParameterError(f"parameter {path}: {text!r} is not a finite number")
    low, high = opts.get("value_min"), opts.get("value_max")
    if low is not None and value < low:
        raise ParameterError(f"parameter {path}: {text} is below the minimum {low}")
    if high is not None and value > high:
        raise ParameterError(f"parameter {path}: {text} is above the maximum {high}")
    return value


def _choice(definition: Definition, text: str):
    choices = definition.choices()
    words = [w for w in _split_words(text) if w]
    starred = [w[1:] for w in words if w.startswith("*")]
    if len(words) > 1 or starred:
        # A full choice list (as in the master or a -c dump): the starred word wins.
        picked = starred[0] if starred else None
    else:
        picked = words[0] if words else None
    if picked in (None, "None"):
        return None
    if picked not in choices:
        # DIALS accepts a case-insensitive unique match (e.g. background.algorithm=auto).
        folded = [c for c in choices if c.lower() == picked.lower()]
        if len(folded) != 1:
            raise ParameterError(
                f"parameter {definition.path}: {picked!r} is not one of {', '.join(choices)}")
        picked = folded[0]
    return picked


def format_value(definition: Definition, value) -> str:
    """PHIL text of one value of ``definition``."""
    name = definition.type.name
    if name == "choice":
        return " ".join(("*" + c) if c == value else c for c in definition.choices())
    if value is None:
        return "None"
    if value is Auto:
        return "Auto"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, list):
        return ",".join(format_value_scalar(v) for v in value)
    if isinstance(value, str):
        if value == "" or re.search(r"[\s{}#=;\"']", value):
            return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return value
    return format_value_scalar(value)


def format_value_scalar(value) -> str:
    return repr(value) if isinstance(value, float) else str(value)

"""What ``integration.debug`` writes: shoeboxes per block, and the reference profiles.

``select`` expressions have the DIALS form ``column<op>value`` (op one of
< <= == != >= >), with the implicit columns ``intensity.sum.i_over_sigma``
and ``intensity.prf.i_over_sigma``.
"""

from __future__ import annotations

import operator
import os
import re

import numpy as np

from ..errors import ParameterError
from ..io.atomic import atomic_open
from ..io.refl import write_reflections
from ..models.flags import Flags
from ..models.reflection_table import ReflectionTable

_OPERATORS = {"<=": operator.le, ">=": operator.ge, "==": operator.eq, "!=": operator.ne, "<": operator.lt,
              ">": operator.gt}


def select_rows(table: ReflectionTable, expression: str | None) -> np.ndarray:
    """Boolean selection of ``column<op>value``; everything when ``expression`` is None."""
    if not expression:
        return np.ones(table.nrows, bool)
    match = re.fullmatch(r"\s*([\w.]+)\s*(<=|>=|==|!=|<|>)\s*(\S+)\s*", expression)
    if match is None:
        raise ParameterError(f"integration.debug.select={expression!r}: expected column<op>value, e.g. "
                             "intensity.sum.value>10")
    column, op, text = match.groups()
    if column.endswith(".i_over_sigma") and column.rsplit(".", 1)[0] + ".value" in table:
        stem = column.rsplit(".", 1)[0]
        with np.errstate(invalid="ignore", divide="ignore"):
            values = table[stem + ".value"] / np.sqrt(table[stem + ".variance"])
    elif column in table:
        values = np.asarray(table[column])
    else:
        raise ParameterError(f"integration.debug.select={expression!r}: no column {column!r}")
    try:
        threshold = float(text)
    except ValueError:
        raise ParameterError(f"integration.debug.select={expression!r}: {text!r} is not a number") from None
    return _OPERATORS[op](values, threshold)


def write_block_shoeboxes(directory: str, block: int, table: ReflectionTable, params) -> list[str]:
    """``shoeboxes_<block>[_<experiment>].refl`` of one block (``table`` carries its shoeboxes)."""
    debug = params.integration.debug
    keep = select_rows(table, debug.select)
    if debug.during == "modelling":
        keep &= table.get_flags(Flags.reference_spot)
    table = table.select(keep)
    written = []
    groups = np.unique(table["id"]) if debug.split_experiments else [None]
    for number in groups:
        part = table if number is None else table.select(table["id"] == number)
        suffix = "" if number is None else f"_{int(number)}"
        path = os.path.join(directory, f"shoeboxes_{block}{suffix}.refl")
        if debug.delete_shoeboxes and "shoebox" in part:
            del part["shoebox"]
        write_reflections(part, path)
        written.append(path)
    return written


def write_reference_profiles(path: str, references: dict) -> None:
    """The reference profiles (a numpy .npz archive, whatever the file's suffix).

    Per experiment N: ``profiles_N`` (P, G, G, G), ``usable_N``, ``counts_N``,
    ``centres_N`` (P, 3) in pixels and frames.
    """
    arrays = {}
    for number, model in references.items():
        arrays[f"profiles_{number}"] = model.profiles
        arrays[f"usable_{number}"] = model.usable
        arrays[f"counts_{number}"] = model.counts
        arrays[f"centres_{number}"] = model.sampler.coord(np.arange(model.sampler.size))
    with atomic_open(path, "wb") as handle:
        np.savez(handle, **arrays)

"""Splitting a group of a block's rows by experiment, putting the pieces back, and writing rows into a table.

Columns travelling with the rows are :class:`~braggint.models.shoebox.ShoeboxColumn`,
:class:`~braggint.models.fit_grids.FitGrids` or None (a column a group does not have).
"""

from __future__ import annotations

import numpy as np

from ..models.reflection_table import ReflectionTable


def per_experiment(table: ReflectionTable, *columns):
    """``(experiment id, rows, table part, column parts ...)`` per experiment, for columns of the same rows;
    no copies for one experiment."""
    numbers = np.unique(table["id"]) if table.nrows else []
    if len(numbers) == 1:
        yield (numbers[0], np.arange(table.nrows), table, *columns)
        return
    for number in numbers:
        rows = np.flatnonzero(table["id"] == number)
        yield (number, rows, table.select(rows), *(None if c is None else c.select(rows) for c in columns))


def reassemble(table: ReflectionTable, columns: tuple, pieces: list[tuple]) -> tuple:
    """Per-experiment pieces ``(rows, table part, column parts ...)`` put back in the group's row order:
    ``(table, columns ...)``; ``columns`` are the whole's, returned as they are when there is no piece.
    A column that a piece lacks (None) is None."""
    if len(pieces) == 1 and len(pieces[0][0]) == table.nrows:
        return pieces[0][1:]
    if not pieces:
        return (table, *columns)
    order = np.argsort(np.concatenate([piece[0] for piece in pieces]), kind="stable")
    merged = [ReflectionTable.concatenate([piece[1] for piece in pieces], table.identifiers).select(order)]
    for k in range(len(columns)):
        parts = [piece[2 + k] for piece in pieces]
        merged.append(None if any(p is None for p in parts) else type(parts[0]).concatenate(parts).select(order))
    return tuple(merged)


def put_rows(table: ReflectionTable, rows: np.ndarray, part) -> None:
    """Every column of ``part`` (a table of those rows, or a dict of some of its columns) written into
    ``table`` at ``rows`` (in place); a column ``table`` lacks is added, zero in the other rows."""
    for name in part.keys():
        if name not in table:
            values = np.asarray(part[name])
            table[name] = np.zeros((table.nrows,) + values.shape[1:], dtype=values.dtype)
        table[name][rows] = part[name]

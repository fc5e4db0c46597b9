"""The reflection table: named numpy columns of equal length.

Column kinds follow DIALS's type names (see :data:`COLUMN_TYPES`); vector
columns are 2-D arrays (n, 2|3|6), ``mat3<double>`` is (n, 3, 3), Miller
indices are (n, 3) int32, and ``Shoebox<>`` is a :class:`ShoeboxColumn`.
"""

from __future__ import annotations

import numpy as np

from .flags import Flags
from .shoebox import ShoeboxColumn, take_rows

#: DIALS type name -> (numpy dtype, trailing shape)
COLUMN_TYPES: dict[str, tuple[np.dtype, tuple[int, ...]]] = {
    "bool": (np.dtype(np.bool_), ()),
    "int": (np.dtype("<i4"), ()),
    "std::size_t": (np.dtype("<u8"), ()),
    "double": (np.dtype("<f8"), ()),
    "vec2<double>": (np.dtype("<f8"), (2,)),
    "vec3<double>": (np.dtype("<f8"), (3,)),
    "mat3<double>": (np.dtype("<f8"), (3, 3)),
    "int6": (np.dtype("<i4"), (6,)),
    "cctbx::miller::index<>": (np.dtype("<i4"), (3,)),
}
SHOEBOX_TYPE = "Shoebox<>"

#: Columns whose DIALS type cannot be told from dtype and shape alone.
_DEFAULT_TYPES = {"flags": "std::size_t", "panel": "std::size_t", "partial_id": "std::size_t",
                  "miller_index": "cctbx::miller::index<>", "bbox": "int6"}


def infer_type(name: str, value) -> str:
    """The DIALS type name a column would be written with."""
    if isinstance(value, ShoeboxColumn):
        return SHOEBOX_TYPE
    if name in _DEFAULT_TYPES:
        return _DEFAULT_TYPES[name]
    arr = np.asarray(value)
    tail = arr.shape[1:]
    if arr.dtype == np.bool_:
        return "bool"
    if np.issubdtype(arr.dtype, np.floating):
        return {(): "double", (2,): "vec2<double>", (3,): "vec3<double>", (3, 3): "mat3<double>"}[tail]
    if np.issubdtype(arr.dtype, np.unsignedinteger) and tail == ():
        return "std::size_t"
    if np.issubdtype(arr.dtype, np.integer):
        return {(): "int", (3,): "cctbx::miller::index<>", (6,): "int6"}[tail]
    raise TypeError(f"column {name!r}: cannot store dtype {arr.dtype} with shape {arr.shape}")


class ReflectionTable:
    """Columns of equal length plus the experiment-identifier map.

    ``identifiers`` maps the integer experiment ``id`` to the experiment's
    identifier string, as in the ``.expt`` file.
    """

    def __init__(self, nrows: int = 0, identifiers: dict[int, str] | None = None):
        self._nrows = int(nrows)
        self._columns: dict[str, np.ndarray | ShoeboxColumn] = {}
        self._types: dict[str, str] = {}
        self.identifiers: dict[int, str] = dict(identifiers or {})

    # ----- columns ------------------------------------------------------
    def __len__(self) -> int:
        return self._nrows

    @property
    def nrows(self) -> int:
        return self._nrows

    def __contains__(self, name: str) -> bool:
        return name in self._columns

    def keys(self) -> list[str]:
        return list(self._columns)

    def __getitem__(self, name: str):
        return self._columns[name]

    def __setitem__(self, name: str, value) -> None:
        self.set_column(name, value)

    def __delitem__(self, name: str) -> None:
        del self._columns[name]
        self._types.pop(name, None)

    def column_type(self, name: str) -> str:
        return self._types[name]

    def set_column(self, name: str, value, type_name: str | None = None) -> None:
        """Add or replace a column, converting it to the type's dtype and shape."""
        if not self._columns and self._nrows == 0:
            self._nrows = len(value)
        if len(value) != self._nrows:
            raise ValueError(f"column {name!r} has {len(value)} rows, table has {self._nrows}")
        type_name = type_name or infer_type(name, value)
        if type_name != SHOEBOX_TYPE:
            dtype, tail = COLUMN_TYPES[type_name]
            value = np.ascontiguousarray(value, dtype=dtype).reshape((self._nrows, *tail))
        self._columns[name] = value
        self._types[name] = type_name

    def shallow_copy(self) -> "ReflectionTable":
        """A new table holding this one's column arrays themselves (no copy): adding, replacing or
        deleting a column of either leaves the other's columns as they were, but writing into a shared
        array changes both."""
        out = ReflectionTable(self._nrows, self.identifiers)
        out._columns, out._types = dict(self._columns), dict(self._types)
        return out

    def without(self, names) -> "ReflectionTable":
        """A :meth:`shallow_copy` without the columns ``names`` (those of them it has)."""
        out = self.shallow_copy()
        for name in names:
            if name in out:
                del out[name]
        return out

    def add_default_columns(self, like: "ReflectionTable") -> None:
        """Add the columns of ``like`` that this table lacks, each of ``like``'s type and holding that type's
        default in every row (zeros; shoeboxes without pixels), as a DIALS table extended with another
        gains the other's columns."""
        for name, type_name in like._types.items():
            if name in self._columns:
                continue
            if type_name == SHOEBOX_TYPE:
                default = ShoeboxColumn.empty_boxes(np.zeros(self._nrows), np.zeros((self._nrows, 6)))
            else:
                dtype, tail = COLUMN_TYPES[type_name]
                default = np.zeros((self._nrows, *tail), dtype)
            self.set_column(name, default, type_name)

    # ----- rows ---------------------------------------------------------
    def select(self, index) -> "ReflectionTable":
        """A new table with the rows picked by a boolean mask or integer index."""
        index = np.asarray(index)
        if index.dtype == bool:
            if len(index) != self._nrows:
                raise ValueError(f"selection of length {len(index)} for a table of {self._nrows} rows")
            index = np.flatnonzero(index)
        out = ReflectionTable(len(index), self.identifiers)
        for name, value in self._columns.items():
            out._columns[name] = value.select(index) if isinstance(value, ShoeboxColumn) else take_rows(value, index)
            out._types[name] = self._types[name]
        return out

    def extend(self, other: "ReflectionTable") -> None:
        """Append the rows of ``other`` (same columns) in place."""
        joined = ReflectionTable.concatenate([self, other], self.identifiers)
        self._nrows, self._columns, self._types, self.identifiers = (joined._nrows, joined._columns, joined._types,
                                                                      joined.identifiers)

    @classmethod
    def concatenate(cls, tables: list["ReflectionTable"], identifiers: dict[int, str] | None = None
                    ) -> "ReflectionTable":
        """The rows of ``tables`` in order (each column copied once); empty tables without columns are skipped.

        ``identifiers`` starts the identifier map; each table's identifiers
        are added, and an id given two different identifiers is an error.
        """
        out = cls(0, identifiers)
        with_columns = [table for table in tables if table._columns or table._nrows]
        for table in tables:
            for key, ident in table.identifiers.items():
                if out.identifiers.get(key, ident) != ident:
                    raise ValueError(f"experiment id {key} has two identifiers: {out.identifiers[key]} and {ident}")
                out.identifiers[key] = ident
        if not with_columns:
            return out
        names = set(with_columns[0]._columns)
        for table in with_columns[1:]:
            if set(table._columns) != names:
                raise ValueError("tables to concatenate have different columns: "
                                 f"{sorted(names ^ set(table._columns))}")
        first = with_columns[0]
        for name, value in first._columns.items():
            parts = [table._columns[name] for table in with_columns]
            out._columns[name] = (ShoeboxColumn.concatenate(parts) if isinstance(value, ShoeboxColumn)
                                  else np.concatenate(parts))
            out._types[name] = first._types[name]
        out._nrows = sum(table._nrows for table in with_columns)
        return out

    def sort(self, name: str, reverse: bool = False) -> None:
        """Stable sort of all rows by one column (vector columns sort lexicographically)."""
        value = self._columns[name]
        if value.ndim == 1:
            order = np.argsort(value, kind="stable")
        else:
            order = np.lexsort(value.reshape(self._nrows, -1).T[::-1])
        if reverse:
            order = order[::-1]
        sorted_table = self.select(order)
        self._columns, self._types = sorted_table._columns, sorted_table._types

    # ----- flags --------------------------------------------------------
    def _flags(self) -> np.ndarray:
        if "flags" not in self._columns:
            self.set_column("flags", np.zeros(self._nrows, np.uint64))
        return self._columns["flags"]

    def get_flags(self, flag: int, all: bool = True) -> np.ndarray:
        """Rows whose flags contain every bit of ``flag`` (``all``) or any of them."""
        bits = np.uint64(int(flag))
        masked = self._flags() & bits
        return masked == bits if all else masked != 0

    def set_flags(self, selection, flag: int) -> None:
        flags = self._flags()
        flags[np.asarray(selection)] |= np.uint64(int(flag))

    def unset_flags(self, selection, flag: int) -> None:
        flags = self._flags()
        flags[np.asarray(selection)] &= ~np.uint64(int(flag))

    def flag_names(self, row: int) -> list[str]:
        """Names of the single-bit flags set on one row."""
        value = int(self._flags()[row])
        return [f.name for f in Flags if f.value & (f.value - 1) == 0 and value & f.value]

    def __repr__(self) -> str:
        return f"<ReflectionTable {self._nrows} rows, columns {self.keys()}>"

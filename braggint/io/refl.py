"""Read and write DIALS reflection tables (``.refl``, msgpack).

Layout: ``["dials::af::reflection_table", VERSION, {"identifiers": {id: str},
"nrows": N, "data": {name: [TYPE_NAME, [N, raw little-endian bytes]]}}]``.
Version 1 stores shoebox masks as int32, version 2 as uint8.  braggint reads
both and writes version 1 by default, the one DIALS 3.12 reads.
"""

from __future__ import annotations

import gzip
import struct

import msgpack
import numpy as np
from numba import njit

from ..errors import InputFileError, require_file
from ..models.reflection_table import COLUMN_TYPES, SHOEBOX_TYPE, ReflectionTable
from ..models.shoebox import ShoeboxColumn, bbox_volume, ragged_offsets
from .atomic import atomic_open

MAGIC = "dials::af::reflection_table"
_HEADER = struct.Struct("<I6iB")  # panel, bbox x0 x1 y0 y1 z0 z1, presence/layout byte

#: What :func:`read_reflections` calls its file in errors.
REFLECTION_FILE = "reflection file"


def read_reflections(path: str) -> ReflectionTable:
    """Load a ``.refl`` file; raise :class:`InputFileError` naming the file on failure."""
    require_file(path, REFLECTION_FILE)
    with open(path, "rb") as handle:
        raw = handle.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    try:
        document = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except (msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, ValueError, UnicodeDecodeError) as exc:
        raise InputFileError(f"{path}: not a msgpack reflection table ({exc})") from None
    del raw  # the document holds a copy of every column: the file's bytes are not needed any more
    try:
        return table_from_msgpack(document)
    except InputFileError as exc:
        raise InputFileError(f"{path}: {exc}") from None


def table_from_msgpack(document) -> ReflectionTable:
    """The table a DIALS msgpack document holds.  Each column's bytes are taken out of ``document`` as the
    column is decoded, so that the document and the table together never hold more than one column twice."""
    if not (isinstance(document, list) and len(document) == 3 and document[0] == MAGIC):
        raise InputFileError("not a DIALS reflection table (bad msgpack header)")
    version, header = document[1], document[2]
    if version not in (1, 2):
        raise InputFileError(f"unsupported reflection-table version {version}")
    if not isinstance(header, dict) or "nrows" not in header or "data" not in header:
        raise InputFileError("reflection table header lacks nrows/data")
    unknown = set(header) - {"identifiers", "nrows", "data"}
    if unknown:
        raise InputFileError(f"reflection table header has unknown keys {sorted(unknown)}")
    nrows = int(header["nrows"])
    table = ReflectionTable(nrows, {int(k): v for k, v in (header.get("identifiers") or {}).items()})
    columns = header["data"]
    for name in list(columns):
        column = columns.pop(name)
        try:
            type_name, (count, payload) = column
        except (TypeError, ValueError):
            raise InputFileError(f"column {name!r} is malformed") from None
        if count != nrows:
            raise InputFileError(f"column {name!r} has {count} rows, table has {nrows}")
        if type_name == SHOEBOX_TYPE:
            table.set_column(name, _decode_shoeboxes(payload, nrows, name), SHOEBOX_TYPE)
        elif type_name in COLUMN_TYPES:
            dtype, tail = COLUMN_TYPES[type_name]
            expected = nrows * dtype.itemsize * int(np.prod(tail, dtype=int))
            if len(payload) != expected:
                raise InputFileError(f"column {name!r} holds {len(payload)} bytes, expected {expected}")
            values = np.frombuffer(payload, dtype=dtype).reshape((nrows, *tail)).copy()
            table.set_column(name, values, type_name)
        else:
            raise InputFileError(f"column {name!r} has unsupported type {type_name!r}")
    return table


def _decode_shoeboxes(payload: bytes, nrows: int, name: str) -> ShoeboxColumn:
    """The shoebox column's records: per row the header (:data:`_HEADER`), then, when present, its
    float32 data, mask (int32 in layout 1, uint8 otherwise) and float32 background."""
    raw = np.frombuffer(payload, np.uint8)
    panel, bbox, sizes, end, bad_row = _scan_shoebox_records(raw, nrows, _HEADER.size)
    if bad_row >= 0:
        raise InputFileError(f"column {name!r}: shoebox data truncated at row {bad_row}")
    if end != len(payload):
        raise InputFileError(f"column {name!r}: {len(payload) - end} stray bytes after the last shoebox")
    offsets = ragged_offsets(sizes)
    data, mask, background = _copy_shoebox_records(raw, nrows, _HEADER.size, offsets)
    return ShoeboxColumn(panel, bbox, sizes > 0, offsets, data.view(np.float32), mask, background.view(np.float32))


@njit(cache=True, error_model="numpy")
def _le_int(raw, pos, signed):
    """The little-endian 32-bit integer at byte ``pos`` (records are not aligned)."""
    value = np.int64(raw[pos]) | (np.int64(raw[pos + 1]) << 8) | (np.int64(raw[pos + 2]) << 16) | (
        np.int64(raw[pos + 3]) << 24)
    if signed and value >= 1 << 31:
        value -= 1 << 32
    return value


@njit(cache=True, error_model="numpy")
def _record_bytes(layout, n):
    """Bytes of a present shoebox's voxels after its header: data, mask, background."""
    return n * (8 + (4 if layout == 1 else 1))


@njit(cache=True, error_model="numpy")
def _scan_shoebox_records(raw, nrows, header):
    """``(panel, bbox, voxels per row (0 when absent), end of the last record, first truncated row or -1)``."""
    panel = np.zeros(nrows, np.uint32)
    bbox = np.zeros((nrows, 6), np.int32)
    sizes = np.zeros(nrows, np.int64)
    pos = 0
    for row in range(nrows):
        if pos + header > len(raw):
            return panel, bbox, sizes, pos, row
        panel[row] = _le_int(raw, pos, False)
        for k in range(6):
            bbox[row, k] = _le_int(raw, pos + 4 + 4 * k, True)
        layout = raw[pos + header - 1]
        pos += header
        if layout == 0:
            continue
        n = (bbox[row, 1] - bbox[row, 0]) * (bbox[row, 3] - bbox[row, 2]) * (bbox[row, 5] - bbox[row, 4])
        if n < 0 or pos + _record_bytes(layout, n) > len(raw):
            return panel, bbox, sizes, pos, row
        sizes[row] = n
        pos += _record_bytes(layout, n)
    return panel, bbox, sizes, pos, -1


@njit(cache=True, error_model="numpy")
def _copy_shoebox_records(raw, nrows, header, offsets):
    """The records' data and background bytes (float32 once viewed so) and masks (uint8; an int32 mask's
    low byte), concatenated in row order."""
    data = np.empty(4 * offsets[-1], np.uint8)
    background = np.empty(4 * offsets[-1], np.uint8)
    mask = np.empty(offsets[-1], np.uint8)
    pos = 0
    for row in range(nrows):
        layout = raw[pos + header - 1]
        pos += header
        if layout == 0:
            continue
        n = offsets[row + 1] - offsets[row]
        first = offsets[row]
        data[4 * first:4 * (first + n)] = raw[pos:pos + 4 * n]
        pos += 4 * n
        width = 4 if layout == 1 else 1
        for v in range(n):
            mask[first + v] = raw[pos + width * v]
        pos += width * n
        background[4 * first:4 * (first + n)] = raw[pos:pos + 4 * n]
        pos += 4 * n
    return data, mask, background


def _encode_shoeboxes(column: ShoeboxColumn, version: int) -> bytes:
    layout = 1 if version == 1 else 2
    mask_dtype = np.dtype("<i4") if version == 1 else np.dtype(np.uint8)
    expected = bbox_volume(column.bbox)
    chunks = []
    for row in range(len(column)):
        x0, x1, y0, y1, z0, z1 = (int(v) for v in column.bbox[row])
        if not column.has_pixels[row]:
            chunks.append(_HEADER.pack(int(column.panel[row]), x0, x1, y0, y1, z0, z1, 0))
            continue
        a, b = int(column.offsets[row]), int(column.offsets[row + 1])
        if b - a != expected[row]:
            raise ValueError(f"shoebox {row}: {b - a} voxels for a bbox of {expected[row]}")
        chunks.append(_HEADER.pack(int(column.panel[row]), x0, x1, y0, y1, z0, z1, layout))
        chunks.append(column.data[a:b].astype("<f4").tobytes())
        chunks.append(column.mask[a:b].astype(mask_dtype).tobytes())
        chunks.append(column.background[a:b].astype("<f4").tobytes())
    return b"".join(chunks)


def table_to_msgpack(table: ReflectionTable, version: int = 1) -> bytes:
    data = {}
    for name in table.keys():
        type_name = table.column_type(name)
        value = table[name]
        if type_name == SHOEBOX_TYPE:
            payload = _encode_shoeboxes(value, version)
        else:
            dtype, _ = COLUMN_TYPES[type_name]
            payload = np.ascontiguousarray(value, dtype=dtype).tobytes()
        data[name] = [type_name, [table.nrows, payload]]
    header = {"identifiers": dict(table.identifiers), "nrows": table.nrows, "data": data}
    return msgpack.packb([MAGIC, version, header], use_bin_type=True)


def write_reflections(table: ReflectionTable, path: str, version: int = 1) -> None:
    """Write a ``.refl`` file atomically (temporary name, then rename)."""
    payload = table_to_msgpack(table, version)
    with atomic_open(path, "wb") as handle:
        handle.write(payload)

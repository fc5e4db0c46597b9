"""Read and write DIALS reflection tables (``.refl``, msgpack).

Layout: ``["dials::af::reflection_table", VERSION, {"identifiers": {id: str},
"nrows": N, "data": {name: [TYPE_NAME, [N, raw little-endian bytes]]}}]``.
Version 1 stores shoebox masks as int32, version 2 as uint8.  braggint reads
both and writes version 1 by default, the one DIALS 3.12 reads.
"""

from __future__ import annotations

import gzip
import io
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
_HEADER_SIZE = _HEADER.size

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


#: Rows of shoeboxes encoded and written at a time: the column's bytes are never held whole.
ENCODE_ROWS = 4096


def _shoebox_chunks(column: ShoeboxColumn, version: int):
    """``(bytes of the whole column, generator of its records' bytes in chunks of ENCODE_ROWS rows)``."""
    layout = 1 if version == 1 else 2
    mask_width = 4 if layout == 1 else 1
    voxels = bbox_volume(column.bbox)
    present = np.asarray(column.has_pixels, bool)
    stored = np.diff(column.offsets)
    wrong = np.flatnonzero(present & (stored != voxels))
    if len(wrong):
        row = int(wrong[0])
        raise ValueError(f"shoebox {row}: {stored[row]} voxels for a bbox of {voxels[row]}")
    starts = ragged_offsets(_HEADER.size + np.where(present, voxels * (8 + mask_width), 0))
    # Views, not copies, of a column in the file's types (float32, one-byte masks) and byte order.
    arrays = (np.asarray(column.panel, "<u4"), np.asarray(column.bbox, "<i4"), present, column.offsets,
              np.ascontiguousarray(column.data, "<f4").view(np.uint8), np.asarray(column.mask, np.uint8),
              np.ascontiguousarray(column.background, "<f4").view(np.uint8))

    def chunks():
        for first in range(0, len(column), ENCODE_ROWS):
            last = min(first + ENCODE_ROWS, len(column))
            out = np.empty(int(starts[last] - starts[first]), np.uint8)
            _encode_shoebox_records(*arrays, layout, first, last, starts, out)
            yield out
            del out  # before the next chunk is made: one chunk alive at a time

    return int(starts[-1]), chunks()


@njit(cache=True, error_model="numpy")
def _encode_shoebox_records(panel, bbox, present, offsets, data, mask, background, layout, first, last, starts, out):
    """Records ``first:last`` (see :func:`_decode_shoeboxes`) into ``out``, record r at ``starts[r] -
    starts[first]``; ``data`` and ``background`` are the float32 arrays' bytes (little-endian), a mask is
    written as int32 in layout 1 (its value is below 256), as one byte otherwise."""
    header = _HEADER_SIZE
    for row in range(first, last):
        pos = starts[row] - starts[first]
        _put_le_int(out, pos, np.int64(panel[row]))
        for k in range(6):
            _put_le_int(out, pos + 4 + 4 * k, np.int64(bbox[row, k]))
        out[pos + header - 1] = layout if present[row] else 0
        pos += header
        if not present[row]:
            continue
        lo, n = offsets[row], offsets[row + 1] - offsets[row]
        out[pos:pos + 4 * n] = data[4 * lo:4 * (lo + n)]
        pos += 4 * n
        width = 4 if layout == 1 else 1
        for v in range(n):
            out[pos + width * v] = mask[lo + v]
            for b in range(1, width):
                out[pos + width * v + b] = 0
        pos += width * n
        out[pos:pos + 4 * n] = background[4 * lo:4 * (lo + n)]


@njit(inline="always")
def _put_le_int(out, pos, value):
    """The 32-bit two's-complement little-endian bytes of ``value`` at byte ``pos``."""
    value &= 0xFFFFFFFF
    for b in range(4):
        out[pos + b] = (value >> (8 * b)) & 0xFF


def _bin_header(length: int) -> bytes:
    """msgpack's header of a bin object of ``length`` bytes (the shortest form, as msgpack writes it)."""
    if length < 1 << 8:
        return struct.pack(">BB", 0xC4, length)
    if length < 1 << 16:
        return struct.pack(">BH", 0xC5, length)
    return struct.pack(">BI", 0xC6, length)


def write_table(table: ReflectionTable, handle, version: int = 1) -> None:
    """Write ``table`` to the binary file ``handle`` as a DIALS msgpack document, column by column: the
    bytes are those of msgpack packing the whole document, but no column is copied whole (numeric
    columns are written from their arrays, shoeboxes encoded a chunk of rows at a time)."""
    packer = msgpack.Packer(use_bin_type=True)
    handle.write(packer.pack_array_header(3) + packer.pack(MAGIC) + packer.pack(version) + packer.pack_map_header(3))
    handle.write(packer.pack("identifiers") + packer.pack(dict(table.identifiers)) + packer.pack("nrows")
                 + packer.pack(table.nrows) + packer.pack("data") + packer.pack_map_header(len(table.keys())))
    for name in table.keys():
        type_name = table.column_type(name)
        handle.write(packer.pack(name) + packer.pack_array_header(2) + packer.pack(type_name)
                     + packer.pack_array_header(2) + packer.pack(table.nrows))
        if type_name == SHOEBOX_TYPE:
            length, chunks = _shoebox_chunks(table[name], version)
            handle.write(_bin_header(length))
            for chunk in chunks:
                handle.write(chunk)
                del chunk
        else:
            dtype, _ = COLUMN_TYPES[type_name]
            values = np.ascontiguousarray(table[name], dtype=dtype)
            handle.write(_bin_header(values.nbytes))
            handle.write(values.reshape(-1).view(np.uint8).data)


def table_to_msgpack(table: ReflectionTable, version: int = 1) -> bytes:
    """The bytes of ``table`` as a DIALS msgpack document (see :func:`write_table`)."""
    buffer = io.BytesIO()
    write_table(table, buffer, version)
    return buffer.getvalue()


def write_reflections(table: ReflectionTable, path: str, version: int = 1) -> None:
    """Write a ``.refl`` file atomically (temporary name, then rename), a column at a time."""
    with atomic_open(path, "wb") as handle:
        write_table(table, handle, version)

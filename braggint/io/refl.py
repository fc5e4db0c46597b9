"""Read and write DIALS reflection tables (``.refl``, msgpack).

Layout: ``["dials::af::reflection_table", VERSION, {"identifiers": {id: str},
"nrows": N, "data": {name: [TYPE_NAME, [N, raw little-endian bytes]]}}]``.
Version 1 stores shoebox masks as int32, version 2 as uint8.  braggint reads
both and writes version 1 by default, the one DIALS 3.12 reads.

Neither reading nor writing holds the document whole: the document is
walked in the file, columns going straight between their arrays and the
file, and shoeboxes a window (reading) or a chunk of rows (writing) at a
time.  A table of strong spots with shoeboxes is mostly its shoebox column,
so holding its bytes and the decoded table at once had doubled memory.
"""

from __future__ import annotations

import gzip
import io
import mmap
import struct

import msgpack
import numpy as np
from numba import njit

from ..errors import InputFileError, require_file
from ..models.reflection_table import COLUMN_TYPES, SHOEBOX_TYPE, ReflectionTable
from ..models.shoebox import ShoeboxColumn, bbox_volume, ragged_offsets
from .atomic import atomic_open
from .little_endian import read_int

MAGIC = "dials::af::reflection_table"
#: Bytes of a shoebox record's header, little-endian "<I6iB": panel, bbox x0 x1 y0 y1 z0 z1, then a layout
#: byte (0: no voxels follow; 1: int32 masks; 2: one-byte masks).
_HEADER_SIZE = struct.calcsize("<I6iB")

#: What :func:`read_reflections` calls its file in errors.
REFLECTION_FILE = "reflection file"


#: Bytes of a shoebox column read at a time (grown for a record that is larger).
WINDOW_BYTES = 16 << 20
#: What a malformed (or badly gzipped) document raises while it is walked.
_MSGPACK_ERRORS = (msgpack.OutOfData, msgpack.FormatError, msgpack.StackError, ValueError, UnicodeDecodeError,
                   struct.error, gzip.BadGzipFile, EOFError)


def read_reflections(path: str, shoebox_background: bool = True) -> ReflectionTable:
    """Load a ``.refl`` file; raise :class:`InputFileError` naming the file on failure.

    The document is walked in the file, never held whole: each numeric
    column is read straight into its array and the shoebox column through
    windows of :data:`WINDOW_BYTES` of the file mapped in turn, so reading
    holds the table and maps one window (a gzipped file is decompressed
    into memory first, and its windows are slices of that).
    """
    require_file(path, REFLECTION_FILE)
    with open(path, "rb") as handle:
        gzipped = handle.read(2) == b"\x1f\x8b"
        handle.seek(0)
        try:
            return _read_table(io.BytesIO(gzip.decompress(handle.read())) if gzipped else handle, shoebox_background)
        except InputFileError as exc:
            raise InputFileError(f"{path}: {exc}") from None
        except _MSGPACK_ERRORS as exc:
            raise InputFileError(f"{path}: not a msgpack reflection table ({type(exc).__name__}: {exc})") from None


def _read_table(handle, shoebox_background: bool = True) -> ReflectionTable:
    """The table of the DIALS msgpack document in the binary file ``handle`` (at its start); shoeboxes with
    or without their background values (see :func:`read_reflections`)."""
    header, columns = _walk_document(handle)
    if "nrows" not in header or "data" not in header:
        raise InputFileError("reflection table header lacks nrows/data")
    unknown = set(header) - {"identifiers", "nrows", "data"}
    if unknown:
        raise InputFileError(f"reflection table header has unknown keys {sorted(unknown)}")
    nrows = int(header["nrows"])
    table = ReflectionTable(nrows, {int(k): v for k, v in (header.get("identifiers") or {}).items()})
    for name, type_name, count, start, length in columns:
        if count != nrows:
            raise InputFileError(f"column {name!r} has {count} rows, table has {nrows}")
        if type_name == SHOEBOX_TYPE:
            table.set_column(name, _read_shoeboxes(handle, start, length, nrows, name, shoebox_background),
                             SHOEBOX_TYPE)
        elif type_name in COLUMN_TYPES:
            table.set_column(name, _read_column(handle, start, length, nrows, name, type_name), type_name)
        else:
            raise InputFileError(f"column {name!r} has unsupported type {type_name!r}")
    return table


def _walk_document(handle) -> tuple[dict, list[tuple[str, str, int, int, int]]]:
    """``(header, columns)`` of the document in ``handle``: the header's small entries (``data`` marked
    True), and per column its name, type, row count and where its bytes start in the file and how many."""
    if _next(handle, "array") != 3 or _next(handle, "value") != MAGIC:
        raise InputFileError("not a DIALS reflection table (bad msgpack header)")
    version = _next(handle, "value")
    if version not in (1, 2):
        raise InputFileError(f"unsupported reflection-table version {version}")
    header: dict = {}
    columns = []
    for _ in range(_next(handle, "map")):
        key = _next(handle, "value")
        if key != "data":
            header[key] = _next(handle, "value")
            continue
        header[key] = True
        for _ in range(_next(handle, "map")):
            name = _next(handle, "value")
            if _next(handle, "array") != 2:
                raise InputFileError(f"column {name!r} is malformed")
            type_name = _next(handle, "value")
            if _next(handle, "array") != 2:
                raise InputFileError(f"column {name!r} is malformed")
            count = _next(handle, "value")
            length = _bin_length(handle, name)
            columns.append((name, type_name, count, handle.tell(), length))
            handle.seek(length, io.SEEK_CUR)
    if handle.read(1):
        raise InputFileError("not a msgpack reflection table (extra data after the document)")
    return header, columns


def _read_column(handle, start: int, length: int, nrows: int, name: str, type_name: str) -> np.ndarray:
    """A numeric column's ``length`` bytes at ``start``, read straight into its array."""
    dtype, tail = COLUMN_TYPES[type_name]
    values = np.empty((nrows, *tail), dtype)
    if length != values.nbytes:
        raise InputFileError(f"column {name!r} holds {length} bytes, expected {values.nbytes}")
    handle.seek(start)
    if handle.readinto(values.reshape(-1).view(np.uint8)) != length:
        raise InputFileError(f"column {name!r} is cut short")
    return values


def _next(handle, what: str):
    """The next small msgpack item in ``handle``: a whole ``"value"``, or an ``"array"`` or ``"map"``
    header's length; ``handle`` is left just after it."""
    start = handle.tell()
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
    read = {"value": unpacker.unpack, "array": unpacker.read_array_header, "map": unpacker.read_map_header}[what]
    step = 4096
    while True:
        chunk = handle.read(step)
        if not chunk:
            raise msgpack.OutOfData("the file ends inside the document")
        unpacker.feed(chunk)
        try:
            item = read()
            break
        except msgpack.OutOfData:
            step *= 2
    handle.seek(start + unpacker.tell())
    return item


def _bin_length(handle, name: str) -> int:
    """The length of the msgpack bin object whose header starts at ``handle`` (left at its first byte)."""
    formats = {b"\xc4": ">B", b"\xc5": ">H", b"\xc6": ">I"}
    kind = handle.read(1)
    if kind not in formats:
        raise InputFileError(f"column {name!r} is malformed")
    return struct.unpack(formats[kind], handle.read(struct.calcsize(formats[kind])))[0]


def _read_shoeboxes(handle, start: int, length: int, nrows: int, name: str, with_background: bool = True
                    ) -> ShoeboxColumn:
    """The shoebox column whose ``length`` bytes start at ``start`` in ``handle``: per row the header
    (:data:`_HEADER_SIZE` bytes), then, when present, its float32 data, mask (int32 in layout 1, uint8 otherwise) and
    float32 background (left zero unless ``with_background``).  Read twice through windows of the file: once for
    the boxes (and so the voxels to hold), once for the voxels."""
    panel = np.zeros(nrows, np.uint32)
    bbox = np.zeros((nrows, 6), np.int32)
    sizes = np.zeros(nrows, np.int64)
    view = _byte_views(handle)
    _each_window(view, start, length, nrows, name,
                 lambda raw, row: _scan_shoebox_records(raw, row, nrows, panel, bbox, sizes))
    offsets = ragged_offsets(sizes)
    data = np.empty(4 * offsets[-1], np.uint8)
    mask = np.empty(offsets[-1], np.uint8)
    # Zeros from the allocator are pages the kernel maps on first write: none when the background is skipped.
    background = np.empty(4 * offsets[-1], np.uint8) if with_background else np.zeros(4 * offsets[-1], np.uint8)
    copied_background = background if with_background else background[:0]
    _each_window(view, start, length, nrows, name,
                 lambda raw, row: _copy_shoebox_records(raw, row, nrows, offsets, data, mask, copied_background))
    return ShoeboxColumn(panel, bbox, sizes > 0, offsets, data.view(np.float32), mask, background.view(np.float32))


def _byte_views(handle):
    """``view(position, n)``: bytes ``position:position + n`` of ``handle`` as a uint8 array, read in place, not
    copied: a mapping of the file's pages (unmapped once the array is dropped), or a slice of the buffer of a
    decompressed file (an :class:`io.BytesIO`).  Mapped windows spare the memory a read window takes, which
    this process would touch afresh, and a copy of every byte."""
    if isinstance(handle, io.BytesIO):
        whole = np.frombuffer(handle.getbuffer(), np.uint8)
        return lambda position, n: whole[position:position + n]
    fileno = handle.fileno()

    def view(position: int, n: int) -> np.ndarray:
        if n == 0:
            return np.empty(0, np.uint8)
        base = position - position % mmap.ALLOCATIONGRANULARITY
        mapped = mmap.mmap(fileno, position - base + n, access=mmap.ACCESS_READ, offset=base)
        return np.frombuffer(mapped, np.uint8, n, position - base)

    return view


def _each_window(view, start: int, length: int, nrows: int, name: str, consume) -> None:
    """Feed the ``length`` bytes at ``start`` (``view``: see :func:`_byte_views`) to ``consume(window, row) ->
    (next row, bytes used)`` a window of whole records at a time, ``row`` being the first record in the
    window, until every row is consumed.  A window spans :data:`WINDOW_BYTES`, or twice as many as a record
    that did not fit in it."""
    position, row, span = 0, 0, WINDOW_BYTES
    while row < nrows:
        take = min(span, length - position)
        reached, used = consume(view(start + position, take), row)
        if reached == row:
            if take == length - position or used < 0:  # no whole record left, or one whose bbox has a negative size
                raise InputFileError(f"column {name!r}: shoebox data truncated at row {row}")
            span *= 2  # a record larger than the window
            continue
        position, row = position + used, reached
    if position != length:
        raise InputFileError(f"column {name!r}: {length - position} stray bytes after the last shoebox")


@njit(cache=True, error_model="numpy")
def _record_bytes(layout, n):
    """Bytes of a shoebox record's voxels after its header: data, mask, background (none when absent)."""
    return 0 if layout == 0 else n * (8 + (4 if layout == 1 else 1))


@njit(cache=True, error_model="numpy")
def _scan_shoebox_records(raw, row, nrows, panel, bbox, sizes):
    """Read the panel, bbox and voxel count (0 when absent) of the whole records in ``raw``, the first being
    row ``row``; returns ``(the row after the last whole record, bytes they take)``, or ``(row, -1)`` at a
    record whose bbox gives a negative size."""
    header = _HEADER_SIZE
    pos = 0
    while row < nrows and pos + header <= len(raw):
        layout = raw[pos + header - 1]
        n = 0
        if layout != 0:
            n = (read_int(raw, pos + 8, 4, True) - read_int(raw, pos + 4, 4, True)) * (
                read_int(raw, pos + 16, 4, True) - read_int(raw, pos + 12, 4, True)) * (
                read_int(raw, pos + 24, 4, True) - read_int(raw, pos + 20, 4, True))
            if n < 0:
                return row, -1
        if pos + header + _record_bytes(layout, n) > len(raw):
            break
        panel[row] = read_int(raw, pos, 4, False)
        for k in range(6):
            bbox[row, k] = read_int(raw, pos + 4 + 4 * k, 4, True)
        sizes[row] = n
        pos += header + _record_bytes(layout, n)
        row += 1
    return row, pos


@njit(cache=True, error_model="numpy")
def _copy_shoebox_records(raw, row, nrows, offsets, data, mask, background):
    """Copy the voxels of the whole records in ``raw`` (the first being row ``row``, their sizes known from
    :func:`_scan_shoebox_records`) into the data and background bytes (float32 once viewed so; the background
    skipped when ``background`` is empty) and masks (uint8; an int32 mask's low byte) at ``offsets``; returns
    ``(the row after the last whole record, bytes they take)``."""
    header = _HEADER_SIZE
    pos = 0
    while row < nrows and pos + header <= len(raw):
        layout = raw[pos + header - 1]
        n = offsets[row + 1] - offsets[row]
        if pos + header + _record_bytes(layout, n) > len(raw):
            break
        pos += header
        if layout != 0:
            first = offsets[row]
            data[4 * first:4 * (first + n)] = raw[pos:pos + 4 * n]
            pos += 4 * n
            width = 4 if layout == 1 else 1
            for v in range(n):
                mask[first + v] = raw[pos + width * v]
            pos += width * n
            if len(background):
                background[4 * first:4 * (first + n)] = raw[pos:pos + 4 * n]
            pos += 4 * n
        row += 1
    return row, pos


#: Rows of shoeboxes encoded and written at a time: the column's bytes are never held whole.
ENCODE_ROWS = 4096


def _shoebox_chunks(column: ShoeboxColumn, version: int):
    """``(bytes of the whole column, generator of its records' bytes in chunks of ENCODE_ROWS rows)``."""
    layout = 1 if version == 1 else 2
    voxels = bbox_volume(column.bbox)
    present = np.asarray(column.has_pixels, bool)
    stored = np.diff(column.offsets)
    wrong = np.flatnonzero(present & (stored != voxels))
    if len(wrong):
        row = int(wrong[0])
        raise ValueError(f"shoebox {row}: {stored[row]} voxels for a bbox of {voxels[row]}")
    starts = ragged_offsets(_HEADER_SIZE + np.where(present, voxels * _record_bytes(layout, 1), 0))
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
    """Records ``first:last`` (see :func:`_read_shoeboxes`) into ``out``, record r at ``starts[r] -
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

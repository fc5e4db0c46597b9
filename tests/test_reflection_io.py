"""Reflection tables: byte-exact round trips of every shared .refl, agreement
with a plain msgpack + numpy reading, and the table helpers."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
from helpers import assert_same_tables

from braggint.errors import InputFileError
from braggint.io.refl import read_reflections, table_to_msgpack, write_reflections
from braggint.models import Flags, MaskCode, ReflectionTable, ShoeboxColumn
from braggint.models.shoebox import bbox_volume, ragged_take

from .conftest import all_files, assert_reader_names_file

REFL_FILES = all_files((".refl",))


@pytest.mark.parametrize("path", REFL_FILES, ids=[f"{p.parent.name}/{p.name}" for p in REFL_FILES])
def test_every_shared_table_round_trips_byte_for_byte(path, tmp_path):
    table = read_reflections(str(path))
    out = tmp_path / "copy.refl"
    write_reflections(table, str(out))
    assert out.read_bytes() == path.read_bytes()
    assert_same_tables(read_reflections(str(out)), table, exact=True)


def test_columns_match_a_plain_msgpack_reading(real_sweep):
    path = real_sweep / "integrated.refl"
    table = read_reflections(str(path))
    raw = msgpack.unpackb(path.read_bytes(), raw=False, strict_map_key=False)[2]
    assert raw["nrows"] == table.nrows == 71
    assert table.identifiers == {0: "5aa7f85a-e6be-a7ae-cb4b-ac3593ee1bd1"}
    kind, (n, payload) = raw["data"]["xyzcal.px"]
    np.testing.assert_array_equal(np.frombuffer(payload, "<f8").reshape(n, 3), table["xyzcal.px"])
    kind, (n, payload) = raw["data"]["miller_index"]
    assert kind == "cctbx::miller::index<>" and table["miller_index"].shape == (71, 3)
    np.testing.assert_array_equal(np.frombuffer(payload, "<i4").reshape(n, 3), table["miller_index"])
    assert table["flags"].dtype == np.uint64 and table["bbox"].dtype == np.int32


def test_reading_holds_the_table_and_one_window(real_sweep, monkeypatch):
    """Reading never holds the file whole: numeric columns go straight into their arrays and shoeboxes are
    read through windows of the file mapped one at a time (here 256 KiB, the largest record being 0.24 MB of
    the 2 MB file)."""
    import mmap
    import tracemalloc

    import braggint.io.refl as refl

    path = real_sweep.parent / "sweep_02" / "integrated.refl"  # the largest shared table, with shoeboxes
    monkeypatch.setattr(refl, "WINDOW_BYTES", 256 << 10)
    read_reflections(str(path))  # the decoding kernels compiled or loaded outside the measurement
    mapped, original = [], mmap.mmap

    def recorded_mmap(fileno, length, **options):
        mapped.append(length)
        return original(fileno, length, **options)

    monkeypatch.setattr(refl.mmap, "mmap", recorded_mmap)
    tracemalloc.start()
    try:
        table = read_reflections(str(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(mapped) > 2 * path.stat().st_size / (256 << 10) - 2  # two passes through windows
    assert max(mapped) <= (256 << 10) + mmap.ALLOCATIONGRANULARITY
    boxes = table["shoebox"]
    held = sum(table[name].nbytes for name in table.keys() if name != "shoebox") + sum(
        array.nbytes for array in (boxes.data, boxes.mask, boxes.background, boxes.bbox, boxes.offsets))
    assert held > path.stat().st_size / 2
    assert peak < held + (256 << 10) + (64 << 10) < 1.1 * path.stat().st_size


@pytest.mark.parametrize("path", REFL_FILES, ids=[f"{p.parent.name}/{p.name}" for p in REFL_FILES])
def test_small_windows_read_the_same_table(path, monkeypatch):
    """Windows far smaller than the shoebox records (which then straddle windows or outgrow them) read
    the same table as the default window."""
    import braggint.io.refl as refl

    whole = read_reflections(str(path))
    monkeypatch.setattr(refl, "WINDOW_BYTES", 100)
    assert_same_tables(read_reflections(str(path)), whole, exact=True)


@pytest.mark.parametrize("window", [None, 100])
def test_shoeboxes_read_without_their_background_keep_everything_else(real_sweep, window, monkeypatch):
    """``shoebox_background=False`` (what integration reads the strong spots with) gives the same table,
    shoebox counts and masks included, with every background value zero; through windows far smaller than a
    record too."""
    import braggint.io.refl as refl

    path = real_sweep.parent / "sweep_02" / "integrated.refl"
    whole = read_reflections(str(path))
    if window:
        monkeypatch.setattr(refl, "WINDOW_BYTES", window)
    table = read_reflections(str(path), shoebox_background=False)
    boxes, whole_boxes = table["shoebox"], whole["shoebox"]
    assert whole_boxes.background.any()  # the file has background values to skip
    assert not boxes.background.any() and boxes.background.dtype == np.float32
    whole_boxes.background = boxes.background
    assert_same_tables(table, whole, exact=True)


def test_writing_never_holds_the_file_whole(real_sweep, tmp_path, monkeypatch):
    """Writing a table copies no column whole: numeric columns go out from their arrays, shoeboxes a chunk
    of rows at a time (here one row: the shared table's 67 shoeboxes are 2 MB, the largest 0.24 MB)."""
    import tracemalloc

    import braggint.io.refl as refl

    path = real_sweep.parent / "sweep_02" / "integrated.refl"  # the largest shared table, with shoeboxes
    table = read_reflections(str(path))
    monkeypatch.setattr(refl, "ENCODE_ROWS", 1)
    out = tmp_path / "copy.refl"
    write_reflections(table, str(out))  # the encoding kernel compiled or loaded outside the measurement
    tracemalloc.start()
    try:
        write_reflections(table, str(out))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out.read_bytes() == path.read_bytes()
    largest_record = int(bbox_volume(table["shoebox"].bbox).max()) * 12  # float32 data and background, int32 mask
    packer_buffer = 256 << 10  # msgpack's Packer starts with a buffer of its own
    assert peak < largest_record + packer_buffer + (32 << 10) < 0.3 * path.stat().st_size


def test_shoebox_pixels_are_consistent_with_the_table(real_sweep):
    table = read_reflections(str(real_sweep / "integrated.refl"))
    shoeboxes = table["shoebox"]
    np.testing.assert_array_equal(shoeboxes.bbox, table["bbox"])
    summed = table.get_flags(Flags.integrated_sum)
    for row in np.flatnonzero(summed)[:20]:
        data, mask, background = shoeboxes.arrays(row)
        foreground = (mask & (MaskCode.Valid | MaskCode.Foreground)) == (MaskCode.Valid | MaskCode.Foreground)
        # DIALS's summation: foreground data minus foreground background, float32 accumulation.
        intensity = np.float32(data[foreground].sum(dtype=np.float32) - background[foreground].sum(dtype=np.float32))
        assert intensity == pytest.approx(table["intensity.sum.value"][row], rel=1e-5, abs=1e-3)
        assert foreground.sum() == table["num_pixels.foreground"][row]


def test_version_2_layout_round_trips(real_sweep, tmp_path):
    table = read_reflections(str(real_sweep / "refined.refl"))
    out = tmp_path / "v2.refl"
    write_reflections(table, str(out), version=2)
    assert msgpack.unpackb(out.read_bytes(), raw=False, strict_map_key=False)[1] == 2
    assert out.stat().st_size < (real_sweep / "refined.refl").stat().st_size  # one-byte masks
    assert read_reflections(str(out))["shoebox"].equals(table["shoebox"])


def _small_table() -> ReflectionTable:
    table = ReflectionTable(identifiers={0: "x"})
    table["id"] = np.array([0, 0, 0], np.int32)
    table["miller_index"] = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    table["d"] = np.array([3.0, 1.0, 2.0])
    table["flags"] = np.zeros(3, np.uint64)
    boxes = ShoeboxColumn.empty_boxes([0, 0, 0], [[0, 2, 0, 1, 0, 1], [0, 1, 0, 1, 0, 3], [0, 1, 0, 1, 0, 1]],
                                      allocate=True)
    boxes.data[:] = np.arange(len(boxes.data))
    table["shoebox"] = boxes
    return table


def test_select_extend_sort_and_flags():
    table = _small_table()
    assert table.column_type("miller_index") == "cctbx::miller::index<>"
    assert table.column_type("flags") == "std::size_t"
    table.set_flags(np.array([True, False, True]), Flags.integrated_sum)
    table.set_flags(np.array([1]), Flags.integrated_prf)
    assert table.get_flags(Flags.integrated_sum).tolist() == [True, False, True]
    assert table.get_flags(Flags.integrated, all=False).tolist() == [True, True, True]
    assert table.get_flags(Flags.integrated).tolist() == [False, False, False]
    table.unset_flags(np.array([0]), Flags.integrated_sum)
    assert table.flag_names(0) == [] and table.flag_names(2) == ["integrated_sum"]
    picked = table.select(np.array([2, 0]))
    assert picked["d"].tolist() == [2.0, 3.0]
    assert picked["shoebox"].arrays(1)[0].ravel().tolist() == [0.0, 1.0]
    table.extend(picked)
    assert table.nrows == 5 and table["shoebox"].arrays(4)[0].ravel().tolist() == [0.0, 1.0]
    table.sort("d")
    assert table["d"].tolist() == [1.0, 2.0, 2.0, 3.0, 3.0]
    assert table["shoebox"].arrays(0)[0].ravel().tolist() == [2.0, 3.0, 4.0]
    decoded = msgpack.unpackb(table_to_msgpack(table), raw=False, strict_map_key=False)
    assert decoded[2]["nrows"] == 5


def test_shallow_copy_shares_arrays_but_not_columns():
    table = _small_table()
    copy = table.shallow_copy()
    assert copy["shoebox"] is table["shoebox"] and copy["d"] is table["d"]
    del copy["shoebox"]
    copy["zeta"] = np.ones(3)
    assert "shoebox" in table and "zeta" not in table and "shoebox" not in copy
    assert copy.nrows == table.nrows and copy.identifiers == table.identifiers
    fewer = table.without(["shoebox", "not a column"])
    assert set(fewer.keys()) == set(table.keys()) - {"shoebox"} and fewer["d"] is table["d"]
    assert "shoebox" in table


def test_column_length_mismatch_is_refused():
    table = _small_table()
    with pytest.raises(ValueError, match="has 2 rows, table has 3"):
        table["bad"] = np.zeros(2)


@pytest.mark.parametrize("payload, message", [
    (b"\xc1\xc1garbage", "not a msgpack reflection table"),
    (msgpack.packb(["something", 1, {}]), "bad msgpack header"),
    (msgpack.packb(["dials::af::reflection_table", 1, {"nrows": 2, "data": {"d": ["double", [2, b"\0" * 8]]}}],
                   use_bin_type=True), "column 'd' holds 8 bytes, expected 16"),
    (msgpack.packb(["dials::af::reflection_table", 7, {"nrows": 0, "data": {}}]), "unsupported reflection-table version 7"),
])
def test_malformed_reflection_files_are_named(tmp_path, payload, message):
    assert_reader_names_file(read_reflections, tmp_path / "bad.refl", payload, message)


def test_gzipped_tables_read_as_the_plain_file(real_sweep, tmp_path):
    import gzip

    plain = real_sweep / "refined.refl"
    packed = tmp_path / "refined.refl"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert_same_tables(read_reflections(str(packed)), read_reflections(str(plain)), exact=True)
    packed.write_bytes(gzip.compress(plain.read_bytes())[:-100])
    with pytest.raises(InputFileError, match="not a msgpack reflection table"):
        read_reflections(str(packed))


def test_a_file_cut_short_is_named(real_sweep, tmp_path):
    whole = (real_sweep / "refined.refl").read_bytes()
    for keep in (5000, len(whole) - 1000):  # inside the document's header, inside its last column
        assert_reader_names_file(read_reflections, tmp_path / "cut.refl", whole[:keep], "")


def test_truncated_shoebox_column_is_reported(real_sweep, tmp_path):
    raw = msgpack.unpackb((real_sweep / "refined.refl").read_bytes(), raw=False, strict_map_key=False)
    kind, (n, payload) = raw[2]["data"]["shoebox"]
    raw[2]["data"]["shoebox"] = [kind, [n, payload[: len(payload) // 2]]]
    path = tmp_path / "cut.refl"
    path.write_bytes(msgpack.packb(raw, use_bin_type=True))
    with pytest.raises(InputFileError, match="shoebox data truncated at row"):
        read_reflections(str(path))


def test_concatenating_tables_keeps_rows_shoeboxes_and_identifiers(real_sweep):
    table = read_reflections(str(real_sweep / "integrated.refl"))
    pieces = [table.select(np.arange(0, 10)), table.select(np.arange(10, 25)), ReflectionTable(),
              table.select(np.arange(25, 40))]
    joined = ReflectionTable.concatenate(pieces)
    whole = table.select(np.arange(40))
    assert joined.nrows == 40 and joined.identifiers == table.identifiers
    for name in whole.keys():
        if name == "shoebox":
            assert joined[name].equals(whole[name])
        else:
            np.testing.assert_array_equal(joined[name], whole[name])
    extended = table.select(np.arange(0, 10))
    extended.extend(table.select(np.arange(10, 40)))
    assert extended["shoebox"].equals(whole["shoebox"]) and extended.nrows == 40
    clash = table.select(np.arange(3))
    clash.identifiers = {key: "another" for key in table.identifiers}
    with pytest.raises(ValueError, match="two identifiers"):
        ReflectionTable.concatenate([pieces[0], clash])
    del clash["shoebox"]
    clash.identifiers = {}
    with pytest.raises(ValueError, match="different columns: \\['shoebox'\\]"):
        ReflectionTable.concatenate([pieces[0], clash])


def test_ragged_take_copies_scattered_repeated_and_empty_selections():
    rng = np.random.default_rng(3)
    sizes = rng.integers(0, 6, 50)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    values = rng.random(int(offsets[-1])).astype(np.float32)
    codes = rng.integers(0, 255, int(offsets[-1])).astype(np.uint8)
    for index in (rng.permutation(50)[:17], np.array([4, 4, 9, 3]), np.arange(50), np.zeros(0, np.int64)):
        new_offsets, picked, picked_codes = ragged_take(offsets, index, values, codes)
        expected = [values[offsets[i]:offsets[i + 1]] for i in index]
        assert np.array_equal(np.diff(new_offsets), sizes[index])
        assert np.array_equal(picked, np.concatenate(expected) if len(index) else values[:0])
        assert picked.dtype == np.float32 and picked_codes.dtype == np.uint8
        assert np.array_equal(picked_codes, np.concatenate([codes[offsets[i]:offsets[i + 1]] for i in index])
                              if len(index) else codes[:0])

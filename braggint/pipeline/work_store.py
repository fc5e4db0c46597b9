"""The on-disk working state of a run: shoeboxes in Zarr, block results as tables, for resuming.

Layout of ``<output.reflections>.work/``::

    inputs.sha256              what the run was started from, and the layout; another starts afresh
    shoeboxes.zarr/block_0007_grids        profile-grid cells of the block's rows to fit (see BlockGrids)
    shoeboxes.zarr/block_0007_part_00012/  for detector-space fitting or debug output: shoeboxes of one
                                           part of the block (see WorkStore.save_part)
    block_0007.parts.npz       which part (group of reflections starting on one frame) holds each row,
                               where each part's grid cells start and which grid slices each row covers
    block_0007.modelled.refl   the block after background and summation, with the rows fitted in the
                               first pass fitted (first pass)
    block_0007.first_validation.npz  validation statistics of those rows (with validation folds)
    block_0007.profiles.npz    its reference-profile sums per experiment
    block_0007.exchange_failed its first pass failed (blocks exchanging sums stop waiting for it)
    block_0007.integrated.refl the block after profile fitting (second pass, or the first when it fitted
                               every row)

A block's files are complete when its ``.refl`` exists: every file is
written under a temporary name and renamed, the table last.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil

import numpy as np

from ..io.atomic import atomic_open
from ..io.refl import read_reflections, write_reflections
from ..models.fit_grids import FitGrids
from ..models.flags import VALID_FOREGROUND
from ..models.reflection_table import ReflectionTable
from ..models.shoebox import ShoeboxColumn, bbox_volume, ragged_offsets

#: The store's layout; a store of another layout (an earlier braggint's) is started afresh, never resumed.
LAYOUT_VERSION = 2
#: Voxels per Zarr chunk of the flat shoebox arrays (4 MiB of float32).
CHUNK_VOXELS = 1 << 20
#: Values per Zarr chunk of a block's grid array (4 MiB of float32: 1 MiB chunks wrote 25 % slower, 16 MiB ones
#: half as fast).
GRID_CHUNK = 1 << 20


def _fast_codec():
    """LZ4 with bit-shuffling (Blosc): fast enough that storing shoeboxes costs little beside processing."""
    from zarr.codecs import BloscCodec

    return [BloscCodec(cname="lz4", clevel=1, shuffle="bitshuffle")]


#: Bytes of a file read into the hash at a time by :func:`file_digests`.
DIGEST_CHUNK = 1 << 20


def file_digests(paths: list[str]) -> bytes:
    """The 128-bit XXH3 digests of the files' contents, one after another: what identifies a run's input
    files (each file is streamed through the hash, never held in memory).

    XXH3 rather than SHA-256, which guards against forgery, not needed
    here: 92 MB of strong spots 64 -> 13 ms, which the command spends
    beside reading its inputs while the workers' helper has the other core
    (with no digest at all, the command reached its blocks 0.92 -> 0.90 s
    into a run on two workers, 8 alternating runs, 2026-12-05).
    """
    import xxhash

    digests = []
    chunk = bytearray(DIGEST_CHUNK)
    view = memoryview(chunk)
    for path in paths:
        digest = xxhash.xxh3_128()
        with open(path, "rb", buffering=0) as handle:
            while size := handle.readinto(chunk):
                digest.update(view[:size])
        digests.append(digest.digest())
    return b"".join(digests)


def inputs_digest(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()


class WorkStore:
    """Per-block intermediate results of one run under ``path``."""

    def __init__(self, path: str, digest: str):
        """Open the store of the run ``digest`` at ``path`` (a store of another run is removed first)."""
        self.path = path
        marker = os.path.join(path, "inputs.sha256")
        identity = f"{digest} layout {LAYOUT_VERSION}"
        if os.path.isdir(path):
            previous = open(marker).read().strip() if os.path.exists(marker) else ""
            if previous != identity:
                shutil.rmtree(path)
        os.makedirs(path, exist_ok=True)
        if not os.path.exists(marker):
            with atomic_open(marker, "w") as handle:
                handle.write(identity + "\n")

    def _file(self, block: int, kind: str) -> str:
        return os.path.join(self.path, f"block_{block:04d}.{kind}")

    def has(self, block: int, kind: str) -> bool:
        return os.path.exists(self._file(block, kind))

    # ----- tables ------------------------------------------------------
    def save_table(self, block: int, kind: str, table: ReflectionTable) -> None:
        write_reflections(table, self._file(block, kind))

    def load_table(self, block: int, kind: str) -> ReflectionTable:
        return read_reflections(self._file(block, kind))

    # ----- profile sums --------------------------------------------------
    def save_arrays(self, block: int, kind: str, **arrays: np.ndarray) -> None:
        with atomic_open(self._file(block, kind), "wb") as handle:
            np.savez(handle, **arrays)

    def load_arrays(self, block: int, kind: str) -> dict[str, np.ndarray]:
        with np.load(self._file(block, kind)) as archive:
            return {key: archive[key] for key in archive.files}

    # ----- shoeboxes (Zarr) ------------------------------------------------
    def _group(self, mode: str):
        """The Zarr group of shoeboxes and grids; with mode ``"a"`` made if it is not there yet, by the first
        block task to store anything, under a lock so that two never race to make it (a run that stores
        nothing there does not import Zarr at all)."""
        import zarr

        path = os.path.join(self.path, "shoeboxes.zarr")
        if mode == "a" and not os.path.exists(os.path.join(path, "zarr.json")):
            with open(os.path.join(self.path, "shoeboxes.lock"), "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                return zarr.open_group(path, mode="a")
        return zarr.open_group(path, mode=mode)

    def save_part(self, block: int, part: int, shoeboxes: ShoeboxColumn, fitted_voxels_only: bool = False) -> None:
        """Store the shoeboxes of part ``part`` of a block (a group of its reflections) for the second pass
        (detector-space fitting) or the debug output.

        ``geometry`` (rows x 8: bbox, panel, has_pixels) describes the
        rows; the flat arrays are ``data``, ``mask`` and ``background``, or
        with ``fitted_voxels_only`` only what detector-space fitting reads:
        ``fitted``, the counts then the background of the valid foreground
        voxels, and ``fitted_bits``, a bit per voxel saying which they are
        (about a seventh of the bytes).  Few arrays per group: each costs a
        few milliseconds of metadata however small it is.
        """
        root = self._group("a")
        name = f"block_{block:04d}_part_{part:05d}"
        # A run killed while writing may have left this group half made: start it afresh.
        shutil.rmtree(os.path.join(self.path, "shoeboxes.zarr", name), ignore_errors=True)
        group = root.create_group(name)
        if fitted_voxels_only:
            fitted = (shoeboxes.mask & VALID_FOREGROUND) == VALID_FOREGROUND
            flat = {"fitted": np.concatenate([shoeboxes.data[fitted], shoeboxes.background[fitted]]),
                    "fitted_bits": np.packbits(fitted)}
        else:
            flat = {key: getattr(shoeboxes, key) for key in ("data", "mask", "background")}
        flat["geometry"] = np.column_stack([shoeboxes.bbox, shoeboxes.panel, shoeboxes.has_pixels]).astype(np.int64)
        for key, values in flat.items():
            # Every chunk is written, none compared with the fill value first (zarr's default doubled the
            # time of a write).
            array = group.create_array(key, shape=values.shape, dtype=values.dtype,
                                       chunks=(min(CHUNK_VOXELS, max(len(values), 1)),) + values.shape[1:],
                                       compressors=_fast_codec(), config={"write_empty_chunks": True})
            array[...] = values

    def block_grids(self, block: int, capacity: int | None = None) -> "BlockGrids":
        """The grid array of ``block``: made afresh, with room for ``capacity`` values to start with, when
        ``capacity`` is given (the first pass), else opened (the second pass)."""
        name = f"block_{block:04d}_grids"
        if capacity is None:
            return BlockGrids(self._group("r")[name])
        # Uncompressed: LZ4 saved 7 % of the grid cells' bytes and halved the write speed.
        array = self._group("a").create_array(name, shape=(max(capacity, 1),), dtype=np.float32,
                                              chunks=(GRID_CHUNK,), compressors=None, overwrite=True,
                                              config={"write_empty_chunks": True})
        return BlockGrids(array)

    def remove(self, block: int, kind: str) -> None:
        """Remove one of ``block``'s files, if it is there."""
        if self.has(block, kind):
            os.remove(self._file(block, kind))

    def clear_block(self, block: int) -> None:
        """Remove whatever an interrupted first pass of ``block`` left behind."""
        directory = os.path.join(self.path, "shoeboxes.zarr")
        if os.path.isdir(directory):
            for name in os.listdir(directory):
                if name.startswith(f"block_{block:04d}_"):
                    shutil.rmtree(os.path.join(directory, name), ignore_errors=True)

    def load_shoeboxes(self, block: int, part: int = 0) -> ShoeboxColumn:
        """The shoeboxes of one part; when only the fitted voxels were stored, every other voxel reads
        back as 0 counts and background with an empty mask, and fitted voxels as Valid | Foreground."""
        group = self._group("r")[f"block_{block:04d}_part_{part:05d}"]
        geometry = np.asarray(group["geometry"][...])
        bbox, panel, has_pixels = geometry[:, :6].astype(np.int32), geometry[:, 6].astype(np.uint32), geometry[:, 7] > 0
        offsets = ragged_offsets(bbox_volume(bbox) * has_pixels)
        if "fitted_bits" not in group:
            return ShoeboxColumn(panel, bbox, has_pixels, offsets,
                                 *(np.asarray(group[key][...]) for key in ("data", "mask", "background")))
        n_voxels = int(offsets[-1])
        fitted = np.unpackbits(np.asarray(group["fitted_bits"][...]), count=n_voxels).view(bool)
        values = np.asarray(group["fitted"][...])
        data, background = np.zeros(n_voxels, np.float32), np.zeros(n_voxels, np.float32)
        data[fitted], background[fitted] = values[:len(values) // 2], values[len(values) // 2:]
        mask = fitted.astype(np.uint8) * np.uint8(VALID_FOREGROUND)
        return ShoeboxColumn(panel, bbox, has_pixels, offsets, data, mask, background)

    def load_block_shoeboxes(self, block: int) -> ShoeboxColumn:
        """All shoeboxes of a block, in the block's row order."""
        parts = self.load_arrays(block, "parts.npz")
        part_of_row, position = parts["part_of_row"], parts["position_in_part"]
        numbers = np.unique(part_of_row[part_of_row >= 0])
        column = ShoeboxColumn.concatenate([self.load_shoeboxes(block, int(n)) for n in numbers])
        # Concatenated position of every row: groups in order, rows by their place in the group.
        sizes = np.array([(part_of_row == n).sum() for n in numbers])
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        where = starts[np.searchsorted(numbers, part_of_row)] + position
        return column.select(where)


class BlockGrids:
    """The profile-grid cells of the rows to fit of one block, every part's in one Zarr array.

    A part's :class:`FitGrids` cells, then their background, lie at
    ``start:start + 2 * cells`` (rows in the order written); each part starts on a chunk boundary, so no
    two parts share a chunk.  Which slices each row covers (and so its
    cells' offsets) the caller keeps with the block (``parts.npz``).  One
    array for the block instead of a group of arrays per part: each Zarr
    array or group costs a few milliseconds of metadata.
    """

    def __init__(self, array):
        self.array = array

    def write(self, start: int, grids: list[FitGrids]) -> int:
        """Store one part, the rows of ``grids`` one list item after another, at ``start``; returns where
        the next part starts.  (The items are copied together once, into the part's values.)"""
        values = np.concatenate([g.data for g in grids] + [g.background for g in grids])
        end = start + len(values)
        if end > self.array.shape[0]:
            self.array.resize((max(end, 2 * self.array.shape[0]),))
        if len(values):
            self.array[start:end] = values
        return -(-end // GRID_CHUNK) * GRID_CHUNK

    def read(self, start: int, covered: np.ndarray) -> FitGrids:
        """The part stored at ``start`` whose rows cover ``covered`` (rows x G, bool)."""
        cells = int(covered.sum()) * covered.shape[1] ** 2
        values = np.asarray(self.array[start:start + 2 * cells]) if cells else np.zeros(0, np.float32)
        return FitGrids.from_covered(covered, values[:cells], values[cells:])

"""Lazy, per-frame image reading for an experiment's image set.

Formats: CBF (miniCBF/imgCIF: byte-offset compressed 32-bit integers by
:mod:`braggint.io.cbf`, any other through fabio) and SMV through fabio;
NeXus/HDF5 (an Eiger-style master whose ``/entry/data`` holds the frames,
directly or through external links to data files, bitshuffle/LZ4 filters via
hdf5plugin) through h5py.  A CBF that exists only compressed (``name.cbf.bz2``
or ``.gz``) is read through fabio's decompression.

Frames are returned per panel as arrays of shape (n_slow, n_fast) = (rows,
columns).  ``corrected`` applies ``(raw - pedestal) / gain``; ``mask`` is True
for pixels that are trusted: inside the trusted range, outside the panel's
untrusted rectangles, and good in the optional external mask.
"""

from __future__ import annotations

import itertools
import os
import pickle

import numpy as np

from ..errors import ImageError
from ..models.detector import Detector
from ..models.imageset import ImageSet
from .cbf import read_byte_offset_cbf

_COMPRESSED_SUFFIXES = (".bz2", ".gz")

#: How many images ahead of the one it decodes a block asks the operating system to read
#: (:meth:`ImageSource.read_ahead`): about 20 MB of 2M-like CBFs or 50 MB of 6M-like ones, held in the page
#: cache, not in the process.
READ_AHEAD_IMAGES = 8


def existing_path(path: str) -> str | None:
    """``path`` itself, or a compressed sibling (``.bz2``/``.gz``), if present."""
    if os.path.isfile(path):
        return path
    for suffix in _COMPRESSED_SUFFIXES:
        if os.path.isfile(path + suffix):
            return path + suffix
    return None


class ImageSource:
    """Reads the frames of one image set, one at a time, on demand.

    Parameters
    ----------
    imageset : ImageSet
    detector : Detector
        Gives the panel layout, trusted ranges, masks, gains and pedestals.
    first_image : int
        1-based number of the scan's first image.
    reuse_frames : bool
        Decode each image into the memory of the one before where the format
        allows (Pilatus-style CBF): the arrays :meth:`raw` returns are then
        overwritten by its next call, for a reader done with each frame
        before it reads the next.  A new image-sized array per frame is
        memory the process may have to fault in afresh: on the 6M-like
        benchmark case a block's read stage took 2.3-2.6 s reusing one
        against 2.9-4.3 s (3 alternating runs, one worker).
    """

    def __init__(self, imageset: ImageSet, detector: Detector, first_image: int = 1, reuse_frames: bool = False):
        self.imageset = imageset
        self.detector = detector
        self.first_image = first_image
        self.reuse_frames = reuse_frames
        self._frame_memory = None
        self._static_masks = None
        self._h5 = None

    # ----- validation ---------------------------------------------------
    def missing(self, image_numbers) -> list[tuple[int, str]]:
        """(image number, path) of each image whose file does not exist."""
        missing = []
        checked: dict[str, bool] = {}
        for n in image_numbers:
            path, _ = self.imageset.frame_source(n, self.first_image)
            if path not in checked:
                checked[path] = existing_path(path) is not None
            if not checked[path]:
                missing.append((n, path))
        return missing

    def decoded_frame_bytes(self) -> int:
        """Bytes of the largest array decoding one image may make: 8 a pixel (fabio decodes a CBF's byte
        offsets to int64 before converting them to the header's type; :mod:`braggint.io.cbf`, reading the
        CBFs it can, makes 4 a pixel and the file's bytes) over the panels' extent in the raw image, or over
        all the panels when they are stacked (NeXus)."""
        panels = self.detector.panels
        extent = max(p.raw_image_offset[1] + p.image_size[1] for p in panels) * \
            max(p.raw_image_offset[0] + p.image_size[0] for p in panels)
        stacked = sum(p.image_size[0] * p.image_size[1] for p in panels)
        return 8 * max(extent, stacked)

    # ----- reading ------------------------------------------------------
    def raw(self, image_number: int) -> list[np.ndarray]:
        """Raw counts of one image, split per panel, each (n_slow, n_fast)."""
        path, index = self.imageset.frame_source(image_number, self.first_image)
        try:
            frame = self._read_h5(path, index) if self.imageset.is_hdf5 else self._read_file(path, self._frame_memory)
        except ImageError:
            raise
        except Exception as exc:  # any decoder failure is reported with file and frame
            raise ImageError(f"{path}: cannot read image {image_number}: {exc}") from None
        if self.reuse_frames and not self.imageset.is_hdf5:
            self._frame_memory = frame
        return self._split_panels(frame, path, image_number)

    def read_ahead(self, image_number: int) -> None:
        """Ask the operating system to start reading image ``image_number`` into its page cache and return at
        once (``posix_fadvise(POSIX_FADV_WILLNEED)``), so that the disk reads it while the images before it
        are decoded and processed: a single-image file (or its compressed sibling) whole, a NeXus/HDF5 frame
        as the byte ranges of its chunks in the data file holding it (:func:`frame_byte_ranges`).  A hint
        only: nothing where ``posix_fadvise`` does not exist, for a frame whose bytes cannot be located
        (virtual or compact datasets), or when the file cannot be opened (:meth:`raw` reports that).

        400 2M-like images whose files were out of the page cache, summation
        only: the read stage 2.17-2.63 -> 1.14-2.04 s and the run 5.7-6.9 ->
        4.4-6.4 s on one worker (6 alternating runs), each block's read
        stage 1.13-1.32 -> 0.64-0.68 s and the run 3.8-4.2 -> 3.3-3.4 s on
        two (3 runs); with the files in the page cache, no change.  200
        2M-like NeXus frames (bitshuffle/LZ4, one chunk a frame) read cold,
        summation only: on two workers the read stage (both blocks)
        1.23-1.35 -> 0.78-0.95 s and the run 2.18-2.42 -> 1.90-2.03 s, on
        one 0.83-0.95 -> 0.66-0.79 s (4 and 3 alternating runs).
        """
        if not hasattr(os, "posix_fadvise"):
            return
        path, index = self.imageset.frame_source(image_number, self.first_image)
        if self.imageset.is_hdf5:
            try:
                ranges = [range_ for dataset, start, count in self._h5_datasets(path)
                          if start <= index < start + count for range_ in frame_byte_ranges(dataset, index - start)]
            except Exception:  # noqa: BLE001 - a hint only: raw() reports what is wrong with the file
                return
        else:
            path = existing_path(path)
            ranges = [] if path is None else [(path, 0, 0)]  # length 0: to the end of the file
        for file_path, offset, length in ranges:
            _will_need(file_path, offset, length)

    def corrected(self, image_number: int) -> list[np.ndarray]:
        """``(raw - pedestal) / gain`` per panel, float64."""
        return self.corrected_from_raw(self.raw(image_number))

    def corrected_from_raw(self, raw_panels: list[np.ndarray]) -> list[np.ndarray]:
        """``(raw - pedestal) / gain`` of already-read panel arrays, float64.

        Whole images, for inspection; the integration pipeline applies the
        same rule only to shoebox pixels (:func:`braggint.tasks.extract.copy_frame`).
        """
        out = []
        for panel, raw in zip(self.detector.panels, raw_panels):
            data = raw.astype(np.float64)
            if panel.pedestal:
                data -= panel.pedestal
            if panel.gain != 1.0:
                data /= panel.gain
            out.append(data)
        return out

    def mask(self, image_number: int, raw: list[np.ndarray] | None = None) -> list[np.ndarray]:
        """Trusted-pixel mask per panel for one image (True = good); the whole-image form of the rule
        :func:`braggint.tasks.extract.copy_frame` applies to shoebox pixels."""
        raw = self.raw(image_number) if raw is None else raw
        static = self.static_masks()
        return [s & panel.trusted_mask(r) for s, panel, r in zip(static, self.detector.panels, raw)]

    def static_masks(self) -> list[np.ndarray]:
        """Per-panel masks that do not change from frame to frame."""
        if self._static_masks is None:
            masks = [panel.static_mask() for panel in self.detector.panels]
            if self.imageset.mask:
                external = load_mask_file(self.imageset.mask, self.detector)
                masks = [m & e for m, e in zip(masks, external)]
            self._static_masks = masks
        return self._static_masks

    def close(self) -> None:
        if self._h5 is not None:
            self._h5[1].close()
            self._h5 = None

    # ----- formats ------------------------------------------------------
    @staticmethod
    def _read_file(path: str, into: np.ndarray | None = None) -> np.ndarray:
        """The frame in the single-image file ``path`` (or its compressed sibling): a Pilatus-style CBF by
        :mod:`braggint.io.cbf` (into ``into`` when it fits), any other through fabio (imported only then)."""
        actual = existing_path(path)
        if actual is None:
            raise ImageError(f"{path}: image file not found")
        if actual.lower().endswith(".cbf"):
            frame = read_byte_offset_cbf(actual, into)
            if frame is not None:
                return frame
        if ".cbf" in os.path.basename(actual).lower():
            # fabio would checksum the compressed block (half the read time of a Pilatus frame) only to log
            # a mismatch; dxtbx does not check it either.  Decoding still fails on a truncated block.
            from fabio.cbfimage import CbfImage

            return CbfImage().read(actual, check_MD5=False).data
        import fabio

        return fabio.open(actual).data

    def _read_h5(self, path: str, index: int) -> np.ndarray:
        datasets = self._h5_datasets(path)
        for dataset, start, count in datasets:
            if start <= index < start + count:
                return dataset[index - start]
        raise ImageError(f"{path}: frame {index} is beyond the {sum(c for _, _, c in datasets)} frames in the file")

    def _h5_datasets(self, path: str) -> list[tuple[object, int, int]]:
        """The frame datasets of the NeXus file ``path`` (see :func:`_frame_datasets`), the file kept open
        between frames."""
        import h5py
        import hdf5plugin  # noqa: F401  (registers bitshuffle/LZ4 and other filters)

        if self._h5 is None or self._h5[0] != path:
            self.close()
            if not os.path.isfile(path):
                raise ImageError(f"{path}: image file not found")
            handle = h5py.File(path, "r")
            self._h5 = (path, handle, _frame_datasets(handle, path))
        return self._h5[2]

    def _split_panels(self, frame: np.ndarray, path: str, image_number: int) -> list[np.ndarray]:
        panels = self.detector.panels
        if frame.ndim == 3 and frame.shape[0] == len(panels):
            parts = list(frame)
        elif len(panels) == 1:
            parts = [frame]
        else:
            parts = []
            for panel in panels:
                x0, y0 = panel.raw_image_offset
                nf, ns = panel.image_size
                parts.append(frame[y0:y0 + ns, x0:x0 + nf])
        for panel, part in zip(panels, parts):
            if part.shape != (panel.image_size[1], panel.image_size[0]):
                raise ImageError(
                    f"{path}: image {image_number} has shape {part.shape}, panel "
                    f"{panel.name!r} expects {(panel.image_size[1], panel.image_size[0])}")
        return parts


def _frame_datasets(handle, path: str) -> list[tuple[object, int, int]]:
    """(h5py dataset, first frame, frame count) of the frame stacks in a NeXus file: kept, since looking a
    dataset up by name costs about 60 us, for each frame read and each frame hinted."""
    group = handle.get("entry/data")
    if group is None:
        raise ImageError(f"{path}: no /entry/data group (not a NeXus/Eiger master file)")
    names = ["data"] if "data" in group else sorted(k for k in group if k.startswith("data_"))
    datasets = []
    start = 0
    for name in names:
        try:
            dataset = group[name]
        except KeyError:
            raise ImageError(f"{path}: linked data file for /entry/data/{name} is missing") from None
        datasets.append((dataset, start, dataset.shape[0]))
        start += dataset.shape[0]
    if not datasets:
        raise ImageError(f"{path}: /entry/data holds no frame datasets")
    return datasets


def frame_byte_ranges(dataset, frame: int) -> list[tuple[str, int, int]]:
    """``(file, byte offset, length)`` of where frame ``frame`` (0-based, along the first axis) of the h5py
    ``dataset`` is stored: the file holding the data (an external link's target for an Eiger-style master)
    and, for a chunked dataset, each chunk the frame lies in (compressed as stored; a chunk of several
    frames serves each of them), for a contiguous one the frame's slab.  Empty for a virtual or compact
    dataset, and for chunks not written."""
    import h5py

    layout = dataset.id.get_create_plist().get_layout()
    path = dataset.file.filename
    if layout == h5py.h5d.CONTIGUOUS:
        offset = dataset.id.get_offset()
        frame_bytes = int(np.prod(dataset.shape[1:], dtype=np.int64)) * dataset.dtype.itemsize
        return [] if offset is None else [(path, offset + frame * frame_bytes, frame_bytes)]
    if layout != h5py.h5d.CHUNKED:
        return []
    chunk = dataset.chunks
    first = frame - frame % chunk[0]
    corners = itertools.product(*(range(0, extent, step) for extent, step in zip(dataset.shape[1:], chunk[1:])))
    stored = (dataset.id.get_chunk_info_by_coord((first, *corner)) for corner in corners)
    return [(path, info.byte_offset, info.size) for info in stored if info.byte_offset is not None]


def _will_need(path: str, offset: int, length: int) -> None:
    """``posix_fadvise(WILLNEED)`` for ``length`` bytes of ``path`` from ``offset`` (0: to the end); nothing
    when the file cannot be opened."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.posix_fadvise(descriptor, offset, length, os.POSIX_FADV_WILLNEED)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def load_mask_file(path: str, detector: Detector) -> list[np.ndarray]:
    """Per-panel boolean masks (True = good) from a mask file.

    Accepts a pickle or ``.npy``/``.npz`` holding one boolean array per panel
    (a tuple/list, or a single array for a one-panel detector).
    """
    if not os.path.isfile(path):
        raise ImageError(f"{path}: mask file not found")
    try:
        if path.endswith((".npy", ".npz")):
            loaded = np.load(path)
            arrays = [loaded[k] for k in loaded.files] if hasattr(loaded, "files") else [loaded]
        else:
            with open(path, "rb") as handle:
                loaded = pickle.load(handle)
            arrays = list(loaded) if isinstance(loaded, (tuple, list)) else [loaded]
        masks = [np.asarray(a, dtype=bool) for a in arrays]
    except Exception as exc:
        raise ImageError(f"{path}: cannot read mask file ({exc}); expected per-panel boolean arrays") from None
    if len(masks) != len(detector.panels):
        raise ImageError(f"{path}: mask has {len(masks)} panels, detector has {len(detector.panels)}")
    for m, panel in zip(masks, detector.panels):
        expected = (panel.image_size[1], panel.image_size[0])
        if m.shape != expected:
            raise ImageError(f"{path}: mask of shape {m.shape} does not fit panel of shape {expected}")
    return masks

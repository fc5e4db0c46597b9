"""Image reading: real Pilatus CBFs, Eiger-style NeXus with bitshuffle/LZ4
and external data files, SMV; masks; errors that name file and frame."""

from __future__ import annotations

import fabio
import h5py
import hdf5plugin
import numpy as np
import pytest

from braggint.errors import ImageError
from braggint.io.expt import read_experiments
from braggint.io.images import ImageSource, existing_path
from braggint.models import Detector, ImageSet, Panel


def test_real_pilatus_cbf_frames_and_mask(real_sweep):
    experiment = read_experiments(str(real_sweep / "refined.expt"))[0]
    source = ImageSource(experiment.imageset, experiment.detector, experiment.scan.image_range[0])
    assert source.missing(range(1, 16)) == []
    raw = source.raw(3)[0]
    assert raw.shape == (1679, 1475) and raw.dtype == np.int32
    assert source.decoded_frame_bytes() == 8 * raw.size  # fabio's byte-offset decoder gives int64
    mask = source.mask(3, [raw])[0]
    # Gap pixels (-1) fall in the panel's untrusted rectangles; bad pixels (-2) below the trusted range.
    assert not mask[raw < 0].any()
    assert mask[raw >= 0].mean() > 0.999
    assert not mask[:, 487:494].any() and not mask[195:212, :].any()
    corrected = source.corrected(3)[0]
    assert corrected.dtype == np.float64 and np.array_equal(corrected, raw)


def _panel(nx=32, ny=24, gain=1.0, pedestal=0.0) -> Detector:
    return Detector([Panel(image_size=(nx, ny), trusted_range=(0, 1000), gain=gain, pedestal=pedestal,
                           mask=[(0, 0, 2, 24)])])


def test_a_decoded_frame_is_bounded_by_the_panels_extent_in_the_raw_image_or_their_stack():
    # Two 32 x 24 panels one above the other with a 4-row gap: the raw image is 32 x 52 pixels.
    tiled = Detector([Panel(image_size=(32, 24)), Panel(image_size=(32, 24), raw_image_offset=(0, 28))])
    assert ImageSource(ImageSet(template="x.cbf"), tiled).decoded_frame_bytes() == 8 * 32 * 52
    stacked = Detector([Panel(image_size=(32, 24)), Panel(image_size=(32, 24))])  # a NeXus (2, 24, 32) stack
    assert ImageSource(ImageSet(template="x.h5"), stacked).decoded_frame_bytes() == 8 * 2 * 32 * 24


def _eiger_master(folder, frames: np.ndarray, chunk_rows: int):
    """An Eiger-style master ``run_master.h5`` in ``folder`` whose /entry/data links frames 0-3 and 4-6 of
    ``frames`` (7, 24, 32) in two external data files, stored bitshuffle/LZ4 in chunks of one frame's
    ``chunk_rows`` rows; returns its path."""
    master = folder / "run_master.h5"
    with h5py.File(master, "w") as handle:
        group = handle.create_group("entry/data")
        for number, (start, stop) in enumerate([(0, 4), (4, 7)], start=1):
            name = f"run_data_{number:06d}.h5"
            with h5py.File(folder / name, "w") as data_file:
                data_file.create_dataset("data", data=frames[start:stop], chunks=(1, chunk_rows, 32),
                                         **hdf5plugin.Bitshuffle(cname="lz4"))
            group[f"data_{number:06d}"] = h5py.ExternalLink(name, "data")
    return master


def test_eiger_style_nexus_with_external_bitshuffle_files(tmp_path):
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 50, size=(7, 24, 32)).astype(np.uint32)
    frames[2, 5, 6] = 5000  # above the trusted range
    imageset = ImageSet(template=str(_eiger_master(tmp_path, frames, 24)))
    source = ImageSource(imageset, _panel(), first_image=1)
    for image in range(1, 8):
        np.testing.assert_array_equal(source.raw(image)[0], frames[image - 1])
    mask = source.mask(3)[0]
    assert not mask[5, 6] and not mask[:, :2].any() and mask[:, 2:].sum() == 24 * 30 - 1
    with pytest.raises(ImageError, match=r"run_master.h5: frame 9 is beyond the 7 frames"):
        source.raw(10)
    source.close()


def test_read_ahead_of_a_nexus_frame_hints_exactly_the_bytes_that_store_it(tmp_path, monkeypatch):
    """An Eiger-style frame is hinted as its chunk's bytes in the data file an external link names; a
    contiguous dataset's frame as its slab; a virtual dataset's not at all."""
    import os

    if not hasattr(os, "posix_fadvise"):
        pytest.skip("no posix_fadvise here")
    frames = np.random.default_rng(2).integers(0, 50, size=(7, 24, 32)).astype(np.uint32)
    master = _eiger_master(tmp_path, frames, 12)
    contiguous = tmp_path / "one.nxs"
    with h5py.File(contiguous, "w") as handle:
        handle.create_dataset("entry/data/data", data=frames)
    virtual = tmp_path / "virtual.nxs"
    with h5py.File(virtual, "w") as handle:
        layout = h5py.VirtualLayout(shape=frames.shape, dtype=frames.dtype)
        layout[:] = h5py.VirtualSource(str(contiguous), "entry/data/data", shape=frames.shape)
        handle.create_group("entry/data").create_virtual_dataset("data", layout)

    asked = []
    fadvise = os.posix_fadvise

    def recorded(descriptor, offset, length, advice):
        path = os.readlink(f"/proc/self/fd/{descriptor}")
        with open(path, "rb") as handle:
            handle.seek(offset)
            asked.append((os.path.basename(path), handle.read(length), advice))
        return fadvise(descriptor, offset, length, advice)

    monkeypatch.setattr(os, "posix_fadvise", recorded)
    ImageSource(ImageSet(template=str(master)), _panel(), first_image=1).read_ahead(6)  # frame 5: file 2's second
    with h5py.File(tmp_path / "run_data_000002.h5", "r") as data_file:
        chunks = [data_file["data"].id.read_direct_chunk((1, y, 0))[1] for y in (0, 12)]
    assert asked == [("run_data_000002.h5", chunk, os.POSIX_FADV_WILLNEED) for chunk in chunks]
    asked.clear()
    ImageSource(ImageSet(template=str(contiguous)), _panel(), first_image=1).read_ahead(3)
    assert asked == [("one.nxs", frames[2].tobytes(), os.POSIX_FADV_WILLNEED)]
    asked.clear()
    source = ImageSource(ImageSet(template=str(virtual)), _panel(), first_image=1)
    source.read_ahead(3)
    assert asked == []
    np.testing.assert_array_equal(source.raw(3)[0], frames[2])  # read all the same
    source.read_ahead(100)  # beyond the frames: nothing asked, nothing raised (raw() reports it)
    assert asked == []


def test_single_file_indices_select_frames(tmp_path):
    frames = np.arange(5 * 24 * 32, dtype=np.int32).reshape(5, 24, 32)
    path = tmp_path / "one.nxs"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("entry/data/data", data=frames)
    source = ImageSource(ImageSet(template=str(path), single_file_indices=[2, 3, 4]), _panel(), first_image=1)
    np.testing.assert_array_equal(source.raw(1)[0], frames[2])
    np.testing.assert_array_equal(source.raw(3)[0], frames[4])


def test_smv_image_with_gain_and_pedestal(tmp_path):
    data = (np.arange(24 * 32).reshape(24, 32) % 100 + 10).astype(np.uint16)
    path = tmp_path / "img_001.img"
    fabio.adscimage.adscimage(data=data, header={}).write(str(path))
    source = ImageSource(ImageSet(template=str(tmp_path / "img_###.img")), _panel(gain=2.0, pedestal=10.0))
    np.testing.assert_array_equal(source.raw(1)[0], data)
    np.testing.assert_allclose(source.corrected(1)[0], (data.astype(float) - 10.0) / 2.0)


def test_missing_and_wrong_shape_images(tmp_path):
    imageset = ImageSet(template=str(tmp_path / "x_###.cbf"))
    source = ImageSource(imageset, _panel())
    assert source.missing([1, 2]) == [(1, str(tmp_path / "x_001.cbf")), (2, str(tmp_path / "x_002.cbf"))]
    with pytest.raises(ImageError, match="x_001.cbf: image file not found"):
        source.raw(1)
    fabio.cbfimage.CbfImage(data=np.zeros((10, 10), np.int32)).write(str(tmp_path / "x_001.cbf"))
    with pytest.raises(ImageError, match=r"x_001.cbf: image 1 has shape \(10, 10\), panel 'Panel' expects \(24, 32\)"):
        source.raw(1)
    (tmp_path / "x_002.cbf").write_bytes(b"not an image")
    with pytest.raises(ImageError, match="x_002.cbf: cannot read image 2"):
        source.raw(2)
    # A CBF cut short inside its compressed block (its checksum is not verified) still fails to decode.
    fabio.cbfimage.CbfImage(data=np.arange(24 * 32, dtype=np.int32).reshape(24, 32)).write(str(tmp_path / "x_003.cbf"))
    assert source.raw(3)[0][1, 1] == 33
    whole = (tmp_path / "x_003.cbf").read_bytes()
    (tmp_path / "x_003.cbf").write_bytes(whole[:len(whole) - 400])
    with pytest.raises(ImageError, match="x_003.cbf: cannot read image 3"):
        source.raw(3)


def test_external_mask_file(tmp_path):
    good = np.ones((24, 32), bool)
    good[10, 10] = False
    np.save(tmp_path / "mask.npy", good)
    frames = np.ones((1, 24, 32), np.int32)
    path = tmp_path / "m.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("entry/data/data", data=frames)
    source = ImageSource(ImageSet(template=str(path), mask=str(tmp_path / "mask.npy")), _panel())
    mask = source.mask(1)[0]
    assert not mask[10, 10] and mask[10, 11] and not mask[:, :2].any()


def test_copying_a_frame_applies_the_trusted_range_pedestal_and_gain_and_flags_overloads():
    from braggint.models.flags import MaskCode
    from braggint.tasks.extract import copy_frame

    raw = np.arange(36, dtype=np.int32).reshape(6, 6)
    raw[1, 1] = 1000  # above the trusted range, inside box 0 only
    raw[4, 4] = -5    # below it, inside box 1 only
    usable = np.ones((6, 6), bool)
    usable[2, 2] = False  # masked before the counts are looked at
    # Box 1 leaves the panel; box 2 starts on the next frame and box 3 is on another panel: both untouched.
    bbox = np.array([[0, 3, 0, 3, 0, 1], [3, 7, 3, 7, 0, 1], [0, 2, 0, 2, 1, 2], [0, 2, 0, 2, 0, 1]], np.int32)
    offsets = np.array([0, 9, 25, 29, 33], np.int64)
    data, mask = np.zeros(33, np.float32), np.zeros(33, np.uint8)
    overloaded = np.zeros(4, bool)
    copy_frame(raw, usable, 0.0, 100.0, 2.0, 4.0, 0, 0, np.array([0, 0, 0, 1], np.uint32), bbox, offsets, data,
               mask, overloaded)
    assert overloaded.tolist() == [True, False, False, False]
    assert not data[25:].any() and not mask[25:].any()
    box0 = data[:9].reshape(3, 3)
    assert np.allclose(box0, (raw[:3, :3] - 2.0) / 4.0)
    valid0 = mask[:9].reshape(3, 3) == MaskCode.Valid
    assert not valid0[1, 1] and not valid0[2, 2] and valid0.sum() == 7
    box1, valid1 = data[9:25].reshape(4, 4), mask[9:25].reshape(4, 4) == MaskCode.Valid
    assert np.allclose(box1[:3, :3], (raw[3:, 3:] - 2.0) / 4.0)
    assert not valid1[1, 1] and valid1[:3, :3].sum() == 8  # -5 is untrusted
    assert (box1[3, :] == 0).all() and (box1[:, 3] == 0).all() and not valid1[3, :].any() and not valid1[:, 3].any()


def test_the_pipelines_shoebox_copy_matches_the_whole_image_mask_and_counts(real_sweep):
    """copy_frame (the pipeline) and ImageSource.mask/corrected (whole images) apply one rule."""
    from braggint.models.flags import MaskCode
    from braggint.tasks.extract import copy_frame

    experiment = read_experiments(str(real_sweep / "refined.expt"))[0]
    source = ImageSource(experiment.imageset, experiment.detector, experiment.scan.image_range[0])
    raw = source.raw(3)[0]
    panel = experiment.detector.panels[0]
    height, width = raw.shape
    bbox = np.array([[0, width, 0, height, 0, 1]], np.int32)
    data, mask = np.zeros(width * height, np.float32), np.zeros(width * height, np.uint8)
    overloaded = np.zeros(1, bool)
    copy_frame(raw, source.static_masks()[0], float(panel.trusted_range[0]), float(panel.trusted_range[1]),
               float(panel.pedestal), float(panel.gain), 0, 0, np.zeros(1, np.uint32), bbox, np.array([0, width * height]),
               data, mask, overloaded)
    assert np.array_equal(mask.reshape(height, width) == MaskCode.Valid, source.mask(3, [raw])[0])
    assert np.array_equal(data.reshape(height, width), source.corrected(3)[0].astype(np.float32))
    assert overloaded[0] == (raw > panel.trusted_range[1]).any()


def test_read_ahead_asks_for_the_images_file_and_is_only_a_hint(real_sweep, tmp_path, monkeypatch):
    import os

    if not hasattr(os, "posix_fadvise"):
        pytest.skip("no posix_fadvise here")
    asked = []
    fadvise = os.posix_fadvise

    def recorded(descriptor, offset, length, advice):
        asked.append((os.readlink(f"/proc/self/fd/{descriptor}"), advice))
        return fadvise(descriptor, offset, length, advice)

    monkeypatch.setattr(os, "posix_fadvise", recorded)
    experiment = read_experiments(str(real_sweep / "refined.expt"))[0]
    source = ImageSource(experiment.imageset, experiment.detector, experiment.scan.image_range[0])
    source.read_ahead(3)
    path = existing_path(experiment.imageset.frame_source(3, experiment.scan.image_range[0])[0])  # maybe .bz2
    assert asked == [(os.path.realpath(path), os.POSIX_FADV_WILLNEED)]
    source.read_ahead(10_000)  # no such file: nothing asked, nothing raised (raw() reports it)
    nexus = ImageSource(ImageSet(template=str(tmp_path / "master.h5")), _panel())
    nexus.read_ahead(1)
    assert len(asked) == 1

"""braggint's own reader of byte-offset CBFs: the pixels fabio decodes, as int32, from DECTRIS's files and
fabio's; every width of difference; other CBFs left to fabio; a short block an error."""

from __future__ import annotations

import bz2

import fabio
import numpy as np
import pytest

from braggint.errors import ImageError
from braggint.io.cbf import BINARY_START, decode_byte_offset, read_byte_offset_cbf
from braggint.io.images import ImageSource
from braggint.models import Detector, ImageSet, Panel


def test_real_pilatus_frames_decode_to_fabios_pixels(shared_data, tmp_path):
    for name in ("l-cyst_01_00001.cbf", "l-cyst_03_00010.cbf"):
        compressed = shared_data / "l_cysteine_real" / "images" / f"{name}.bz2"
        plain = tmp_path / name
        plain.write_bytes(bz2.decompress(compressed.read_bytes()))
        ours = read_byte_offset_cbf(str(plain))
        theirs = fabio.open(str(compressed)).data
        assert ours.dtype == np.int32 and ours.shape == (1679, 1475)
        assert np.array_equal(ours, theirs)
        differences = np.diff(ours.reshape(-1).astype(np.int64))
        assert (ours == -1).any() and (np.abs(differences) > 127).any()  # gap pixels; 16-bit differences


def test_extreme_values_round_trip_through_fabios_writer(tmp_path):
    rng = np.random.default_rng(3)
    image = rng.integers(-5, 300, size=(37, 53)).astype(np.int32)
    every_seventh = image.reshape(-1)[::7]
    every_seventh[:] = rng.integers(-2**31, 2**31, size=len(every_seventh), dtype=np.int64)
    image[0, :4] = [2**31 - 1, -2**31, 2**31 - 1, -40000]  # differences beyond 32 bits, kept modulo 2**32
    path = tmp_path / "extreme.cbf"
    fabio.cbfimage.CbfImage(data=image).write(str(path))
    assert np.array_equal(read_byte_offset_cbf(str(path)), image)


def test_each_width_of_difference_including_64_bit():
    def le(value, width):
        return int(value).to_bytes(width, "little", signed=True)

    stream = (le(5, 1) + le(-3, 1)  # one byte each
              + b"\x80" + le(1000, 2) + b"\x80" + le(-2000, 2)  # 16-bit
              + b"\x80" + le(-32768, 2) + le(70000, 4)  # 32-bit
              + b"\x80" + le(-32768, 2) + le(-2**31, 4) + le(2**33 + 7, 8))  # 64-bit: kept modulo 2**32
    expected = np.cumsum([5, -3, 1000, -2000, 70000, 2**33 + 7]).astype(np.int64).astype(np.int32)
    pixels = np.zeros(6, np.int32)
    assert decode_byte_offset(np.frombuffer(stream, np.uint8), pixels) == 6
    assert np.array_equal(pixels, expected)
    # Bytes that end inside a difference, or before the last pixel, decode only what they hold.
    assert decode_byte_offset(np.frombuffer(stream[:-3], np.uint8), np.zeros(6, np.int32)) == 5
    assert decode_byte_offset(np.frombuffer(stream, np.uint8), np.zeros(8, np.int32)) == 6


def test_other_cbfs_are_left_to_fabio_and_still_read(tmp_path):
    image = np.arange(24 * 32, dtype=np.uint16).reshape(24, 32)
    path = tmp_path / "x_001.cbf"
    fabio.cbfimage.CbfImage(data=image).write(str(path))
    assert read_byte_offset_cbf(str(path)) is None  # unsigned 16-bit: fabio's
    (tmp_path / "plain.cbf").write_bytes(b"###CBF: VERSION 1.5\ndata_x\n")
    assert read_byte_offset_cbf(str(tmp_path / "plain.cbf")) is None  # no binary section
    source = ImageSource(ImageSet(template=str(tmp_path / "x_###.cbf")),
                         Detector([Panel(image_size=(32, 24), trusted_range=(0, 1e6))]))
    assert np.array_equal(source.raw(1)[0], image)


def test_a_block_shorter_than_its_header_says_names_file_and_frame(tmp_path):
    image = np.arange(24 * 32, dtype=np.int32).reshape(24, 32) * 1000
    path = tmp_path / "x_001.cbf"
    fabio.cbfimage.CbfImage(data=image).write(str(path))
    whole = path.read_bytes()
    start = whole.index(BINARY_START) + len(BINARY_START)
    path.write_bytes(whole[:start + 100])
    with pytest.raises(ValueError, match=r"ends after \d+ of 768 pixels"):
        read_byte_offset_cbf(str(path))
    source = ImageSource(ImageSet(template=str(tmp_path / "x_###.cbf")),
                         Detector([Panel(image_size=(32, 24), trusted_range=(0, 1e6))]))
    with pytest.raises(ImageError, match=r"x_001.cbf: cannot read image 1: the byte-offset data ends after"):
        source.raw(1)


def test_reused_frames_decode_into_the_memory_of_the_one_before(tmp_path):
    rng = np.random.default_rng(5)
    images = [rng.integers(-2, 5000, size=(24, 32)).astype(np.int32) for _ in range(3)]
    for number, image in enumerate(images, start=1):
        fabio.cbfimage.CbfImage(data=image).write(str(tmp_path / f"x_{number:03d}.cbf"))
    fabio.cbfimage.CbfImage(data=np.zeros((10, 10), np.int32)).write(str(tmp_path / "odd.cbf"))
    detector = Detector([Panel(image_size=(32, 24), trusted_range=(0, 1e6))])
    imageset = ImageSet(template=str(tmp_path / "x_###.cbf"))
    reusing, fresh = ImageSource(imageset, detector, reuse_frames=True), ImageSource(imageset, detector)
    first = reusing.raw(1)[0]
    assert np.array_equal(first, images[0])
    second = reusing.raw(2)[0]
    assert second is first and np.array_equal(second, images[1])  # same memory, the new frame's pixels
    assert fresh.raw(1)[0] is not fresh.raw(2)[0]
    # Memory of another shape is not written: an image of its own.
    held = np.zeros((24, 32), np.int32)
    assert read_byte_offset_cbf(str(tmp_path / "odd.cbf"), held).shape == (10, 10) and not held.any()

"""Writing simulated frames as miniCBF (Pilatus header, byte-offset) or an HDF5 master file."""

from __future__ import annotations

import os

import numpy as np

from ..io.atomic import atomic_open
from ..models.experiment import Experiment
from .spec import SimulationSpec


def pilatus_header(spec: SimulationSpec, experiment: Experiment, index: int) -> str:
    """The ``_array_data.header_contents`` text of image ``index`` (0-based), PILATUS_1.2 convention."""
    panel = experiment.detector[0]
    origin = panel.global_frame[2]
    beam_x, beam_y = -origin[0] / spec.pixel_size, origin[1] / spec.pixel_size
    lines = [
        "Detector: PILATUS 6M, S/N 60-0000 braggint.simulate",
        "2026-01-01T00:00:00.000",
        f"Pixel_size {spec.pixel_size * 1e-3:.6g} m x {spec.pixel_size * 1e-3:.6g} m",
        f"Silicon sensor, thickness {spec.thickness * 1e-3:.6f} m",
        f"Exposure_time {spec.exposure_time:.6f} s",
        f"Exposure_period {spec.exposure_time:.6f} s",
        "Tau = 0 s",
        f"Count_cutoff {spec.overload} counts",
        f"Wavelength {spec.wavelength:.5f} A",
        f"Detector_distance {spec.distance * 1e-3:.5f} m",
        f"Beam_xy ({beam_x:.2f}, {beam_y:.2f}) pixels",
        f"Start_angle {spec.phi_start + index * spec.oscillation:.4f} deg.",
        f"Angle_increment {spec.oscillation:.4f} deg.",
        "Phi 0.0000 deg.",
        "Chi 0.0000 deg.",
        "Oscillation_axis X, CW",
    ]
    return "\r\n".join(f"# {line}" for line in lines)


def write_cbf(path: str, image: np.ndarray, header_contents: str) -> None:
    """One miniCBF file (int32, byte-offset compressed), written under a temporary name first."""
    import fabio.cbfimage

    cbf = fabio.cbfimage.CbfImage(data=image.astype(np.int32))
    cbf.header["_array_data.header_convention"] = '"PILATUS_1.2"'
    cbf.header["_array_data.header_contents"] = header_contents
    temporary = path + ".part"
    cbf.write(temporary)
    os.replace(temporary, path)


class ImageWriter:
    """Writes frames one at a time: a miniCBF per frame, or frames appended to one HDF5 data file."""

    def __init__(self, spec: SimulationSpec, experiment: Experiment, directory: str):
        if spec.format not in ("cbf", "nexus"):
            raise ValueError(f"unknown image format {spec.format!r} (cbf or nexus)")
        self.spec, self.experiment, self.directory = spec, experiment, directory
        self._h5 = None
        if spec.format == "nexus":
            import h5py
            import hdf5plugin

            self._data_path = os.path.join(directory, "data_000001.h5")
            self._h5 = h5py.File(self._data_path + ".part", "w")
            shape = (spec.n_images, spec.ny, spec.nx)
            self._dataset = self._h5.create_dataset("data", shape=shape, dtype=np.int32,
                                                    chunks=(1, spec.ny, spec.nx), **hdf5plugin.Bitshuffle())

    def write(self, index: int, image: np.ndarray) -> None:
        if self._h5 is None:
            name = self.spec.template.replace("#####", f"{index + 1:05d}")
            write_cbf(os.path.join(self.directory, name), image, pilatus_header(self.spec, self.experiment, index))
        else:
            self._dataset[index] = image

    def close(self) -> None:
        if self._h5 is None:
            return
        import h5py

        self._h5.close()
        os.replace(self._data_path + ".part", self._data_path)
        master = os.path.join(self.directory, "master.h5")
        with atomic_open(master, "wb") as handle:
            with h5py.File(handle, "w") as h5:
                group = h5.create_group("entry/data")
                group["data_000001"] = h5py.ExternalLink("data_000001.h5", "/data")

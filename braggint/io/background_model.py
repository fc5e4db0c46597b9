"""Global background models for ``integration.background.algorithm=gmodel``.

A model is one 2-D image per panel (n_slow, n_fast) of the expected
background counts per pixel per frame, stored as ``.npy`` (one panel), or
``.npz`` / a numpy pickle holding one array per panel.  DIALS's own
``dials.model_background`` pickles need DIALS to unpickle and are not read.
"""

from __future__ import annotations

import pickle

import numpy as np

from ..errors import InputFileError
from ..models.shoebox import ShoeboxColumn


def read_background_model(path: str) -> list[np.ndarray]:
    """Per-panel background images from ``path``."""
    try:
        if path.endswith(".npy"):
            panels = [np.load(path)]
        elif path.endswith(".npz"):
            with np.load(path) as archive:
                panels = [archive[key] for key in archive.files]
        else:
            with open(path, "rb") as handle:
                loaded = pickle.load(handle)
            panels = list(loaded) if isinstance(loaded, (list, tuple)) else [loaded]
    except FileNotFoundError:
        raise InputFileError(f"{path}: background model file not found") from None
    except Exception as exc:  # any unreadable content is reported with the file name
        raise InputFileError(f"{path}: cannot read the background model: {exc}") from None
    panels = [np.asarray(p, dtype=float) for p in panels]
    if not panels or any(p.ndim != 2 for p in panels):
        raise InputFileError(f"{path}: a background model must hold one 2-D image per panel")
    return panels


def cut_model(path: str | None, shoeboxes: ShoeboxColumn) -> np.ndarray:
    """The model under every shoebox voxel (same value on every frame), flat like the shoebox data."""
    if path is None:
        raise InputFileError("integration.background.gmodel.model: a background model file is required "
                             "for background.algorithm=gmodel")
    panels = read_background_model(path)
    row, _, y, x = shoeboxes.voxel_coordinates()
    values = np.zeros(len(row))
    panel_of_voxel = shoeboxes.panel[row]
    for p, image in enumerate(panels):
        sel = (panel_of_voxel == p) & (y >= 0) & (y < image.shape[0]) & (x >= 0) & (x < image.shape[1])
        values[sel] = image[y[sel], x[sel]]
    return values

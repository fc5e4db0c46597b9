"""Image sets: where the frames of an experiment live on disk.

Paths in a ``.expt`` file may be relative; they are resolved against the
directory of that file when read, and written back relative to the new file
when they were relative to begin with.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

HDF5_SUFFIXES = (".h5", ".hdf5", ".nxs", ".nx5", ".cxi")

_KNOWN = ("__id__", "template", "images", "mask", "gain", "pedestal", "dx", "dy", "params",
          "single_file_indices")


def _resolve(path: str | None, base_dir: str) -> str | None:
    if not path:
        return path
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(base_dir, path))


@dataclass(eq=False)
class ImageSet:
    """A sequence (template + scan) or a list of image files.

    Attributes
    ----------
    kind : str
        ``ImageSequence`` (legacy ``ImageSweep``) for rotation data;
        ``ImageSet`` for stills listed file by file.
    template : str or None
        Absolute path with a run of ``#`` for the zero-padded image number,
        or the path of an HDF5/NeXus master file.
    images : list of str
        Absolute paths, one per image, for ``ImageSet``.
    single_file_indices : list of int or None
        0-based frame indices inside a multi-image file.
    mask, gain, pedestal, dx, dy : str or None
        External per-pixel maps (pickles written by dxtbx).
    """

    kind: str = "ImageSequence"
    template: str | None = None
    images: list[str] = field(default_factory=list)
    mask: str | None = None
    gain: str | None = None
    pedestal: str | None = None
    dx: str | None = None
    dy: str | None = None
    params: dict = field(default_factory=dict)
    single_file_indices: list[int] | None = None
    relative: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    @property
    def is_sequence(self) -> bool:
        return self.kind in ("ImageSequence", "ImageSweep")

    @property
    def is_hdf5(self) -> bool:
        path = self.template or (self.images[0] if self.images else "")
        return path.lower().endswith(HDF5_SUFFIXES)

    def frame_source(self, image_number: int, first_image: int = 1) -> tuple[str, int | None]:
        """``(path, frame index in file or None)`` of a 1-based image number.

        ``first_image`` is the first image number of the scan, needed to
        index ``single_file_indices`` and lists of files.
        """
        offset = image_number - first_image
        if self.is_hdf5:
            path = self.template or self.images[0]
            index = self.single_file_indices[offset] if self.single_file_indices else image_number - 1
            return path, index
        if self.template:
            match = re.search(r"#+", self.template)
            if match is None:
                return self.template, None
            width = match.end() - match.start()
            return self.template[: match.start()] + f"{image_number:0{width}d}" + self.template[match.end():], None
        return self.images[offset], None

    @classmethod
    def from_dict(cls, d: dict, base_dir: str) -> "ImageSet":
        relative = {}
        for key in ("template", "mask", "gain", "pedestal", "dx", "dy"):
            value = d.get(key)
            relative[key] = bool(value) and not os.path.isabs(value)
        images = [_resolve(p, base_dir) for p in d.get("images", [])]
        relative["images"] = bool(d.get("images")) and not os.path.isabs(d["images"][0])
        return cls(
            kind=d.get("__id__", "ImageSequence"),
            template=_resolve(d.get("template"), base_dir),
            images=images,
            mask=_resolve(d.get("mask"), base_dir),
            gain=_resolve(d.get("gain"), base_dir),
            pedestal=_resolve(d.get("pedestal"), base_dir),
            dx=_resolve(d.get("dx"), base_dir),
            dy=_resolve(d.get("dy"), base_dir),
            params=dict(d.get("params", {})),
            single_file_indices=d.get("single_file_indices"),
            relative=relative,
            extra={k: v for k, v in d.items() if k not in _KNOWN},
        )

    def to_dict(self, base_dir: str) -> dict:
        def out(key, value):
            if value and self.relative.get(key):
                return os.path.relpath(value, base_dir)
            return value

        d: dict = {"__id__": self.kind}
        if self.template is not None:
            d["template"] = out("template", self.template)
        if self.images:
            d["images"] = [out("images", p) for p in self.images]
        for key in ("mask", "gain", "pedestal", "dx", "dy"):
            d[key] = out(key, getattr(self, key))
        d["params"] = self.params
        if self.single_file_indices is not None:
            d["single_file_indices"] = list(self.single_file_indices)
        d.update(self.extra)
        return d

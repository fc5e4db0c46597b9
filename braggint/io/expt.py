"""Read and write DIALS experiment lists (``.expt``, JSON).

The layout is dxtbx's ``ExperimentList.to_dict``: per-kind model lists and
experiments that refer to them by index, so shared models stay shared.
"""

from __future__ import annotations

import json
import os

from ..errors import InputFileError, require_file
from ..models.beam import Beam
from ..models.crystal import Crystal
from ..models.detector import Detector
from ..models.experiment import Experiment, ExperimentList
from ..models.goniometer import Goniometer
from ..models.imageset import ImageSet
from ..models.profile import GaussianRSProfile
from ..models.scan import Scan
from .atomic import atomic_open

_READERS = {
    "beam": Beam.from_dict,
    "detector": Detector.from_dict,
    "goniometer": Goniometer.from_dict,
    "scan": Scan.from_dict,
    "crystal": Crystal.from_dict,
    "profile": GaussianRSProfile.from_dict,
    "scaling_model": dict,
}

#: What :func:`read_experiments` calls its file in errors.
EXPERIMENT_LIST = "experiment list"


def read_experiments(path: str) -> ExperimentList:
    """Load an experiment list; raise :class:`InputFileError` naming the file on failure."""
    require_file(path, EXPERIMENT_LIST)
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
    except UnicodeDecodeError:
        raise InputFileError(f"{path}: not a JSON experiment list (binary content)") from None
    except json.JSONDecodeError as exc:
        raise InputFileError(f"{path}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    try:
        return experiments_from_dict(document, os.path.dirname(os.path.abspath(path)))
    except InputFileError as exc:
        raise InputFileError(f"{path}: {exc}") from None
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise InputFileError(f"{path}: not a valid DIALS experiment list ({type(exc).__name__}: {exc})") from None


def experiments_from_dict(document: dict, base_dir: str) -> ExperimentList:
    if not isinstance(document, dict) or document.get("__id__") != "ExperimentList":
        raise InputFileError("not a DIALS experiment list (missing __id__ = ExperimentList)")
    models: dict[str, list] = {}
    for kind, reader in _READERS.items():
        models[kind] = [_load_model(kind, reader, d) for d in document.get(kind, [])]
    models["imageset"] = [ImageSet.from_dict(d, base_dir) for d in document.get("imageset", [])]
    result = ExperimentList(history=list(document.get("history", [])))
    for number, entry in enumerate(document.get("experiment", [])):
        experiment = Experiment(identifier=entry.get("identifier", ""))
        for kind in models:
            if kind in entry:
                index = entry[kind]
                if not isinstance(index, int) or not 0 <= index < len(models[kind]):
                    raise InputFileError(f"experiment {number} refers to {kind} {index!r}, which does not exist")
                setattr(experiment, kind, models[kind][index])
        result.append(experiment)
    return result


def _load_model(kind: str, reader, d: dict):
    try:
        return reader(d)
    except KeyError as exc:
        raise InputFileError(f"{kind} model lacks the key {exc}") from None


def experiments_to_dict(experiments: ExperimentList, base_dir: str) -> dict:
    document: dict = {"__id__": "ExperimentList", "experiment": []}
    kinds = ("imageset", "beam", "detector", "goniometer", "scan", "crystal", "profile", "scaling_model")
    uniques = {kind: experiments.unique(kind) for kind in kinds}
    index = {kind: {id(m): i for i, m in enumerate(ms)} for kind, ms in uniques.items()}
    for experiment in experiments:
        entry = {"__id__": "Experiment", "identifier": experiment.identifier}
        for kind in ("beam", "detector", "goniometer", "scan", "crystal", "profile", "scaling_model",
                     "imageset"):
            model = getattr(experiment, kind)
            if model is not None:
                entry[kind] = index[kind][id(model)]
        document["experiment"].append(entry)
    if experiments.history:
        document["history"] = list(experiments.history)
    document["imageset"] = [m.to_dict(base_dir) for m in uniques["imageset"]]
    for kind in ("beam", "detector", "goniometer", "scan", "crystal", "profile"):
        document[kind] = [m.to_dict() for m in uniques[kind]]
    document["scaling_model"] = list(uniques["scaling_model"])
    return document


def write_experiments(experiments: ExperimentList, path: str) -> None:
    """Write an experiment list atomically, paths relative to ``path`` where they were relative."""
    document = experiments_to_dict(experiments, os.path.dirname(os.path.abspath(path)))
    with atomic_open(path, "w") as handle:
        json.dump(document, handle, indent=2)

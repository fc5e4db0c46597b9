"""Experiments and experiment lists.

An :class:`Experiment` bundles the models of one crystal in one sweep;
models may be shared between experiments (same Python object), as in DIALS.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .beam import Beam
from .crystal import Crystal
from .detector import Detector
from .goniometer import Goniometer
from .imageset import ImageSet
from .profile import GaussianRSProfile
from .scan import Scan

MODEL_KINDS = ("beam", "detector", "goniometer", "scan", "crystal", "profile", "scaling_model",
               "imageset")


@dataclass(eq=False)
class Experiment:
    identifier: str = ""
    beam: Beam | None = None
    detector: Detector | None = None
    goniometer: Goniometer | None = None
    scan: Scan | None = None
    crystal: Crystal | None = None
    profile: GaussianRSProfile | None = None
    scaling_model: dict | None = None
    imageset: ImageSet | None = None

    @property
    def is_still(self) -> bool:
        return self.goniometer is None or self.scan is None or self.scan.oscillation[1] == 0.0


@dataclass(eq=False)
class ExperimentList:
    experiments: list[Experiment] = field(default_factory=list)
    history: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.experiments)

    def __iter__(self):
        return iter(self.experiments)

    def __getitem__(self, i) -> Experiment:
        return self.experiments[i]

    def append(self, experiment: Experiment) -> None:
        self.experiments.append(experiment)

    def unique(self, kind: str) -> list:
        """Distinct model objects of one kind, in order of first use."""
        seen: dict[int, object] = {}
        for experiment in self.experiments:
            model = getattr(experiment, kind)
            if model is not None and id(model) not in seen:
                seen[id(model)] = model
        return list(seen.values())

    def identifiers(self) -> list[str]:
        return [e.identifier for e in self.experiments]

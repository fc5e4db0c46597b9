"""``braggint.simulate``: write a rotation dataset with known truth.

    braggint.simulate [preset=tiny|small|large] [output=DIR] [name=value ...]

Any field of :class:`braggint.simulate.SimulationSpec` can be set
(``seed=3``, ``n_images=40``, ``unit_cell=50,60,70,90,90,90``,
``ice_rings=True``, ``format=nexus``...).
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import typing

from ..errors import ParameterError
from ..simulate import PRESETS, SimulationSpec, simulate
from .common import print_version, run_program

PROGRAM = "braggint.simulate"
USAGE = __doc__


def _convert(name: str, text: str, kind) -> object:
    origin = typing.get_origin(kind)
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if text == "None" and type(None) in typing.get_args(kind):
        return None
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) and args:
        return _convert(name, text, args[0])
    if origin is tuple:
        element = args[0] if args else float
        return tuple(_convert(name, part, element) for part in text.split(","))
    if kind is bool:
        if text not in ("True", "False"):
            raise ParameterError(f"parameter {name}: {text!r} is not True or False")
        return text == "True"
    try:
        return kind(text)
    except (TypeError, ValueError):
        raise ParameterError(f"parameter {name}: {text!r} is not a valid {getattr(kind, '__name__', kind)}") from None


def parse(argv: list[str]) -> tuple[SimulationSpec, str]:
    spec = PRESETS["tiny"]
    output = "simulated"
    hints = typing.get_type_hints(SimulationSpec)
    fields = {f.name for f in dataclasses.fields(SimulationSpec)}
    changes = {}
    for arg in argv:
        if "=" not in arg:
            raise ParameterError(f"expected name=value, got {arg!r}")
        name, value = arg.split("=", 1)
        if name == "preset":
            if value not in PRESETS:
                raise ParameterError(f"preset={value}: choose one of {', '.join(PRESETS)}")
            spec = PRESETS[value]
        elif name == "output":
            output = value
        elif name in fields and name != "extra":
            changes[name] = _convert(name, value, hints[name])
        else:
            raise ParameterError(f"unknown parameter {name!r}")
    return spec.replace(**changes), output


def _run(argv: list[str]) -> int:
    if "-h" in argv or "--help" in argv:
        print(USAGE)
        return 0
    if "-V" in argv or "--version" in argv:
        print_version(PROGRAM)
        return 0
    spec, output = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    try:
        result = simulate(spec, output)
    except ValueError as exc:
        raise ParameterError(str(exc)) from None
    print(f"Wrote {spec.n_images} images, models.expt, strong.refl ({result.strong.nrows} spots) and "
          f"truth.refl ({result.truth.nrows} reflections) to {output} in {result.seconds:.1f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_program(PROGRAM, _run, argv)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

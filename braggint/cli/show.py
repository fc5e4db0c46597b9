"""``braggint.show``: print a summary of experiment lists and reflection files."""

from __future__ import annotations

import numpy as np

from ..io.expt import read_experiments
from ..io.refl import read_reflections
from ..models.flags import Flags
from .common import parse_command_line, print_version, run_program

PROGRAM = "braggint.show"


def describe_experiments(path: str) -> str:
    experiments = read_experiments(path)
    lines = [f"{path}: {len(experiments)} experiment(s)"]
    for number, e in enumerate(experiments):
        lines.append(f"Experiment {number}: identifier {e.identifier or '(none)'}")
        if e.beam is not None:
            lines.append(f"  Beam: wavelength {e.beam.wavelength:.5f} A, s0 {np.round(e.beam.s0, 6).tolist()}")
        if e.detector is not None:
            for i, p in enumerate(e.detector.panels):
                lines.append(f"  Panel {i} {p.name!r}: {p.image_size[0]} x {p.image_size[1]} px of "
                             f"{p.pixel_size[0]} mm, type {p.type}, trusted {p.trusted_range}, "
                             f"{'parallax-corrected' if p.parallax_params else 'simple'} px/mm")
        if e.goniometer is not None:
            lines.append(f"  Goniometer: axis (lab) {np.round(e.goniometer.rotation_axis_lab, 6).tolist()}"
                         + (f", axes {e.goniometer.names}" if e.goniometer.is_multi_axis else ""))
        if e.scan is not None:
            s = e.scan
            lines.append(f"  Scan: images {s.image_range[0]}-{s.image_range[1]}, oscillation "
                         f"{s.oscillation[0]} + {s.oscillation[1]} deg/image")
        if e.crystal is not None:
            cell = ", ".join(f"{v:.4f}" for v in e.crystal.unit_cell)
            group = e.crystal.space_group
            lines.append(f"  Crystal: cell ({cell}), space group {group.hm if group else e.crystal.hall_symbol}"
                         + (", scan-varying" if e.crystal.is_scan_varying else ""))
        if e.profile is not None:
            lines.append(f"  Profile: gaussian_rs sigma_b {np.mean(e.profile.sigma_b):.5f} deg, "
                         f"sigma_m {np.mean(e.profile.sigma_m):.5f} deg, n_sigma {e.profile.n_sigma}")
        if e.imageset is not None:
            lines.append(f"  Images: {e.imageset.template or (e.imageset.images[0] if e.imageset.images else '')}")
    return "\n".join(lines)


def describe_reflections(path: str) -> str:
    table = read_reflections(path)
    lines = [f"{path}: {table.nrows} reflections, {len(table.identifiers)} experiment identifier(s)"]
    width = max((len(k) for k in table.keys()), default=0)
    for name in sorted(table.keys()):
        lines.append(f"  {name:<{width}}  {table.column_type(name)}")
    if "flags" in table:
        counts = [(f.name, int(table.get_flags(f).sum())) for f in Flags if f.value & (f.value - 1) == 0]
        lines.append("  flags: " + ", ".join(f"{name} {n}" for name, n in counts if n))
    return "\n".join(lines)


def _run(argv: list[str]) -> int:
    cl = parse_command_line(argv)
    if cl.version:
        print_version(PROGRAM)
        return 0
    if cl.help or not (cl.experiments or cl.reflections):
        print(f"usage: {PROGRAM} file.expt|file.refl [...]")
        return 0
    for path in cl.experiments:
        print(describe_experiments(path))
    for path in cl.reflections:
        print(describe_reflections(path))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_program(PROGRAM, _run, argv)

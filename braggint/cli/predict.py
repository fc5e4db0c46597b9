"""``braggint.predict``: predict reflections from an experiment list, no images needed."""

from __future__ import annotations

from ..errors import InputFileError
from ..io.expt import read_experiments
from ..io.refl import write_reflections
from ..params import ParameterSet, master_text
from ..pipeline.predict import predict_reflections
from .common import apply_parameters, console_command, parse_command_line, print_version, run_program

PROGRAM = "braggint.predict"
USAGE = f"""usage: {PROGRAM} models.expt [name=value ...]

Predict every reflection of every experiment and write them (DIALS layout)
to output=predicted.refl.  -c shows the parameters.
"""


def _run(argv: list[str]) -> int:
    cl = parse_command_line(argv)
    if cl.version:
        print_version(PROGRAM)
        return 0
    params = ParameterSet.from_text(master_text("predict"), "braggint/params/predict.phil")
    if cl.help:
        print(USAGE + "\n" + params.show(0))
        return 0
    apply_parameters(params, cl)
    if cl.show_config:
        print(params.show(cl.expert_level, cl.attributes_level), end="")
        return 0
    if len(cl.experiments) != 1:
        raise InputFileError("give exactly one experiment list (.expt)")
    working = params.extract()
    experiments = read_experiments(cl.experiments[0])
    table = predict_reflections(experiments, working.prediction)
    write_reflections(table, working.output)
    print(f"Predicted {table.nrows} reflections from {len(experiments)} experiment(s); wrote {working.output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_program(PROGRAM, _run, argv)


console_main = console_command(main)  # the braggint.predict command


if __name__ == "__main__":  # pragma: no cover
    console_main()

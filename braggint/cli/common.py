"""What every braggint command shares: DIALS-style argument handling,
one-line errors without tracebacks, and logging to a file and the terminal.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field

from .. import __version__
from ..errors import BraggintError, ParameterError
from ..params import ParameterSet

EXPERIMENT_SUFFIXES = (".expt", ".json")
REFLECTION_SUFFIXES = (".refl",)
PHIL_SUFFIXES = (".phil", ".params", ".eff", ".def")

log = logging.getLogger("braggint")


@dataclass
class CommandLine:
    """The sorted-out arguments of a DIALS-style command line."""

    experiments: list[str] = field(default_factory=list)
    reflections: list[str] = field(default_factory=list)
    phil_files: list[str] = field(default_factory=list)
    assignments: list[tuple[str, str]] = field(default_factory=list)
    show_config: bool = False
    expert_level: int = 0
    attributes_level: int = 0
    help: bool = False
    version: bool = False


def parse_command_line(argv: list[str]) -> CommandLine:
    """Sort arguments into files, ``name=value`` assignments and flags.

    Files are recognised by suffix; a ``.phil`` file holds parameters.
    ``-c`` shows the configuration, ``-e N`` the expert level shown with it,
    ``-a N`` the attribute level, ``-h`` the help.
    """
    cl = CommandLine()
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("-h", "--help"):
            cl.help = True
        elif arg in ("-V", "--version"):
            cl.version = True
        elif arg in ("-c", "--show-config"):
            cl.show_config = True
        elif arg in ("-e", "--expert-level", "-a", "--attributes-level"):
            if i + 1 >= len(args) or not args[i + 1].lstrip("-").isdigit():
                raise ParameterError(f"option {arg} needs a whole number (e.g. {arg} 2)")
            value = int(args[i + 1])
            if arg in ("-e", "--expert-level"):
                cl.expert_level = value
            else:
                cl.attributes_level = value
            i += 1
        elif arg.startswith("-") and not os.path.exists(arg) and "=" not in arg:
            raise ParameterError(f"unknown option '{arg}'")
        elif "=" in arg and not os.path.exists(arg):
            name, _, value = arg.partition("=")
            if not name.strip():
                raise ParameterError(f"argument '{arg}' has no parameter name before '='")
            cl.assignments.append((name.strip(), value))
        elif arg.endswith(PHIL_SUFFIXES):
            cl.phil_files.append(arg)
        elif arg.endswith(EXPERIMENT_SUFFIXES):
            cl.experiments.append(arg)
        elif arg.endswith(REFLECTION_SUFFIXES) or arg.endswith(".refl.gz"):
            cl.reflections.append(arg)
        elif os.path.exists(arg):
            raise ParameterError(f"{arg}: not an experiment list (.expt), reflection file (.refl) or .phil file")
        else:
            raise ParameterError(f"{arg}: no such file, and not a parameter assignment (name=value)")
        i += 1
    return cl


def apply_parameters(params: ParameterSet, cl: CommandLine) -> None:
    """Apply .phil files, then command-line assignments (later wins)."""
    for path in cl.phil_files:
        if not os.path.isfile(path):
            raise ParameterError(f"{path}: parameter file not found")
        with open(path, encoding="utf-8", errors="replace") as handle:
            params.apply_phil(handle.read(), path)
    for name, value in cl.assignments:
        params.assign(name, value)


def setup_logging(log_path: str | None, verbose: bool = False) -> None:
    """Log INFO to the terminal and to ``log_path`` (if given), replacing old handlers."""
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.propagate = False
    terminal = logging.StreamHandler(sys.stdout)
    terminal.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(terminal)
    if log_path:
        file_handler = logging.FileHandler(log_path, mode="w", encoding="utf-8")
        file_handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(file_handler)


def run_program(program: str, body, argv: list[str] | None = None) -> int:
    """Run ``body(argv)``; turn user errors into one line on stderr and a non-zero status."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        return body(argv) or 0
    except BraggintError as exc:
        print(f"{program}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. output piped into `head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"{program}: interrupted", file=sys.stderr)
        return 130
    except MemoryError as exc:
        print(f"{program}: error: out of memory ({exc}); reduce integration.mp.nproc or the block size",
              file=sys.stderr)
        return 3


def exit_without_teardown(code: int) -> None:
    """End a finished command-line run at once with status ``code``, skipping the interpreter's teardown.

    Tearing down the imported modules (numba's compiler among them) took
    0.2-0.6 s after a braggint.integrate run, with nothing left to do: every
    output is written and renamed, the workers are stopped, and the log and
    terminal streams are flushed here first.  For the console scripts and
    ``python -m`` runs only (it ends the calling process); in-process
    callers use ``main``.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed, or a pipe whose reader went away
            pass
    os._exit(code)


def console_command(main):
    """The console-script entry point of a batch command: ``main`` on the command line, then
    :func:`exit_without_teardown` with its status."""

    def command() -> None:
        exit_without_teardown(main())

    return command


def print_version(program: str) -> None:
    print(f"{program} (braggint {__version__})")

"""``mp.method=drmaa``: Dask worker jobs submitted through the DRMAA library instead of qsub.

The jobs are Grid Engine jobs described exactly as dask-jobqueue's
SGECluster describes them (queue, project, resources, walltime and extra
directives from the ``jobqueue.sge`` configuration); only submission and
cancellation go through DRMAA.  Each is one call of this module as a
command (``python -m braggint.pipeline.drmaa_cluster submit|cancel``),
just as qsub and qdel are commands: Grid Engine's libdrmaa links jemalloc,
which cannot be loaded into a running Python (its static TLS block is
gone), so the helper starts with the library preloaded.  The library is
``DRMAA_LIBRARY_PATH`` or Debian's gridengine-drmaa1.0 location.
"""

from __future__ import annotations

import os
import shlex
import sys
import tempfile

from ..errors import ParameterError

#: Where Debian's gridengine-drmaa1.0 and gridengine-common put the library and the cell.
DEBIAN_LIBDRMAA = "/usr/lib/gridengine-drmaa/lib/libdrmaa.so.1.0"
DEBIAN_SGE_ROOT = "/var/lib/gridengine"


def drmaa_library() -> str:
    """Path of libdrmaa, or a ParameterError saying how to name it."""
    path = os.environ.get("DRMAA_LIBRARY_PATH") or DEBIAN_LIBDRMAA
    if not os.path.exists(path):
        raise ParameterError("integration.mp.method=drmaa needs libdrmaa: set DRMAA_LIBRARY_PATH to its path "
                             f"({path} does not exist)")
    return path


def helper_command(action: str) -> list[str]:
    """The command line that runs ``action`` (submit or cancel) with libdrmaa preloaded."""
    library = drmaa_library()
    sge_root = os.environ.get("SGE_ROOT", DEBIAN_SGE_ROOT)
    return ["env", f"LD_PRELOAD={library}", f"DRMAA_LIBRARY_PATH={library}", f"SGE_ROOT={sge_root}",
            sys.executable, "-m", __name__, action]


def native_specification(job_header: str) -> str:
    """qsub options of the ``#$`` lines of an SGE job header, as one DRMAA native specification."""
    options = []
    for line in job_header.splitlines():
        if line.startswith("#$"):
            options.extend(shlex.split(line[2:]))
    return " ".join(shlex.quote(option) for option in options)


def drmaa_cluster_class():
    """A dask-jobqueue cluster class whose jobs are submitted through DRMAA."""
    from dask_jobqueue.sge import SGECluster, SGEJob

    class DRMAAJob(SGEJob):
        config_name = "sge"

        async def _submit_job(self, script_filename):
            output = self.log_directory or os.getcwd()
            return await self._call(helper_command("submit") + [script_filename,
                                                                native_specification(self.job_header), output])

        def _job_id_from_submit_output(self, out):
            return out.strip()

        @classmethod
        async def _close_job(cls, job_id, cancel_command):
            if job_id:
                try:
                    await cls._call(helper_command("cancel") + [job_id])
                except RuntimeError:
                    pass  # the job has already ended

    class DRMAACluster(SGECluster):
        job_cls = DRMAAJob

    return DRMAACluster


def submit(script_path: str, native: str, output_directory: str) -> str:
    """Submit a copy of ``script_path`` (run by /bin/sh) through DRMAA; the job id.

    The copy lies in ``output_directory`` (the submitted file is temporary)
    and the job deletes it as it starts.
    """
    import drmaa

    with open(script_path) as handle:
        lines = handle.read().splitlines(keepends=True)
    handle, copy = tempfile.mkstemp(prefix=".braggint-drmaa-", suffix=".sh", dir=output_directory)
    with os.fdopen(handle, "w") as script:
        script.writelines(lines[:1] + ['rm -f "$0"\n'] + lines[1:])
    with drmaa.Session() as session:
        template = session.createJobTemplate()
        template.remoteCommand = "/bin/sh"
        template.args = [copy]
        template.nativeSpecification = native
        template.joinFiles = True
        template.outputPath = ":" + output_directory
        job_id = session.runJob(template)
        session.deleteJobTemplate(template)
    return job_id


def cancel(job_id: str) -> None:
    """Terminate the job ``job_id`` through DRMAA."""
    import drmaa

    with drmaa.Session() as session:
        session.control(job_id, drmaa.JobControlAction.TERMINATE)


def main(argv: list[str]) -> int:
    if argv[:1] == ["submit"] and len(argv) == 4:
        print(submit(*argv[1:]))
    elif argv[:1] == ["cancel"] and len(argv) == 2:
        cancel(argv[1])
    else:
        print("usage: python -m braggint.pipeline.drmaa_cluster submit SCRIPT NATIVE_SPEC OUTPUT_DIR | "
              "cancel JOB_ID", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

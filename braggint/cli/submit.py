"""``braggint.submit``: hand a sweep to a running braggint service.

    braggint.submit URL models.expt [strong.refl] output_dir=/data/out [name=value ...]
                    [priority=N] [key=IDEMPOTENCY-KEY] [--wait]

The token comes from the environment variable BRAGGINT_TOKEN.
"""

from __future__ import annotations

import json
import os

from ..errors import ParameterError
from ..service.client import Client, ServiceError
from .common import run_program

PROGRAM = "braggint.submit"


def _run(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    token = os.environ.get("BRAGGINT_TOKEN")
    if not token:
        raise ParameterError("set BRAGGINT_TOKEN to the service's bearer token")
    url, rest = argv[0], argv[1:]
    wait = "--wait" in rest
    rest = [a for a in rest if a != "--wait"]
    files = [os.path.abspath(a) for a in rest if "=" not in a]
    options = dict(a.split("=", 1) for a in rest if "=" in a and a.split("=", 1)[0] in
                   ("output_dir", "priority", "key"))
    parameters = [a for a in rest if "=" in a and a.split("=", 1)[0] not in ("output_dir", "priority", "key")]
    if not files or "output_dir" not in options:
        raise ParameterError("give models.expt [strong.refl] and output_dir=...")
    client = Client(url, token)
    try:
        job = client.submit(files[0], os.path.abspath(options["output_dir"]),
                            reflections=files[1] if len(files) > 1 else None, parameters=parameters,
                            priority=int(options.get("priority", 0)), idempotency_key=options.get("key"))
        if wait:
            job = client.wait(job["id"])
    except ServiceError as exc:
        raise ParameterError(str(exc)) from None
    print(json.dumps(job, indent=2))
    return 0 if job["state"] != "failed" else 1


def main(argv: list[str] | None = None) -> int:
    return run_program(PROGRAM, _run, argv)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

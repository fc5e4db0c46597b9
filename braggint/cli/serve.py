"""``braggint.serve``: the integration service (HTTP API, job queue, restart-safe).

    braggint.serve service.toml          run the service (Ctrl-C or SIGTERM stops it)
    braggint.serve --hash-token TOKEN    print the SHA-256 digest to put in token_sha256
"""

from __future__ import annotations

import logging
import signal
import sys
import threading

from ..errors import ParameterError
from ..service.app import serve
from ..service.config import ServiceConfig, hash_token
from .common import print_version, run_program

PROGRAM = "braggint.serve"


def _run(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    if argv[0] in ("-V", "--version"):
        print_version(PROGRAM)
        return 0
    if argv[0] == "--hash-token":
        if len(argv) != 2:
            raise ParameterError("--hash-token needs exactly one token")
        print(hash_token(argv[1]))
        return 0
    config = ServiceConfig.load(argv[0])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    server = serve(config)
    stopped = threading.Event()

    def stop(*_):
        if not stopped.is_set():
            stopped.set()
            threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    logging.getLogger("braggint.service").info("listening on http://%s:%d", *server.server_address[:2])
    try:
        server.serve_forever()
    finally:
        server.service.runner.stop()
        server.server_close()
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_program(PROGRAM, _run, argv)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

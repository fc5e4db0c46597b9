"""The service's configuration file (TOML).

    host = "127.0.0.1"            # the interface to listen on
    port = 8765
    state_dir = "/var/lib/braggint"   # job database and per-job logs
    data_roots = ["/dls/i04/data"]    # jobs may read and write only under these
    max_concurrent_jobs = 2
    token_sha256 = ["<sha256 hex of a bearer token>", ...]

Tokens are stored only as SHA-256 digests; ``braggint.serve --hash-token``
prints the digest of a token to put here.
"""

from __future__ import annotations

import hashlib
import os
import tomllib
from dataclasses import dataclass, field

from ..errors import ParameterError


@dataclass
class ServiceConfig:
    state_dir: str
    data_roots: list[str]
    token_sha256: list[str]
    host: str = "127.0.0.1"
    port: int = 8765
    max_concurrent_jobs: int = 1
    extra: dict = field(default_factory=dict)

    @classmethod
    def load(cls, path: str) -> "ServiceConfig":
        try:
            with open(path, "rb") as handle:
                values = tomllib.load(handle)
        except FileNotFoundError:
            raise ParameterError(f"{path}: service configuration not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ParameterError(f"{path}: not valid TOML: {exc}") from None
        missing = [k for k in ("state_dir", "data_roots", "token_sha256") if k not in values]
        if missing:
            raise ParameterError(f"{path}: missing {', '.join(missing)}")
        known = {"state_dir", "data_roots", "token_sha256", "host", "port", "max_concurrent_jobs"}
        config = cls(**{k: v for k, v in values.items() if k in known},
                     extra={k: v for k, v in values.items() if k not in known})
        config.data_roots = [os.path.realpath(root) for root in config.data_roots]
        if not config.token_sha256:
            raise ParameterError(f"{path}: token_sha256 is empty: no client could authenticate")
        return config


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()

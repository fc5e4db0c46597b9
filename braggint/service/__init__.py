"""braggint.serve: the integration service (HTTP API, SQLite job queue, runner)."""

"""A bounded load test of braggint.serve on loopback.

    python benchmarks/service_load.py [--jobs 200] [--clients 20] [--concurrent 2]

Starts the service in this process, has ``--clients`` threads submit
``--jobs`` integrations of a tiny simulated sweep between them (every tenth
submission repeats an earlier idempotency key, which must not create a job)
while polling job status, waits for every job and checks that each one
succeeded exactly once.  Writes a JSON record to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from braggint.service.app import serve  # noqa: E402
from braggint.service.client import Client  # noqa: E402
from braggint.service.config import ServiceConfig, hash_token  # noqa: E402
from braggint.simulate import PRESETS, simulate  # noqa: E402

TOKEN = "load-test-token"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--concurrent", type=int, default=2)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="braggint-load-"))
    simulate(PRESETS["tiny"].replace(n_images=2), str(root / "data"))
    config = ServiceConfig(state_dir=str(root / "state"), data_roots=[os.path.realpath(root)],
                           token_sha256=[hash_token(TOKEN)], port=0, max_concurrent_jobs=args.concurrent)
    server = serve(config)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = "http://%s:%d" % server.server_address[:2]
    submitted: dict[str, str] = {}
    latencies: list[float] = []
    lock = threading.Lock()

    def client_work(index: int) -> None:
        client = Client(url, TOKEN, timeout=60)
        for k in range(args.jobs // args.clients):
            number = index * (args.jobs // args.clients) + k
            key = f"job-{number - 1 if number % 10 == 9 else number}"  # every tenth repeats the previous key
            start = time.perf_counter()
            job = client.submit(str(root / "data" / "models.expt"), str(root / "out" / key),
                                reflections=str(root / "data" / "strong.refl"),
                                parameters=["profile.fitting=False"], idempotency_key=key)
            client.job(job["id"])
            with lock:
                latencies.append(time.perf_counter() - start)
                submitted.setdefault(key, job["id"])
                assert submitted[key] == job["id"], "an idempotency key created two jobs"

    start = time.perf_counter()
    threads = [threading.Thread(target=client_work, args=(i,)) for i in range(args.clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    submit_seconds = time.perf_counter() - start
    client = Client(url, TOKEN, timeout=60)
    states = {}
    for key, job_id in submitted.items():
        states[key] = client.wait(job_id, timeout=3600, poll=0.5)["state"]
    total_seconds = time.perf_counter() - start
    jobs = client.jobs(limit=10_000)
    server.shutdown()
    server.service.runner.stop()
    record = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "submissions": (args.jobs // args.clients) * args.clients, "clients": args.clients,
        "distinct_jobs": len(submitted), "jobs_in_database": len(jobs),
        "succeeded": sum(s == "succeeded" for s in states.values()),
        "submit_seconds": submit_seconds, "total_seconds": total_seconds,
        "submit_latency_ms_median": 1000 * sorted(latencies)[len(latencies) // 2],
        "submit_latency_ms_max": 1000 * max(latencies), "max_concurrent_jobs": args.concurrent,
        "attempts_max": max(j["attempts"] for j in jobs),
    }
    Path(args.out).mkdir(parents=True, exist_ok=True)
    path = Path(args.out) / f"service-load-{record['date'].replace(':', '').replace('-', '')}.json"
    path.write_text(json.dumps(record, indent=2))
    print(json.dumps(record, indent=2))
    ok = record["succeeded"] == record["distinct_jobs"] == record["jobs_in_database"] and record["attempts_max"] == 1
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

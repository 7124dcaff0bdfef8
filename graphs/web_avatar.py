"""The browser avatar: serves `web/` (three.js page) and bridges its WebSocket to the gRPC `Converse` stream.

For anyone without Unreal Engine: `almquist up` deploys this app beside the conversation, and
http://localhost:8000/avatar/ shows a procedural head that speaks the answers (WebAudio) with its face frames.

In: the page's JSON messages on `/ws`, each one `ClientEvent` in protobuf's JSON mapping, e.g.
`{"start": {"avatar": true}}`, `{"text": {"text": "..."}}`, `{"interrupt": {}}`,
`{"audio": {"pcm16": "<base64>", "sample_rate_hz": 48000, "channels": 1}}`, `{"end_of_turn": {}}`.
Out: every `ServerEvent` as JSON (field names as in the proto, bytes as base64, enums by name, default values
included so a frame always has its 52 weights), plus two messages of the bridge's own: `{"bridge_error": {...}}`
for a message it could not read (the socket stays open), and `{"stream_end": {"code", "details"}}` when the gRPC
stream ended (the socket is then closed). Closing the socket cancels the gRPC call, which releases the session.

The gRPC call goes through Serve's gRPC proxy like any client (`grpc_target`, the profile's gRPC port; runtime's
`load_profile` moves it with the port) to the `application` named in the metadata, with the page's credential.

Who may use it: the page signs in through the one-time link `almquist up` prints (`/avatar/login?token=...`), which
sets an HttpOnly, SameSite=Strict cookie holding an API key of its own; the socket then carries that cookie (a tool
may send `Authorization: Bearer ...` instead). A socket whose Origin is not this page's own host or one of
`allowed_origins` is refused before it opens (a page elsewhere cannot ride the user's cookie).

No `from __future__ import annotations` here: FastAPI reads the route methods' annotations (Request, WebSocket)
after Serve's ingress rewrote their signatures, where string annotations no longer resolve.
"""

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from google.protobuf import json_format
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve import Application
from starlette.websockets import WebSocketDisconnect, WebSocketState

from almquist.v1 import conversation_pb2, conversation_pb2_grpc
from graphs.visemes import ARKIT_NAMES, VISEMES

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
THREE_BUILD_DIR = WEB_DIR / "node_modules" / "three" / "build"
COOKIE = "almquist_key"
CLIENT_EVENT_KINDS = tuple(f.name for f in conversation_pb2.ClientEvent.DESCRIPTOR.oneofs_by_name["event"].fields)


class WebAvatarConfig(BaseModel):
    """The `args:` of the avatar_web application in a profile."""

    model_config = ConfigDict(extra="forbid")

    grpc_target: str = Field("localhost:9000", description="host:port of Serve's gRPC proxy")
    application: str = Field("conversation", description="the Serve application that serves Converse")
    max_message_bytes: int = Field(4 << 20, gt=0, description="largest message the page may send")
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="Origins (scheme://host:port) besides the page's own whose sockets are accepted.",
    )


def origin_allowed(origin: str | None, host: str | None, allowed: list[str]) -> bool:
    """Whether a WebSocket's Origin is the page's own (same host:port as the request) or listed. No Origin at all
    (a tool, not a browser) is allowed: the credential still decides."""
    if not origin:
        return True
    if origin in allowed:
        return True
    return bool(host) and urlsplit(origin).netloc == host


def credential_of(headers: Any, cookies: Any) -> str | None:
    """The socket's credential: `Authorization: Bearer ...` (tools), else the login cookie (the page)."""
    scheme, _, value = str(headers.get("authorization", "")).partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return cookies.get(COOKIE) or None


class BridgeInputError(ValueError):
    """A message from the page that is not a ClientEvent; reported on the socket, which stays open."""


def client_event_from_json(text: str | bytes, max_bytes: int = 4 << 20) -> conversation_pb2.ClientEvent:
    """One message of the page -> the ClientEvent it names, or BridgeInputError saying what is wrong."""
    if len(text) > max_bytes:
        raise BridgeInputError(f"message of {len(text)} bytes is over the limit of {max_bytes}")
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BridgeInputError(f"not JSON: {error}") from None
    if not isinstance(data, dict):
        raise BridgeInputError(f"expected a JSON object (a ClientEvent), got {type(data).__name__}")
    event = conversation_pb2.ClientEvent()
    try:
        json_format.ParseDict(data, event)
    except json_format.ParseError as error:
        raise BridgeInputError(f"not a ClientEvent: {error}") from None
    if event.WhichOneof("event") is None:
        raise BridgeInputError(f"the message names no event: give one of {', '.join(CLIENT_EVENT_KINDS)}")
    return event


def server_event_to_json(event: conversation_pb2.ServerEvent) -> str:
    """A ServerEvent as the page reads it: proto field names, defaults included (zero weights, scene 0)."""
    return json.dumps(
        json_format.MessageToDict(event, preserving_proto_field_name=True, always_print_fields_with_no_presence=True),
        separators=(",", ":"),
    )


class ConverseBridge:
    """One gRPC `Converse` call per WebSocket, over a channel shared by the replica's sockets."""

    def __init__(self, config: WebAvatarConfig) -> None:
        self.config = config
        self.open_calls = 0
        self.calls_total = 0
        self._channel: grpc.aio.Channel | None = None

    def _stub(self) -> conversation_pb2_grpc.ConversationStub:
        if self._channel is None:  # created on first use: grpc.aio binds a channel to the running event loop
            self._channel = grpc.aio.insecure_channel(self.config.grpc_target)
        return conversation_pb2_grpc.ConversationStub(self._channel)

    async def run(self, websocket: WebSocket) -> None:
        if not origin_allowed(
            websocket.headers.get("origin"), websocket.headers.get("host"), self.config.allowed_origins
        ):
            await websocket.close(code=1008, reason="this page's origin may not open the avatar's socket")
            return
        credential = credential_of(websocket.headers, websocket.cookies)
        if credential is None:
            await websocket.close(code=1008, reason="sign in first: open the login link `almquist up` printed")
            return
        await websocket.accept()
        requests: asyncio.Queue[conversation_pb2.ClientEvent | None] = asyncio.Queue()

        async def request_stream() -> AsyncIterator[conversation_pb2.ClientEvent]:
            while (event := await requests.get()) is not None:
                yield event

        metadata = (("application", self.config.application), ("authorization", f"Bearer {credential}"))
        call = self._stub().Converse(request_stream(), metadata=metadata)
        self.open_calls += 1
        self.calls_total += 1
        from_page = asyncio.create_task(self._page_to_grpc(websocket, requests))
        to_page = asyncio.create_task(self._grpc_to_page(call, websocket))
        try:
            await asyncio.wait({from_page, to_page}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # The page left (or the stream ended): cancelling the call ends the server's stream, which releases
            # the session for the next one.
            call.cancel()
            for task in (from_page, to_page):
                task.cancel()
            await asyncio.gather(from_page, to_page, return_exceptions=True)
            self.open_calls -= 1
            if websocket.application_state == WebSocketState.CONNECTED:
                with contextlib.suppress(RuntimeError):  # the page closed it meanwhile
                    await websocket.close()

    async def _page_to_grpc(
        self, websocket: WebSocket, requests: asyncio.Queue[conversation_pb2.ClientEvent | None]
    ) -> None:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            payload = message.get("text")
            if payload is None:
                payload = message.get("bytes") or b""
            try:
                event = client_event_from_json(payload, self.config.max_message_bytes)
            except BridgeInputError as error:
                await websocket.send_text(json.dumps({"bridge_error": {"message": str(error)}}))
                continue
            await requests.put(event)

    async def _grpc_to_page(self, call: Any, websocket: WebSocket) -> None:
        code, details = grpc.StatusCode.OK, ""
        try:
            async for event in call:
                await websocket.send_text(server_event_to_json(event))
        except grpc.aio.AioRpcError as error:
            code, details = error.code(), error.details() or ""
        except (WebSocketDisconnect, RuntimeError):  # the page is gone; run() cancels the call
            return
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            await websocket.send_text(json.dumps({"stream_end": {"code": code.name, "details": details}}))


web_app = FastAPI(title="Almquist browser avatar", docs_url=None, redoc_url=None, openapi_url=None)
web_app.mount("/src", StaticFiles(directory=WEB_DIR / "src", check_dir=False), name="src")
# three.js from npm (web/setup.sh); the page's import map points here, so nothing is fetched from a CDN
web_app.mount("/vendor/three", StaticFiles(directory=THREE_BUILD_DIR, check_dir=False), name="three")


@serve.deployment(num_replicas=1, max_ongoing_requests=64, ray_actor_options={"num_cpus": 0.05})
@serve.ingress(web_app)
class WebAvatar:
    """The page, its static files, `/ws` (the bridge) and `/health` (open gRPC calls, for tests and ops)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self._bridge = ConverseBridge(WebAvatarConfig.model_validate(config))

    @web_app.get("/", response_model=None)
    async def index(self, request: Request) -> Response:
        # Relative URLs in the page (./src, ./vendor, ./ws) need the trailing slash of /avatar/.
        if not request.url.path.endswith("/"):
            return RedirectResponse(request.url.replace(path=request.url.path + "/"))
        if COOKIE not in request.cookies:  # the page could not open its socket: say how to sign in instead
            return HTMLResponse(
                "<h1>Sign in first</h1><p>Open the one-time login link <code>almquist up</code> printed, or make a "
                "new one with <code>almquist login-link</code>; it signs this browser in and brings you back here."
                "</p>",
                status_code=401,
            )
        if not (THREE_BUILD_DIR / "three.module.js").is_file():
            return HTMLResponse(
                f"<h1>three.js is not installed</h1><p>Run <code>bash web/setup.sh</code> (npm ci) in the "
                f"repository; {THREE_BUILD_DIR} is missing.</p>",
                status_code=503,
            )
        return FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    @web_app.get("/login", response_model=None)
    async def login(self, request: Request, token: str = "") -> Response:
        """The one-time link `almquist up` prints: trades its token for a key of the page's own, in a cookie."""
        import ray

        from actors.sessions import SESSION_STORE_NAME, SESSION_STORE_NAMESPACE

        redeemed = None
        if token:
            sessions = ray.get_actor(SESSION_STORE_NAME, namespace=SESSION_STORE_NAMESPACE)
            redeemed = await sessions.redeem_login_link.remote(token)
        if redeemed is None:
            return HTMLResponse(
                "<h1>This login link does not work</h1><p>It was used already or has expired (links last 15 "
                "minutes). Run <code>almquist login-link</code> for a new one.</p>",
                status_code=401,
            )
        _, credential = redeemed
        response = RedirectResponse(str(request.url.replace(path=request.url.path.removesuffix("login"), query="")))
        response.set_cookie(
            COOKIE,
            credential,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path=request.url.path.removesuffix("login"),
            max_age=30 * 24 * 3600,
        )
        return response

    @web_app.get("/arkit.json")
    async def arkit(self) -> dict[str, list[str]]:
        """The blendshape and viseme names (graphs/visemes, the single source) the page builds its head from."""
        return {"blendshape_names": list(ARKIT_NAMES), "visemes": list(VISEMES)}

    @web_app.get("/health")
    async def health(self) -> JSONResponse:
        bridge = self._bridge
        return JSONResponse(
            {
                "open_calls": bridge.open_calls,
                "calls_total": bridge.calls_total,
                "grpc_target": bridge.config.grpc_target,
                "three_installed": (THREE_BUILD_DIR / "three.module.js").is_file(),
            }
        )

    @web_app.websocket("/ws")
    async def converse(self, websocket: WebSocket) -> None:
        await self._bridge.run(websocket)


def build_app(args: dict[str, Any]) -> Application:
    """Serve's application builder (`import_path: graphs.web_avatar:build_app`); `args` is a WebAvatarConfig."""
    config = WebAvatarConfig.model_validate(args or {})
    return WebAvatar.bind(config.model_dump())  # type: ignore[attr-defined]  # a Deployment; mypy sees the class

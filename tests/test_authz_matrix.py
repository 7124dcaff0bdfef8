"""The authorization matrix, through Serve's gRPC proxy: each identity (API keys of a user, a curator and an admin; a
JWT user of the configured issuer; no credential; a key that does not exist) x each RPC of graphs.ingress.SERVICES
(but the public Health service) x own/other's resources where an RPC takes one.

- a role below the RPC's rule (graphs/access.py RULES) gets PERMISSION_DENIED;
- no credential, or an unknown one, gets UNAUTHENTICATED;
- another identity's session is NOT_FOUND (Ask and AskStream with its id, Converse resuming it) and its content never
  comes back; claiming another user's id in SessionStart is PERMISSION_DENIED; the Account calls touch only the
  caller's own data (export shows one's own sessions only; a delete leaves everyone else's);
- an allowed role gets past the gate: any status but UNAUTHENTICATED/PERMISSION_DENIED (and never INTERNAL/UNKNOWN).

Requests are cheap, well-formed and mostly invalid (empty texts, unknown ids, bytes that are no image), so a cell
takes well under a second; the turns in one's own session ask for one token.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from almquist.client import Client
from almquist.config.security import ROLES, StateConfig
from almquist.state import StateStore
from almquist.v1 import (
    account_pb2,
    common_pb2,
    conversation_pb2,
    knowledge_pb2,
    media_pb2,
)
from graphs.access import rule_for
from graphs.ingress import SERVICES

SECRET = "tulip-7f3a"
GATE = ("UNAUTHENTICATED", "PERMISSION_DENIED")
DEADLINE_S = 90.0
MEDIA = [m.name for s in SERVICES if s.name == "Media" for m in s.methods]


def _start(**fields: Any) -> conversation_pb2.ClientEvent:
    return conversation_pb2.ClientEvent(start=conversation_pb2.SessionStart(**fields))


def _not_an_image() -> common_pb2.ImageFrame:
    return common_pb2.ImageFrame(data=b"not an image at all", mime_type="image/png")


def _no_audio() -> common_pb2.AudioChunk:
    return common_pb2.AudioChunk(pcm16=b"", sample_rate_hz=16_000, channels=1)


# RPC -> the cheap request(s) of a cell without a resource (a client stream: a list of messages)
CHEAP: dict[str, Callable[[], Any]] = {
    "Converse": lambda: [_start(max_tokens=1)],
    "Ask": lambda: conversation_pb2.AskRequest(text="", max_tokens=1),
    "AskStream": lambda: conversation_pb2.AskRequest(text="", max_tokens=1),
    "Query": lambda: knowledge_pb2.KnowledgeQuery(question=""),
    "Search": lambda: knowledge_pb2.SearchRequest(text="", limit=1),
    "ListSnapshots": lambda: knowledge_pb2.ListSnapshotsRequest(),
    "Rollback": lambda: knowledge_pb2.RollbackRequest(snapshot_id="matrix-no-such-snapshot"),
    "Influential": lambda: knowledge_pb2.InfluentialRequest(label="MatrixNoSuchLabel", limit=1),
    "Community": lambda: knowledge_pb2.CommunityRequest(entity_id="matrix-no-such-entity", limit=1),
    "ShortestPath": lambda: knowledge_pb2.ShortestPathRequest(src_id="matrix-a", dst_id="matrix-b", max_hops=1),
    "Embed": lambda: media_pb2.EmbedRequest(texts=["x"]),
    "Transcribe": lambda: [media_pb2.TranscribeRequest(audio=_no_audio())],
    "Synthesize": lambda: media_pb2.SynthesizeRequest(text=""),
    "Detect": lambda: media_pb2.DetectRequest(image=_not_an_image(), queries=["cat"]),
    "EstimateDepth": lambda: media_pb2.DepthRequest(image=_not_an_image()),
    "GenerateImage": lambda: media_pb2.GenerateImageRequest(prompt=""),
    "GenerateMusic": lambda: media_pb2.GenerateMusicRequest(prompt="", duration_s=0),
    "Separate": lambda: media_pb2.SeparateRequest(audio=_no_audio()),
    "DetectSpeech": lambda: media_pb2.DetectSpeechRequest(audio=_no_audio()),
    "Diarize": lambda: media_pb2.DiarizeRequest(audio=_no_audio()),
    "RecognizeVoiceEmotion": lambda: media_pb2.VoiceEmotionRequest(audio=_no_audio()),
    "AnalyzeMusic": lambda: media_pb2.AnalyzeMusicRequest(audio=_no_audio()),
    "Segment": lambda: media_pb2.SegmentRequest(image=_not_an_image()),
    "RecognizeGestures": lambda: media_pb2.GesturesRequest(image=_not_an_image()),
    "DetectSceneChanges": lambda: media_pb2.SceneChangesRequest(frames=[_not_an_image()]),
    "WhoAmI": lambda: account_pb2.WhoAmIRequest(),
    "ExportMyData": lambda: account_pb2.ExportMyDataRequest(),
    "DeleteMyData": lambda: account_pb2.DeleteMyDataRequest(),
    "DeleteUser": lambda: account_pb2.DeleteUserRequest(user="matrix-no-such-user"),
}


@dataclass
class Caller:
    """One column of the matrix: a role (None: no credential) and its credentials, one per group of RPCs so the
    per-identity quotas (10 media calls at once) are not what answers."""

    name: str
    role: str | None  # None: the call carries no valid identity
    credentials: dict[str, str | None]  # "main", "media-0", "media-1" -> credential (None: no metadata)
    user_id: str = ""
    own_session: str = ""

    def credential(self, rpc: str) -> str | None:
        if rpc in MEDIA:
            return self.credentials[f"media-{MEDIA.index(rpc) % 2}"]
        return self.credentials["main"]


@dataclass
class Cell:
    caller: str
    rpc: str
    resource: str  # "none", "own", "other", "other-user"
    code: str
    details: str
    content: bytes
    elapsed_s: float


def _call(target: str, rpc_name: str, request: Any, credential: str | None) -> tuple[str, str, bytes, float]:
    """(code, details, the response bytes, seconds) of one call of `rpc_name` carrying `credential`."""
    [(service, method)] = [(s, m) for s in SERVICES for m in s.methods if m.name == rpc_name]
    path = f"/{service.full_name}/{method.name}"
    metadata = [("application", "conversation")]
    if credential is not None:
        metadata.append(("authorization", f"Bearer {credential}"))
    kwargs = {"request_serializer": lambda m: m.SerializeToString(), "response_deserializer": lambda b: b}
    started = time.monotonic()
    content = b""
    with grpc.insecure_channel(target) as channel:
        try:
            if method.client_streaming:
                responses = channel.stream_stream(path, **kwargs)(iter(request), timeout=DEADLINE_S, metadata=metadata)
                content = b"".join(responses)
            elif method.server_streaming:
                responses = channel.unary_stream(path, **kwargs)(request, timeout=DEADLINE_S, metadata=metadata)
                content = b"".join(responses)
            else:
                content = channel.unary_unary(path, **kwargs)(request, timeout=DEADLINE_S, metadata=metadata)
            return "OK", "", content, time.monotonic() - started
        except grpc.RpcError as error:
            return error.code().name, error.details() or "", content, time.monotonic() - started


@pytest.fixture(scope="module")
def parties(serve_stack):
    """The callers, and a victim: another user whose session holds a secret."""
    store = StateStore(StateConfig())
    stamp = time.monotonic_ns() % 10**9
    callers = []
    for role in ROLES:
        credentials: dict[str, str | None] = {}
        user_id = ""
        for group in ("main", "media-0", "media-1"):
            user = store.add_user(f"matrix-{role}-{group}-{stamp}", role)
            credentials[group] = store.create_key(user.user_id)[1]
            user_id = user_id or user.user_id
        callers.append(Caller(f"{role} (API key)", role, credentials, user_id))
    jwt = {
        group: serve_stack.issuer.token(f"matrix-{group}-{stamp}@example.com")
        for group in ("main", "media-0", "media-1")
    }
    callers.append(Caller("user (JWT)", "user", dict(jwt)))
    callers.append(Caller("no credential", None, dict.fromkeys(("main", "media-0", "media-1"))))
    unknown = "alm_0123456789abcdef_" + "y" * 43
    callers.append(Caller("unknown key", None, dict.fromkeys(("main", "media-0", "media-1"), unknown)))
    victim_user = store.add_user(f"matrix-victim-{stamp}", "user")
    victim_key = store.create_key(victim_user.user_id)[1]
    store.close()

    with Client(serve_stack.target, timeout_s=300, api_key=victim_key) as victim:
        session = victim.converse(conversation_pb2.SessionStart(max_tokens=1))
        victim_session = session.next_event().session_started.session_id
        session.close_send()
        for _ in session.events():
            pass
        victim.ask(f"The secret code word is {SECRET}.", session_id=victim_session, max_tokens=1)
        assert SECRET in json.dumps(victim.export_my_data())
    for caller in callers:
        if caller.role is None:
            continue
        with Client(serve_stack.target, timeout_s=120, api_key=caller.credentials["main"]) as client:
            caller.user_id = client.whoami().user_id
            talk = client.converse(conversation_pb2.SessionStart(max_tokens=1))
            caller.own_session = talk.next_event().session_started.session_id
            talk.close_send()
            for _ in talk.events():
                pass
    return callers, victim_key, victim_user.user_id, victim_session


def _requests(rpc: str, caller: Caller, victim_user: str, victim_session: str) -> list[tuple[str, Any]]:
    """(resource, request) of the cells of `rpc` for `caller`."""
    cells: list[tuple[str, Any]] = [("none", CHEAP[rpc]())]
    own = caller.own_session or "matrix-no-such-session"
    if rpc in ("Ask", "AskStream"):
        cells.append(("own", conversation_pb2.AskRequest(text="Hi.", session_id=own, max_tokens=1)))
        question = "What is the secret code word?"
        cells.append(("other", conversation_pb2.AskRequest(text=question, session_id=victim_session, max_tokens=1)))
    if rpc == "Converse":
        cells.append(("own", [_start(session_id=own, max_tokens=1)]))
        cells.append(("other", [_start(session_id=victim_session, max_tokens=1)]))
        cells.append(("other-user", [_start(user_id=victim_user, max_tokens=1)]))
    return cells


def _judge(cell: Cell, caller: Caller) -> str | None:
    """Why the cell is wrong (None: it is right)."""
    if SECRET.encode() in cell.content or SECRET in cell.details:
        return "the other user's secret came back"
    if cell.code in ("INTERNAL", "UNKNOWN", "DEADLINE_EXCEEDED"):
        return f"{cell.code}: {cell.details[:200]}"
    if caller.role is None:
        return None if cell.code == "UNAUTHENTICATED" else f"expected UNAUTHENTICATED, got {cell.code}"
    needed = rule_for(cell.rpc).role or ROLES[0]
    if ROLES.index(caller.role) < ROLES.index(needed):
        return (
            None if cell.code == "PERMISSION_DENIED" else f"needs {needed}: expected PERMISSION_DENIED, got {cell.code}"
        )
    if cell.resource == "other":
        return None if cell.code == "NOT_FOUND" else f"another's session: expected NOT_FOUND, got {cell.code}"
    if cell.resource == "other-user":
        return (
            None
            if cell.code == "PERMISSION_DENIED"
            else f"another's user id: expected PERMISSION_DENIED, got {cell.code}"
        )
    if cell.code in GATE:
        return f"allowed ({caller.role} >= {needed}) but stopped at the gate: {cell.code} {cell.details[:200]}"
    return None


def test_each_role_x_each_rpc_x_own_and_others_resources(serve_stack, parties):
    callers, victim_key, victim_user, victim_session = parties
    rpcs = [m.name for s in SERVICES if s.full_name != "grpc.health.v1.Health" for m in s.methods]
    rpcs = [r for r in rpcs if r != "DeleteMyData"] + ["DeleteMyData"]  # one's own data goes last
    assert set(rpcs) == set(CHEAP), "an RPC without a cheap request in CHEAP"
    cells: list[Cell] = []
    problems: list[str] = []
    started = time.monotonic()
    for caller in callers:
        for rpc in rpcs:
            for resource, request in _requests(rpc, caller, victim_user, victim_session):
                code, details, content, elapsed = _call(serve_stack.target, rpc, request, caller.credential(rpc))
                cell = Cell(caller.name, rpc, resource, code, details, content, elapsed)
                cells.append(cell)
                wrong = _judge(cell, caller)
                if wrong:
                    problems.append(f"{caller.name} x {rpc} ({resource}): {wrong}")
                if rpc == "ExportMyData" and code == "OK":
                    exported = json.loads(account_pb2.ExportMyDataResponse.FromString(content).json)
                    sessions = {s["session_id"] for s in exported.get("sessions", [])}
                    if victim_session in sessions or (caller.own_session and caller.own_session not in sessions):
                        problems.append(f"{caller.name} x ExportMyData: sessions {sorted(sessions)} are not its own")
    elapsed = time.monotonic() - started
    # nobody's DeleteMyData touched the victim's session
    with Client(serve_stack.target, timeout_s=60, api_key=victim_key) as victim:
        kept = victim.export_my_data()
    if victim_session not in {s["session_id"] for s in kept["sessions"]} or SECRET not in json.dumps(kept):
        problems.append("the victim's session is gone after the others' DeleteMyData")

    table = Counter((c.caller, c.code) for c in cells)
    codes = sorted({c.code for c in cells})
    print(
        f"\nauthorization matrix: {len(callers)} callers x {len(rpcs)} RPCs, {len(cells)} cells (= calls) "
        f"in {elapsed:.0f} s"
    )
    print(f"{'caller':<16}" + "".join(f"{code[:17]:>19}" for code in codes))
    for caller in callers:
        print(f"{caller.name:<16}" + "".join(f"{table[caller.name, code] or '':>19}" for code in codes))
    slowest = max(cells, key=lambda c: c.elapsed_s)
    print(f"slowest cell: {slowest.caller} x {slowest.rpc} ({slowest.resource}) {slowest.elapsed_s:.1f} s")
    assert not problems, "\n".join(problems)

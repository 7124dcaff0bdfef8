"""The browser avatar (web/ + graphs/web_avatar.py): the bridge's message mapping, the deployed page and bridge on the
session's Serve stack, and the page itself in Debian's chromium driven by playwright-core (web/tests/drive_avatar.mjs;
software GL through SwiftShader, no browser download).

web/node_modules comes from `bash web/setup.sh` (npm ci), which `make install` runs.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from PIL import Image
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from almquist import runtime
from almquist.client import call_metadata
from almquist.config.security import StateConfig
from almquist.credentials import login_link, read_credential
from almquist.v1 import avatar_pb2, common_pb2, conversation_pb2, conversation_pb2_grpc
from graphs.visemes import ARKIT_NAMES
from graphs.web_avatar import BridgeInputError, client_event_from_json, server_event_to_json

REPO = Path(__file__).resolve().parent.parent
WEB = REPO / "web"
DRIVER = WEB / "tests" / "drive_avatar.mjs"
CHROMIUM = Path("/usr/bin/chromium")


# ---- the bridge's mapping between the page's JSON and the protos ----
def test_page_messages_become_client_events() -> None:
    start = client_event_from_json('{"start": {"avatar": true, "personality": "friendly"}}')
    assert start.WhichOneof("event") == "start" and start.start.avatar and start.start.personality == "friendly"
    assert client_event_from_json('{"text": {"text": "Tell me about movies."}}').text.text == "Tell me about movies."
    assert client_event_from_json('{"interrupt": {"reason": "user pressed stop"}}').interrupt.reason
    assert client_event_from_json('{"end_of_turn": {}}').WhichOneof("event") == "end_of_turn"
    pcm = np.arange(-4, 4, dtype="<i2").tobytes()
    audio = client_event_from_json(
        json.dumps({"audio": {"pcm16": base64.b64encode(pcm).decode(), "sample_rate_hz": 48000, "channels": 1}})
    )
    assert audio.audio.pcm16 == pcm and audio.audio.sample_rate_hz == 48000


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "expected a JSON object"),
        ("{}", "names no event"),
        ('{"txt": {"text": "hi"}}', "not a ClientEvent"),
        ('{"text": {"text": 3}}', "not a ClientEvent"),
        ('{"text": {"text": "' + "x" * 100 + '"}}', "over the limit"),
    ],
)
def test_bad_page_messages_say_what_is_wrong(message: str, error: str) -> None:
    with pytest.raises(BridgeInputError, match=error):
        client_event_from_json(message, max_bytes=64)


def test_server_events_keep_float_weights_and_default_values() -> None:
    weights = [0.0] * 52
    weights[17] = 0.625
    face = conversation_pb2.ServerEvent(
        turn_id="t",
        sequence=7,
        avatar=avatar_pb2.AvatarEvent(
            time_s=0.5, face=avatar_pb2.FaceFrames(frames=[avatar_pb2.FaceFrame(time_s=0.5, weights=weights)])
        ),
    )
    decoded = json.loads(server_event_to_json(face))
    [frame] = decoded["avatar"]["face"]["frames"]
    assert frame["weights"] == weights and frame["head_pitch_deg"] == 0.0  # zeros kept: 52 weights every frame
    scene = conversation_pb2.ServerEvent(avatar=avatar_pb2.AvatarEvent(environment=avatar_pb2.Environment()))
    assert json.loads(server_event_to_json(scene))["avatar"]["environment"]["scene"] == "SCENE_LIBRARY"
    chunk = common_pb2.AudioChunk(pcm16=b"\x01\x00\xff\x7f", sample_rate_hz=22050, start_s=1.25)
    audio = json.loads(server_event_to_json(conversation_pb2.ServerEvent(avatar=avatar_pb2.AvatarEvent(audio=chunk))))
    assert base64.b64decode(audio["avatar"]["audio"]["pcm16"]) == chunk.pcm16
    assert audio["avatar"]["audio"]["start_s"] == 1.25


def test_both_profiles_serve_the_avatar_and_load_profile_moves_its_grpc_target() -> None:
    for profile in ("local", "cluster"):
        [app] = [app for app in runtime.load_profile(profile).applications if app.name == "avatar_web"]
        assert app.route_prefix == "/avatar" and app.import_path == "graphs.web_avatar:build_app"
        assert app.args["grpc_target"] == "localhost:9000"
    schema = runtime.load_profile("local", grpc_port=19123, http_port=18123)
    [app] = [app for app in schema.applications if app.name == "avatar_web"]
    assert app.args["grpc_target"] == "localhost:19123"


# ---- the deployed app ----
def _get(url: str, timeout: float = 10.0) -> tuple[int, str, bytes, str]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.headers.get("content-type", ""), response.read(), response.url


def _health(base: str) -> dict[str, Any]:
    return json.loads(_get(base + "health")[2])


@pytest.fixture(scope="module")
def avatar_url(serve_stack) -> str:
    base = f"http://127.0.0.1:{serve_stack.schema.http_options.port}/avatar/"
    deadline = time.monotonic() + 60
    while True:  # the proxy learns the route shortly after the app is RUNNING
        try:
            _health(base)
            return base
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _bearer() -> dict[str, str]:
    return {"Authorization": f"Bearer {read_credential()}"}


def _ws_url(base: str) -> str:
    return base.replace("http://", "ws://") + "ws"


def _receive(ws, predicate, timeout_s: float = 120.0) -> list[dict[str, Any]]:
    """Messages up to and including the first one `predicate` accepts."""
    seen = []
    deadline = time.monotonic() + timeout_s
    while True:
        message = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
        seen.append(message)
        if predicate(message):
            return seen


def test_the_page_and_its_files_are_served(avatar_url: str, serve_stack) -> None:
    with pytest.raises(urllib.error.HTTPError) as anonymous:  # not signed in: the page says how, not a dead socket
        _get(avatar_url)
    assert anonymous.value.code == 401 and b"almquist login-link" in anonymous.value.read()
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())  # keeps the login's cookie
    with browser.open(login_link(StateConfig(), avatar_url.rstrip("/")), timeout=30) as signed_in:
        assert signed_in.status == 200 and signed_in.url.endswith("/avatar/")  # the link leads to the page
    with browser.open(avatar_url.rstrip("/"), timeout=30) as response:  # /avatar redirects to /avatar/
        status, kind, body, final_url = response.status, response.headers["content-type"], response.read(), response.url
    assert status == 200 and kind.startswith("text/html") and final_url.endswith("/avatar/")
    assert b'"three": "./vendor/three/three.module.js"' in body and b"src/main.js" in body
    status, kind, body, _ = _get(avatar_url + "vendor/three/three.module.js")
    assert status == 200 and "javascript" in kind and b"REVISION" in body
    assert _get(avatar_url + "src/head.js")[0] == 200
    assert json.loads(_get(avatar_url + "arkit.json")[2])["blendshape_names"] == list(ARKIT_NAMES)
    health = _health(avatar_url)
    assert health["three_installed"] and health["open_calls"] == 0
    assert health["grpc_target"] == serve_stack.target  # the test's free port, not the profile's 9000
    with pytest.raises(urllib.error.HTTPError) as missing:
        _get(avatar_url + "src/no_such_module.js")
    assert missing.value.code == 404


def test_the_bridge_relays_a_text_turn_and_answers_bad_json_in_band(avatar_url: str) -> None:
    with ws_connect(_ws_url(avatar_url), open_timeout=30, additional_headers=_bearer()) as ws:
        ws.send("{not json")
        [error] = _receive(ws, lambda m: "bridge_error" in m, 30)
        assert "not JSON" in error["bridge_error"]["message"]
        ws.send(json.dumps({"start": {}}))
        started = _receive(ws, lambda m: "session_started" in m, 60)[-1]
        assert started["sequence"] == "0" and started["session_started"]["session_id"]
        ws.send(json.dumps({"text": {"text": "Hello, how are you today?"}}))
        events = _receive(ws, lambda m: "turn_end" in m, 240)
        kinds = [next(k for k in m if k not in ("turn_id", "sequence")) for m in events]
        assert "turn_started" in kinds and "token" in kinds, kinds
        answer = "".join(m["token"]["text"] for m in events if "token" in m)
        assert answer.strip()
        assert events[-1]["turn_end"]["reason"] == "TURN_END_REASON_COMPLETED"
        sequences = [int(m["sequence"]) for m in events]
        assert sequences == sorted(sequences)  # ServerEvents in order, as the gRPC stream sent them


def test_a_stream_the_server_refuses_ends_with_its_status_and_closes_the_socket(avatar_url: str) -> None:
    with ws_connect(_ws_url(avatar_url), open_timeout=30, additional_headers=_bearer()) as ws:
        ws.send(json.dumps({"text": {"text": "no SessionStart first"}}))
        [end] = _receive(ws, lambda m: "stream_end" in m, 60)
        assert end["stream_end"]["code"] == "FAILED_PRECONDITION" and "SessionStart" in end["stream_end"]["details"]
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)


def _resume(target: str, session_id: str) -> conversation_pb2.ServerEvent:
    """Opens Converse on an existing session: SessionStarted when it is free, FAILED_PRECONDITION while another
    stream holds it."""
    with grpc.insecure_channel(target) as channel:
        stub = conversation_pb2_grpc.ConversationStub(channel)
        start = conversation_pb2.ClientEvent(start=conversation_pb2.SessionStart(session_id=session_id))
        call = stub.Converse(iter([start]), metadata=call_metadata(), timeout=30)
        try:
            return next(call)
        finally:
            call.cancel()


def test_closing_the_socket_cancels_the_grpc_call(avatar_url: str, serve_stack) -> None:
    before = _health(avatar_url)
    with ws_connect(_ws_url(avatar_url), open_timeout=30, additional_headers=_bearer()) as ws:
        ws.send(json.dumps({"start": {"avatar": True}}))
        session_id = _receive(ws, lambda m: "session_started" in m, 60)[-1]["session_started"]["session_id"]
        assert _health(avatar_url)["open_calls"] == before["open_calls"] + 1
        with pytest.raises(grpc.RpcError) as held:  # the bridge's call holds the session's stream
            _resume(serve_stack.target, session_id)
        assert held.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        ws.send(json.dumps({"text": {"text": "Tell me a long story about the sea."}}))
        _receive(ws, lambda m: "turn_started" in m, 120)
    # the socket closed mid-answer
    deadline = time.monotonic() + 30
    while (health := _health(avatar_url))["open_calls"] != before["open_calls"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert health["open_calls"] == before["open_calls"], health
    while True:  # the server's stream ended too: the session is free for a new stream
        try:
            resumed = _resume(serve_stack.target, session_id)
            break
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.FAILED_PRECONDITION or time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    assert resumed.session_started.session_id == session_id and resumed.session_started.resumed


# ---- the page in chromium ----
def _drive(scenario: str, url: str, out: Path, timeout_s: float = 300, **options: Any) -> dict[str, Any]:
    node = shutil.which("node")
    assert node, "node is not installed (Debian: apt-get install nodejs)"
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing (Debian: apt-get install chromium)"
    assert (WEB / "node_modules" / "playwright-core").is_dir(), "web/node_modules is missing: run `bash web/setup.sh`"
    options.setdefault("login", login_link(StateConfig(), url.rstrip("/")))  # signs the page in, as a user would
    done = subprocess.run(
        [node, str(DRIVER), scenario, url, str(out), json.dumps(options)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=WEB,
    )
    assert done.returncode == 0, f"{scenario} driver failed:\n{done.stderr[-4000:]}\n{done.stdout[-2000:]}"
    return json.loads(done.stdout)


def _pixels(path: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)


def test_the_page_loads_with_52_morph_targets_and_opens_its_mouth(avatar_url: str, tmp_path: Path) -> None:
    result = _drive("static", avatar_url, tmp_path, waitConnected=True)
    state = result["state"]
    assert result["consoleErrors"] == [] and state["errors"] == [], (result["consoleErrors"], state["errors"])
    assert state["morphTargetNames"] == list(ARKIT_NAMES) and state["morphTargetCount"] == 52
    assert state["connected"] and state["sessionId"]
    assert result["jawOpenShown"] == 1
    shots = result["screenshots"]
    mouth_closed, mouth_open = _pixels(shots["closed"]["mouth"]["path"]), _pixels(shots["open"]["mouth"]["path"])
    forehead_closed = _pixels(shots["closed"]["forehead"]["path"])
    forehead_open = _pixels(shots["open"]["forehead"]["path"])
    assert mouth_closed.shape[0] >= 40 and mouth_closed.shape[1] >= 60  # the close-up frames the face
    mouth_change = np.abs(mouth_open - mouth_closed).mean()
    forehead_change = np.abs(forehead_open - forehead_closed).mean()
    assert mouth_change > 8.0, f"the open mouth looks like the closed one (mean |diff| {mouth_change:.2f} of 255)"
    assert forehead_change < 1.0, f"opening the jaw changed the forehead (mean |diff| {forehead_change:.2f})"
    # open shows the dark inside of the mouth (closed, only a hairline of it between the lips)
    dark_open, dark_closed = (mouth_open.mean(axis=2) < 20).mean(), (mouth_closed.mean(axis=2) < 20).mean()
    assert dark_open > 0.1 and dark_closed < 0.02, (dark_open, dark_closed)


def test_the_page_plays_a_stream_in_sync_and_cuts_it_at_stop_s(avatar_url: str, tmp_path: Path) -> None:
    """A made-up stream fed into the page (no server): turn t1 1.0-2.0 s completes, turn t2 3.0-4.0 s is cut at 3.5 s
    by its TurnEnd after everything was sent; the face's jawOpen follows 0.5 + 0.4 sin(2 pi t) of the audio clock."""
    result = _drive("synthetic", avatar_url, tmp_path)
    state, timeline = result["state"], result["timeline"]
    assert result["consoleErrors"] == [] and state["errors"] == []
    # audio scheduled back to back on the AudioContext clock at time_s + one offset, the gap between turns kept
    for chunk in timeline["scheduled"]:
        assert chunk["start"] == pytest.approx(chunk["streamStart"] + timeline["offset"], abs=1e-6)
    assert timeline["scheduled"][0]["start"] > result["fedAt"]  # a jitter buffer ahead of the clock
    # the second turn's chunks from 3.5 s on never start; the one ending at 3.5 plays whole
    assert state["audioChunksReceived"] == 20 and state["audioChunksPlayed"] == 15
    assert state["audioSecondsPlayed"] == pytest.approx(1.5, abs=1e-3)
    # frames after stop_s dropped (3.5 < k/60 < 4.0: 29 frames), every other one shown and consumed
    assert state["framesReceived"] == 120 and state["framesDropped"] == 29
    assert state["framesApplied"] == 91
    assert state["lastTurnEnd"]["reason"] == "TURN_END_REASON_INTERRUPTED" and state["lastTurnEnd"]["stop_s"] == 3.5
    assert state["turnsEnded"] == 2
    # commands at their time: the last scene and shot are the second turn's
    assert state["environment"] == "SCENE_SPORTS_ARENA" and state["camera"] == "SHOT_WIDE"
    assert state["emotion"]["kind"] == "EMOTION_KIND_JOY" and state["gesture"] == "nod"
    # the face at the audio clock: every sampled pose is the frames interpolated at the time it was drawn for
    samples = result["samples"]
    assert len(samples) >= 10
    assert {s["scene"] for s in samples} == {"SCENE_MOVIE_THEATER", "SCENE_SPORTS_ARENA"}
    assert all(1.0 <= s["t"] < 2.0 + 1 / 60 or 3.0 <= s["t"] <= 3.5 + 1 / 60 for s in samples), samples
    # between two frames the pose is interpolated; past a turn's last frame it is held for one period
    between = [s for s in samples if s["t"] <= 119 / 60 or 3.0 <= s["t"] <= 3.5]
    assert len(between) >= 8
    worst = max(abs(s["jaw"] - s["expected"]) for s in between)
    assert worst < 0.005, worst
    # the microphone button records 100 ms PCM16 chunks and ends the spoken turn when pressed again
    assert state["micChunks"] >= 3 and state["micTurns"] == 1 and result["micLabel"] == "Talk"


def test_the_avatar_speaks_a_text_turn_end_to_end(avatar_url: str, tmp_path: Path) -> None:
    # a short answer (max_tokens) keeps the spoken turn to seconds
    result = _drive(
        "turn", avatar_url, tmp_path, timeout_s=400, text="Tell me about movies.", timeoutS=300, maxTokens=32
    )
    state = result["state"]
    assert result["consoleErrors"] == [] and state["errors"] == [], (result["consoleErrors"], state["errors"])
    assert state["streamEnd"] is None and state["bridgeErrors"] == [] and state["serverErrors"] == []
    header = state["header"]
    assert header["blendshape_names"] == list(ARKIT_NAMES) and header["fps"] in (30, 60)
    assert header["audio_encoding"] == "PCM16LE" and header["audio_channels"] == 1
    assert state["textAnswer"].strip() and state["textTurnsEnded"] == 1 and state["turnsEnded"] == 1
    assert state["lastTurnEnd"]["reason"] in ("TURN_END_REASON_COMPLETED", "TURN_END_REASON_MAX_TOKENS")
    assert state["framesApplied"] > 0 and state["framesApplied"] + state["framesDropped"] == state["framesReceived"]
    assert state["audioChunksPlayed"] == state["audioChunksReceived"] > 0
    audio_s, frames_s = state["audioSecondsPlayed"], state["framesApplied"] / header["fps"]
    assert audio_s == pytest.approx(state["audioSecondsReceived"], abs=1e-3)  # nothing lost or cut
    # face and voice cover the same span
    assert abs(audio_s - frames_s) <= max(0.25, 0.05 * audio_s), (audio_s, frames_s)
    assert state["lastTurnEnd"]["stop_s"] > 0
    assert state["environment"] == "SCENE_MOVIE_THEATER" and state["topic"] == "movies"
    assert state["camera"] in ("SHOT_CLOSE_UP", "SHOT_MEDIUM", "SHOT_WIDE")


def test_stop_cuts_the_avatar_at_stop_s(avatar_url: str, tmp_path: Path) -> None:
    """Pressing Stop while the avatar speaks: the server ends the turn with a stop_s, and the page plays its voice
    up to exactly that time (what it had buffered past it is dropped) and no frame beyond it."""
    result = _drive("interrupt", avatar_url, tmp_path, timeout_s=400, text="Tell me about movies.", afterS=1.5)
    state = result["state"]
    assert result["consoleErrors"] == [] and state["errors"] == [], (result["consoleErrors"], state["errors"])
    assert result["pressed"]["played"] >= 1.5
    end = state["lastTurnEnd"]
    assert end["reason"] == "TURN_END_REASON_INTERRUPTED" and state["turnsEnded"] == 1
    assert state["lastTextTurnEnd"]["reason"] == "TURN_END_REASON_INTERRUPTED"
    # the voice played from its first chunk to stop_s without a gap, nothing after it
    assert state["audioSecondsPlayed"] == pytest.approx(end["stop_s"] - state["turnAudioStart"], abs=0.02)
    assert state["audioSecondsPlayed"] <= state["audioSecondsReceived"] + 1e-6
    assert state["framesApplied"] + state["framesDropped"] == state["framesReceived"]
    assert state["framesApplied"] / state["header"]["fps"] <= end["stop_s"] - state["turnAudioStart"] + 2 / 60

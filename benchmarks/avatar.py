"""Concurrent avatar streams at 60 fps: how many a machine serves before a client's jitter buffer runs dry, through
the Serve gRPC proxy versus a plain grpcio server running the same avatar code.

Run: `python -m benchmarks.avatar [--streams 1,10,50,100] [--seconds 8] [--repeats 1]`. Each stream is one
`Converse` call: `SessionStart{avatar: true}`, one typed turn (`USER_TEXT`), read until the turn's TurnEnd. The
streams start spread over `--ramp-s` and run together; the clients are `grpc.aio` calls in this one process.

What is spoken: a fixed story (`STORY`, cut to about `--seconds` of espeak-ng speech), so both paths say the same
words and no language model competes for the two cores:
- Serve: the graph of `graphs.app.compose` (ingress -> router with its embeddings -> LLMServer, the TTS
  deployment, sessions) behind the Serve gRPC proxy, with the LLMServer's engine swapped for `ScriptedEngine`,
  which streams the story one word per token at once. Everything else is the real path of a typed turn. Measured
  twice (`--serve-transports`): `serve/actor`, the proxy reaching the ingress replica by Ray actor calls (Serve's
  default), and `serve/grpc`, over Serve's gRPC transport (`RAY_SERVE_PROXY_USE_GRPC=1`), each on a Ray of its own.
- grpcio (the baseline): a plain `grpc.aio` server in a subprocess serving `Conversation/Converse` with the same
  `graphs.avatar.AvatarStream` and an in-process `TextToSpeech` (espeak-ng), speaking the same words; no Serve, no
  Ray, no router, no sessions.
Both use the avatar settings of the `local` profile (`avatar:` in serve_config/local.yaml), each `--avatar KEY=VALUE`
replacing one (e.g. `--avatar face_message_ms=100 --avatar audio_chunk_ms=100`: half the messages per second).

What the client measures, per stream, on its clock (0 when the AvatarHeader arrives, as a player starts playout):
- lateness of each face frame: its arrival minus its `time_s` (negative: early, which is the point of lead_s);
  a late frame arrived after its time;
- underruns: display pulls at the header's fps during the turn's audio where the newest frame received is more
  than one frame period behind the pull: the face has nothing to move to (AvatarLinkCore's JitterBuffer rule);
- late audio: audio chunks that arrived after their start (an audible gap);
- frames/s delivered per stream (60 when the face keeps up with the clock);
- failed streams: still open `3 * --seconds + --ramp-s + 30` s after the start (cut off, so an overloaded server
  ends the run), or ended by an RPC error;
- CPU over each run, in % of one core: the client process (gRPC's threads included: a saturated client shows as
  such, not as a slow server), the servers it started (the baseline's subprocess, or Ray's processes and Serve's
  replicas), and the rest of the machine (other work there makes every figure noisy: check this column).
Servers and client run at niceness 0, Ray's workers too (RAY_worker_niceness=0; Ray's default is 15), so both paths
get the cores alike. Prints one row per (streams, path), medians over `--repeats`, and the most streams each path
served with 0 underruns and no failed stream.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import grpc
import numpy as np
import psutil
from rich.console import Console
from rich.table import Table

from almquist.config.avatar import AvatarConfig
from almquist.credentials import read_credential
from almquist.v1 import common_pb2, conversation_pb2, conversation_pb2_grpc
from deployments.llm.engine import EngineStats, GenerationRequest, TokenChunk

console = Console(width=180)  # the table's 14 columns
REPO_ROOT = Path(__file__).resolve().parent.parent
APP = "bench-avatar"
# A chitchat turn: the router sends it to the LLM (a story is told in words; DEFAULT_INTENT_EXAMPLES)
USER_TEXT = "Tell me a story."
STORY = [
    "Once upon a time, a lighthouse keeper lived alone on a small rocky island.",
    "Every night he climbed the long spiral stairs and lit the great lamp at the top.",
    "Ships far out at sea saw the light and steered safely past the rocks.",
    "One stormy evening a little fishing boat came close, its sail torn by the wind.",
    "The keeper rowed out through the waves and guided the tired sailors home.",
    "From that day on, the village sang songs about the light on the island.",
]
_TOKEN = re.compile(r"\S+\s*")


def answer_tokens(text: str) -> list[str]:
    """The answer as the tokens both paths stream: one word (with its trailing space) per token."""
    return _TOKEN.findall(text)


def story(seconds: float, sentence_s: Sequence[float]) -> tuple[str, float]:
    """Sentences of STORY, cycled, until their speech (`sentence_s`, seconds each) reaches `seconds`: the text and
    its seconds of speech."""
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, not {seconds}")
    sentences: list[str] = []
    spoken = 0.0
    while spoken < seconds:
        index = len(sentences) % len(STORY)
        sentences.append(STORY[index])
        spoken += sentence_s[index]
    return " ".join(sentences), spoken


def sentence_seconds() -> list[float]:
    """How long espeak-ng (the TTS default voice, neutral) speaks each STORY sentence."""
    from almquist.config.speech import TTSConfig
    from deployments.tts import EMOTIONS, EspeakEngine

    engine = EspeakEngine(TTSConfig())
    return [
        sum(segment.samples.size for segment in engine.synthesize(s, engine.default_voice, 1.0, EMOTIONS["neutral"]))
        / engine.sample_rate_hz
        for s in STORY
    ]


class ScriptedEngine:
    """An LLM engine (deployments.llm.engine.LLMEngine) that answers every request with `answer`, one word per
    token, all at once: the avatar's pacing is measured, not a model's speed. `scripted_engine` sets the answer."""

    answer = ""

    def __init__(self, config: Any) -> None:
        self.stats = EngineStats()

    async def start(self) -> None:
        if not self.answer:
            raise ValueError("ScriptedEngine has no answer: make the class with scripted_engine(text)")

    async def stream(self, request: GenerationRequest) -> AsyncIterator[TokenChunk]:
        tokens = answer_tokens(self.answer)[: request.max_tokens]
        self.stats.requests += 1
        for index, text in enumerate(tokens):
            self.stats.tokens_generated += 1
            last = index == len(tokens) - 1
            finish: Literal["stop", "length"] | None = None
            if last:
                finish = "stop" if len(tokens) == len(answer_tokens(self.answer)) else "length"
            yield TokenChunk(token_id=-1, text=text, index=index, finish_reason=finish)
            await asyncio.sleep(0)  # a cancelled turn stops here, as a real engine does between tokens
        self.stats.last_request_tokens = len(tokens)

    async def shutdown(self) -> None:
        return None


def scripted_engine(answer: str) -> type[ScriptedEngine]:
    """A ScriptedEngine class that says `answer` (a class: LLMServer takes an engine class; Ray pickles this one
    by value, so the replica gets the text with it)."""
    return type("ScriptedStoryEngine", (ScriptedEngine,), {"answer": answer})


def local_avatar_config(overrides: Sequence[str] = ()) -> AvatarConfig:
    """The `local` profile's avatar settings, with `KEY=VALUE` overrides (values as YAML: 100, 0.2, [2, 6])."""
    import yaml

    from almquist import runtime

    [app] = [app for app in runtime.load_profile("local").applications if app.name == "conversation"]
    settings = dict(app.args.get("avatar") or {})
    for override in overrides:
        key, equals, value = override.partition("=")
        if not equals or key not in AvatarConfig.model_fields:
            raise ValueError(f"--avatar takes KEY=VALUE with KEY one of {sorted(AvatarConfig.model_fields)}")
        settings[key] = yaml.safe_load(value)
    return AvatarConfig.model_validate(settings)


# ----- the baseline: a plain grpc.aio server with the same avatar code -----


class BaselineConversation(conversation_pb2_grpc.ConversationServicer):
    """`Converse` with the avatar and nothing else: every typed turn is answered with `answer`, spoken by
    graphs.avatar.AvatarStream through an in-process TTS. Streams events out as the ingress does (a reader, a
    worker answering turns in order, and the response loop draining one queue)."""

    def __init__(self, config: AvatarConfig, voice: Any, answer: str) -> None:
        self._config = config
        self._voice = voice
        self._tokens = answer_tokens(answer)
        self._streams = 0

    async def Converse(
        self, request_iterator: AsyncIterator[conversation_pb2.ClientEvent], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[conversation_pb2.ServerEvent]:
        from graphs.avatar import AvatarStream

        first = await anext(aiter(request_iterator), None)
        if first is None:
            return
        if first.WhichOneof("event") != "start" or not first.start.avatar:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "start with SessionStart{avatar: true}")
        self._streams += 1
        avatar = AvatarStream(self._config, self._voice)
        out: asyncio.Queue[conversation_pb2.ServerEvent | None] = asyncio.Queue()
        turns: asyncio.Queue[str | None] = asyncio.Queue()

        async def read() -> None:
            try:
                async for event in request_iterator:
                    if event.WhichOneof("event") == "text":
                        turns.put_nowait(event.text.text)
            finally:
                turns.put_nowait(None)

        async def answer() -> None:
            try:
                while (await turns.get()) is not None:
                    await self._turn(avatar, out)
            finally:
                out.put_nowait(None)

        tasks = [asyncio.create_task(read()), asyncio.create_task(answer())]
        try:
            yield conversation_pb2.ServerEvent(
                sequence=0, session_started=conversation_pb2.SessionStarted(session_id=f"baseline-{self._streams}")
            )
            yield conversation_pb2.ServerEvent(sequence=1, avatar=avatar.header())
            sequence = 2
            while (event := await out.get()) is not None:
                event.sequence = sequence
                sequence += 1
                yield event
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _turn(self, avatar: Any, out: asyncio.Queue[conversation_pb2.ServerEvent | None]) -> None:
        turn_id = os.urandom(8).hex()
        started = time.monotonic()
        topic = "general"
        out.put_nowait(
            conversation_pb2.ServerEvent(
                turn_id=turn_id,
                turn_started=conversation_pb2.TurnStarted(turn_id=turn_id, route="script", topic=topic),
            )
        )

        def emit(event: Any) -> None:
            out.put_nowait(conversation_pb2.ServerEvent(turn_id=turn_id, avatar=event))

        speaking = avatar.turn(turn_id, emit, topic)
        for index, text in enumerate(self._tokens):
            token = conversation_pb2.AnswerToken(text=text, index=index)
            out.put_nowait(conversation_pb2.ServerEvent(turn_id=turn_id, token=token))
            speaking.add_text(text)
            await asyncio.sleep(0)
        await speaking.finish()
        out.put_nowait(
            conversation_pb2.ServerEvent(
                turn_id=turn_id,
                turn_end=common_pb2.TurnEnd(
                    turn_id=turn_id,
                    reason=common_pb2.TURN_END_REASON_COMPLETED,
                    tokens=len(self._tokens),
                    elapsed_s=time.monotonic() - started,
                ),
            )
        )


async def serve_baseline(config: AvatarConfig, answer: str) -> None:
    """Runs the baseline server on a free loopback port (printed as `port N` on stdout) until SIGTERM."""
    from almquist.config.speech import TTSConfig
    from deployments.tts import TextToSpeech
    from graphs.avatar import voice_of
    from tests.local_deployment import LocalDeployment

    tts = LocalDeployment(TextToSpeech.func_or_class(TTSConfig()))  # type: ignore[attr-defined]  # a Deployment
    voice = await voice_of(tts, config.voice)  # type: ignore[arg-type]  # called like a handle
    server = grpc.aio.server()
    conversation_pb2_grpc.add_ConversationServicer_to_server(BaselineConversation(config, voice, answer), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print(f"port {port}", flush=True)
    await stop.wait()
    await server.stop(grace=1.0)


@contextlib.contextmanager
def baseline_server(config: AvatarConfig, answer: str) -> Iterator[str]:
    """The baseline server in a subprocess (its own process, so its CPU is not the client's): yields its target,
    "127.0.0.1:PORT"."""
    spec = json.dumps({"avatar": config.model_dump(mode="json"), "answer": answer})
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.avatar", "--baseline-server", spec],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("port "):
            raise RuntimeError(f"the baseline server did not start (exit code {process.wait(timeout=10)})")
        yield f"127.0.0.1:{int(line.split()[1])}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# ----- the client: concurrent streams and what they received -----


@dataclass
class StreamRecord:
    """What one stream received, on its clock (seconds since the AvatarHeader arrived)."""

    fps: int = 0
    route: str = ""
    frame_times: list[float] = field(default_factory=list)
    frame_arrivals: list[float] = field(default_factory=list)
    audio_starts: list[float] = field(default_factory=list)
    audio_arrivals: list[float] = field(default_factory=list)
    audio_spans: list[tuple[float, float]] = field(default_factory=list)  # per turn: first audio start, audio end
    turn_audio: list[tuple[float, float]] = field(default_factory=list)  # (start, end) of the open turn's chunks
    audio_s: float = 0.0
    finished: bool = False  # the stream ended normally
    error: str = ""  # why it did not: cut off at the benchmark's deadline, or the RPC's error

    def end_turn(self, stop_s: float = math.inf) -> None:
        if self.turn_audio:
            self.audio_spans.append((self.turn_audio[0][0], min(self.turn_audio[-1][1], stop_s)))
            self.turn_audio = []

    def underruns(self) -> int:
        """Display pulls at `fps` during the turns' audio whose newest received frame is more than one frame
        period behind (frames arrive in time order, so the newest is the last one arrived)."""
        self.end_turn()  # a turn cut off counts up to the audio received
        if not self.audio_spans:
            return 0
        arrivals = np.asarray(self.frame_arrivals)
        times = np.asarray(self.frame_times)
        period = 1.0 / self.fps
        starved = 0
        for start, end in self.audio_spans:
            pulls = np.arange(math.ceil(start * self.fps - 1e-9), math.ceil(end * self.fps - 1e-9)) / self.fps
            received = np.searchsorted(arrivals, pulls, side="right")
            newest = np.where(received > 0, times[np.maximum(received - 1, 0)], -np.inf)
            starved += int(np.count_nonzero(newest < pulls - period - 1e-9))
        return starved


async def run_stream(
    record: StreamRecord,
    channel: grpc.aio.Channel,
    metadata: tuple[tuple[str, str], ...],
    delay_s: float,
    max_tokens: int,
) -> None:
    """One Converse stream with the avatar and one typed turn, read to its end into `record`."""
    await asyncio.sleep(delay_s)
    stub = conversation_pb2_grpc.ConversationStub(channel)
    call = stub.Converse(metadata=metadata)
    start = conversation_pb2.SessionStart(avatar=True, max_tokens=max_tokens)
    await call.write(conversation_pb2.ClientEvent(start=start))
    origin = 0.0
    while True:
        event = await call.read()
        now = time.monotonic()
        if event is grpc.aio.EOF:
            break
        kind = event.WhichOneof("event")
        if kind == "avatar":
            avatar = event.avatar
            which = avatar.WhichOneof("event")
            at = now - origin
            if which == "header":
                origin, record.fps = now, avatar.header.fps
                await call.write(conversation_pb2.ClientEvent(text=conversation_pb2.TextInput(text=USER_TEXT)))
            elif which == "face":
                for frame in avatar.face.frames:
                    record.frame_times.append(frame.time_s)
                    record.frame_arrivals.append(at)
            elif which == "audio":
                audio = avatar.audio
                seconds = len(audio.pcm16) / 2 / audio.sample_rate_hz
                record.audio_starts.append(audio.start_s)
                record.audio_arrivals.append(at)
                record.audio_s += seconds
                record.turn_audio.append((audio.start_s, audio.start_s + seconds))
            elif which == "turn_end":
                record.end_turn(avatar.stop_s)
        elif kind == "turn_started":
            record.route = event.turn_started.route
        elif kind == "error":
            raise RuntimeError(f"the server refused an event: {event.error.message}")
        elif kind == "turn_end":
            if event.turn_end.reason not in (
                common_pb2.TURN_END_REASON_COMPLETED,
                common_pb2.TURN_END_REASON_MAX_TOKENS,
            ):
                raise RuntimeError(f"the turn failed: {event.turn_end.detail}")
            await call.done_writing()
    if not record.fps:
        raise RuntimeError("the stream ended without an AvatarHeader: is the avatar (and a TTS) configured?")
    record.finished = True


class CpuMeter:
    """CPU used over a window, in % of one core: this process (the clients), its descendants (the servers this
    benchmark started: the baseline's subprocess, or Ray's processes and Serve's replicas) and everything else on
    the machine (other users of the cores, which make the figures noisy)."""

    def __init__(self) -> None:
        self._process = psutil.Process()

    def _descendants(self) -> dict[int, float]:
        seconds = {}
        for child in self._process.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                times = child.cpu_times()
                seconds[child.pid] = times.user + times.system
        return seconds

    @staticmethod
    def _machine() -> float:
        times = psutil.cpu_times()
        return sum(times) - times.idle - getattr(times, "iowait", 0.0)

    def start(self) -> None:
        self._wall = time.monotonic()
        self._client = time.process_time()
        self._servers = self._descendants()
        self._busy = self._machine()

    def stop(self) -> tuple[float, float, float]:
        """(client, servers, others) since start()."""
        wall = time.monotonic() - self._wall
        client = time.process_time() - self._client
        servers = sum(seconds - self._servers.get(pid, 0.0) for pid, seconds in self._descendants().items())
        others = max(0.0, self._machine() - self._busy - client - servers)
        return client / wall * 100, servers / wall * 100, others / wall * 100


@dataclass
class RunResult:
    """One run of `streams` concurrent streams against one server. CPU in % of one core over the run."""

    streams: int
    failed: int  # streams cut off at the deadline or ended by an RPC error
    frames: int
    late_frames: int
    underruns: int
    late_audio: int
    lateness_p50_ms: float
    lateness_p99_ms: float
    frames_per_s: float  # median over the streams of frames / (last frame arrival - first frame arrival)
    audio_s: float  # median seconds of audio one stream received
    client_cpu_pct: float
    server_cpu_pct: float
    other_cpu_pct: float
    wall_s: float
    routes: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()  # why streams failed, each reason once


async def measure(
    target: str,
    streams: int,
    *,
    application: str = "",
    credentials: Sequence[str] = (),
    ramp_s: float = 1.0,
    max_tokens: int = 0,
    timeout_s: float = 120.0,
) -> RunResult:
    """`streams` concurrent avatar streams against `target` (one typed turn each), started evenly over `ramp_s`.
    `application` is the Serve app's name (the proxy's `application` metadata); `max_tokens` goes in the
    SessionStart (0: the server's default). Stream i calls with `credentials[i % len(credentials)]` (each player an
    identity of its own, as the per-identity stream caps expect), else the caller's own credential (the
    credentials file). A stream still open `timeout_s` after the start is cut off (an
    overloaded server must not hang the run) and one whose RPC fails ends there: both count as failed, and what
    they received is measured."""
    if streams < 1:
        raise ValueError(f"streams must be at least 1, not {streams}")
    keys = list(credentials) or [read_credential() or ""]

    def metadata(index: int) -> tuple[tuple[str, str], ...]:
        named = (("application", application),) if application else ()
        key = keys[index % len(keys)]
        return named + ((("authorization", f"Bearer {key}"),) if key else ())

    # a connection of its own per stream (no shared subchannel): as separate players would connect
    channels = [
        grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(streams)
    ]
    meter = CpuMeter()
    records = [StreamRecord() for _ in range(streams)]

    async def bounded(index: int) -> None:
        run = run_stream(records[index], channels[index], metadata(index), index * ramp_s / streams, max_tokens)
        try:
            await asyncio.wait_for(run, timeout_s)
        except TimeoutError:
            records[index].error = f"still open after {timeout_s:.0f} s"
        except grpc.aio.AioRpcError as error:
            records[index].error = f"{error.code().name}: {error.details()}"

    try:
        await asyncio.gather(*(asyncio.wait_for(c.channel_ready(), 30) for c in channels))
        meter.start()
        started = time.monotonic()
        await asyncio.gather(*(bounded(index) for index in range(streams)))
        wall = time.monotonic() - started
        client_cpu, server_cpu, other_cpu = meter.stop()
    finally:
        await asyncio.gather(*(c.close() for c in channels))

    lateness = np.concatenate([np.subtract(r.frame_arrivals, r.frame_times) for r in records])
    if lateness.size == 0:
        raise RuntimeError("no face frames arrived")
    late_audio = sum(int(np.count_nonzero(np.subtract(r.audio_arrivals, r.audio_starts) > 0)) for r in records)
    rates = [
        len(r.frame_times) / max(r.frame_arrivals[-1] - r.frame_arrivals[0], 1e-9)
        for r in records
        if len(r.frame_times) > 1
    ]
    return RunResult(
        streams=streams,
        failed=sum(not r.finished for r in records),
        frames=int(lateness.size),
        late_frames=int(np.count_nonzero(lateness > 0)),
        underruns=sum(r.underruns() for r in records),
        late_audio=late_audio,
        lateness_p50_ms=float(np.percentile(lateness, 50) * 1000),
        lateness_p99_ms=float(np.percentile(lateness, 99) * 1000),
        frames_per_s=statistics.median(rates) if rates else float("nan"),
        audio_s=statistics.median(r.audio_s for r in records),
        client_cpu_pct=client_cpu,
        server_cpu_pct=server_cpu,
        other_cpu_pct=other_cpu,
        wall_s=wall,
        routes=tuple(sorted({r.route for r in records})),
        errors=tuple(sorted({r.error for r in records if r.error})),
    )


def median_result(results: Sequence[RunResult]) -> RunResult:
    """Each figure's median over repeated runs (counts included)."""
    values = {
        name: statistics.median(getattr(r, name) for r in results)
        for name in RunResult.__dataclass_fields__
        if name not in ("streams", "routes", "errors")
    }
    routes = tuple(sorted({route for r in results for route in r.routes}))
    errors = tuple(sorted({error for r in results for error in r.errors}))
    return RunResult(streams=results[0].streams, routes=routes, errors=errors, **values)


def max_clean(results: dict[int, RunResult]) -> str:
    """The most streams served with 0 underruns and none failed, counting up from the fewest tested (a failure
    ends the count)."""
    best = "none"
    for count in sorted(results):
        if results[count].underruns > 0 or results[count].failed > 0:
            break
        best = str(count)
    return best


# ----- Serve: the composed graph behind the gRPC proxy -----


SERVE_TRANSPORTS = ("actor", "grpc")


def start_serve(
    config: AvatarConfig, answer: str, work: Path, transport: str = "actor", identities: int = 1
) -> tuple[str, list[str]]:
    """Starts Ray and Serve (free ports, no dashboard) and deploys the conversation graph with the scripted LLM
    and the TTS; returns the gRPC proxy's target and the API keys of `identities` users made in a durable store of
    this run (`work`), one per player. `transport` is how the proxy reaches the ingress replica: "actor"
    (Ray actor calls, Serve's default) or "grpc" (`RAY_SERVE_PROXY_USE_GRPC=1`, Serve's gRPC transport; read by the
    proxy when it starts, so it is set before Ray starts its processes)."""
    if transport not in SERVE_TRANSPORTS:
        raise ValueError(f"transport is one of {SERVE_TRANSPORTS}, not {transport!r}")
    import ray
    from ray import serve
    from ray._private import ray_constants
    from ray.serve.config import gRPCOptions

    from almquist import runtime
    from almquist.config import AppConfig
    from graphs.app import compose

    app_config = AppConfig.model_validate(
        {
            "llm": {"default_max_tokens": 64, "max_tokens_limit": 1024},
            "knowledge": {"graph": {"path": str(work / "graph")}, "vectors": {"path": str(work / "qdrant")}},
            "kgqa": {"model_dir": str(work / "kgqa")},
            "speech": {"tts": {}},
            "avatar": config.model_dump(),
            "state": {"url": f"sqlite:///{work / 'state.db'}"},
        }
    )
    from almquist.state import StateStore

    store = StateStore(app_config.state)
    keys = [store.create_key(store.add_user(f"player-{n}").user_id)[1] for n in range(identities)]
    store.close()
    # Ray starts its workers (the replicas) at niceness 15, below the client and the grpcio server (0): at 0 too,
    # the two paths get the cores alike, and other work on the machine (Ray workers of other clusters) yields
    os.environ[ray_constants.RAY_WORKER_NICENESS] = "0"
    os.environ["RAY_SERVE_PROXY_USE_GRPC"] = "1" if transport == "grpc" else "0"
    # "local": a Ray of its own even while `almquist up` runs one on this machine (ray.init would join that one)
    ray.init("local", include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    grpc_port = runtime.free_port()
    serve.start(
        http_options={"host": "127.0.0.1", "port": runtime.free_port()},
        grpc_options=gRPCOptions(
            port=grpc_port,
            grpc_servicer_functions=["almquist.v1.conversation_pb2_grpc.add_ConversationServicer_to_server"],
        ),
    )
    names = ["ConversationIngress", "Router", "GraphRAG", "LLMServer", "Embeddings", "TTS"]
    app = compose(
        app_config, llm_engine_cls=scripted_engine(answer), ray_actor_options={n: {"num_cpus": 0.1} for n in names}
    )
    serve.run(app, name=APP, route_prefix=f"/{APP}", blocking=False)
    runtime.wait_running([APP], timeout_s=300)
    return f"127.0.0.1:{grpc_port}", keys


def stop_serve() -> None:
    import ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()


async def measure_all(
    target: str, counts: Sequence[int], repeats: int, label: str, **options: Any
) -> dict[int, RunResult]:
    """Each count's median over `repeats` runs, after a one-stream warm-up (first-call costs)."""
    await measure(target, 1, **{**options, "ramp_s": 0.0})
    results = {}
    for count in counts:
        runs = []
        for repeat in range(repeats):
            with console.status(f"{label}: {count} streams, run {repeat + 1} of {repeats}"):
                runs.append(await measure(target, count, **options))
        results[count] = median_result(runs)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", default="1,10,50,100", help="comma-separated counts of concurrent streams")
    parser.add_argument("--seconds", type=float, default=8.0, help="about how long each stream's answer is spoken")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--ramp-s", type=float, default=1.0, help="the streams start evenly over this time")
    parser.add_argument(
        "--avatar",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="replaces an avatar setting of the profile",
    )
    parser.add_argument(
        "--serve-transports",
        default=",".join(SERVE_TRANSPORTS),
        help="how Serve's proxy reaches the ingress: actor (Ray actor calls, Serve's default), grpc, or both",
    )
    parser.add_argument("--skip-serve", action="store_true", help="measure the grpcio baseline only")
    parser.add_argument("--baseline-server", metavar="JSON", help=argparse.SUPPRESS)  # the baseline's subprocess
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")

    if args.baseline_server:
        spec = json.loads(args.baseline_server)
        asyncio.run(serve_baseline(AvatarConfig.model_validate(spec["avatar"]), spec["answer"]))
        return

    try:
        counts = sorted({int(count) for count in args.streams.split(",")})
    except ValueError:
        parser.error(f"--streams takes comma-separated integers, not {args.streams!r}")
    if counts[0] < 1 or args.seconds <= 0 or args.repeats < 1:
        parser.error("--streams counts, --seconds and --repeats must be positive")
    transports = [t for t in args.serve_transports.split(",") if t]
    if not transports or set(transports) - set(SERVE_TRANSPORTS):
        parser.error(f"--serve-transports takes {', '.join(SERVE_TRANSPORTS)}, not {args.serve_transports!r}")
    try:
        config = local_avatar_config(args.avatar)
    except ValueError as error:  # pydantic's ValidationError too
        parser.error(str(error))
    answer, spoken_s = story(args.seconds, sentence_seconds())
    max_tokens = len(answer_tokens(answer))

    # a stream that has not ended by then is cut off: an overloaded server shows as failed streams, not as a hang
    options = {"ramp_s": args.ramp_s, "max_tokens": max_tokens, "timeout_s": args.ramp_s + 3 * args.seconds + 30}
    with baseline_server(config, answer) as target:
        grpcio = asyncio.run(measure_all(target, counts, args.repeats, "grpcio", **options))
    paths: dict[str, dict[int, RunResult]] = {"grpcio": grpcio}
    for transport in [] if args.skip_serve else transports:
        path = f"serve/{transport}"
        with console.status(f"starting Ray and Serve ({path})"):
            work = Path(tempfile.mkdtemp(prefix="almquist-bench-avatar-"))
            target, keys = start_serve(config, answer, work, transport, identities=max(counts))
        try:
            paths[path] = asyncio.run(
                measure_all(target, counts, args.repeats, path, application=APP, credentials=keys, **options)
            )
        finally:
            stop_serve()
        routes = {route for result in paths[path].values() for route in result.routes}
        if routes != {"llm"}:
            console.print(f"[red]warning: the router sent the turns to {sorted(routes)}, not only to the LLM")

    table = Table(
        title=f"Avatar streams at {config.fps} fps, lead_s={config.lead_s:g}, {config.face_message_ms:g} ms of frames "
        f"and {config.audio_chunk_ms:g} ms of audio per message, on {os.cpu_count()} cores: one typed "
        f"turn per stream answered with a fixed story ({max_tokens} words, {spoken_s:.1f} s of espeak-ng speech), "
        f"streams started over {args.ramp_s:g} s, median of {args.repeats} run(s).\n"
        "serve/actor, serve/grpc: Serve gRPC proxy -> ConversationIngress -> Router (embeddings) -> LLMServer with a "
        "scripted engine (the story, one word per token) + TTS deployment; the proxy reaches the ingress by Ray actor "
        "calls (Serve's default) or over Serve's gRPC transport (RAY_SERVE_PROXY_USE_GRPC=1). grpcio: a plain "
        "grpc.aio server, same AvatarStream, in-process TTS. All at niceness 0 (Ray's workers too).\n"
        "lateness = face frame arrival - its time on the "
        "client's clock (0 at the header; negative is early); underruns = display pulls during speech with no "
        f"frame within one period; failed = streams cut off after {options['timeout_s']:.0f} s or ended by an "
        "error.\nCPU in % of one core: client = this process, server = the processes it started (grpcio's, or Ray's "
        "and Serve's), x grpcio = server CPU / grpcio's, others = the rest of the machine"
    )
    columns = ["streams", "path", "failed", "frames", "fps/stream", "underruns", "late frames", "late audio"]
    columns += ["lateness p50 ms", "lateness p99 ms", "client CPU%", "server CPU%", "x grpcio", "others CPU%"]
    for column in columns:
        table.add_column(column, justify="left" if column == "path" else "right")
    for count in counts:
        base = grpcio[count]
        for path, results in paths.items():
            result = results[count]
            table.add_row(
                str(count),
                path,
                f"{result.failed:.0f}",
                f"{result.frames:.0f}",
                f"{result.frames_per_s:.1f}",
                f"{result.underruns:.0f}",
                f"{result.late_frames:.0f}",
                f"{result.late_audio:.0f}",
                f"{result.lateness_p50_ms:.0f}",
                f"{result.lateness_p99_ms:.0f}",
                f"{result.client_cpu_pct:.0f}",
                f"{result.server_cpu_pct:.0f}",
                f"{result.server_cpu_pct / base.server_cpu_pct:.2f}",
                f"{result.other_cpu_pct:.0f}",
            )
    console.print(table)
    for path, results in paths.items():
        for count, result in results.items():
            for failure in result.errors:
                console.print(f"{path}, {count} streams: failed streams: {failure}")
    console.print("max streams with 0 underruns: " + ", ".join(f"{p} {max_clean(r)}" for p, r in paths.items()))


if __name__ == "__main__":
    main()

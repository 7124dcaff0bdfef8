"""Load: N simulated users with think time doing mixed turns over gRPC; throughput, p50/p99 per kind, errors by code,
and a sweep over N that finds the knee of this machine.

Run against a running stack (`almquist up`, on this machine: the users are made in its durable store):
    python -m benchmarks.load --target localhost:9000 --users 4 --minutes 2 --turns 10
or on a local stack of its own (Ray + the `local` profile, its state and knowledge in a temporary folder):
    python -m benchmarks.load --local --sweep 1,2,4,8,16 --turns 6 --minutes 3

Each user is an identity of its own (a user and an API key in the durable store; `--keys FILE` gives keys instead,
one a line, for a stack on another machine) with one session, and loops until `--turns` turns or `--minutes`:
pick a kind (`--mix`), do it, think (exponential, mean `--think-s`). The kinds:
- ask: a unary `Ask` in the session (`almquist.client.ask_until_answered`: the same idempotency key until answered);
- converse: a `Converse` stream on the session with two typed turns (`ResilientConversation`), each timed;
- spoken: a `Converse` stream with one spoken turn: espeak-ng speech as 100 ms AudioChunks sent 4x faster than real
  time, then EndOfTurn; timed from EndOfTurn (transcription included) to TurnEnd;
- avatar: a `Converse` stream with `SessionStart(avatar=True)` and one typed turn: the turn lasts as long as the
  avatar speaks, so its latency is mostly speech; `first audio` is what a user waits for.
Per kind: turns, answered, p50/p99 of the turn (and of the first answer token / the first avatar audio), errors by
gRPC code. The sweep prints one row per N and the knee: the first N from which doubling the users adds less than
15% throughput (the machine is saturated from there; latency only grows).
"""

from __future__ import annotations

import argparse
import collections
import io
import itertools
import os
import random
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from rich.console import Console
from rich.table import Table

from almquist.client import Client, ResilientConversation, ask_until_answered, audio_chunks
from almquist.v1 import common_pb2, conversation_pb2

console = Console(width=200)
KINDS = ("ask", "converse", "spoken", "avatar")
QUESTIONS = [
    "Tell me a joke about a cat.",
    "What is a good name for a goldfish?",
    "Say something kind about Mondays.",
    "Give me a tip for sleeping well.",
    "What should I cook tonight?",
]
SPOKEN = ["What is the weather like on the moon?", "Tell me something funny about dogs."]
RATE = 22050  # espeak-ng's rate


@dataclass
class Sample:
    kind: str
    ok: bool
    latency_s: float
    first_s: float | None = None  # first answer token (avatar: first audio chunk), when there was one
    code: str = "OK"
    retries: int = 0


@dataclass
class Result:
    users: int
    wall_s: float
    samples: list[Sample] = field(default_factory=list)

    def answered(self) -> int:
        return sum(s.ok for s in self.samples)

    def throughput(self) -> float:
        return self.answered() / self.wall_s if self.wall_s else 0.0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def espeak(text: str) -> Any:
    import numpy as np
    import soundfile

    wav = subprocess.run(["espeak-ng", "-v", "en-us", "--stdout", text], check=True, capture_output=True).stdout
    samples, rate = soundfile.read(io.BytesIO(wav), dtype="float32")
    assert rate == RATE, rate
    silence = np.zeros(int(0.2 * RATE), np.float32)
    return np.concatenate([silence, samples, silence])


def code_of(error: BaseException) -> str:
    if isinstance(error, grpc.RpcError):
        return error.code().name  # type: ignore[attr-defined]
    if isinstance(error, ValueError) and ": " in str(error):  # an in-band refusal: "...: CODE: message"
        return str(error).split(": ")[1]
    return type(error).__name__


class User:
    """One simulated user: an identity, a session, and a loop of turns with think time."""

    def __init__(self, index: int, options: argparse.Namespace, api_key: str, speech: list[Any], rng: random.Random):
        self.index, self.options, self.speech, self.rng = index, options, speech, rng
        self.client = Client(options.target, application=options.application, timeout_s=300, api_key=api_key)
        self.session_id = ""
        self.samples: list[Sample] = []
        weights = dict(options.mix)
        self.kinds, self.weights = list(weights), list(weights.values())

    def run(self, turns: int, stop_at: float) -> None:
        done = 0
        while done < turns and time.monotonic() < stop_at:
            kind = self.rng.choices(self.kinds, self.weights)[0]
            try:
                done += getattr(self, kind)()
            except Exception as error:  # a failed turn is a sample; the user goes on
                self.samples.append(Sample(kind, False, 0.0, code=code_of(error)))
                done += 1
            time.sleep(min(self.rng.expovariate(1 / self.options.think_s), 5 * self.options.think_s))

    def _stream(self, avatar: bool = False) -> ResilientConversation:
        start = conversation_pb2.SessionStart(
            session_id=self.session_id, max_tokens=self.options.max_tokens, avatar=avatar
        )
        stream = ResilientConversation(self.client, start, deadline_s=self.options.deadline_s)
        self.session_id = stream.session_id
        return stream

    def _question(self) -> str:
        return f"{self.rng.choice(QUESTIONS)} ({uuid.uuid4().hex[:6]})"

    def ask(self) -> int:
        if not self.session_id:
            self._stream().close()
        started = time.monotonic()
        answered = ask_until_answered(
            self.client,
            self._question(),
            self.session_id,
            max_tokens=self.options.max_tokens,
            deadline_s=self.options.deadline_s,
        )
        ok = answered.turn_end.reason != common_pb2.TURN_END_REASON_ERROR
        code = "OK" if ok else "TURN_END_ERROR"
        self.samples.append(Sample("ask", ok, time.monotonic() - started, None, code, answered.retries))
        return 1

    def converse(self) -> int:
        with self._stream() as stream:
            for _ in range(2):
                started = time.monotonic()
                answered = stream.turn(self._question())
                self._sample("converse", answered, time.monotonic() - started, "token")
        return 2

    def spoken(self) -> int:
        with self._stream() as stream:
            audio = self.rng.choice(self.speech)
            answered = stream.speak(audio_chunks(audio, RATE, 0.1))
            latency = answered.first_s.get("turn_end", 0.0)
            self._sample("spoken", answered, latency, "token")
        return 1

    def avatar(self) -> int:
        with self._stream(avatar=True) as stream:
            started = time.monotonic()
            answered = stream.turn(self._question())
            first_audio = answered.first_s.get("avatar.audio")
            self._sample("avatar", answered, time.monotonic() - started, None, first_audio)
        return 1

    def _sample(
        self, kind: str, answered: Any, latency: float, first_kind: str | None, first: float | None = None
    ) -> None:
        ok = answered.turn_end.reason != common_pb2.TURN_END_REASON_ERROR
        if first_kind is not None:
            first = answered.first_s.get(first_kind)
        code = "OK" if ok else "TURN_END_ERROR"
        self.samples.append(Sample(kind, ok, latency, first, code, answered.retries))

    def close(self) -> None:
        self.client.close()


def run_load(options: argparse.Namespace, keys: list[str], users: int, speech: list[Any]) -> Result:
    rng = random.Random(options.seed)
    people = [User(i, options, keys[i], speech, random.Random(rng.random())) for i in range(users)]
    started = time.monotonic()
    stop_at = started + options.minutes * 60
    threads = [threading.Thread(target=p.run, args=(options.turns, stop_at), daemon=True) for p in people]
    with console.status(f"{users} users: up to {options.turns} turns each, {options.minutes:g} min at most"):
        for thread in threads:
            thread.start()
            time.sleep(options.ramp_s / max(1, users))
        for thread in threads:
            thread.join()
    result = Result(users, time.monotonic() - started)
    for person in people:
        result.samples += person.samples
        person.close()
    return result


def kind_table(result: Result) -> Table:
    table = Table(title=f"{result.users} users, {result.wall_s:.0f} s: {result.throughput():.2f} answered turns/s")
    for column in ("kind", "turns", "answered", "p50", "p99", "first p50", "first p99", "retried", "errors by code"):
        table.add_column(column, justify="left" if column in ("kind", "errors by code") else "right")
    for kind in KINDS:
        rows = [s for s in result.samples if s.kind == kind]
        if not rows:
            continue
        ok = [s for s in rows if s.ok]
        latencies = [s.latency_s for s in ok]
        firsts = [s.first_s for s in ok if s.first_s is not None]
        errors = collections.Counter(s.code for s in rows if not s.ok)
        table.add_row(
            kind,
            str(len(rows)),
            str(len(ok)),
            f"{percentile(latencies, 50):.2f} s",
            f"{percentile(latencies, 99):.2f} s",
            f"{percentile(firsts, 50):.2f} s" if firsts else "-",
            f"{percentile(firsts, 99):.2f} s" if firsts else "-",
            str(sum(1 for s in rows if s.retries)),
            ", ".join(f"{c} x{n}" for c, n in errors.most_common()) or "-",
        )
    return table


def knee(results: list[Result]) -> Result | None:
    """The first N from which doubling the users adds less than 15% answered turns per second."""
    for current, following in itertools.pairwise(results):
        if following.throughput() < 1.15 * current.throughput():
            return current
    return None


def sweep_table(results: list[Result], machine: str) -> Table:
    table = Table(title=f"Load sweep ({machine})")
    columns = ["users", "turns", "answered", "turns/s"]
    columns += [f"{kind} p50/p99" for kind in KINDS]
    columns += ["errors by code"]
    for column in columns:
        table.add_column(column, justify="left" if column == "errors by code" else "right")
    for result in results:
        cells = [str(result.users), str(len(result.samples)), str(result.answered()), f"{result.throughput():.2f}"]
        for kind in KINDS:
            latencies = [s.latency_s for s in result.samples if s.kind == kind and s.ok]
            cells.append(f"{percentile(latencies, 50):.1f} / {percentile(latencies, 99):.1f} s" if latencies else "-")
        errors = collections.Counter(s.code for s in result.samples if not s.ok)
        cells.append(", ".join(f"{c} x{n}" for c, n in errors.most_common()) or "-")
        table.add_row(*cells)
    return table


def machine() -> str:
    load = os.getloadavg()
    return f"{os.cpu_count()} CPUs, load average {load[0]:.1f} at the end"


# ----- identities and the local stack -----


def make_keys(count: int, keys_file: str | None) -> tuple[list[str], list[str]]:
    """(API keys, user ids made here to delete after the run)."""
    if keys_file:
        keys = [line.strip() for line in Path(keys_file).read_text().splitlines() if line.strip()]
        if len(keys) < count:
            raise SystemExit(f"{keys_file} has {len(keys)} keys; {count} users need as many")
        return keys, []
    from almquist.config.security import StateConfig
    from almquist.state import StateStore

    store = StateStore(StateConfig())
    keys, made = [], []
    run = uuid.uuid4().hex[:6]
    for index in range(count):
        user = store.add_user(f"load-{run}-{index}")
        keys.append(store.create_key(user.user_id, "benchmarks.load")[1])
        made.append(user.user_id)
    store.close()
    return keys, made


def delete_users(user_ids: list[str]) -> None:
    if not user_ids:
        return
    from almquist.config.security import StateConfig
    from almquist.state import StateStore

    store = StateStore(StateConfig())
    for user_id in user_ids:
        store.delete_user(user_id)
    store.close()


def start_local_stack() -> str:
    """Ray and the `local` profile, as the test suite's serve_stack does: state, credentials and knowledge stores in
    a temporary folder (never the user's), so a running `almquist up` is left alone. Returns the gRPC target."""
    folder = Path(tempfile.mkdtemp(prefix="almquist-load-"))
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ["ALMQUIST_STATE_URL"] = f"sqlite:///{folder / 'almquist.db'}"
    os.environ["ALMQUIST_CREDENTIALS"] = str(folder / "credentials")
    import ray

    from almquist import runtime
    from almquist.config.security import StateConfig
    from almquist.credentials import ensure_owner_key
    from almquist.limits import PROXY_ENV

    for name, value in PROXY_ENV.items():
        os.environ.setdefault(name, value)
    grpc_port, http_port = runtime.free_port(), runtime.free_port()
    schema = runtime.load_profile("local", grpc_port=grpc_port, http_port=http_port)
    [app] = [app for app in schema.applications if app.name == "conversation"]
    knowledge = dict(app.args["knowledge"])
    knowledge["graph"] = {**knowledge.get("graph", {}), "path": str(folder / "graph")}
    knowledge["vectors"] = {**knowledge.get("vectors", {}), "path": str(folder / "qdrant")}
    app.args["knowledge"] = knowledge
    app.args["kgqa"] = {**app.args.get("kgqa", {}), "model_dir": str(folder / "kgqa")}
    state = StateConfig()
    app.args["state"] = state.model_dump()
    ensure_owner_key(state)
    # "local": a Ray of its own even while `almquist up` runs one on this machine
    ray.init("local", num_cpus=6, include_dashboard=False, namespace="serve", log_to_driver=False)
    with console.status("deploying the local profile"):
        runtime.deploy(schema)
        runtime.wait_running([a.name for a in schema.applications], timeout_s=900)
    return f"localhost:{grpc_port}"


def parse_mix(text: str) -> list[tuple[str, float]]:
    mix = []
    for part in text.split(","):
        kind, _, weight = part.partition("=")
        if kind not in KINDS:
            raise argparse.ArgumentTypeError(f"--mix kinds are {KINDS}, not {kind!r}")
        mix.append((kind, float(weight or 1)))
    return mix


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--target", help="host:port of a running stack's gRPC proxy")
    where.add_argument("--local", action="store_true", help="start Ray and the local profile here")
    parser.add_argument("--application", default="conversation")
    parser.add_argument("--users", type=int, default=4, help="simulated users (without --sweep)")
    parser.add_argument("--sweep", default="", help="user counts to run one after another, e.g. 1,2,4,8,16")
    parser.add_argument("--turns", type=int, default=8, help="turns per user (a bound: the run is finite)")
    parser.add_argument("--minutes", type=float, default=3.0, help="at most this long per run")
    parser.add_argument("--think-s", type=float, default=2.0, help="mean think time between a user's turns")
    parser.add_argument("--mix", type=parse_mix, default=parse_mix("ask=4,converse=3,spoken=2,avatar=1"))
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--deadline-s", type=float, default=60.0, help="retries of one turn stop after this")
    parser.add_argument("--ramp-s", type=float, default=2.0, help="users start spread over this")
    parser.add_argument("--keys", help="a file of API keys, one a line, instead of making users")
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args(argv)
    counts = [int(n) for n in options.sweep.split(",")] if options.sweep else [options.users]

    if options.local:
        options.target = start_local_stack()
    speech = [espeak(text) for text in SPOKEN] if any(k == "spoken" for k, _ in options.mix) else []
    keys, made = make_keys(max(counts), options.keys)
    results = []
    try:
        Client(options.target, application=options.application).wait_ready(60)
        for users in counts:
            result = run_load(options, keys, users, speech)
            console.print(kind_table(result))
            results.append(result)
    finally:
        delete_users(made)
    if len(results) > 1:
        console.print(sweep_table(results, machine()))
        found = knee(results)
        if found is None:
            console.print(f"No knee within the sweep: throughput still grew at {results[-1].users} users.")
        else:
            console.print(
                f"Knee: {found.users} users ({found.throughput():.2f} turns/s); more users add under 15% "
                "throughput and only lengthen the turns."
            )
    p50s = [statistics.median([s.latency_s for s in r.samples if s.ok] or [float("nan")]) for r in results]
    console.print(
        f"Median turn per run: {', '.join(f'{r.users} users {p:.2f} s' for r, p in zip(results, p50s, strict=True))}"
    )
    if options.local:
        import ray
        from ray import serve

        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()

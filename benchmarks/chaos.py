"""Chaos under load: kill the LLM replica, the Router replica, one of two ingress replicas, the SessionStore actor and
the KnowledgeStore actor in turn while users talk; count what was answered, retried, resumed and lost. Then, with
`--restart`, the whole cluster: Ray shut down and started again over the same state and knowledge folders.

Run: `python -m benchmarks.chaos [--users 6] [--turns-per-kill 1000] [--restart]`. It starts a Ray of its own and
deploys a `chaos` application: the conversation graph with the local profile's packaged model (SmolLM2-135M) or
`--llm DIR` (a model folder), two ingress replicas, and a knowledge base with `--kb-lines` MetaQA lines ingested by
the real pipeline; the durable state and the knowledge base live in a temporary folder. Load: each user (an API key
of its own) asks in one session (`Ask`, almquist.client.ask_until_answered) and talks in another (`Converse`,
ResilientConversation: a broken stream is reopened on its session and the unanswered turn sent again under the same
idempotency key); one more client reads the knowledge service. A kill comes once `--turns-per-kill` turns were
answered since the last one (and the killed part is back and answering); the table has one row per kill.

What counts (the same checks as tests/test_chaos.py, which runs a bounded version in CI with a tiny model):
answered / failed turns (a failed turn: the client gave up: a non-retryable status, or no answer within
`--deadline-s`), turns retried and sends after the first, streams reopened and how long resuming took (a dead
stream's lease lapses within 8 s), lost (answered but not in the user's own export) and doubled (stored twice).
The machinery here (Load, the victims, the store check, the table) is what the test uses. `--no-kills --restart`
runs a few seconds of load and then only the restart (tests/test_chaos.py runs it so, with a tiny model). Exit
status 1 when anything was lost or doubled, a session went missing, the KB changed, more than 0.1% of turns failed,
or the restart did not keep everything.
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import ray
from rich.console import Console
from rich.table import Table

from actors.knowledge_store import get_knowledge_store, knowledge_store_name
from actors.sessions import SESSION_STORE_NAME, SESSION_STORE_NAMESPACE
from almquist.client import RETRYABLE_CODES, Client, ResilientConversation, ask_until_answered
from almquist.config import AppConfig
from almquist.config.knowledge import KnowledgeConfig
from almquist.v1 import common_pb2, conversation_pb2, knowledge_pb2

console = Console(width=220)
LEASE_S = 8.0  # conversation.stream_lease_s's default: a dead stream's claim lapses within this
KINDS = ("ask", "converse", "knowledge")


@dataclass
class Outcome:
    """One turn (or knowledge call) of the load, as its client saw it."""

    phase: str
    kind: str  # ask | converse | knowledge
    user: str
    started: float
    ok: bool
    latency_s: float
    retries: int = 0
    reopens: int = 0
    resume_s: list[float] = field(default_factory=list)
    codes: list[str] = field(default_factory=list)
    session_id: str = ""
    turn_id: str = ""
    text: str = ""
    error: str = ""


class Load:
    """The users' threads; `phase` tags every turn started while it is set."""

    def __init__(
        self,
        target: str,
        keys: dict[str, str],
        admin_key: str,
        app: str,
        max_tokens: int = 4,
        deadline_s: float = 90.0,
    ) -> None:
        self.target, self.keys, self.admin_key, self.app = target, keys, admin_key, app
        self.max_tokens, self.deadline_s = max_tokens, deadline_s
        self.phase = "warm-up"
        self.stop = threading.Event()
        self.outcomes: list[Outcome] = []
        self.sessions: dict[str, set[str]] = collections.defaultdict(set)
        self.silent_ends = 0
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for user in self.keys:
            self._spawn(self._asker, user)
            self._spawn(self._talker, user)
        self._spawn(self._reader, "admin")

    def finish(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(self.deadline_s + 30)
        assert not any(t.is_alive() for t in self._threads), "a load thread did not finish"

    def _spawn(self, target: Callable[[str], None], user: str) -> None:
        thread = threading.Thread(target=target, args=(user,), name=f"{target.__name__}-{user}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _record(self, outcome: Outcome) -> None:
        with self._lock:
            self.outcomes.append(outcome)

    def _client(self, user: str) -> Client:
        return Client(
            self.target, application=self.app, timeout_s=self.deadline_s, api_key=self.keys.get(user, self.admin_key)
        )

    def _asker(self, user: str) -> None:
        with self._client(user) as client:
            session = ResilientConversation(client, conversation_pb2.SessionStart(max_tokens=self.max_tokens))
            session.close()  # a session for Asks: Ask takes no stream lease
            session_id = session.session_id
            self.sessions[user].add(session_id)
            for index in range(1_000_000):
                if self.stop.is_set():
                    return
                phase, started = self.phase, time.monotonic()
                text = f"Tell me a short joke, {user}, ask number {index}."
                try:
                    answered = ask_until_answered(
                        client, text, session_id, max_tokens=self.max_tokens, deadline_s=self.deadline_s
                    )
                except (grpc.RpcError, TimeoutError) as error:
                    self._record(
                        Outcome(phase, "ask", user, started, False, time.monotonic() - started, codes=[code_of(error)])
                    )
                    continue
                ok = answered.turn_end.reason != common_pb2.TURN_END_REASON_ERROR
                self._record(
                    Outcome(
                        phase,
                        "ask",
                        user,
                        started,
                        ok,
                        time.monotonic() - started,
                        answered.retries,
                        codes=answered.codes,
                        session_id=session_id,
                        turn_id=answered.turn_id,
                        text=text,
                        error="" if ok else answered.turn_end.detail,
                    )
                )
                time.sleep(0.1)

    def _talker(self, user: str) -> None:
        with self._client(user) as client:
            session = ResilientConversation(
                client, conversation_pb2.SessionStart(max_tokens=self.max_tokens), deadline_s=self.deadline_s
            )
            self.sessions[user].add(session.session_id)
            try:
                for index in range(1_000_000):
                    if self.stop.is_set():
                        return
                    phase, started = self.phase, time.monotonic()
                    text = f"Tell me a short story, {user}, turn number {index}."
                    try:
                        answered = session.turn(text)
                    except (grpc.RpcError, TimeoutError, ValueError) as error:
                        # given up on (not retryable): counted as failed; the session is resumed for the next turn
                        failed = Outcome(
                            phase, "converse", user, started, False, time.monotonic() - started, codes=[code_of(error)]
                        )
                        with self._lock:
                            self.silent_ends += session.silent_ends
                        session.close()
                        broke_at = time.monotonic()
                        start = conversation_pb2.SessionStart(session_id=session.session_id, max_tokens=self.max_tokens)
                        try:
                            session = ResilientConversation(client, start, deadline_s=self.deadline_s)
                        except (grpc.RpcError, TimeoutError) as error:
                            failed.codes.append(f"RESUME_{code_of(error)}")
                            self._record(failed)
                            return
                        failed.resume_s.append(time.monotonic() - broke_at)
                        failed.reopens = 1
                        self._record(failed)
                        continue
                    ok = answered.turn_end.reason != common_pb2.TURN_END_REASON_ERROR
                    self._record(
                        Outcome(
                            phase,
                            "converse",
                            user,
                            started,
                            ok,
                            time.monotonic() - started,
                            answered.retries,
                            answered.reopens,
                            answered.resume_s,
                            answered.codes,
                            session.session_id,
                            answered.turn_id,
                            text,
                            "" if ok else answered.turn_end.detail,
                        )
                    )
                    time.sleep(0.1)
            finally:
                with self._lock:
                    self.silent_ends += session.silent_ends
                session.close()

    def _reader(self, user: str) -> None:
        with self._client(user) as client:
            while not self.stop.is_set():
                for name, request in (
                    ("ListSnapshots", knowledge_pb2.ListSnapshotsRequest()),
                    ("Search", knowledge_pb2.SearchRequest(text="a movie directed by someone", limit=3)),
                ):
                    phase, started = self.phase, time.monotonic()
                    call = functools.partial(
                        getattr(client.knowledge, name), request, metadata=client.metadata, timeout=30
                    )
                    retries, codes = until_answered(call, self.deadline_s)
                    ok = codes[-1:] != ["FAILED"]
                    self._record(
                        Outcome(
                            phase,
                            "knowledge",
                            user,
                            started,
                            ok,
                            time.monotonic() - started,
                            retries,
                            codes=codes[:-1] if not ok else codes,
                        )
                    )
                time.sleep(0.3)


def code_of(error: BaseException) -> str:
    return error.code().name if isinstance(error, grpc.RpcError) else type(error).__name__  # type: ignore[attr-defined]


def until_answered(call: Callable[[], Any], deadline_s: float) -> tuple[int, list[str]]:
    """Calls until answered, retrying retryable codes for `deadline_s`: (retries, codes seen, "FAILED" last when it
    never was)."""
    deadline = time.monotonic() + deadline_s
    codes: list[str] = []
    while True:
        try:
            call()
            return len(codes), codes
        except grpc.RpcError as error:
            codes.append(error.code().name)
            if error.code() not in RETRYABLE_CODES or time.monotonic() > deadline:
                return len(codes), [*codes, "FAILED"]
            time.sleep(0.5)


def replicas_of(app: str, deployment: str) -> list[str]:
    """The live replica actors' names of `app`'s `deployment` (Serve names them SERVE_REPLICA::app#name#id)."""
    prefix = f"SERVE_REPLICA::{app}#{deployment}#"
    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(prefix))


@dataclass
class Victim:
    """What one kill kills, and how the test knows it is back."""

    kill: Callable[[], Any]  # kills it; returns what `back` needs
    back: Callable[[Any], bool]


def replica_victim(app: str, deployment: str, replicas: int = 1) -> Victim:
    def kill() -> str:
        [name, *_] = replicas_of(app, deployment)
        ray.kill(ray.get_actor(name, namespace="serve"), no_restart=False)  # Serve starts another replica
        return name

    def back(killed: str) -> bool:
        from ray import serve

        names = replicas_of(app, deployment)
        status = serve.status().applications[app].deployments[deployment].status
        return killed not in names and len(names) >= replicas and status == "HEALTHY"

    return Victim(kill, back)


def actor_victim(name: str, namespace: str, ping: str) -> Victim:
    def kill() -> Any:
        actor = ray.get_actor(name, namespace=namespace)
        ray.kill(actor, no_restart=False)  # Ray restarts it (max_restarts=-1)
        return actor

    def back(actor: Any) -> bool:
        try:
            ray.get(getattr(actor, ping).remote(), timeout=5)
            return True
        except (ray.exceptions.RayError, TimeoutError):
            return False

    return Victim(kill, back)


def victims(app: str, knowledge: KnowledgeConfig) -> dict[str, Victim]:
    """The kills, in order: each named as the table shows it."""
    return {
        "LLMServer replica": replica_victim(app, "LLMServer"),
        "Router replica": replica_victim(app, "Router"),
        "ingress replica (1 of 2)": replica_victim(app, "ConversationIngress", replicas=2),
        "SessionStore actor": actor_victim(SESSION_STORE_NAME, SESSION_STORE_NAMESPACE, "count"),
        "KnowledgeStore actor": actor_victim(knowledge_store_name(knowledge), "almquist", "stats"),
    }


def kb_state(knowledge: KnowledgeConfig) -> tuple[list[dict], dict]:
    store = get_knowledge_store(knowledge)
    return ray.get(store.list_snapshots.remote(), timeout=120), ray.get(store.stats.remote(), timeout=120)


def deploy(config: AppConfig, app: str, ingress_replicas: int = 2) -> None:
    """The conversation graph without the media families, small CPU reservations, `ingress_replicas` ingresses."""
    from ray import serve

    from almquist import runtime
    from deployments.embeddings import Embeddings
    from deployments.llm.server import LLMServer
    from graphs.graph_rag import GraphRAG
    from graphs.handles import Handles
    from graphs.ingress import ConversationIngress
    from graphs.router import Router

    def deployment(cls: Any) -> Any:  # a @serve.deployment class as what it is at run time
        return cls

    small = {"num_cpus": 0.05}
    embeddings = deployment(Embeddings).options(ray_actor_options=small, max_queued_requests=64)
    embeddings = embeddings.bind(config=config.embeddings)
    llm = deployment(LLMServer).options(ray_actor_options=small, max_queued_requests=32, graceful_shutdown_timeout_s=2)
    llm = llm.bind(config=config.llm)
    graph_rag = (
        deployment(GraphRAG)
        .options(ray_actor_options=small)
        .bind(llm=llm, embeddings=embeddings, knowledge=config.knowledge, kgqa=config.kgqa, news=config.news)
    )
    router = (
        deployment(Router)
        .options(ray_actor_options=small, max_queued_requests=16)
        .bind(llm=llm, graph_rag=graph_rag, embeddings=embeddings, config=config.router)
    )
    handles = Handles(router=router, graph_rag=graph_rag, llm=llm, embeddings=embeddings)
    ingress = deployment(ConversationIngress).options(
        num_replicas=ingress_replicas, ray_actor_options=small, max_queued_requests=64
    )
    serve.run(ingress.bind(handles=handles, config=config), name=app, route_prefix=f"/{app}", blocking=False)
    runtime.wait_running([app], timeout_s=900)


def app_config(llm: dict[str, Any], embeddings: dict[str, Any], work: Path, max_tokens: int) -> AppConfig:
    from almquist.config.security import StateConfig

    return AppConfig.model_validate(
        {
            "llm": {**llm, "default_max_tokens": max_tokens},
            "embeddings": embeddings,
            "knowledge": {"graph": {"path": str(work / "graph")}, "vectors": {"path": str(work / "qdrant")}},
            "kgqa": {"model_dir": str(work / "kgqa")},
            "state": StateConfig().model_dump(),
            # a few fast clients: the per-identity turn rate is not what this measures
            "quotas": {"turns_per_minute": 100_000, "turn_burst": 1_000},
        }
    )


def ingest(knowledge: KnowledgeConfig, work: Path, lines: int) -> None:
    from almquist.config import data_dir
    from ingestion.metaqa import ingest_metaqa

    kb = work / "kb.txt"
    kb.write_text("\n".join((data_dir() / "metaqa" / "kb.txt").read_text().splitlines()[:lines]) + "\n")
    report = ingest_metaqa(kb, knowledge)
    assert report.errors == [] and report.created_edges == lines, report


def make_users(count: int, prefix: str = "chaos") -> dict[str, str]:
    """`count` users of the durable store, each with an API key: name -> key."""
    from almquist.config.security import StateConfig
    from almquist.state import StateStore

    store = StateStore(StateConfig())
    keys = {}
    for index in range(count):
        user = store.add_user(f"{prefix}-{index}-{time.monotonic_ns() % 10**9}")
        keys[user.name] = store.create_key(user.user_id)[1]
    store.close()
    return keys


def run_kills(
    load: Load,
    kills: dict[str, Victim],
    before_s: float = 4.0,
    turns_per_kill: int = 0,
    after_turns: int = 2,
    cap_s: float = 150.0,
    strict: bool = True,
) -> dict[str, float]:
    """Kills each victim in turn under `load`: after `before_s` and `turns_per_kill` answered turns (Ask and
    Converse) since the phase began, then waits until it is back and `after_turns` answers of each kind started after
    the kill came. Returns seconds from each kill until the part was back. A phase not over within `cap_s` of its
    kill fails an assertion when `strict`, else it is left as it is (its row shows it) and the next kill comes."""
    back_in: dict[str, float] = {}
    for phase, victim in kills.items():
        load.phase = phase
        phase_started = time.monotonic()
        time.sleep(before_s)
        while sum(o.ok for o in list(load.outcomes) if o.started >= phase_started and o.kind != "knowledge") < (
            turns_per_kill
        ):
            time.sleep(0.5)
        killed_at = time.monotonic()
        killed = victim.kill()
        recovered = False
        while time.monotonic() - killed_at < cap_s:
            if phase not in back_in and victim.back(killed):
                back_in[phase] = time.monotonic() - killed_at
            after = collections.Counter(o.kind for o in list(load.outcomes) if o.ok and o.started > killed_at)
            if phase in back_in and all(after[kind] >= after_turns for kind in KINDS):
                recovered = True
                break
            time.sleep(0.25)
        if not recovered:
            assert not strict, f"{phase}: not back and answering within {cap_s} s"
            back_in.setdefault(phase, float("inf"))
    return back_in


@dataclass
class StoreCheck:
    """Each user's own export against what the clients saw answered."""

    lost: list[Outcome]  # answered, not stored
    doubled: list[Outcome]  # stored more than once (by turn id or by its unique text)
    missing_sessions: list[str]


def check_store(load: Load) -> StoreCheck:
    stored: dict[str, collections.Counter] = {}
    stored_texts: dict[str, collections.Counter] = {}
    missing_sessions = []
    for user, key in load.keys.items():
        with Client(load.target, application=load.app, timeout_s=120, api_key=key) as client:
            exported = client.export_my_data()
        ids = {s["session_id"] for s in exported["sessions"]}
        missing_sessions += [s for s in load.sessions[user] if s not in ids]
        turns = [t for s in exported["sessions"] for thread in s["threads"].values() for t in thread]
        stored[user] = collections.Counter(t["turn_id"] for t in turns)
        stored_texts[user] = collections.Counter(t["user"] for t in turns)
    seen = [o for o in load.outcomes if o.kind != "knowledge" and o.ok]
    lost = [o for o in seen if stored[o.user][o.turn_id] == 0]
    doubled = [o for o in seen if stored[o.user][o.turn_id] > 1 or stored_texts[o.user][o.text] > 1]
    return StoreCheck(lost, doubled, missing_sessions)


def chaos_table(load: Load, back_in: dict[str, float], check: StoreCheck, title: str) -> Table:
    table = Table(title=f"{title}; {os.cpu_count()} CPUs at load average {os.getloadavg()[0]:.0f}")
    columns = ["kill", "back in", "turns", "answered", "failed", "retried", "retries", "reopened", "resume max"]
    columns += ["slowest", "lost", "doubled", "codes seen"]
    for column in columns:
        table.add_column(column, justify="left" if column in ("kill", "codes seen") else "right")
    for phase in ["warm-up", *back_in]:
        rows = [o for o in load.outcomes if o.phase == phase]
        resumes = [s for o in rows for s in o.resume_s]
        codes = collections.Counter(c for o in rows for c in o.codes)
        table.add_row(
            phase,
            _back(back_in.get(phase)),
            str(len(rows)),
            str(sum(o.ok for o in rows)),
            str(sum(not o.ok for o in rows)),
            str(sum(1 for o in rows if o.retries)),
            str(sum(o.retries for o in rows)),
            str(sum(o.reopens for o in rows)),
            f"{max(resumes):.1f} s" if resumes else "-",
            f"{max(o.latency_s for o in rows):.1f} s" if rows else "-",
            str(sum(1 for o in check.lost if o.phase == phase)),
            str(sum(1 for o in check.doubled if o.phase == phase)),
            ", ".join(f"{c} x{n}" for c, n in codes.most_common()) or "-",
        )
    return table


def _back(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return "NOT BACK" if seconds == float("inf") else f"{seconds:.1f} s"


# ----- the benchmark: a Ray of its own -----


def start_ray(folder: Path) -> str:
    """Ray and Serve's proxies as the local profile starts them; returns the gRPC target."""
    from almquist import runtime
    from almquist.limits import PROXY_ENV

    for name, value in PROXY_ENV.items():
        os.environ.setdefault(name, value)
    ports = folder / "ports"
    if not ports.exists():  # the same ports after a restart, as a restarted cluster keeps its address
        ports.write_text(f"{runtime.free_port()} {runtime.free_port()}")
    grpc_port, http_port = (int(p) for p in ports.read_text().split())
    schema = runtime.load_profile("local", grpc_port=grpc_port, http_port=http_port)
    ray.init("local", num_cpus=6, include_dashboard=False, namespace="serve", log_to_driver=False)
    from ray.serve._private import api as serve_api
    from ray.serve.config import gRPCOptions

    serve_api.serve_start(
        http_options=schema.http_options.model_dump(),
        grpc_options=gRPCOptions(**schema.grpc_options.model_dump()),
        proxy_location=schema.proxy_location,
    )
    return f"localhost:{grpc_port}"


def stop_ray() -> None:
    from ray import serve

    serve.shutdown()
    ray.shutdown()


def restart_check(config: AppConfig, load: Load, folder: Path, app: str) -> tuple[Table, bool]:
    """The whole cluster down and up again over the same folders: every user's export, the KB's snapshots and
    counts, and each session (resumed on a new stream and answering) as before. Returns the table and whether all
    of it held."""
    exports = {}
    for user, key in load.keys.items():
        with Client(load.target, application=app, timeout_s=120, api_key=key) as client:
            exports[user] = client.export_my_data()
    kb_before = kb_state(config.knowledge)
    started = time.monotonic()
    stop_ray()
    down_s = time.monotonic() - started
    start_ray(folder)
    deploy(config, app)
    up_s = time.monotonic() - started
    same_exports = 0
    resumed = 0
    for user, key in load.keys.items():
        with Client(load.target, application=app, timeout_s=120, api_key=key) as client:
            same_exports += client.export_my_data()["sessions"] == exports[user]["sessions"]
            for session_id in load.sessions[user]:
                start = conversation_pb2.SessionStart(session_id=session_id, max_tokens=load.max_tokens)
                with ResilientConversation(client, start, deadline_s=load.deadline_s) as session:
                    session.turn("Are you still there?")
                    resumed += 1
    kb_same = kb_state(config.knowledge) == kb_before
    table = Table(title="Whole-cluster restart (Ray shut down, started again, the app deployed over the same folders)")
    for column in ("down", "up again", "users' exports equal", "sessions resumed and answering", "KB equal"):
        table.add_column(column, justify="right")
    sessions = sum(len(s) for s in load.sessions.values())
    table.add_row(
        f"{down_s:.1f} s",
        f"{up_s:.1f} s",
        f"{same_exports} of {len(load.keys)}",
        f"{resumed} of {sessions}",
        "yes" if kb_same else "NO",
    )
    return table, same_exports == len(load.keys) and resumed == sessions and kb_same


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=2, help="each asks and talks at once: 2 turns in flight")
    parser.add_argument("--turns-per-kill", type=int, default=1000, help="answered turns before each kill")
    parser.add_argument("--no-kills", action="store_true", help="only a few seconds of load (then --restart)")
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--deadline-s", type=float, default=300.0, help="a client gives up on a turn after this")
    parser.add_argument("--kb-lines", type=int, default=200)
    parser.add_argument("--llm", default="", help="a transformers model folder instead of the packaged SmolLM2")
    parser.add_argument("--max-model-len", type=int, default=0, help="the LLM's context (0: the profile's)")
    parser.add_argument("--restart", action="store_true", help="then restart the whole cluster and check again")
    options = parser.parse_args(argv)

    folder = Path(tempfile.mkdtemp(prefix="almquist-chaos-"))
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ["ALMQUIST_STATE_URL"] = f"sqlite:///{folder / 'almquist.db'}"
    os.environ["ALMQUIST_CREDENTIALS"] = str(folder / "credentials")
    from almquist import runtime
    from almquist.config.security import StateConfig
    from almquist.credentials import ensure_owner_key

    [local] = [a for a in runtime.load_profile("local").applications if a.name == "conversation"]
    llm = dict(local.args["llm"])
    if options.llm:
        llm = {**llm, "model": options.llm, "gguf_file": None}
    if options.max_model_len:
        llm["max_model_len"] = options.max_model_len
    config = app_config(llm, dict(local.args["embeddings"]), folder, options.max_tokens)
    admin_key, _ = ensure_owner_key(StateConfig())
    app = "chaos"
    with console.status("starting Ray, deploying, ingesting"):
        target = start_ray(folder)
        deploy(config, app)
        ingest(config.knowledge, folder, options.kb_lines)
    kb_before = kb_state(config.knowledge)
    load = Load(target, make_users(options.users), admin_key, app, options.max_tokens, options.deadline_s)
    started = time.monotonic()
    load.start()
    back_in: dict[str, float] = {}
    try:
        if options.no_kills:
            time.sleep(5.0)
        else:
            with console.status(f"{options.users} users; {options.turns_per_kill} answered turns before each kill"):
                kills = victims(app, config.knowledge)
                back_in = run_kills(load, kills, turns_per_kill=options.turns_per_kill, cap_s=600, strict=False)
    finally:
        load.finish()
    check = check_store(load)
    title = (
        f"Chaos: {options.users} users (Ask + Converse each) + 1 knowledge reader, {time.monotonic() - started:.0f} s"
    )
    console.print(chaos_table(load, back_in, check, title))
    kb_same = kb_state(config.knowledge) == kb_before
    failed = sum(not o.ok for o in load.outcomes)
    console.print(
        f"failed: {failed} of {len(load.outcomes)}; lost: {len(check.lost)}; doubled: {len(check.doubled)}; "
        f"sessions missing: {len(check.missing_sessions)}; streams ended OK with a turn unanswered: "
        f"{load.silent_ends}; KB equal after the kills: {kb_same}"
    )
    held = not (check.lost or check.doubled or check.missing_sessions or load.silent_ends) and kb_same
    held = held and failed <= 0.001 * len(load.outcomes)
    if options.restart:
        table, restarted = restart_check(config, load, folder, app)
        console.print(table)
        held = held and restarted
    stop_ray()
    return 0 if held else 1


if __name__ == "__main__":
    raise SystemExit(main())

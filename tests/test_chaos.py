"""Chaos under load: the LLM replica, the Router replica, an ingress replica, the SessionStore actor and the
KnowledgeStore actor are killed in turn while a few users talk, and nothing is lost or told wrong.

A `chaos` application is deployed beside the session's `local` one (killing its parts leaves the other tests'
application alone): the conversation graph with a tiny Llama built from a config (turns of 4 tokens take
milliseconds), the packaged MiniLM embeddings, two ingress replicas (as the local profile's autoscaling allows),
and a knowledge base of its own with a small MetaQA slice ingested by the real pipeline. Load: `USERS` identities
(an API key each), each asking in one session (`Ask`) and talking in another (`Converse`, typed turns), plus one
client reading the knowledge service (Search, ListSnapshots). The clients use almquist.client's retries:
`ask_until_answered` (the same idempotency key until answered) and `ResilientConversation` (a broken stream is
reopened on its session and the unanswered turn sent again under the same key).

Each kill is `ray.kill` of the actor (a replica's actor, found by its Serve name; the detached actors by theirs):
Serve starts a new replica, Ray restarts the detached actors. After the last one the test asserts: at least 99.9%
of turns answered; every answered turn stored exactly once in its user's own export (by turn id and by text), no
session lost; every broken stream resumed within the lease's lapse plus a margin; the knowledge base's snapshots
and counts equal before and after. It prints the chaos table (kill x turns x retries x lost). The machinery (the
load, the victims, the store check, the table) is benchmarks/chaos.py's, whose longer run (1,000 turns per kill on
the packaged model, then a whole-cluster restart over the same folders) does not fit CI's budget.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actors.knowledge_store import release_knowledge_store
from almquist.client import Client
from almquist.config.knowledge import KnowledgeConfig
from benchmarks.chaos import (
    LEASE_S,
    Load,
    app_config,
    chaos_table,
    check_store,
    deploy,
    ingest,
    kb_state,
    make_users,
    run_kills,
    victims,
)

pytestmark = pytest.mark.serve

APP = "chaos"
USERS = 3
MAX_TOKENS = 4
TURN_DEADLINE_S = 90.0  # a client gives a turn this long (retries included): a replica restart on a loaded machine
KB_LINES = 60  # MetaQA kb.txt lines ingested before the kills


@pytest.fixture(scope="module")
def chaos(serve_stack, tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from ray import serve

    work = tmp_path_factory.mktemp("chaos")
    [local] = [app for app in serve_stack.schema.applications if app.name == "conversation"]
    llm = {
        "backend": "transformers",
        "model": str(tiny_llama_dir),
        "gguf_file": None,
        "dtype": "float32",
        "device": "cpu",
        "num_threads": 1,
        "max_model_len": 512,
    }
    config = app_config(llm, dict(local.args["embeddings"]), work, MAX_TOKENS)
    deploy(config, APP, ingress_replicas=2)
    ingest(config.knowledge, work, KB_LINES)
    keys = make_users(USERS)
    yield {"target": serve_stack.target, "keys": keys, "knowledge": config.knowledge, "admin": Client().api_key}
    serve.delete(APP)
    release_knowledge_store(config.knowledge)


def test_kills_under_load_lose_nothing_and_every_turn_is_answered(chaos) -> None:
    from rich.console import Console

    knowledge = KnowledgeConfig.model_validate(chaos["knowledge"])
    kb_before = kb_state(knowledge)
    load = Load(chaos["target"], chaos["keys"], chaos["admin"], APP, MAX_TOKENS, TURN_DEADLINE_S)
    started = time.monotonic()
    load.start()
    try:
        back_in = run_kills(load, victims(APP, knowledge))
    finally:
        load.finish()
    elapsed = time.monotonic() - started
    kb_after = kb_state(knowledge)
    check = check_store(load)
    title = f"Chaos: {USERS} users (Ask + Converse each) + 1 knowledge reader, {elapsed:.0f} s"
    Console(width=220).print(chaos_table(load, back_in, check, title))

    assert {o.phase for o in load.outcomes} >= set(back_in)
    assert check.missing_sessions == []
    assert check.lost == [], [(o.phase, o.kind, o.turn_id, o.text) for o in check.lost]
    assert check.doubled == [], [(o.phase, o.kind, o.turn_id, o.text) for o in check.doubled]
    assert load.silent_ends == 0, "a stream ended with OK while a turn was unanswered"
    resumes = [s for o in load.outcomes for s in o.resume_s]
    assert max(resumes, default=0.0) < LEASE_S + 7.0, resumes  # the lease's lapse, and a loaded machine
    assert any(o.reopens for o in load.outcomes if o.phase.startswith("ingress")), "no stream was broken by the kill"
    assert kb_after == kb_before
    failed = [o for o in load.outcomes if not o.ok]
    assert len(load.outcomes) - len(failed) >= 0.999 * len(load.outcomes), [(o.phase, o.kind, o.codes) for o in failed]


def test_a_whole_cluster_restart_keeps_sessions_history_and_the_knowledge_base(tiny_llama_dir: Path) -> None:
    """Ray shut down and started again, the app deployed over the same state and knowledge folders: every user's
    export, every session (resumed and answering) and the KB's snapshots and counts as before. A Ray of its own in a
    subprocess (benchmarks/chaos.py --no-kills --restart), so the session's stack is left alone: about 2.5 minutes
    here."""
    command = [sys.executable, "-m", "benchmarks.chaos", "--llm", str(tiny_llama_dir), "--max-model-len", "512"]
    command += ["--max-tokens", str(MAX_TOKENS), "--users", "2", "--kb-lines", "40", "--no-kills", "--restart"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "COLUMNS": "200"}
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    tables = done.stdout[done.stdout.find("Chaos:") :]
    print(tables)
    assert done.returncode == 0, (tables or done.stdout[-3000:]) + done.stderr[-3000:]
    assert "Whole-cluster restart" in tables

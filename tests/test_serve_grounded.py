"""Grounded answers end to end: a MetaQA slice ingested into the deployed stack, questions answered over gRPC.

The served answers (Knowledge.Query, and the Conversation's citations) must equal those of the reference: the same
KGQA engine and model in this process over an `InMemoryGraphStore` of the same lines. A second ingestion becomes
answerable without a restart; a pinned snapshot does not see it; rollbacks restore the exact counts. The module
leaves the knowledge base as it found it (every snapshot rolled back), so the other Serve tests see it empty. Last,
the command `almquist up` submits to fill an empty KB, run on stores of its own.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import ray

from actors.knowledge_store import get_knowledge_store, release_knowledge_store
from almquist import runtime
from almquist.client import call_metadata
from almquist.config import data_dir
from almquist.config.knowledge import KnowledgeConfig
from almquist.stores.memory_store import InMemoryGraphStore, read_kb
from almquist.v1 import conversation_pb2, conversation_pb2_grpc, knowledge_pb2, knowledge_pb2_grpc
from deployments.kgqa.answer import KGQA
from deployments.kgqa.classifier import PathClassifier
from deployments.kgqa.embedder import minilm_embedder
from deployments.kgqa.linker import EntityLinker
from deployments.kgqa.metaqa import MetaQAQuestion, read_questions
from deployments.kgqa.train import train
from ingestion.metaqa import ingest_metaqa

pytestmark = pytest.mark.serve
METAQA = data_dir() / "metaqa"
FIRST_LINES, SECOND_LINES = 2500, 800  # kb.txt lines of the two ingestions (whole movies: lines group by movie)
PER_HOP = 6


@dataclass
class Loaded:
    config: KnowledgeConfig
    knowledge: knowledge_pb2_grpc.KnowledgeStub
    conversation: conversation_pb2_grpc.ConversationStub
    reference: KGQA  # over the first slice
    first_snapshot: str
    second_kb: Path


def kb_lines(start: int, stop: int, out: Path) -> Path:
    lines = (METAQA / "kb.txt").read_text(encoding="utf-8").splitlines()
    out.write_text("\n".join(lines[start:stop]) + "\n", encoding="utf-8")
    return out


def stats(config: KnowledgeConfig) -> dict:
    found = ray.get(get_knowledge_store(config).stats.remote())
    return {kind: {name: n for name, n in found[kind].items() if n} for kind in ("graph", "vectors")}


@pytest.fixture(scope="module")
def loaded(serve_stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    assert (METAQA / "kb.txt").exists(), f"MetaQA is missing at {METAQA}: see ../shared/data/README.md"
    folder = tmp_path_factory.mktemp("grounded")
    config = KnowledgeConfig.model_validate(serve_stack.knowledge)
    empty = stats(config)
    first_kb = kb_lines(0, FIRST_LINES, folder / "first.txt")
    report = ingest_metaqa(first_kb, config)
    assert report.errors == [] and report.created_edges == FIRST_LINES, report
    embed = minilm_embedder(int8=True, threads=1)
    train(METAQA, serve_stack.kgqa_model_dir, per_path_limit=25, validation_per_path_limit=5, embed=embed)
    graph = InMemoryGraphStore(read_kb(first_kb))
    reference = KGQA(graph, PathClassifier.load(serve_stack.kgqa_model_dir, embed), EntityLinker.from_store(graph))
    channel = grpc.insecure_channel(serve_stack.target)
    knowledge = knowledge_pb2_grpc.KnowledgeStub(channel)
    listed = knowledge.ListSnapshots(knowledge_pb2.ListSnapshotsRequest(), metadata=call_metadata()).snapshots
    # earlier modules (the live feeds) leave their snapshots rolled back: this slice's is the one live snapshot
    assert [s.snapshot_id for s in listed if s.status != "rolled_back"] == [report.snapshot_id]
    [snapshot] = [s for s in listed if s.snapshot_id == report.snapshot_id]
    yield Loaded(
        config,
        knowledge,
        conversation_pb2_grpc.ConversationStub(channel),
        reference,
        snapshot.snapshot_id,
        kb_lines(FIRST_LINES, FIRST_LINES + SECOND_LINES, folder / "second.txt"),
    )
    for record in ray.get(get_knowledge_store(config).list_snapshots.remote()):
        if record["status"] != "rolled_back":
            knowledge.Rollback(
                knowledge_pb2.RollbackRequest(snapshot_id=record["snapshot_id"]), metadata=call_metadata()
            )
    assert stats(config) == empty
    channel.close()


def answerable(reference: KGQA, hops: int) -> list[MetaQAQuestion]:
    """Validation questions the reference answers on the slice, correctly first (the classifier never saw them)."""
    picked = []
    for question in read_questions(METAQA, hops, split="validation"):
        result = reference.answer(question.text)
        if result.answers and result.answers[0] in question.answers:
            picked.append(question)
        if len(picked) == PER_HOP:
            break
    return picked


def query(loaded: Loaded, question: str, snapshot_id: str = "") -> knowledge_pb2.KnowledgeAnswer:
    request = knowledge_pb2.KnowledgeQuery(question=question, snapshot_id=snapshot_id)
    return loaded.knowledge.Query(request, metadata=call_metadata(), timeout=120)


@pytest.mark.parametrize("hops", [1, 2, 3])
def test_dev_questions_answered_over_grpc_like_the_reference(loaded: Loaded, hops: int):
    questions = answerable(loaded.reference, hops)
    assert len(questions) == PER_HOP, f"only {len(questions)} {hops}-hop questions answerable on the slice"
    for question in questions:
        expected = loaded.reference.answer(question.text)
        served = query(loaded, question.text)
        assert list(served.answers) == expected.answers[: len(served.answers)], question.text
        assert served.answers[0] in question.answers
        facts = [tuple(c.path) for c in served.citations]
        assert facts == [(f.subject, f.relation, f.object) for f in expected.facts], question.text
        assert len(facts[0]) == 3 and any(answer in fact for fact in facts for answer in question.answers)


def test_conversation_turn_cites_the_graph_then_phrases(loaded: Loaded):
    [question] = answerable(loaded.reference, 1)[:1]
    expected = loaded.reference.answer(question.text)
    request = conversation_pb2.AskRequest(text=question.text, max_tokens=24)
    events = list(loaded.conversation.AskStream(request, metadata=call_metadata(), timeout=300))
    kinds = [event.WhichOneof("event") for event in events]
    started = next(event.turn_started for event in events if event.HasField("turn_started"))
    assert (started.intent, started.route) == ("knowledge", "graph_rag")
    cited = [tuple(event.citation.path) for event in events if event.WhichOneof("event") == "citation"]
    assert cited == [(f.subject, f.relation, f.object) for f in expected.facts]
    # citations come before the first token: the client can show sources while the LLM phrases
    assert kinds.index("citation") < kinds.index("token") and kinds[-1] == "turn_end"
    assert "".join(e.token.text for e in events if e.WhichOneof("event") == "token").strip()


@pytest.mark.parametrize(
    "question",
    [
        "who directed [x'}) MATCH (n) DETACH DELETE n //]",
        "MATCH (n) DETACH DELETE n",
        "what films did [Person:x] star in; CALL db.clearQueryCaches()",
    ],
)
def test_injection_over_grpc_is_only_text(loaded: Loaded, question: str):
    before = stats(loaded.config)
    served = query(loaded, question)  # answered (or not) as a question: nothing of it reaches Cypher as text
    assert all(answer in loaded.reference.answer(question).answers for answer in served.answers)
    assert stats(loaded.config) == before


def test_new_ingestion_is_answerable_without_restart_and_pins_and_rollback_hold(loaded: Loaded):
    after_first = stats(loaded.config)
    graph = InMemoryGraphStore(read_kb(loaded.second_kb))
    reference = KGQA(graph, loaded.reference.classifier, EntityLinker.from_store(graph))
    fresh = next(  # a movie of the second slice that nothing in the first links to, even approximately
        q
        for q in read_questions(METAQA, 1, split="validation")
        if not loaded.reference.link(q.text).entities
        and (r := reference.answer(q.text)).answers
        and r.answers[0] in q.answers
    )
    assert query(loaded, fresh.text).answers == [], "the question's movie is not ingested yet"

    report = ingest_metaqa(loaded.second_kb, loaded.config)
    assert report.errors == [] and report.created_edges == SECOND_LINES
    served = query(loaded, fresh.text)
    assert list(served.answers) == reference.answer(fresh.text).answers[: len(served.answers)]
    assert query(loaded, fresh.text, snapshot_id=loaded.first_snapshot).answers == []  # pinned: not there yet

    newest = loaded.knowledge.ListSnapshots(knowledge_pb2.ListSnapshotsRequest(), metadata=call_metadata()).snapshots[0]
    assert newest.snapshot_id != loaded.first_snapshot and newest.items > 0
    rollback = knowledge_pb2.RollbackRequest(snapshot_id=newest.snapshot_id)
    removed = loaded.knowledge.Rollback(rollback, metadata=call_metadata())
    assert removed.items_removed == newest.items
    assert stats(loaded.config) == after_first
    assert query(loaded, fresh.text).answers == []


def test_first_start_bootstrap_command_fills_a_kb_once(serve_stack, tmp_path: Path):
    """What `almquist up` submits as a Ray job, run here against the test cluster on its own stores."""
    schema = runtime.load_profile("local")
    [app] = [app for app in schema.applications if app.import_path == runtime.KNOWLEDGE_APP_IMPORT]
    app.args["knowledge"] = {"graph": {"path": str(tmp_path / "graph")}, "vectors": {"path": str(tmp_path / "qd")}}
    app.args["kgqa"] = {"model_dir": str(tmp_path / "kgqa")}
    command = runtime.knowledge_job_entrypoint(schema, limit=300)
    assert command is not None and "--if-missing" in command
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    config = KnowledgeConfig.model_validate(app.args["knowledge"])
    try:
        first = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=600)
        assert first.returncode == 0, first.stderr[-2000:]
        assert (tmp_path / "kgqa" / "meta.json").exists()
        [snapshot] = ray.get(get_knowledge_store(config).list_snapshots.remote())
        assert snapshot["status"] == "committed" and snapshot["info"]["last_run"]["created_edges"] == 300
        loaded = stats(config)
        again = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=600)
        assert again.returncode == 0, again.stderr[-2000:]
        assert "nothing to train" in again.stdout and '"status": "up_to_date"' in again.stderr
        assert stats(config) == loaded
    finally:
        release_knowledge_store(config)

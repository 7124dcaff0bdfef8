"""Knowledge stores without Ray: the named queries on ladybug and on the Neo4j backend (at the driver's API boundary)
against a reference computed in Python from the parsed triples; idempotent upserts; snapshot pinning; rollback of
both stores; injection text; errors that say what to change."""

from __future__ import annotations

import itertools
import re
from collections import defaultdict, deque
from pathlib import Path
from typing import Any
from unittest.mock import create_autospec

import numpy as np
import pytest

from actors.knowledge_store import KnowledgeStore
from almquist.config.knowledge import GraphStoreConfig, KnowledgeConfig, VectorStoreConfig
from almquist.errors import FailedPrecondition, InvalidArgument, NotFound
from almquist.stores.cypher_store import CypherGraphStore
from almquist.stores.factory import open_graph_store
from almquist.stores.queries import PUBLIC_QUERIES, QUERIES, bind
from almquist.stores.schema import METAQA_RELATIONS, NODE_LABELS, RELATIONSHIPS, label_of
from almquist.stores.snapshot import Snapshot
from almquist.stores.vectors import VectorStore
from ingestion.batches import GraphBatch
from ingestion.metaqa import default_kb, parse_lines

SLICE_LINES = 3000
INJECTION = "x'}) MATCH (n) DETACH DELETE n //"


def read_slice(lines: int = SLICE_LINES, start: int = 0) -> GraphBatch:
    with open(default_kb(), "rb") as f:
        data = b"".join(itertools.islice(f, start, start + lines))
    return parse_lines(data, 0, start + 1, "kb.txt")


class Reference:
    """The graph some triples describe, computed in Python: what every backend's named queries must return."""

    def __init__(self, *batches: GraphBatch) -> None:
        self.nodes: dict[str, tuple[str, str]] = {}
        self.out: dict[tuple[str, str], set[str]] = defaultdict(set)
        self.into: dict[tuple[str, str], set[str]] = defaultdict(set)
        self.edges: set[tuple[str, str, str]] = set()
        for batch in batches:
            for label, ids in batch.nodes.items():
                self.nodes.update({i: (name, label) for i, name in ids.items()})
            for (rel, _, _), pairs in batch.edges.items():
                for src, dst in pairs:
                    self.edges.add((src, rel, dst))
                    self.out[(src, rel)].add(dst)
                    self.into[(dst, rel)].add(src)

    def entity(self, i: str) -> dict[str, str]:
        name, label = self.nodes[i]
        return {"id": i, "name": name, "label": label}

    def by_names(self, names: list[str]) -> list[dict[str, str]]:
        return [self.entity(i) for i in sorted(self.nodes) if self.nodes[i][0] in names]

    def expand(self, ids: list[str], rel: str, direction: str) -> list[dict[str, str]]:
        index = self.out if direction == "out" else self.into
        rows = [
            {"src": s, "dst": d, "dst_name": self.nodes[d][0], "dst_label": self.nodes[d][1]}
            for s in set(ids)  # a node matches once however often the list names it
            for d in index.get((s, rel), ())
        ]
        return sorted(rows, key=lambda r: (r["src"], r["dst"]))

    def neighbors(self, ids: list[str]) -> list[tuple]:
        rows = []
        for src, rel, dst in self.edges:
            if src in ids:
                rows.append((src, rel, "out", dst, *self.nodes[dst]))
            if dst in ids:
                rows.append((dst, rel, "in", src, *self.nodes[src]))
        return sorted(rows)

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for _, label in self.nodes.values():
            counts[label] += 1
        for _, rel, _ in self.edges:
            counts[rel] += 1
        return dict(counts)

    def hops(self, src: str, dst: str) -> int | None:
        adjacent: dict[str, set[str]] = defaultdict(set)
        for s, _, d in self.edges:
            adjacent[s].add(d)
            adjacent[d].add(s)
        seen, queue = {src: 0}, deque([src])
        while queue:
            node = queue.popleft()
            for nxt in adjacent[node] - seen.keys():
                seen[nxt] = seen[node] + 1
                queue.append(nxt)
        return seen.get(dst)


def upsert(store: Any, batch: GraphBatch, snapshot: Snapshot) -> tuple[int, int]:
    nodes = sum(store.upsert_nodes(label, rows, snapshot) for label, rows in batch.node_rows().items())
    edges = sum(store.upsert_edges(*key, rows, snapshot) for key, rows in batch.edge_rows().items())
    return nodes, edges


def check_queries(store: Any, ref: Reference) -> None:
    """Every public named query on `store` gives the reference's answer."""
    movies = sorted(i for i, (_, label) in ref.nodes.items() if label == "Movie")[:40]
    people = sorted(i for i, (_, label) in ref.nodes.items() if label == "Person")[:40]
    names = [ref.nodes[i][0] for i in movies[:5] + people[:5]] + ["no such entity", INJECTION]
    for name in names:
        assert store.run("find_entities_by_name", {"name": name}) == ref.by_names([name])
    assert store.run("find_entities_by_names", {"names": names}) == ref.by_names(names)
    ids = movies[:10] + people[:10] + ["Movie:missing"]
    assert store.run("get_entities", {"ids": ids}) == [ref.entity(i) for i in sorted(ids) if i in ref.nodes]
    genres = store.run("entities_by_label", {"label": "Genre"})
    assert genres == [ref.entity(i) for i in sorted(ref.nodes) if ref.nodes[i][1] == "Genre"]
    for metaqa, (rel, _, _) in METAQA_RELATIONS.items():
        assert store.run("expand_out", {"ids": movies, "rel": rel}) == ref.expand(movies, rel, "out")
        assert store.run("expand_out", {"ids": movies, "rel": metaqa}) == ref.expand(movies, rel, "out")
        targets = sorted({row["dst"] for row in ref.expand(movies, rel, "out")})
        assert store.run("expand_in", {"ids": targets, "rel": rel}) == ref.expand(targets, rel, "in")
        # small frontiers take the per-id form on ladybug: same rows, same order, unknown and repeated ids included
        for few in (movies[:1], [movies[3], "Movie:missing", movies[1], movies[3]], ["nolabel", "Year:1999"]):
            assert store.run("expand_out", {"ids": few, "rel": rel}) == ref.expand(few, rel, "out")
        assert store.run("expand_in", {"ids": targets[:2], "rel": rel}) == ref.expand(targets[:2], rel, "in")
        every = ref.expand(sorted(ref.nodes), rel, "out")
        assert store.run("edges_of_type", {"rel": rel}) == [{"src": r["src"], "dst": r["dst"]} for r in every]
    sample = movies[:3] + people[:3]
    found = store.run("neighbors", {"ids": sample})
    assert sorted(tuple(r[k] for k in QUERIES["neighbors"].returns) for r in found) == ref.neighbors(sample)
    assert {r["label"]: r["count"] for r in store.run("node_count")} | {
        r["rel"]: r["count"] for r in store.run("edge_count")
    } == ref.counts()
    # a shortest path is one of possibly many: check its length and that each step is a real edge
    for src, dst in [(people[0], people[1]), (movies[0], people[7]), (movies[2], movies[9])]:
        rows = store.run("shortest_path", {"src_id": src, "dst_id": dst, "max_hops": 4})
        hops = ref.hops(src, dst)
        if hops is None or hops > 4:
            assert rows == []
            continue
        (path,) = rows
        assert len(path["rels"]) == hops and path["ids"][0] == src and path["ids"][-1] == dst
        assert path["names"] == [ref.nodes[i][0] for i in path["ids"]]
        for a, rel, b in zip(path["ids"], path["rels"], path["ids"][1:], strict=False):
            assert (a, rel, b) in ref.edges or (b, rel, a) in ref.edges


@pytest.fixture(scope="module")
def kb() -> GraphBatch:
    return read_slice()


@pytest.fixture(scope="module")
def ladybug_store(tmp_path_factory: pytest.TempPathFactory, kb: GraphBatch):
    store = open_graph_store(GraphStoreConfig(path=tmp_path_factory.mktemp("lb") / "graph"))
    upsert(store, kb, Snapshot("s1", 1, "test", 0.0))
    yield store
    store.close()


def test_slice_parses_into_the_schema(kb: GraphBatch):
    assert kb.lines == SLICE_LINES and not kb.errors
    assert {rel for rel, _, _ in kb.edges} == {rel for rel, _, _ in METAQA_RELATIONS.values()}


def test_named_queries_on_ladybug_match_the_reference(ladybug_store, kb: GraphBatch):
    check_queries(ladybug_store, Reference(kb))


def test_upsert_is_idempotent_and_keeps_the_first_snapshot(ladybug_store, kb: GraphBatch):
    before = ladybug_store.counts()
    assert upsert(ladybug_store, kb, Snapshot("s2", 2, "test", 0.0)) == (0, 0)
    assert ladybug_store.counts() == before
    stamps = ladybug_store.run("find_entities_by_name", {"name": next(iter(kb.nodes["Movie"].values())), "max_seq": 1})
    assert stamps, "the node still belongs to snapshot 1"


def test_pinned_queries_see_only_their_snapshot(tmp_path: Path, kb: GraphBatch):
    store = open_graph_store(GraphStoreConfig(path=tmp_path / "graph"))
    try:
        first, second = read_slice(1500), read_slice(1500, start=1500)
        upsert(store, first, Snapshot("s1", 1, "test", 0.0))
        upsert(store, second, Snapshot("s2", 2, "test", 0.0))
        both = Reference(first, second)
        first_counts = Reference(first).counts()
        assert isinstance(store, CypherGraphStore)  # node_counts and edge_counts are the Cypher backends'
        assert store.node_counts(max_seq=1) == {k: v for k, v in first_counts.items() if k in NODE_LABELS}
        assert store.edge_counts(max_seq=1) == {k: v for k, v in first_counts.items() if k in RELATIONSHIPS}
        assert store.counts() == both.counts()
        movies = sorted(first.nodes["Movie"])[:30]
        for rel, _, _ in METAQA_RELATIONS.values():
            assert store.run("expand_out", {"ids": movies, "rel": rel, "max_seq": 1}) == Reference(first).expand(
                movies, rel, "out"
            )
            assert store.run("expand_out", {"ids": movies, "rel": rel}) == both.expand(movies, rel, "out")
    finally:
        store.close()


def test_memory_store_answers_like_the_reference_and_rolls_back(kb: GraphBatch):
    store = open_graph_store(GraphStoreConfig(backend="memory"))
    assert store.backend == "memory"
    assert upsert(store, kb, Snapshot("s1", 1, "test", 0.0)) == (len(kb.entities()), sum(map(len, kb.edges.values())))
    assert upsert(store, kb, Snapshot("s2", 2, "test", 0.0)) == (0, 0)
    check_queries(store, Reference(kb))
    second = read_slice(500, start=SLICE_LINES)
    upsert(store, second, Snapshot("s3", 3, "test", 0.0))
    assert store.counts() == Reference(kb, second).counts()
    assert store.run("node_count", {"max_seq": 1}) == [
        {"label": k, "count": v} for k, v in sorted(Reference(kb).counts().items()) if k in NODE_LABELS
    ]
    store.delete_snapshot("s3")
    assert store.counts() == Reference(kb).counts()
    # an edge written later on a rolled-back snapshot's node goes with the node, counted as dependent
    store.upsert_nodes("Award", [{"name": "Best Picture"}], Snapshot("s4", 4, "test", 0.0))
    movie = sorted(kb.nodes["Movie"])[0]
    won = [{"src": movie, "dst": "Award:Best Picture"}]
    store.upsert_edges("WON", "Movie", "Award", won, Snapshot("s5", 5, "test", 0.0))
    assert store.delete_snapshot("s4") == {"nodes": 1, "edges": 1, "dependent_edges": 1, "Award": 1}
    with pytest.raises(InvalidArgument, match="do not exist"):
        store.upsert_edges("STARS", "Movie", "Person", [{"src": movie, "dst": "Person:x"}], Snapshot("s6", 6, "", 0))
    assert store.delete_snapshot("s1")["nodes"] == len(kb.entities()) and store.counts() == {}


def test_injection_text_is_only_ever_a_parameter(ladybug_store):
    before = ladybug_store.counts()
    assert ladybug_store.run("find_entities_by_name", {"name": INJECTION}) == []
    assert ladybug_store.run("find_entities_by_names", {"names": [INJECTION, "') RETURN 1 //"]}) == []
    assert ladybug_store.run("expand_out", {"ids": [INJECTION], "rel": "STARS"}) == []
    with pytest.raises(InvalidArgument, match="unknown relationship"):
        ladybug_store.run("expand_out", {"ids": ["Movie:x"], "rel": "STARS]->() DETACH DELETE n //"})
    with pytest.raises(InvalidArgument, match="unknown label"):
        ladybug_store.run("entities_by_label", {"label": "Movie) DETACH DELETE n //"})
    assert ladybug_store.counts() == before
    # stored verbatim as a name, and found again as one
    snapshot = Snapshot("s-inj", 9, "test", 0.0)
    assert ladybug_store.upsert_nodes("Tag", [{"name": INJECTION}], snapshot) == 1
    assert ladybug_store.run("find_entities_by_name", {"name": INJECTION}) == [
        {"id": f"Tag:{INJECTION}", "name": INJECTION, "label": "Tag"}
    ]
    assert ladybug_store.delete_snapshot("s-inj")["nodes"] == 1
    assert ladybug_store.counts() == before


def test_bad_calls_say_what_to_change(ladybug_store):
    with pytest.raises(NotFound, match="unknown query 'nope'"):
        ladybug_store.run("nope")
    with pytest.raises(InvalidArgument, match="needs the parameter 'ids'"):
        ladybug_store.run("expand_out", {"rel": "STARS"})
    with pytest.raises(InvalidArgument, match="remove \\['limit'\\]"):
        ladybug_store.run("find_entities_by_name", {"name": "x", "limit": 3})
    with pytest.raises(InvalidArgument, match="must be a list of str"):
        ladybug_store.run("expand_out", {"ids": "Movie:x", "rel": "STARS"})
    with pytest.raises(InvalidArgument, match="max_hops must be one of"):
        ladybug_store.run("shortest_path", {"src_id": "a", "dst_id": "b", "max_hops": 9})
    with pytest.raises(InvalidArgument, match="same node"):
        ladybug_store.run("shortest_path", {"src_id": "a", "dst_id": "a"})
    with pytest.raises(InvalidArgument, match="upsert the nodes first"):
        ladybug_store.upsert_edges(
            "STARS", "Movie", "Person", [{"src": "Movie:nope", "dst": "Person:nope"}], Snapshot("s", 1, "t", 0)
        )
    with pytest.raises(InvalidArgument, match="connects"):
        ladybug_store.upsert_edges("STARS", "Person", "Movie", [], Snapshot("s", 1, "t", 0))
    with pytest.raises(InvalidArgument, match="should be 'Movie:a'"):
        ladybug_store.upsert_nodes("Movie", [{"id": "Person:a", "name": "a"}], Snapshot("s", 1, "t", 0))


# ---------------------------------------------------------------- Neo4j at the driver's API boundary


class LadybugBehindTheDriver:
    """A stand-in for a Neo4j server behind autospec'd `neo4j` driver objects (so every call must fit the real
    driver's signatures). It records each statement the store sends, checks that it is one of the registry's Neo4j
    texts (or a schema statement), and answers it by running the same query's ladybug variant on a ladybug store."""

    def __init__(self, engine: Any) -> None:
        import neo4j

        self.engine = engine
        self.sent: list[tuple[str, str, dict[str, Any]]] = []  # (access, text, params)
        self._patterns = [(q, self._pattern(q.cypher)) for q in QUERIES.values()]
        self.driver = create_autospec(neo4j.Driver, instance=True)
        session = create_autospec(neo4j.Session, instance=True)
        session.__enter__.return_value = session
        self.driver.session.return_value = session
        session.execute_read.side_effect = lambda fn, *a, **k: fn(self._tx("read"), *a, **k)
        session.execute_write.side_effect = lambda fn, *a, **k: fn(self._tx("write"), *a, **k)

    @staticmethod
    def _pattern(text: str) -> re.Pattern[str]:
        parts, seen, regex = re.split(r"\{\{(\w+)\}\}", text.strip()), set(), ""
        for i, part in enumerate(parts):
            if i % 2 == 0:
                regex += re.escape(part)
            else:
                regex += f"(?P={part})" if part in seen else f"(?P<{part}>\\w+)"
                seen.add(part)
        return re.compile(regex, re.DOTALL)

    def _tx(self, access: str) -> Any:
        import neo4j

        tx = create_autospec(neo4j.ManagedTransaction, instance=True)

        def run(query: str, parameters: dict[str, Any] | None = None, **kwargs: Any) -> Any:
            self.sent.append((access, query, dict(parameters or {})))
            result = create_autospec(neo4j.Result, instance=True)
            result.data.return_value = self._answer(access, query, dict(parameters or {}))
            return result

        tx.run.side_effect = run
        return tx

    def _answer(self, access: str, text: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        if text.startswith(("CREATE CONSTRAINT", "CREATE INDEX")):
            return []
        for query, pattern in self._patterns:
            match = pattern.fullmatch(text)
            if match:
                assert access == "write" or not query.write, f"{query.name} is a write sent through execute_read"
                inline = {k: int(v) if v.isdigit() else v for k, v in match.groupdict().items()}
                inline |= self._labels_neo4j_does_not_need(query.inline, {**params, **inline})
                _, lb_text, lb_params = bind(query.name, {**params, **inline}, "ladybug")
                return self.engine._execute(lb_text, lb_params)
        raise AssertionError(f"a statement that is not in the registry reached the driver: {text!r}")

    @staticmethod
    def _labels_neo4j_does_not_need(inline: Any, params: dict[str, Any]) -> dict[str, str]:
        """Neo4j finds any entity by `Entity.id`; ladybug's variant names the label, which every id starts with."""
        rows = params.get("rows") or [{"id": i, "src": i} for i in params.get("ids") or params.get("srcs") or []]
        labels = {}
        if "label" in inline and "label" not in params:
            labels["label"] = label_of(rows[0]["id"])
        if "src_label" in inline:
            labels["src_label"] = label_of(rows[0]["src"])
        if "dst_label" in inline:
            dst = rows[0].get("dst")
            pairs = RELATIONSHIPS[params["rel"]]
            labels["dst_label"] = label_of(dst) if dst else next(d for s, d in pairs if s == labels["src_label"])
        return labels


@pytest.fixture
def neo4j_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from almquist.stores.neo4j_store import Neo4jGraphStore, schema_statements

    engine = open_graph_store(GraphStoreConfig(path=tmp_path / "behind-neo4j"))
    server = LadybugBehindTheDriver(engine)
    monkeypatch.setenv("TEST_NEO4J_PASSWORD", "secret")
    config = GraphStoreConfig(
        backend="neo4j", uri="bolt://neo4j:7687", password_env="TEST_NEO4J_PASSWORD", database="kb"
    )
    store = Neo4jGraphStore(config, driver=server.driver)
    assert [text for _, text, _ in server.sent] == schema_statements()
    server.driver.session.assert_called_with(database="kb")
    yield store, server
    engine.close()


def test_neo4j_store_sends_registry_text_and_answers_like_the_reference(neo4j_store):
    store, server = neo4j_store
    kb = read_slice(1000)  # the ladybug test covers 3000 lines; this one checks the Neo4j store's plumbing
    assert upsert(store, kb, Snapshot("s1", 1, "test", 0.0)) == (len(kb.entities()), sum(map(len, kb.edges.values())))
    assert upsert(store, kb, Snapshot("s2", 2, "test", 0.0)) == (0, 0)
    server.sent.clear()
    check_queries(store, Reference(kb))
    reads = {text for access, text, _ in server.sent if access == "read"}
    expand = bind("expand_out", {"ids": ["Movie:x"], "rel": "STARS"}, "neo4j")[1]
    assert expand in reads and "MATCH (s:Entity)-[r:STARS]->(d:Entity)" in expand
    assert all(params.get("name") != INJECTION or INJECTION not in text for _, text, params in server.sent)
    assert store.delete_snapshot("s1")["nodes"] == len(kb.entities())
    assert store.counts() == {}


def test_neo4j_needs_its_password_from_the_environment(monkeypatch: pytest.MonkeyPatch):
    from almquist.stores.neo4j_store import Neo4jGraphStore

    monkeypatch.delenv("NEO4J_PASSWORD", raising=False)
    with pytest.raises(FailedPrecondition, match="set the environment variable NEO4J_PASSWORD"):
        Neo4jGraphStore(GraphStoreConfig(backend="neo4j"))


def test_neo4j_unreachable_is_unavailable_at_once(monkeypatch: pytest.MonkeyPatch):
    import time

    from almquist.errors import Unavailable
    from almquist.runtime import free_port
    from almquist.stores.neo4j_store import Neo4jGraphStore

    monkeypatch.setenv("NEO4J_PASSWORD", "secret")
    started = time.monotonic()
    with pytest.raises(Unavailable, match="start it or set graph"):
        Neo4jGraphStore(GraphStoreConfig(backend="neo4j", uri=f"bolt://127.0.0.1:{free_port()}"))
    assert time.monotonic() - started < 10, "no 30 s of transaction retries before saying so"


def test_every_query_has_text_for_both_backends_and_only_declared_placeholders():
    for query in QUERIES.values():
        for backend in ("neo4j", "ladybug"):
            names = set(re.findall(r"\{\{(\w+)\}\}", query.text(backend)))
            assert names <= set(query.inline), (query.name, backend, names)
            assert "$" + "max_seq" not in query.text(backend) or "max_seq" in query.params
    assert {"find_entities_by_name", "find_entities_by_names", "expand_out", "expand_in", "shortest_path"} <= set(
        PUBLIC_QUERIES
    )
    assert set(RELATIONSHIPS) >= {rel for rel, _, _ in METAQA_RELATIONS.values()}


# ---------------------------------------------------------------- vectors and the KnowledgeStore


def unit_vectors(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_vector_store_is_idempotent_filters_and_rolls_back(tmp_path: Path):
    store = VectorStore(VectorStoreConfig(path=tmp_path / "q"))
    try:
        ids = [f"Person:p{i}" for i in range(6)] + [f"Movie:m{i}" for i in range(4)]
        vectors = unit_vectors(len(ids))

        def payload(i: str, seq: int) -> dict[str, Any]:
            return {
                "id": i,
                "name": i.split(":")[1],
                "label": label_of(i),
                "snapshot_id": f"s{seq}",
                "snapshot_seq": seq,
            }

        assert store.upsert("entities", ids[:5], vectors[:5], [payload(i, 1) for i in ids[:5]]) == 5
        assert store.upsert("entities", ids, vectors, [payload(i, 2) for i in ids]) == 5
        assert store.count("entities") == 10
        hits = store.search("entities", vectors[7], limit=3)
        assert hits[0].id == ids[7] and hits[0].score == pytest.approx(1.0, abs=1e-5)
        assert {h.label for h in store.search("entities", vectors[0], limit=10, label="Movie")} == {"Movie"}
        assert {h.id for h in store.search("entities", vectors[0], limit=10, max_seq=1)} == set(ids[:5])
        assert store.delete_snapshot("s2") == 5 and store.count("entities") == 5
        with pytest.raises(FailedPrecondition, match="holds 16-d vectors"):
            store.ensure_collection("entities", 8)
        with pytest.raises(FailedPrecondition, match="single-process"):
            VectorStore(VectorStoreConfig(path=tmp_path / "q"))
    finally:
        store.close()


def test_knowledge_store_rollback_restores_both_stores_exactly(tmp_path: Path):
    config = KnowledgeConfig(
        graph=GraphStoreConfig(path=tmp_path / "graph"), vectors=VectorStoreConfig(path=tmp_path / "qdrant")
    )
    store = KnowledgeStore(config)
    first, second = read_slice(500), read_slice(500, start=300)  # overlapping: shared nodes and edges

    def ingest(batch: GraphBatch, fingerprint: str) -> str:
        snapshot = store.begin_snapshot("test", fingerprint)
        store.upsert_batch(snapshot.snapshot_id, batch.node_rows(), batch.edge_rows())
        entities = batch.entities()
        missing = store.missing_vectors(list(entities))
        store.finish_batch(snapshot.snapshot_id, 0, missing, [entities[i] for i in missing], unit_vectors(len(missing)))
        store.commit_snapshot(snapshot.snapshot_id)
        return snapshot.snapshot_id

    try:
        ingest(first, "a")
        before = store.stats()
        second_id = ingest(second, "b")
        after = store.stats()
        assert after["graph"] == Reference(first, second).counts()
        assert after["vectors"]["entities"] == len(first.entities() | second.entities())
        removed = store.rollback(second_id)
        assert removed["vectors"] == after["vectors"]["entities"] - before["vectors"]["entities"]
        assert removed["dependent_edges"] == 0
        restored = store.stats()
        assert restored["graph"] == before["graph"] and restored["vectors"] == before["vectors"]
        assert [s["status"] for s in store.list_snapshots()] == ["committed", "rolled_back"]
        with pytest.raises(FailedPrecondition, match="rolled_back"):
            store.upsert_batch(second_id, {})
        with pytest.raises(InvalidArgument, match="is internal"):
            store.run("merge_nodes", {})
        with pytest.raises(NotFound, match="unknown snapshot"):
            store.rollback("s999")
        third = store.begin_snapshot("test", "c")
        assert third.seq == 3, "a seq is never reused, not even after a rollback"
    finally:
        store.close()
    reopened = KnowledgeStore(config)  # snapshot records live in the graph: they survive a restart
    try:
        assert [s["seq"] for s in reopened.list_snapshots()] == [1, 2, 3]
        assert reopened.stats()["graph"] == before["graph"]
    finally:
        reopened.close()

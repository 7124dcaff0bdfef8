"""Graph algorithms (almquist/stores/algorithms.py) over a ladybug store holding a hand-made graph whose answers are
known by construction: a western cluster around one star who is in every one of its films, a samurai cluster, no
person-movie edge between them (only a shared genre), and a later snapshot that bridges them. Checked: PageRank
against a power iteration written here, communities, shortest paths, snapshot pinning, export caching, the
KnowledgeStore methods (latest committed view, cache invalidation after a rollback), the GraphRAG methods and the
gRPC messages the ingress builds, and the errors."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from actors.knowledge_store import KnowledgeStore
from almquist.errors import FailedPrecondition, InvalidArgument, NotFound
from almquist.stores.algorithms import PEOPLE_MOVIE_RELATIONS, GraphAlgorithms
from almquist.stores.config import GraphStoreConfig, KnowledgeConfig, VectorStoreConfig
from almquist.stores.graph import Snapshot, open_graph_store
from almquist.stores.schema import METAQA_RELATIONS, node_id
from graphs.kgqa.metaqa import write_triples

Triple = tuple[str, str, str]

WESTERNS = [f"Western {i}" for i in range(1, 6)]
SAMURAI = [f"Samurai {i}" for i in range(1, 4)]
# Duke stars in all five westerns; Ford directs four, Ward stars in the first three (a dense core); Kurosawa directs
# (and writes one of) all three samurai films, Mifune and Shimura star in all three. Every film is a Drama.
FIRST: list[Triple] = [
    *[(m, "starred_actors", "Duke") for m in WESTERNS],
    *[(m, "directed_by", "Ford") for m in WESTERNS[:4]],
    *[(m, "starred_actors", "Ward") for m in WESTERNS[:3]],
    *[(m, "directed_by", "Kurosawa") for m in SAMURAI],
    ("Samurai 1", "written_by", "Kurosawa"),
    *[(m, "starred_actors", "Mifune") for m in SAMURAI],
    *[(m, "starred_actors", "Shimura") for m in SAMURAI],
    *[(m, "has_genre", "Drama") for m in WESTERNS + SAMURAI],
]
# snapshot 2: one film with a star of each cluster, and a newcomer
BRIDGE: list[Triple] = [
    ("Crossover", "starred_actors", "Duke"),
    ("Crossover", "starred_actors", "Mifune"),
    ("Crossover", "starred_actors", "Newcomer"),
]
WEST = {node_id("Person", p) for p in ("Duke", "Ford", "Ward")} | {node_id("Movie", m) for m in WESTERNS}
EAST = {node_id("Person", p) for p in ("Kurosawa", "Mifune", "Shimura")} | {node_id("Movie", m) for m in SAMURAI}
DUKE, MIFUNE, NEWCOMER = "Person:Duke", "Person:Mifune", "Person:Newcomer"


class CountingRunner:
    """A store's `run`, counting the calls per query: shows when a graph is exported again."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.calls: Counter[str] = Counter()

    def run(self, query_name: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        self.calls[query_name] += 1
        return self.store.run(query_name, params)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    graph = open_graph_store(GraphStoreConfig(path=tmp_path_factory.mktemp("algorithms") / "graph"))
    write_triples(graph, FIRST, Snapshot("s1", 1, "test", 0.0))
    write_triples(graph, BRIDGE, Snapshot("s2", 2, "test", 0.0))
    yield graph
    graph.close()


def reference_pagerank(triples: list[Triple], alpha: float = 0.85) -> dict[str, float]:
    """PageRank by power iteration over the undirected people-movie graph, each relation between a pair counting
    once towards the pair's weight: what the module must agree with, computed without networkx."""
    weight: dict[tuple[str, str], int] = defaultdict(int)
    for head, relation, tail in triples:
        rel, head_label, tail_label = METAQA_RELATIONS[relation]
        if rel in PEOPLE_MOVIE_RELATIONS:
            a, b = node_id(head_label, head), node_id(tail_label, tail)
            weight[(a, b)] += 1
            weight[(b, a)] += 1
    nodes = sorted({a for a, _ in weight})
    index = {n: i for i, n in enumerate(nodes)}
    matrix = np.zeros((len(nodes), len(nodes)))
    for (a, b), w in weight.items():
        matrix[index[b], index[a]] = w
    matrix /= matrix.sum(axis=0, keepdims=True)  # column-stochastic: every node has an edge
    rank = np.full(len(nodes), 1 / len(nodes))
    for _ in range(1000):
        rank = alpha * matrix @ rank + (1 - alpha) / len(nodes)
    return dict(zip(nodes, rank.tolist(), strict=True))


def test_pagerank_agrees_with_a_power_iteration_and_ranks_the_busiest_star_first(store):
    algorithms = GraphAlgorithms(store)
    reference = reference_pagerank(FIRST)
    ranked = algorithms.pagerank(limit=4, max_seq=1)
    assert ranked[0].id == DUKE and ranked[0].name == "Duke" and ranked[0].label == "Person"
    assert [r.label for r in ranked] == ["Person"] * 4
    for entity in ranked:
        assert entity.score == pytest.approx(reference[entity.id], abs=1e-5)
    scores = [r.score for r in ranked]
    assert scores == sorted(scores, reverse=True)
    left_out = {n for n in reference if n.startswith("Person:")} - {r.id for r in ranked}
    assert all(reference[n] <= scores[-1] + 1e-5 for n in left_out), "a better-scored person was left out"
    every = algorithms.pagerank(label=None, limit=1000, max_seq=1)
    assert {e.id for e in every} == set(reference) and sum(e.score for e in every) == pytest.approx(1.0)
    assert "Genre:Drama" not in reference, "value nodes stay out of the default graph"


def test_relations_choose_the_graph(store):
    algorithms = GraphAlgorithms(store)
    with_genres = algorithms.pagerank(label=None, limit=1, relations=["STARS", "has_genre"], max_seq=1)
    assert with_genres[0].id == "Genre:Drama", "the genre touches every film: the hub the default leaves out"
    with pytest.raises(NotFound, match=r"has no .* edges"):
        algorithms.community_of("Genre:Drama", max_seq=1)
    assert algorithms.community_of("Genre:Drama", relations=["HAS_GENRE"], max_seq=1).size == 9


def test_disconnected_clusters_are_separate_communities(store):
    algorithms = GraphAlgorithms(store)
    west = algorithms.community_of(DUKE, limit=100, max_seq=1)
    east = algorithms.community_of(MIFUNE, limit=100, max_seq=1)
    assert {m.id for m in west.members} == WEST and west.size == len(WEST)
    assert {m.id for m in east.members} == EAST and east.size == len(EAST)
    assert (west.index, east.index) == (0, 1), "the larger community comes first"
    assert west.members[0].id == DUKE and [m.score for m in west.members] == sorted(
        (m.score for m in west.members), reverse=True
    )
    people = algorithms.community_of("Movie:Western 4", limit=2, label="Person", max_seq=1)
    assert people.index == 0 and [m.id for m in people.members] == [DUKE, "Person:Ford"]
    largest = algorithms.communities(limit=5, members=1, label="Person", max_seq=1)
    assert [(c.index, c.size, c.members[0].id) for c in largest] == [(0, 8, DUKE), (1, 6, "Person:Kurosawa")]
    assert algorithms.community_count(max_seq=1) == 2
    again = GraphAlgorithms(store).community_of(DUKE, limit=100, max_seq=1)
    assert again == west, "a fixed seed: the same communities every time"


def test_shortest_path_goes_through_the_engine(store):
    algorithms = GraphAlgorithms(store)
    inside = algorithms.shortest_path("Person:Ford", "Person:Ward", max_hops=3, max_seq=1)
    assert inside is not None and len(inside.ids) == 3 and inside.rels == ("DIRECTED_BY", "STARS")
    assert inside.ids[1] in {node_id("Movie", m) for m in WESTERNS[:3]} and inside.names[0] == "Ford"
    assert algorithms.shortest_path(DUKE, MIFUNE, max_hops=3, max_seq=1) is None, "4 hops apart at seq 1"
    via_genre = algorithms.shortest_path(DUKE, MIFUNE, max_hops=4, max_seq=1)
    assert via_genre is not None and via_genre.ids[2] == "Genre:Drama"
    assert via_genre.rels == ("STARS", "HAS_GENRE", "HAS_GENRE", "STARS")


def test_a_pin_hides_later_snapshots_and_each_pin_is_exported_once(store):
    runner = CountingRunner(store)
    algorithms = GraphAlgorithms(runner, page_size=3)  # tiny pages: the export must page through every edge
    assert {r.id for r in algorithms.pagerank(limit=1000, max_seq=1)} == {
        n for n in WEST | EAST if n.startswith("Person:")
    }
    exports = runner.calls["edges_of_type"]
    algorithms.pagerank(limit=2, max_seq=1)
    algorithms.community_of(DUKE, max_seq=1)
    assert runner.calls["edges_of_type"] == exports, "a second call at the same seq reuses the export"
    paged, whole = algorithms.graph(max_seq=1).graph, GraphAlgorithms(store).graph(max_seq=1).graph
    assert {(frozenset((a, b)), w) for a, b, w in paged.edges(data="weight")} == {
        (frozenset((a, b)), w) for a, b, w in whole.edges(data="weight")
    }
    assert paged["Person:Kurosawa"]["Movie:Samurai 1"]["weight"] == 2, "directed and wrote it: two relations"
    with pytest.raises(NotFound, match="no entity 'Person:Newcomer' at snapshot seq 1"):
        algorithms.community_of(NEWCOMER, max_seq=1)
    assert algorithms.community_of(DUKE, limit=100, max_seq=1).size == len(WEST)

    assert runner.calls["edges_of_type"] == exports
    later = algorithms.community_of(DUKE, limit=100, max_seq=2)  # the bridge joins both clusters' graph
    assert runner.calls["edges_of_type"] > exports
    assert NEWCOMER in {r.id for r in algorithms.pagerank(limit=1000, max_seq=2)}
    assert later.size < len(WEST | EAST) + 2
    assert sum(c.size for c in algorithms.communities(limit=10, max_seq=2)) == len(WEST | EAST) + 2
    bridged = algorithms.shortest_path(DUKE, MIFUNE, max_hops=3, max_seq=2)
    assert bridged is not None and bridged.ids == (DUKE, "Movie:Crossover", MIFUNE)


@pytest.mark.parametrize(
    ("call", "kwargs", "error", "message"),
    [
        ("pagerank", {"limit": 0}, InvalidArgument, "limit must be an integer from 1 to 1000"),
        ("pagerank", {"limit": 1001}, InvalidArgument, "limit must be"),
        ("pagerank", {"label": "Studio"}, InvalidArgument, "unknown label 'Studio'"),
        ("pagerank", {"relations": ["LIKES"]}, InvalidArgument, "unknown relationship 'LIKES'"),
        ("pagerank", {"relations": []}, InvalidArgument, "at least one relationship"),
        ("pagerank", {"max_seq": -1}, InvalidArgument, "max_seq"),
        ("pagerank", {"max_seq": 0}, FailedPrecondition, r"no .* edges at snapshot seq 0"),
        ("communities", {"members": 0}, InvalidArgument, "members must be"),
        ("community_of", {"entity_id": "Person:Nobody"}, NotFound, "no entity 'Person:Nobody'"),
        ("shortest_path", {"src_id": DUKE, "dst_id": "Movie:Nope"}, NotFound, "no entity 'Movie:Nope'"),
        ("shortest_path", {"src_id": DUKE, "dst_id": DUKE}, InvalidArgument, "the same node"),
        ("shortest_path", {"src_id": DUKE, "dst_id": MIFUNE, "max_hops": 7}, InvalidArgument, "max_hops"),
        ("shortest_path", {"src_id": "", "dst_id": MIFUNE}, InvalidArgument, "give the source id"),
    ],
)
def test_bad_calls_say_what_to_change(store, call, kwargs, error, message):
    with pytest.raises(error, match=message):
        getattr(GraphAlgorithms(store), call)(**kwargs)


# ---- KnowledgeStore: the latest committed view, and a cache that a commit or rollback invalidates ----


def ingest(knowledge: KnowledgeStore, triples: list[Triple], commit: bool = True) -> str:
    nodes: dict[str, dict[str, None]] = defaultdict(dict)
    edges: dict[tuple[str, str, str], list[dict[str, str]]] = defaultdict(list)
    for head, relation, tail in triples:
        rel, head_label, tail_label = METAQA_RELATIONS[relation]
        nodes[head_label][head] = nodes[tail_label][tail] = None
        edges[(rel, head_label, tail_label)].append(
            {"src": node_id(head_label, head), "dst": node_id(tail_label, tail)}
        )
    snapshot = knowledge.begin_snapshot("test", str(len(triples)))
    knowledge.upsert_batch(
        snapshot.snapshot_id, {label: [{"name": n} for n in names] for label, names in nodes.items()}, edges
    )
    if commit:
        knowledge.commit_snapshot(snapshot.snapshot_id)
    return snapshot.snapshot_id


@pytest.fixture
def knowledge(tmp_path: Path):
    store = KnowledgeStore(
        KnowledgeConfig(graph=GraphStoreConfig(path=tmp_path / "graph"), vectors=VectorStoreConfig(path=tmp_path / "q"))
    )
    yield store
    store.close()


def test_knowledge_store_reads_the_committed_view(knowledge: KnowledgeStore):
    with pytest.raises(FailedPrecondition, match="the knowledge base is empty: run `almquist kb metaqa`"):
        knowledge.pagerank()
    with pytest.raises(InvalidArgument, match="limit"):  # a bad argument is bad whatever the store holds
        knowledge.communities(limit=0)
    west = ingest(knowledge, [t for t in FIRST if node_id("Movie", t[0]) in WEST])
    ingest(knowledge, [t for t in FIRST if node_id("Movie", t[0]) in EAST])
    assert knowledge.pagerank(limit=1)[0].id == DUKE
    assert knowledge.community_of(MIFUNE, limit=100)[0].size == len(EAST)
    assert knowledge.communities(limit=10)[1] == 2

    # a snapshot still being written stays out, even when asked for by a seq past the latest commit
    mega = [(f"Epic {i}", "starred_actors", "Megastar") for i in range(8)]
    open_id = ingest(knowledge, mega, commit=False)
    assert knowledge.pagerank(limit=1)[0].id == DUKE
    assert knowledge.pagerank(limit=1, max_seq=99)[0].id == DUKE
    with pytest.raises(NotFound, match="Person:Megastar"):
        knowledge.community_of("Person:Megastar")
    knowledge.commit_snapshot(open_id)
    assert knowledge.pagerank(limit=1)[0].id == "Person:Megastar", "a commit is seen at once"

    # rolling back an older snapshot keeps the latest seq but changes what it sees: the cache must notice
    knowledge.rollback(west)
    assert DUKE not in {r.id for r in knowledge.pagerank(limit=1000)}
    with pytest.raises(NotFound, match="no entity 'Person:Duke'"):
        knowledge.community_of(DUKE)
    path = knowledge.shortest_path(MIFUNE, "Person:Shimura", max_hops=2)
    assert path is not None and len(path.ids) == 3
    with pytest.raises(FailedPrecondition, match="at snapshot seq 1"):  # seq 1 was the rolled-back snapshot
        knowledge.pagerank(max_seq=1)
    with pytest.raises(InvalidArgument, match="max_seq"):
        knowledge.pagerank(max_seq=0)


# ---- GraphRAG's methods and the ingress's messages, over a KnowledgeStore standing in for the actor ----


class _Remote:
    def __init__(self, method: Any) -> None:
        self._method = method

    async def remote(self, *args: Any) -> Any:
        return self._method(*args)


class LocalActor:
    """`actor.method.remote(...)` awaited, on a plain KnowledgeStore."""

    def __init__(self, store: KnowledgeStore) -> None:
        self._store = store

    def __getattr__(self, name: str) -> _Remote:
        return _Remote(getattr(self._store, name))


def test_graph_rag_defaults_and_the_grpc_messages(knowledge: KnowledgeStore):
    from graphs.conversation import community_proto, path_proto, ranked_proto
    from graphs.graph_rag import GraphRAG

    first = ingest(knowledge, FIRST)
    ingest(knowledge, BRIDGE)
    rag = object.__new__(GraphRAG.func_or_class)  # the deployment's class, without Serve or the actor
    rag._store = LocalActor(knowledge)

    async def calls():
        return (
            await rag.influential(),
            await rag.influential("Movie", 2, ["STARS"], first),
            await rag.community(DUKE, 3, "Person"),
            await rag.community(),
            await rag.shortest_path(DUKE, MIFUNE),
            await rag.shortest_path(DUKE, MIFUNE, 0, first),
        )

    people, movies, (of_duke, total), (largest, count), bridged, pinned = asyncio.run(calls())
    assert people == knowledge.pagerank("Person", 10) and len(people) == 7, "Person, 10: all 7 people"
    assert movies == knowledge.pagerank("Movie", 2, ["STARS"], max_seq=1)
    assert (of_duke, total) == ([knowledge.community_of(DUKE, 3, "Person")[0]], knowledge.communities()[1])
    assert [m.label for m in of_duke[0].members] == ["Person"] * 3
    assert (largest, count) == knowledge.communities(10, 10) and count == total
    assert pinned is None, "pinned to the first snapshot there is no bridge: Duke is 4 hops from Mifune"

    ranked = ranked_proto(people[0])
    assert (ranked.id, ranked.name, ranked.kind) == (DUKE, "Duke", "Person") and ranked.score == people[0].score
    message = community_proto(of_duke[0])
    assert message.size == of_duke[0].size and [m.id for m in message.members] == [m.id for m in of_duke[0].members]
    found = path_proto(bridged)
    assert found.found and list(found.ids) == [DUKE, "Movie:Crossover", MIFUNE]
    assert list(found.relations) == ["STARS", "STARS"] and list(found.names) == ["Duke", "Crossover", "Mifune"]
    assert not path_proto(None).found

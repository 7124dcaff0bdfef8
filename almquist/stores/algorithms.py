"""Graph algorithms over a store's export: influential entities (PageRank), communities (Louvain), shortest paths.

In: any object with `run(query_name, params)` (a `GraphStore`, or the `KnowledgeStore` actor's runner), a snapshot
pin (`max_seq`) and the relationship types to build the graph from. The graph is exported once per (`max_seq`,
relations) by paging the named query `edges_of_type`, held in networkx as an undirected weighted graph, and every
result over it (PageRank scores, communities) is computed on first use and kept with it. Out: `RankedEntity`s,
`Community`s, and a `GraphPath` from the registry's `shortest_path` query (the engine's own search, so a path
never needs the whole graph in memory). Bad arguments raise `InvalidArgument`, unknown entities `NotFound`, an
empty graph `FailedPrecondition`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import networkx as nx

from almquist.errors import FailedPrecondition, InvalidArgument, NotFound
from almquist.stores.graph import QueryRunner
from almquist.stores.queries import MAX_HOPS, MAX_SEQ, normalize_rel
from almquist.stores.schema import NODE_LABELS, label_of, name_of

# People <-> movie relations of both sources (MetaQA's Movie->Person, the Neo4j movies' Person->Movie). Value nodes
# (Year, Genre, Rating, Language, Tag, Votes) are left out by default: a handful of them touch every movie, so they
# would top PageRank and glue every community together.
PEOPLE_MOVIE_RELATIONS: tuple[str, ...] = (
    "DIRECTED_BY",
    "WRITTEN_BY",
    "STARS",
    "ACTED_IN",
    "DIRECTED",
    "PRODUCED",
    "WROTE",
)
PAGE_SIZE = 50_000  # edges per `edges_of_type` page: 10k pages cost 2x the export time of 50k on the full MetaQA KB
MAX_LIMIT = 1000  # entities one call may list: a ranking is for reading, not for dumping the graph
MAX_GRAPHS = 2  # exported graphs kept (one per max_seq and relation set): the full MetaQA KB's is ~50 MB with results
LOUVAIN_SEED = 0  # Louvain visits nodes in random order: a fixed seed gives the same communities every time
DEFAULT_LIMIT = 10


@dataclass(frozen=True)
class RankedEntity:
    """An entity and its PageRank score (scores over the whole graph sum to 1)."""

    id: str
    name: str
    label: str
    score: float


@dataclass(frozen=True)
class Community:
    """One community: its index (0 = the largest), its size, and its top members by PageRank."""

    index: int
    size: int
    members: tuple[RankedEntity, ...]


@dataclass(frozen=True)
class GraphPath:
    """A shortest path: node names and ids from source to target, and the relationship type of each step."""

    names: tuple[str, ...]
    ids: tuple[str, ...]
    rels: tuple[str, ...]


def check_limit(limit: int, what: str = "limit") -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidArgument(f"{what} must be an integer from 1 to {MAX_LIMIT}, not {limit!r}")
    return limit


def check_label(label: str | None) -> str | None:
    """A node label of the schema, or None (every label); an empty string means None."""
    if not label:
        return None
    if label not in NODE_LABELS:
        raise InvalidArgument(f"unknown label {label!r}; use one of {list(NODE_LABELS)}")
    return label


def check_relations(relations: Iterable[str] | None) -> tuple[str, ...]:
    """Relationship types (names or MetaQA relations), deduplicated and sorted: one cache key per set."""
    if relations is None:
        return PEOPLE_MOVIE_RELATIONS
    if isinstance(relations, str):  # a bare string would iterate as characters
        relations = [relations]
    chosen = tuple(sorted({normalize_rel(r) for r in relations}))
    if not chosen:
        raise InvalidArgument("give at least one relationship type, or none at all for the people-movie relations")
    return chosen


def check_hops(max_hops: int) -> int:
    if isinstance(max_hops, bool) or not isinstance(max_hops, int) or not 1 <= max_hops <= MAX_HOPS:
        raise InvalidArgument(f"max_hops must be an integer from 1 to {MAX_HOPS}, not {max_hops!r}")
    return max_hops


def check_entity_id(entity_id: str, what: str = "entity id") -> str:
    if not isinstance(entity_id, str) or not entity_id:
        raise InvalidArgument(f"give the {what} like 'Person:Tom Hanks' (label:name), not {entity_id!r}")
    return entity_id


def check_seq(max_seq: int | None) -> int:
    if max_seq is None:
        return MAX_SEQ
    if isinstance(max_seq, bool) or not isinstance(max_seq, int) or max_seq < 0:
        raise InvalidArgument(f"max_seq must be a snapshot seq (an integer >= 0), not {max_seq!r}")
    return max_seq


def export_edges(
    store: QueryRunner, relations: Sequence[str], max_seq: int, page_size: int = PAGE_SIZE
) -> Iterator[tuple[str, str]]:
    """(src, dst) of every edge of these types visible at `max_seq`, page by page in the query's (src, dst) order."""
    for rel in relations:
        skip = 0
        while True:
            rows = store.run("edges_of_type", {"rel": rel, "max_seq": max_seq, "skip": skip, "limit": page_size})
            for row in rows:
                yield row["src"], row["dst"]
            if len(rows) < page_size:
                break
            skip += len(rows)


def build_graph(edges: Iterable[tuple[str, str]]) -> nx.Graph:
    """Undirected graph; an edge's `weight` is how many relations join the pair (a director who also wrote a film
    is tied to it twice), which is what PageRank over the multigraph would count."""
    graph = nx.Graph()
    for src, dst in edges:
        if graph.has_edge(src, dst):
            graph[src][dst]["weight"] += 1
        else:
            graph.add_edge(src, dst, weight=1)
    return graph


@dataclass
class LoadedGraph:
    """One export and what has been computed over it so far (each result on first use)."""

    graph: nx.Graph
    max_seq: int
    relations: tuple[str, ...]
    _scores: dict[str, float] | None = field(default=None, repr=False)
    _ranked: list[str] | None = field(default=None, repr=False)
    _communities: list[list[str]] | None = field(default=None, repr=False)
    _community_of: dict[str, int] | None = field(default=None, repr=False)

    @property
    def scores(self) -> dict[str, float]:
        if self._scores is None:
            # networkx's pagerank is the scipy sparse power iteration (alpha 0.85, tol 1e-6 per node)
            self._scores = nx.pagerank(self.graph, weight="weight")
        return self._scores

    @property
    def ranked(self) -> list[str]:
        """Every node, best PageRank first; ties by id so equal scores always list the same way."""
        if self._ranked is None:
            scores = self.scores
            self._ranked = sorted(scores, key=lambda n: (-scores[n], n))
        return self._ranked

    @property
    def communities(self) -> list[list[str]]:
        """Louvain communities, largest first (ties by their smallest id), each ranked by PageRank."""
        if self._communities is None:
            found = nx.community.louvain_communities(self.graph, weight="weight", seed=LOUVAIN_SEED)
            position = {node: i for i, node in enumerate(self.ranked)}
            ordered = sorted(found, key=lambda c: (-len(c), min(c)))
            self._communities = [sorted(c, key=position.__getitem__) for c in ordered]
            self._community_of = {node: i for i, members in enumerate(self._communities) for node in members}
        return self._communities

    def community_index(self, entity_id: str) -> int:
        self.communities  # noqa: B018 - computes the membership map on first use
        assert self._community_of is not None
        return self._community_of[entity_id]

    def entity(self, node: str) -> RankedEntity:
        return RankedEntity(node, name_of(node), label_of(node), float(self.scores[node]))

    def top(self, nodes: Iterable[str], label: str | None, limit: int) -> tuple[RankedEntity, ...]:
        """The first `limit` of `nodes` (already ranked) with `label` (None: any)."""
        chosen: list[RankedEntity] = []
        for node in nodes:
            if label is None or label_of(node) == label:
                chosen.append(self.entity(node))
                if len(chosen) == limit:
                    break
        return tuple(chosen)

    def community(self, index: int, label: str | None, limit: int) -> Community:
        members = self.communities[index]
        return Community(index, len(members), self.top(members, label, limit))


class GraphAlgorithms:
    """PageRank, communities and shortest paths over one store; exports are cached per (max_seq, relations)."""

    def __init__(self, store: QueryRunner, page_size: int = PAGE_SIZE, max_graphs: int = MAX_GRAPHS) -> None:
        self._store = store
        self._page_size = page_size
        self._max_graphs = max_graphs
        self._graphs: OrderedDict[tuple[int, tuple[str, ...]], LoadedGraph] = OrderedDict()

    def graph(self, max_seq: int | None = None, relations: Iterable[str] | None = None) -> LoadedGraph:
        """The graph of `relations` at `max_seq` (None: every snapshot), exported on first use."""
        key = (check_seq(max_seq), check_relations(relations))
        loaded = self._graphs.get(key)
        if loaded is None:
            graph = build_graph(export_edges(self._store, key[1], key[0], self._page_size))
            if graph.number_of_nodes() == 0:
                raise FailedPrecondition(
                    f"the graph has no {'/'.join(key[1])} edges at snapshot seq {key[0]}: ingest a knowledge source "
                    "(`almquist kb metaqa`) or choose other relations"
                )
            loaded = self._graphs[key] = LoadedGraph(graph, *key)
            while len(self._graphs) > self._max_graphs:  # an export of the full KB is large: keep the newest few
                self._graphs.popitem(last=False)
        self._graphs.move_to_end(key)
        return loaded

    def pagerank(
        self,
        label: str | None = "Person",
        limit: int = DEFAULT_LIMIT,
        relations: Iterable[str] | None = None,
        max_seq: int | None = None,
    ) -> list[RankedEntity]:
        """The `limit` most influential entities with `label` (None: any), by undirected PageRank."""
        label, limit = check_label(label), check_limit(limit)
        loaded = self.graph(max_seq, relations)
        return list(loaded.top(loaded.ranked, label, limit))

    def community_of(
        self,
        entity_id: str,
        limit: int = DEFAULT_LIMIT,
        label: str | None = None,
        relations: Iterable[str] | None = None,
        max_seq: int | None = None,
    ) -> Community:
        """The community `entity_id` belongs to, with its `limit` top members (of `label`, if given)."""
        label, limit = check_label(label), check_limit(limit)
        check_entity_id(entity_id)
        loaded = self.graph(max_seq, relations)
        if entity_id not in loaded.graph:
            raise self._not_in_graph(entity_id, loaded)
        return loaded.community(loaded.community_index(entity_id), label, limit)

    def communities(
        self,
        limit: int = DEFAULT_LIMIT,
        members: int = 5,
        label: str | None = None,
        relations: Iterable[str] | None = None,
        max_seq: int | None = None,
    ) -> list[Community]:
        """The `limit` largest communities, each with its `members` top members (of `label`, if given)."""
        label, limit, members = check_label(label), check_limit(limit), check_limit(members, "members")
        loaded = self.graph(max_seq, relations)
        return [loaded.community(i, label, members) for i in range(min(limit, len(loaded.communities)))]

    def community_count(self, relations: Iterable[str] | None = None, max_seq: int | None = None) -> int:
        return len(self.graph(max_seq, relations).communities)

    def shortest_path(
        self, src_id: str, dst_id: str, max_hops: int = 3, max_seq: int | None = None
    ) -> GraphPath | None:
        """A shortest path of at most `max_hops` edges over every relationship type (either direction), or None.

        Runs the registry's `shortest_path` query in the engine: paths may cross value nodes (a shared year or
        genre), which is what "how are these two related" asks, and no export is needed.
        """
        check_hops(max_hops)
        check_entity_id(src_id, "source id")
        check_entity_id(dst_id, "target id")
        seq = check_seq(max_seq)
        found = {row["id"] for row in self._store.run("get_entities", {"ids": [src_id, dst_id], "max_seq": seq})}
        missing = [i for i in (src_id, dst_id) if i not in found]
        if missing:
            raise NotFound(
                f"no entity {missing[0]!r} at snapshot seq {seq}; ids are 'Label:name' (e.g. 'Movie:Inception'), "
                "case-sensitive"
            )
        rows = self._store.run(
            "shortest_path", {"src_id": src_id, "dst_id": dst_id, "max_hops": max_hops, "max_seq": seq}
        )
        if not rows:
            return None
        row = rows[0]
        return GraphPath(tuple(row["names"]), tuple(row["ids"]), tuple(row["rels"]))

    def _not_in_graph(self, entity_id: str, loaded: LoadedGraph) -> NotFound:
        exists = self._store.run("get_entities", {"ids": [entity_id], "max_seq": loaded.max_seq})
        if exists:  # a real entity that the chosen relations do not reach (a Year, or a person without films)
            return NotFound(
                f"{entity_id!r} has no {'/'.join(loaded.relations)} edges at snapshot seq {loaded.max_seq}, so it "
                "is in no community of that graph; choose relations that reach it"
            )
        return NotFound(
            f"no entity {entity_id!r} at snapshot seq {loaded.max_seq}; ids are 'Label:name' "
            "(e.g. 'Person:Tom Hanks'), case-sensitive"
        )

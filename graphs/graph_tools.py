"""Graph tools for the Knowledge service: PageRank, Louvain communities and shortest paths, computed in a replica.

In: the KnowledgeStore actor's handle. Out: what `almquist.stores.algorithms.GraphAlgorithms` returns, over the
latest committed snapshot unless pinned. GraphRAG holds one `GraphTools`; `ActorQueryRunner` is also how its KGQA
engines read the graph.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import ray

from almquist.errors import FailedPrecondition, InvalidArgument
from almquist.stores.algorithms import (
    DEFAULT_LIMIT,
    Community,
    GraphAlgorithms,
    GraphPath,
    RankedEntity,
    check_entity_id,
    check_hops,
    check_label,
    check_limit,
    check_relations,
)
from almquist.stores.graph import QueryRunner

T = TypeVar("T")
DEFAULT_MAX_HOPS = 3  # ShortestPath's hops when the request leaves them at 0
View = tuple[int | None, int]  # KnowledgeStore.committed_view(): (latest committed seq, snapshots rolled back)


class ActorQueryRunner:
    """The `run(query_name, params)` of the KnowledgeStore actor, callable from KGQA's synchronous code."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def run(self, query_name: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        return ray.get(self._store.run.remote(query_name, dict(params or {})))


class GraphTools:
    """PageRank, Louvain communities and shortest paths over the KnowledgeStore, computed in this process.

    In: the actor's handle (`committed_view.remote()` awaited; a stand-in with the same shape in tests) and a
    `run(query_name, params)` over it, by default `ActorQueryRunner`: `GraphAlgorithms` only reads public named
    queries (`edges_of_type` pages for the export, `get_entities`, `shortest_path`). Out: what `GraphAlgorithms`
    returns, over the latest committed snapshot unless `max_seq` pins an earlier one.

    Why here and not in the actor: the actor serves one call at a time, and the first Louvain after a commit takes
    seconds on the full KB; computed there it would hold up every read, each KGQA question among them. Here each
    computation runs in a worker thread, so the replica's event loop keeps serving too.
    """

    def __init__(self, store: Any, runner: QueryRunner | None = None) -> None:
        self._store = store
        self._runner: QueryRunner = runner if runner is not None else ActorQueryRunner(store)
        # the algorithms of the committed view they were made for: a commit or a rollback starts afresh
        self._current: tuple[View, GraphAlgorithms] | None = None
        # One computation at a time: two first calls would otherwise both export the graph and run Louvain, and a
        # GraphAlgorithms fills its caches without locks of its own.
        self._lock = asyncio.Lock()

    async def pagerank(
        self,
        label: str | None = "Person",
        limit: int = DEFAULT_LIMIT,
        relations: Sequence[str] | None = None,
        max_seq: int | None = None,
    ) -> list[RankedEntity]:
        """The `limit` most influential entities with `label` (None: any) by PageRank over the people-movie graph
        (or `relations`)."""
        check_label(label)
        check_limit(limit)
        check_relations(relations)
        return await self._compute(max_seq, lambda algorithms, seq: algorithms.pagerank(label, limit, relations, seq))

    async def community_of(
        self,
        entity_id: str,
        limit: int = DEFAULT_LIMIT,
        label: str | None = None,
        relations: Sequence[str] | None = None,
        max_seq: int | None = None,
    ) -> tuple[Community, int]:
        """The community of `entity_id` with its `limit` top members (of `label`, if given), and how many
        communities the graph has."""
        check_entity_id(entity_id)
        check_limit(limit)
        check_label(label)
        check_relations(relations)

        def work(algorithms: GraphAlgorithms, seq: int) -> tuple[Community, int]:
            community = algorithms.community_of(entity_id, limit, label, relations, seq)
            return community, algorithms.community_count(relations, seq)

        return await self._compute(max_seq, work)

    async def communities(
        self,
        limit: int = DEFAULT_LIMIT,
        members: int = 5,
        label: str | None = None,
        relations: Sequence[str] | None = None,
        max_seq: int | None = None,
    ) -> tuple[list[Community], int]:
        """The `limit` largest communities with their `members` top members (of `label`, if given), and how many
        communities the graph has."""
        check_limit(limit)
        check_limit(members, "members")
        check_label(label)
        check_relations(relations)

        def work(algorithms: GraphAlgorithms, seq: int) -> tuple[list[Community], int]:
            found = algorithms.communities(limit, members, label, relations, seq)
            return found, algorithms.community_count(relations, seq)

        return await self._compute(max_seq, work)

    async def shortest_path(
        self, src_id: str, dst_id: str, max_hops: int = DEFAULT_MAX_HOPS, max_seq: int | None = None
    ) -> GraphPath | None:
        """A shortest path (any relationship, either direction) of at most `max_hops` edges, or None."""
        check_hops(max_hops)
        check_entity_id(src_id, "source id")
        check_entity_id(dst_id, "target id")
        seq = self._seq(await self._view(), max_seq)
        # The engine's own search (the `shortest_path` query), no export and no cache: it needs no lock, so a path
        # is not held up by another request's Louvain.
        return await asyncio.to_thread(GraphAlgorithms(self._runner).shortest_path, src_id, dst_id, max_hops, seq)

    async def _view(self) -> View:
        latest, rolled_back = await self._store.committed_view.remote()
        return latest, rolled_back

    @staticmethod
    def _seq(view: View, max_seq: int | None) -> int:
        """The seq to read: `max_seq`, never past the latest commit (an ingestion still running stays out of the
        results, as it does for questions). Callers check their other arguments first: a bad argument is
        INVALID_ARGUMENT whatever the store holds."""
        latest = view[0]
        if latest is None:
            raise FailedPrecondition("the knowledge base is empty: run `almquist kb metaqa` first")
        if max_seq is not None and (isinstance(max_seq, bool) or not isinstance(max_seq, int) or max_seq < 1):
            raise InvalidArgument(f"max_seq must be a snapshot seq (an integer >= 1), not {max_seq!r}")
        return latest if max_seq is None else min(max_seq, latest)

    async def _compute(self, max_seq: int | None, work: Callable[[GraphAlgorithms, int], T]) -> T:
        """`work(algorithms, seq)` in a worker thread, with the algorithms of the current committed view."""
        async with self._lock:
            # the view is read under the lock: a call that waited behind a computation sees the commits made
            # meanwhile, and never swaps in the algorithms of a view older than the current one
            view = await self._view()
            seq = self._seq(view, max_seq)
            if self._current is None or self._current[0] != view:
                self._current = (view, GraphAlgorithms(self._runner))
            computing = asyncio.ensure_future(asyncio.to_thread(work, self._current[1], seq))
            try:
                return await asyncio.shield(computing)
            except asyncio.CancelledError:
                # The caller went away (a client deadline) but the thread runs on: keep the lock until it ends, so
                # no second computation starts over the same caches alongside it.
                await asyncio.wait([computing])
                raise

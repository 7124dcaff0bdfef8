"""The `almquist.v1.Knowledge` gRPC service: questions, search, snapshots and graph tools over the knowledge base.

In: Knowledge requests. Out: their responses, built from GraphRAG's plain results (graphs/graph_rag.py, which owns
the stores through the KnowledgeStore actor). Depends on one deployment, GraphRAG; without it every RPC answers
UNIMPLEMENTED. Served by the single gRPC ingress (graphs/ingress.py).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ray.serve.handle import DeploymentHandle

from almquist.errors import FailedPrecondition, InvalidArgument, Unimplemented
from almquist.stores.algorithms import Community, GraphPath, RankedEntity
from almquist.v1 import knowledge_pb2
from graphs.graph_rag import citations_of
from graphs.rpc import abort, aborting
from graphs.turn import Citation


def citation_proto(citation: Citation) -> knowledge_pb2.Citation:
    return knowledge_pb2.Citation(
        source_id=citation.source_id,
        title=citation.title,
        snippet=citation.snippet,
        path=list(citation.path),
        snapshot_id=citation.snapshot_id,
        score=citation.score,
        uri=citation.url,
        published_unix_s=citation.published,
    )


def ranked_proto(entity: RankedEntity) -> knowledge_pb2.RankedEntity:
    return knowledge_pb2.RankedEntity(id=entity.id, name=entity.name, kind=entity.label, score=entity.score)


def community_proto(community: Community) -> knowledge_pb2.GraphCommunity:
    return knowledge_pb2.GraphCommunity(
        index=community.index, size=community.size, members=[ranked_proto(m) for m in community.members]
    )


def path_proto(path: GraphPath | None) -> knowledge_pb2.ShortestPathResponse:
    if path is None:
        return knowledge_pb2.ShortestPathResponse(found=False)
    return knowledge_pb2.ShortestPathResponse(
        found=True, names=list(path.names), ids=list(path.ids), relations=list(path.rels)
    )


def _snapshot_items(record: dict[str, Any]) -> int:
    """Nodes and edges an ingestion snapshot created (its last run's report)."""
    last = (record.get("info") or {}).get("last_run") or {}
    return int(last.get("created_nodes", 0)) + int(last.get("created_edges", 0))


class KnowledgeService:
    """gRPC methods of `almquist.v1.Knowledge`, answered by the GraphRAG deployment."""

    def __init__(self, graph_rag: DeploymentHandle | None) -> None:
        self._graph_rag = graph_rag

    def _rag(self, grpc_context: Any) -> DeploymentHandle:
        if self._graph_rag is None:
            abort(grpc_context, Unimplemented("this application has no knowledge base"))
        return self._graph_rag

    async def Query(
        self, request: knowledge_pb2.KnowledgeQuery, grpc_context: Any = None
    ) -> knowledge_pb2.KnowledgeAnswer:
        rag = self._rag(grpc_context)
        with aborting(grpc_context):
            result = await rag.query.remote(request.question, request.snapshot_id)
        limit = request.max_citations or len(result.facts)
        return knowledge_pb2.KnowledgeAnswer(
            answers=result.answers,
            citations=[
                citation_proto(replace(citation, snapshot_id=request.snapshot_id))
                for citation in citations_of(result, limit)
            ],
            linked_entities=result.linked,
            snapshot_id=request.snapshot_id,
        )

    async def Search(
        self, request: knowledge_pb2.SearchRequest, grpc_context: Any = None
    ) -> knowledge_pb2.SearchResponse:
        rag = self._rag(grpc_context)
        if not request.text.strip():
            abort(grpc_context, InvalidArgument("search text is empty"))
        with aborting(grpc_context):
            hits = await rag.search.remote(request.text, request.limit, request.kind)
        return knowledge_pb2.SearchResponse(
            hits=[knowledge_pb2.SearchHit(id=h["id"], name=h["name"], kind=h["label"], score=h["score"]) for h in hits]
        )

    async def ListSnapshots(
        self, request: knowledge_pb2.ListSnapshotsRequest, grpc_context: Any = None
    ) -> knowledge_pb2.ListSnapshotsResponse:
        rag = self._rag(grpc_context)
        with aborting(grpc_context):
            records = await rag.snapshots.remote()
        return knowledge_pb2.ListSnapshotsResponse(
            snapshots=[
                knowledge_pb2.Snapshot(
                    snapshot_id=r["snapshot_id"],
                    source=r.get("source", ""),
                    created_unix_s=r.get("created_unix_s", 0.0),
                    items=_snapshot_items(r),
                    status=r.get("status", ""),
                )
                for r in reversed(records)
            ]
        )

    async def Rollback(
        self, request: knowledge_pb2.RollbackRequest, grpc_context: Any = None
    ) -> knowledge_pb2.RollbackResponse:
        rag = self._rag(grpc_context)
        with aborting(grpc_context):
            live = [r for r in await rag.snapshots.remote() if r.get("status") != "rolled_back"]
            newest = [max(live, key=lambda r: r.get("seq", 0))["snapshot_id"]] if live else []
            known = request.snapshot_id in {r["snapshot_id"] for r in live}  # an unknown id: the store says NOT_FOUND
            if known and request.snapshot_id != newest[0] and not request.allow_older:
                raise FailedPrecondition(
                    f"snapshot {request.snapshot_id!r} is not the newest ({newest[0]}): later batches may build on "
                    "it; set allow_older to remove it anyway"
                )
            removed = await rag.rollback.remote(request.snapshot_id)
        # nodes and edges, as a snapshot's `items` counts them (the dict also holds per-label and per-type counts)
        return knowledge_pb2.RollbackResponse(items_removed=int(removed["nodes"] + removed["edges"]))

    async def Influential(
        self, request: knowledge_pb2.InfluentialRequest, grpc_context: Any = None
    ) -> knowledge_pb2.InfluentialResponse:
        rag = self._rag(grpc_context)
        with aborting(grpc_context):
            ranked = await rag.influential.remote(
                request.label, request.limit, list(request.relations), request.snapshot_id
            )
        return knowledge_pb2.InfluentialResponse(entities=[ranked_proto(entity) for entity in ranked])

    async def Community(
        self, request: knowledge_pb2.CommunityRequest, grpc_context: Any = None
    ) -> knowledge_pb2.CommunityResponse:
        rag = self._rag(grpc_context)
        with aborting(grpc_context):
            found, total = await rag.community.remote(
                request.entity_id.strip(),
                request.limit,
                request.label,
                list(request.relations),
                request.snapshot_id,
                request.communities,
            )
        return knowledge_pb2.CommunityResponse(communities=[community_proto(c) for c in found], total=total)

    async def ShortestPath(
        self, request: knowledge_pb2.ShortestPathRequest, grpc_context: Any = None
    ) -> knowledge_pb2.ShortestPathResponse:
        rag = self._rag(grpc_context)
        if not request.src_id.strip() or not request.dst_id.strip():
            abort(grpc_context, InvalidArgument("give both src_id and dst_id (entity ids like 'Person:Tom Hanks')"))
        with aborting(grpc_context):
            path = await rag.shortest_path.remote(request.src_id, request.dst_id, request.max_hops, request.snapshot_id)
        return path_proto(path)

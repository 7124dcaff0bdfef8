"""`VectorStore`: entity vectors in Qdrant, local mode in a folder or a server by URL, through one client API.

In: string ids with their vectors and payloads (`id`, `name`, `label`, `snapshot_id`, `snapshot_seq`). Point ids
are uuid5 of the string id, so writing an id again never duplicates it; an existing point keeps its payload (and so
its snapshot) unless `overwrite=True`. Out of `search`: `VectorHit`s, filtered by label and pinned snapshot.
Local mode is brute force and one process per folder: share it through the KnowledgeStore actor.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from almquist.config.knowledge import VectorStoreConfig
from almquist.errors import FailedPrecondition, InvalidArgument, NotFound

_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "almquist:entities")
_REQUIRED_PAYLOAD = ("id", "name", "label", "snapshot_id", "snapshot_seq")
_RETRIEVE_CHUNK = 1_000


@dataclass(frozen=True)
class VectorHit:
    id: str
    name: str
    label: str
    score: float


def point_id(entity_id: str) -> str:
    """The Qdrant point id of a string id (deterministic)."""
    return str(uuid.uuid5(_ID_NAMESPACE, entity_id))


class VectorStore:
    """Qdrant collections of entity vectors (cosine)."""

    def __init__(self, config: VectorStoreConfig) -> None:
        from qdrant_client import QdrantClient

        self._local = config.url is None
        if self._local:
            config.path.mkdir(parents=True, exist_ok=True)
            try:
                self._client = QdrantClient(path=str(config.path))
            except RuntimeError as error:  # portalocker: another process has the folder
                raise FailedPrecondition(
                    f"cannot open Qdrant's folder {config.path} ({error}); local mode is single-process: reach it "
                    "through the KnowledgeStore actor, or set vectors.url to a Qdrant server"
                ) from error
        else:
            api_key = os.environ.get(config.api_key_env) if config.api_key_env else None
            self._client = QdrantClient(url=config.url, api_key=api_key, timeout=int(config.timeout_s))

    def ensure_collection(self, name: str, dim: int) -> None:
        from qdrant_client import models

        if self._client.collection_exists(name):
            size = self._dimension(name)
            if size != dim:
                raise FailedPrecondition(
                    f"collection {name!r} holds {size}-d vectors, not {dim}-d; embed with the same model or use "
                    "another collection"
                )
            return
        self._client.create_collection(name, vectors_config=models.VectorParams(size=dim, distance="Cosine"))
        if not self._local:  # local mode filters by brute force and warns on payload indexes
            keyword, integer = models.PayloadSchemaType.KEYWORD, models.PayloadSchemaType.INTEGER
            for key, schema in (("label", keyword), ("snapshot_id", keyword), ("snapshot_seq", integer)):
                self._client.create_payload_index(name, field_name=key, field_schema=schema)

    def missing(self, collection: str, ids: Sequence[str]) -> list[str]:
        """The ids among `ids` that have no point yet (all of them if the collection does not exist)."""
        unique = list(dict.fromkeys(ids))
        present = {p.payload["id"] for p in self._retrieve(collection, unique, with_vectors=False)}
        return [i for i in unique if i not in present]

    def vectors(self, collection: str, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """The stored vector of each id that has one."""
        points = self._retrieve(collection, list(dict.fromkeys(ids)), with_vectors=True)
        return {p.payload["id"]: np.asarray(p.vector, dtype=np.float32) for p in points}

    def _retrieve(self, collection: str, ids: list[str], with_vectors: bool) -> Iterator[Any]:
        """The stored points of `ids` (with an `id` payload), fetched in chunks; none if there is no collection."""
        if not self._client.collection_exists(collection):
            return
        for start in range(0, len(ids), _RETRIEVE_CHUNK):
            chunk = [point_id(i) for i in ids[start : start + _RETRIEVE_CHUNK]]
            points = self._client.retrieve(collection, ids=chunk, with_payload=["id"], with_vectors=with_vectors)
            yield from (p for p in points if p.payload)

    def upsert(
        self,
        collection: str,
        ids: list[str],
        vectors: np.ndarray,
        payloads: list[dict[str, Any]],
        overwrite: bool = False,
    ) -> int:
        """Writes the points whose ids are new (all of them with `overwrite`); returns how many were new."""
        from qdrant_client import models

        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(ids) or len(payloads) != len(ids):
            raise InvalidArgument(
                f"give one vector row and one payload per id: {len(ids)} ids, vectors {vectors.shape}, "
                f"{len(payloads)} payloads"
            )
        for i, (entity_id, payload) in enumerate(zip(ids, payloads, strict=True)):
            absent = [key for key in _REQUIRED_PAYLOAD if key not in payload]
            if absent or payload["id"] != entity_id:
                raise InvalidArgument(f"payload {i} must hold {list(_REQUIRED_PAYLOAD)} with id {entity_id!r}")
        if not ids:
            return 0
        self.ensure_collection(collection, int(vectors.shape[1]))
        new = set(self.missing(collection, ids))
        chosen = [i for i, entity_id in enumerate(ids) if overwrite or entity_id in new]
        seen: set[str] = set()
        points = []
        for i in chosen:
            if ids[i] in seen:
                continue
            seen.add(ids[i])
            points.append(models.PointStruct(id=point_id(ids[i]), vector=vectors[i].tolist(), payload=payloads[i]))
        if points:
            self._client.upsert(collection, points=points, wait=True)
        return len(new)

    def search(
        self, collection: str, vector: np.ndarray, limit: int = 10, label: str | None = None, max_seq: int | None = None
    ) -> list[VectorHit]:
        from qdrant_client import models

        if not self._client.collection_exists(collection):
            raise NotFound(f"no vector collection {collection!r}; ingest a knowledge base first")
        if limit <= 0:
            raise InvalidArgument(f"limit must be positive, not {limit}")
        must: list[Any] = []
        if label is not None:
            must.append(models.FieldCondition(key="label", match=models.MatchValue(value=label)))
        if max_seq is not None:
            must.append(models.FieldCondition(key="snapshot_seq", range=models.Range(lte=max_seq)))
        query = np.asarray(vector, dtype=np.float32).reshape(-1).tolist()
        result = self._client.query_points(
            collection, query=query, limit=limit, query_filter=models.Filter(must=must) if must else None
        )
        return [
            VectorHit(p.payload["id"], p.payload["name"], p.payload["label"], float(p.score))
            for p in result.points
            if p.payload
        ]

    def search_payloads(
        self,
        collection: str,
        vector: np.ndarray,
        limit: int = 10,
        match: dict[str, str] | None = None,
        min_values: dict[str, float] | None = None,
        max_seq: int | None = None,
    ) -> list[tuple[dict[str, Any], float]]:
        """Nearest points with their whole payload: `match` keeps points whose payload field equals the value,
        `min_values` those whose numeric field is at least the value (e.g. `published` for recency)."""
        from qdrant_client import models

        if limit <= 0:
            raise InvalidArgument(f"limit must be positive, not {limit}")
        if not self._client.collection_exists(collection):
            return []
        must: list[Any] = [
            models.FieldCondition(key=key, match=models.MatchValue(value=value)) for key, value in (match or {}).items()
        ]
        must += [
            models.FieldCondition(key=key, range=models.Range(gte=value)) for key, value in (min_values or {}).items()
        ]
        if max_seq is not None:
            must.append(models.FieldCondition(key="snapshot_seq", range=models.Range(lte=max_seq)))
        query = np.asarray(vector, dtype=np.float32).reshape(-1).tolist()
        result = self._client.query_points(
            collection,
            query=query,
            limit=limit,
            query_filter=models.Filter(must=must) if must else None,
            with_payload=True,
        )
        return [(dict(p.payload), float(p.score)) for p in result.points if p.payload]

    def existing_values(self, collection: str, key: str, values: Sequence[str]) -> dict[str, str]:
        """Of `values`, those some point's payload field `key` holds, each with that point's snapshot id."""
        from qdrant_client import models

        if not values or not self._client.collection_exists(collection):
            return {}
        found: dict[str, str] = {}
        where = models.Filter(must=[models.FieldCondition(key=key, match=models.MatchAny(any=list(set(values))))])
        offset = None
        while True:
            points, offset = self._client.scroll(
                collection, scroll_filter=where, limit=1000, offset=offset, with_payload=[key, "snapshot_id"]
            )
            for point in points:
                if point.payload:
                    found.setdefault(str(point.payload[key]), str(point.payload.get("snapshot_id", "")))
            if offset is None:
                return found

    def delete_snapshot(self, snapshot_id: str) -> int:
        """Removes every point stamped with `snapshot_id`, in every collection; returns how many."""
        from qdrant_client import models

        stamped = models.FieldCondition(key="snapshot_id", match=models.MatchValue(value=snapshot_id))
        where = models.Filter(must=[stamped])
        removed = 0
        for description in self._client.get_collections().collections:
            name = description.name
            found = self._client.count(name, count_filter=where, exact=True).count
            if found:
                self._client.delete(name, points_selector=models.FilterSelector(filter=where), wait=True)
                removed += found
        return removed

    def count(self, collection: str) -> int:
        if not self._client.collection_exists(collection):
            return 0
        return int(self._client.count(collection, exact=True).count)

    def collections(self) -> list[str]:
        return sorted(c.name for c in self._client.get_collections().collections)

    def close(self) -> None:
        self._client.close()

    def _dimension(self, name: str) -> int:
        vectors = self._client.get_collection(name).config.params.vectors
        return int(vectors.size)  # type: ignore[union-attr]

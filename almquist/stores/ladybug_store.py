"""The embedded graph backend: ladybug (the maintained fork of Kuzu), a folder on disk, one process at a time.

In: a `GraphStoreConfig` with `path`. Schema is Kuzu-style: one node table per label with primary key `id`, one rel
table per relationship type (a type that connects several label pairs gets one `FROM .. TO ..` per pair), and a
`KnowledgeSnapshot` table for snapshot records. Statements come from `queries.py` (ladybug variants where needed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from almquist.config.knowledge import GraphStoreConfig
from almquist.errors import FailedPrecondition
from almquist.stores.cypher_store import CypherGraphStore, Run
from almquist.stores.queries import bind
from almquist.stores.schema import NODE_LABELS, RELATIONSHIPS, SNAPSHOT_LABEL, label_of

T = TypeVar("T")

_STAMP = "snapshot_id STRING, snapshot_seq INT64"
# Up to this many source ids, `expand_*` runs its `_by_id` statement once per id (key index, ~0.5 ms each) instead
# of one `IN` list (a label-table scan, ~3 ms); measured on the full MetaQA KB.
SMALL_FRONTIER = 4


def schema_statements() -> list[str]:
    """DDL for every table, idempotent (`IF NOT EXISTS`)."""
    statements = [
        f"CREATE NODE TABLE IF NOT EXISTS {label}(id STRING, name STRING, {_STAMP}, PRIMARY KEY(id))"
        for label in NODE_LABELS
    ]
    for rel, pairs in RELATIONSHIPS.items():
        ends = ", ".join(f"FROM {src} TO {dst}" for src, dst in pairs)
        statements.append(f"CREATE REL TABLE IF NOT EXISTS {rel}({ends}, {_STAMP})")
    statements.append(
        f"CREATE NODE TABLE IF NOT EXISTS {SNAPSHOT_LABEL}(snapshot_id STRING, seq INT64, source STRING, "
        "created_unix_s DOUBLE, fingerprint STRING, status STRING, done_batches INT64[], info STRING, "
        "PRIMARY KEY(snapshot_id))"
    )
    return statements


class LadybugGraphStore(CypherGraphStore):
    """`GraphStore` over an embedded ladybug database."""

    backend = "ladybug"

    def __init__(self, config: GraphStoreConfig) -> None:
        import ladybug

        config.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = ladybug.Database(
                str(config.path), buffer_pool_size=config.buffer_pool_mb * 1024 * 1024, max_num_threads=config.threads
            )
        except RuntimeError as error:
            raise FailedPrecondition(
                f"cannot open the graph at {config.path} ({error}); an embedded store is single-process: reach it "
                "through the KnowledgeStore actor (actors/knowledge_store.py), or point graph.path elsewhere"
            ) from error
        self._conn = ladybug.Connection(self._db)
        self.ensure_schema()

    def run(self, query_name: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        if query_name in ("expand_out", "expand_in"):
            _, _, values = bind(query_name, params, self.backend)  # checks the parameters once, for both forms
            assert params is not None  # bind raised without `rel`
            ids = sorted(set(values["ids"]))
            if len(ids) <= SMALL_FRONTIER:
                rows: list[dict[str, Any]] = []
                for id_ in ids:
                    if label_of(id_) in NODE_LABELS:  # any other id names no node: no rows, as with `IN`
                        by_id = {"id": id_, "label": label_of(id_), "rel": params["rel"], "max_seq": values["max_seq"]}
                        rows += super().run(f"{query_name}_by_id", by_id)
                return rows  # per id in id order, each ordered by dst: the `ORDER BY src, dst` of the list form
        return super().run(query_name, params)

    def ensure_schema(self) -> None:
        def work(run: Run) -> None:
            for text in schema_statements():
                run(text, {})

        self._transaction(work)

    def _execute(self, text: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        result = self._conn.execute(text, params)
        assert not isinstance(result, list)  # a list only for several statements; this is one
        try:
            columns = result.get_column_names()
            return [dict(zip(columns, row, strict=True)) for row in result]
        finally:
            result.close()

    def _read(self, text: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        return self._execute(text, params)

    def _transaction(self, work: Callable[[Run], T]) -> T:
        self._conn.execute("BEGIN TRANSACTION")
        try:
            result = work(self._execute)
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")
        return result

    def close(self) -> None:
        self._conn.close()
        self._db.close()

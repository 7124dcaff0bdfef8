"""The in-memory graph backend: a `GraphStore` in Python dicts, one process, gone on close.

The reference and test double of the other backends (KGQA's tests and benchmark compare them on the same queries),
and `backend: memory` in a profile. In: `upsert_nodes` / `upsert_edges` stamped with a `Snapshot`, as every backend
is written, or `head|relation|tail` triples (MetaQA's kb.txt; every relation points Movie -> X) through
`add(triples, seq)` and `from_kb(path)`. Out: `run(query_name, params)`: the parameters are checked by
`queries.bind`, as for the Cypher backends, and the rows are theirs, in their order: `find_entities_by_name(s)`,
`get_entities`, `entities_by_label` -> {id, name, label}; `expand_out` / `expand_in` -> {src, dst, dst_name,
dst_label} ordered by (src, dst); `edges_of_type`, `neighbors`, `shortest_path` (breadth-first, either
direction), `node_count`, `edge_count`, and the snapshot records (`save_snapshot`, `list_snapshots`).

A node or edge written by the batch with seq `s` is seen by a query whose `max_seq >= s`; a node or edge written
again keeps its first seq. A snapshot is known by its seq: `delete_snapshot(id)` removes what the batch with that
id's seq wrote, and the edges on its nodes. A `rel` is a relationship type (`STARS`) or a MetaQA relation
(`starred_actors`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from almquist.errors import FailedPrecondition, InvalidArgument
from almquist.stores.queries import bind, normalize_rel
from almquist.stores.rows import unique_edges, unique_nodes
from almquist.stores.schema import METAQA_RELATIONS, RELATIONSHIPS, label_of, name_of, node_id
from almquist.stores.snapshot import Snapshot

Triple = tuple[str, str, str]
Row = dict[str, Any]
Edges = dict[str, dict[str, int]]  # node -> neighbour -> seq of the edge


def read_kb(path: str | Path) -> list[Triple]:
    """kb.txt -> (head, relation, tail) triples; lines that are not three `|`-separated fields are skipped."""
    triples: list[Triple] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("|")
            if len(parts) == 3 and parts[1] in METAQA_RELATIONS:
                triples.append((parts[0], parts[1], parts[2]))
    return triples


class InMemoryGraphStore:
    """`GraphStore` over dicts; see the module docstring for what it answers."""

    backend = "memory"

    def __init__(self, triples: Iterable[Triple] = (), seq: int = 0) -> None:
        self._seq: dict[str, int] = {}  # node id -> the batch that wrote it first
        self._by_name: dict[str, list[str]] = defaultdict(list)
        self._out: dict[str, Edges] = {rel: defaultdict(dict) for rel in RELATIONSHIPS}
        self._in: dict[str, Edges] = {rel: defaultdict(dict) for rel in RELATIONSHIPS}
        self._snapshot_seqs: dict[str, int] = {}  # snapshot id -> seq, of the batches written through upsert_*
        self._records: dict[str, Row] = {}  # save_snapshot's rows, by snapshot id
        self.add(triples, seq)

    @classmethod
    def from_kb(cls, path: str | Path) -> InMemoryGraphStore:
        return cls(read_kb(path))

    def add(self, triples: Iterable[Triple], seq: int) -> None:
        """Writes one batch of MetaQA triples; a node or triple already present keeps its earlier seq."""
        for head, relation, tail in triples:
            rel_type, src_label, dst_label = METAQA_RELATIONS[relation]
            src, dst = self._node(src_label, head, seq), self._node(dst_label, tail, seq)
            self._out[rel_type][src].setdefault(dst, seq)
            self._in[rel_type][dst].setdefault(src, seq)

    def _node(self, label: str, name: str, seq: int) -> str:
        node = node_id(label, name)
        if node not in self._seq:
            self._seq[node] = seq
            self._by_name[name].append(node)
        return node

    def entities(self, max_seq: int | None = None) -> Iterator[tuple[str, str, str]]:
        """(id, name, label) of every node visible at `max_seq`."""
        for node, seq in self._seq.items():
            if max_seq is None or seq <= max_seq:
                yield node, name_of(node), label_of(node)

    def __len__(self) -> int:
        return len(self._seq)

    # ---- the GraphStore interface ----
    def ensure_schema(self) -> None:
        """Nothing to create: every label and relationship type of the schema has its dicts from the start."""

    def run(self, query_name: str, params: Mapping[str, Any] | None = None) -> list[Row]:
        query, _, values = bind(query_name, params, "ladybug")  # the same checks and defaults as every backend
        given = dict(params or {})
        for name in query.inline:  # bind writes these into the statement's text; here they are arguments
            value = given[name] if given.get(name) is not None else query.defaults.get(name)
            values[name] = normalize_rel(str(value)) if query.params[name] == "rel" else value
        handler = getattr(self, f"_q_{query.name}", None)
        if handler is None:
            raise FailedPrecondition(
                f"the in-memory graph store runs no statement {query_name!r}: it writes through upsert_nodes, "
                "upsert_edges and delete_snapshot"
            )
        return handler(**values)

    def upsert_nodes(self, label: str, rows: Sequence[Mapping[str, Any]], snapshot: Snapshot) -> int:
        unique = unique_nodes(label, rows)  # checked whole before anything is written
        self._snapshot_seqs.setdefault(snapshot.snapshot_id, snapshot.seq)
        created = 0
        for row in unique.values():
            created += row["id"] not in self._seq
            self._node(label, row["name"], snapshot.seq)
        return created

    def upsert_edges(
        self, rel_type: str, src_label: str, dst_label: str, rows: Sequence[Mapping[str, Any]], snapshot: Snapshot
    ) -> int:
        unique = unique_edges(rel_type, src_label, dst_label, rows)
        absent = sorted({row[key] for row in unique for key in ("src", "dst")} - self._seq.keys())
        if absent:
            raise InvalidArgument(
                f"{len(absent)} {rel_type} edge ends do not exist (e.g. {absent[:3]}); upsert the nodes first "
                "(nothing of this call was written)"
            )
        self._snapshot_seqs.setdefault(snapshot.snapshot_id, snapshot.seq)
        out, into = self._out[rel_type], self._in[rel_type]
        created = 0
        for row in unique:
            src, dst = row["src"], row["dst"]
            if dst not in out[src]:
                out[src][dst] = into[dst][src] = snapshot.seq
                created += 1
        return created

    def delete_snapshot(self, snapshot_id: str) -> dict[str, int]:
        """Per label and type, plus totals: `nodes`, `edges` (own and `dependent_edges`: later edges on own nodes)."""
        seq = self._snapshot_seqs.pop(snapshot_id, None)
        removed: dict[str, int] = defaultdict(int)
        doomed = {node for node, first in self._seq.items() if first == seq}
        own = dependent = 0
        for rel, edges in self._out.items():
            for src in list(edges):
                for dst, edge_seq in list(edges[src].items()):
                    if edge_seq == seq:
                        removed[rel] += 1
                        own += 1
                    elif src in doomed or dst in doomed:
                        dependent += 1
                    else:
                        continue
                    self._drop_edge(rel, src, dst)
        for node in doomed:
            removed[label_of(node)] += 1
            del self._seq[node]
            names = self._by_name[name_of(node)]
            names.remove(node)
            if not names:
                del self._by_name[name_of(node)]
        totals = {"nodes": len(doomed), "edges": own + dependent, "dependent_edges": dependent}
        return {**totals, **{key: n for key, n in removed.items() if n}}

    def _drop_edge(self, rel: str, src: str, dst: str) -> None:
        for edges, a, b in ((self._out[rel], src, dst), (self._in[rel], dst, src)):
            del edges[a][b]
            if not edges[a]:
                del edges[a]

    def counts(self) -> dict[str, int]:
        nodes = {row["label"]: row["count"] for row in self.run("node_count")}
        return {**nodes, **{row["rel"]: row["count"] for row in self.run("edge_count")}}

    def close(self) -> None:
        """Nothing to release: the graph goes with the object."""

    # ---- the named queries (parameters already checked and defaulted by `bind`) ----
    def _entity(self, node: str) -> Row:
        return {"id": node, "name": name_of(node), "label": label_of(node)}

    def _q_find_entities_by_name(self, name: str, max_seq: int) -> list[Row]:
        return self._q_find_entities_by_names([name], max_seq)

    def _q_find_entities_by_names(self, names: list[str], max_seq: int) -> list[Row]:
        found = {node for name in names for node in self._by_name.get(name, ())}
        return [self._entity(node) for node in sorted(found) if self._seq[node] <= max_seq]

    def _q_get_entities(self, ids: list[str], max_seq: int) -> list[Row]:
        return [self._entity(node) for node in sorted(set(ids)) if self._seq.get(node, max_seq + 1) <= max_seq]

    def _q_entities_by_label(self, label: str, max_seq: int, skip: int, limit: int) -> list[Row]:
        nodes = sorted(n for n, seq in self._seq.items() if seq <= max_seq and label_of(n) == label)
        return [self._entity(node) for node in nodes[skip : skip + limit]]

    def _q_expand_out(self, ids: list[str], rel: str, max_seq: int) -> list[Row]:
        return self._expand(self._out[rel], ids, max_seq)

    def _q_expand_in(self, ids: list[str], rel: str, max_seq: int) -> list[Row]:
        return self._expand(self._in[rel], ids, max_seq)

    def _expand(self, edges: Edges, ids: list[str], max_seq: int) -> list[Row]:
        rows = []
        for src in sorted(set(ids)):
            if self._seq.get(src, max_seq + 1) > max_seq:
                continue
            for dst in sorted(edges.get(src, ())):
                if max(edges[src][dst], self._seq[dst]) <= max_seq:
                    rows.append({"src": src, "dst": dst, "dst_name": name_of(dst), "dst_label": label_of(dst)})
        return rows

    def _q_edges_of_type(self, rel: str, max_seq: int, skip: int, limit: int) -> list[Row]:
        edges = self._out[rel]
        rows = [
            {"src": src, "dst": dst}
            for src in sorted(edges)
            if self._seq[src] <= max_seq
            for dst in sorted(edges[src])
            if max(edges[src][dst], self._seq[dst]) <= max_seq
        ]
        return rows[skip : skip + limit]

    def _q_neighbors(self, ids: list[str], max_seq: int) -> list[Row]:
        rows = []
        for direction, by_rel in (("out", self._out), ("in", self._in)):
            for rel, edges in by_rel.items():
                for row in self._expand(edges, ids, max_seq):
                    rows.append({"src": row["src"], "rel": rel, "direction": direction, **row})
        return rows

    def _q_shortest_path(self, src_id: str, dst_id: str, max_hops: int, max_seq: int) -> list[Row]:
        if self._seq.get(src_id, max_seq + 1) > max_seq or self._seq.get(dst_id, max_seq + 1) > max_seq:
            return []
        came_from: dict[str, tuple[str, str]] = {}  # node -> (previous node, relationship type)
        seen, frontier = {src_id}, [src_id]
        for _ in range(max_hops):
            reached = []
            for node in frontier:
                for rel in RELATIONSHIPS:
                    for edges in (self._out[rel], self._in[rel]):
                        for other, seq in edges.get(node, {}).items():
                            if other not in seen and max(seq, self._seq[other]) <= max_seq:
                                seen.add(other)
                                came_from[other] = (node, rel)
                                reached.append(other)
            if dst_id in came_from:
                ids, rels = [dst_id], []
                while ids[-1] != src_id:
                    previous, rel = came_from[ids[-1]]
                    ids.append(previous)
                    rels.append(rel)
                ids.reverse()
                rels.reverse()
                return [{"names": [name_of(node) for node in ids], "ids": ids, "rels": rels}]
            frontier = reached
        return []

    def _q_node_count(self, max_seq: int) -> list[Row]:
        counts: dict[str, int] = defaultdict(int)
        for node, seq in self._seq.items():
            if seq <= max_seq:
                counts[label_of(node)] += 1
        return [{"label": label, "count": counts[label]} for label in sorted(counts)]

    def _q_edge_count(self, max_seq: int) -> list[Row]:
        counts = {
            rel: sum(seq <= max_seq for dsts in edges.values() for seq in dsts.values())
            for rel, edges in self._out.items()
        }
        return [{"rel": rel, "count": counts[rel]} for rel in sorted(counts) if counts[rel]]

    def _q_save_snapshot(self, **record: Any) -> list[Row]:
        self._records[record["snapshot_id"]] = record
        return []

    def _q_list_snapshots(self) -> list[Row]:
        return sorted((dict(record) for record in self._records.values()), key=lambda record: record["seq"])

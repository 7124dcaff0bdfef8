"""An in-memory graph that answers the GraphStore's read queries: the test double and reference for KGQA.

In: `head|relation|tail` triples (MetaQA's kb.txt; every relation points Movie -> X). Out: `run(query_name,
params) -> list[dict]` with the rows of almquist/stores/queries.py: `find_entities_by_name` {name},
`find_entities_by_names` {names}, `entities_by_label` {label, skip, limit} -> {id, name, label};
`expand_out` / `expand_in` {ids, rel} -> {src, dst, dst_name, dst_label}, ordered by (src, dst) as there. Every
query takes `max_seq` (None: every snapshot): a triple written by batch `seq` is seen when `seq <= max_seq`.
`rel` is a MetaQA relation (`starred_actors`) or its relationship type (`STARS`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from almquist.stores.schema import METAQA_RELATIONS, label_of, node_id

Triple = tuple[str, str, str]
Row = dict[str, Any]
_REL_BY_TYPE = {rel_type: rel for rel, (rel_type, _, _) in METAQA_RELATIONS.items()}


class QueryRunner(Protocol):
    """The read half of almquist.stores.graph.GraphStore that KGQA needs."""

    def run(self, query_name: str, params: Mapping[str, Any] | None = None) -> list[Row]: ...


def read_kb(path: str | Path) -> list[Triple]:
    """kb.txt -> (head, relation, tail) triples; lines that are not three `|`-separated fields are skipped."""
    triples: list[Triple] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("|")
            if len(parts) == 3 and parts[1] in METAQA_RELATIONS:
                triples.append((parts[0], parts[1], parts[2]))
    return triples


def name_of(node: str) -> str:
    """`Person:Tom Hanks` -> "Tom Hanks"."""
    return node.partition(":")[2]


class InMemoryGraph:
    """Labelled graph in dicts; see the module docstring for the queries it answers."""

    def __init__(self, triples: Iterable[Triple] = (), seq: int = 0) -> None:
        self._seq: dict[str, int] = {}  # node id -> the batch that wrote it first
        self._by_name: dict[str, list[str]] = defaultdict(list)
        self._out: dict[str, dict[str, dict[str, int]]] = {r: defaultdict(dict) for r in METAQA_RELATIONS}
        self._in: dict[str, dict[str, dict[str, int]]] = {r: defaultdict(dict) for r in METAQA_RELATIONS}
        self.add(triples, seq)

    @classmethod
    def from_kb(cls, path: str | Path) -> InMemoryGraph:
        return cls(read_kb(path))

    def add(self, triples: Iterable[Triple], seq: int) -> None:
        """Writes one batch; a node or triple already present keeps its earlier seq."""
        for head, relation, tail in triples:
            _, src_label, dst_label = METAQA_RELATIONS[relation]
            src, dst = self._node(src_label, head, seq), self._node(dst_label, tail, seq)
            self._out[relation][src].setdefault(dst, seq)
            self._in[relation][dst].setdefault(src, seq)

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

    def run(self, query_name: str, params: Mapping[str, Any] | None = None) -> list[Row]:
        handler = getattr(self, f"_q_{query_name}", None)
        if handler is None:
            raise KeyError(f"unknown named query {query_name!r}")
        return handler(**dict(params or {}))

    def _visible(self, seq: int, max_seq: int | None) -> bool:
        return max_seq is None or seq <= max_seq

    def _q_find_entities_by_name(self, name: str, max_seq: int | None = None) -> list[Row]:
        return self._q_find_entities_by_names([name], max_seq)

    def _q_find_entities_by_names(self, names: list[str], max_seq: int | None = None) -> list[Row]:
        found = {node for name in names for node in self._by_name.get(name, ())}
        return [self._entity(node) for node in sorted(found) if self._visible(self._seq[node], max_seq)]

    def _q_entities_by_label(
        self, label: str, max_seq: int | None = None, skip: int = 0, limit: int = 100_000
    ) -> list[Row]:
        nodes = sorted(n for n, seq in self._seq.items() if label_of(n) == label and self._visible(seq, max_seq))
        return [self._entity(node) for node in nodes[skip : skip + limit]]

    def _q_expand_out(self, ids: list[str], rel: str, max_seq: int | None = None) -> list[Row]:
        return self._expand(self._out[_REL_BY_TYPE.get(rel, rel)], ids, max_seq)

    def _q_expand_in(self, ids: list[str], rel: str, max_seq: int | None = None) -> list[Row]:
        return self._expand(self._in[_REL_BY_TYPE.get(rel, rel)], ids, max_seq)

    def _entity(self, node: str) -> Row:
        return {"id": node, "name": name_of(node), "label": label_of(node)}

    def _expand(self, edges: dict[str, dict[str, int]], ids: list[str], max_seq: int | None) -> list[Row]:
        rows = []
        for src in sorted(set(ids)):
            if src not in self._seq or not self._visible(self._seq[src], max_seq):
                continue
            for dst in sorted(edges.get(src, ())):
                if self._visible(max(edges[src][dst], self._seq[dst]), max_seq):
                    rows.append({"src": src, "dst": dst, "dst_name": name_of(dst), "dst_label": label_of(dst)})
        return rows

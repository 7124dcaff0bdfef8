"""The one registry of named Cypher statements, written once in Neo4j 5's dialect.

In: a query name and its parameters. Out (`bind`): the statement text for a backend and the parameters to send.
A statement has a `ladybug` variant only where ladybug's dialect differs from Neo4j's: `label(x)` for `type(r)` and
`labels(n)`; no `:Entity` label (one table per label, so an unlabelled pattern is any entity); no list
comprehensions (`list_transform`, `properties(nodes(p), 'name')`); `[* SHORTEST 1..k]` for `shortestPath()`.

User values are always Cypher parameters. The only text ever substituted is `{{name}}` placeholders whose value is
checked against a closed set first: labels and relationship types of `schema.py` and hop bounds, which Cypher
cannot take as parameters.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from almquist.errors import InvalidArgument, NotFound
from almquist.stores.schema import METAQA_RELATIONS, NODE_LABELS, RELATIONSHIPS

Backend = Literal["ladybug", "neo4j"]
ParamKind = Literal["str", "int", "float", "str_list", "int_list", "rel", "label", "rows"]

MAX_SEQ = 2**62  # "every snapshot": the default of `max_seq`
MAX_HOPS = 6
DELETE_CHUNK = 10_000  # rows one delete statement removes, so a rollback never builds one huge transaction

_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


@dataclass(frozen=True)
class NamedQuery:
    """One statement: its Neo4j text, an optional ladybug text, its parameters and which of them are inlined."""

    name: str
    cypher: str
    params: Mapping[str, ParamKind]
    ladybug: str | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)
    inline: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    write: bool = False
    public: bool = True  # callable through KnowledgeStore.run (reads only)
    returns: tuple[str, ...] = ()
    check: Callable[[dict[str, Any]], None] | None = None  # rules across parameters

    def text(self, backend: Backend) -> str:
        return self.ladybug if backend == "ladybug" and self.ladybug is not None else self.cypher


def _neo4j_label(var: str) -> str:
    return f"[l IN labels({var}) WHERE l <> 'Entity'][0]"


_REL_NAMES = tuple(RELATIONSHIPS)
_HOPS = tuple(str(h) for h in range(1, MAX_HOPS + 1))
_SEEN = "{v}.snapshot_seq <= $max_seq"


def _seen(*names: str) -> str:
    return " AND ".join(_SEEN.format(v=n) for n in names)


def _distinct_ends(values: dict[str, Any]) -> None:
    # Neo4j's shortestPath refuses a path from a node to itself
    if values["src_id"] == values["dst_id"]:
        raise InvalidArgument("shortest_path: src_id and dst_id are the same node; give two different ids")


_QUERIES: list[NamedQuery] = [
    NamedQuery(
        "find_entities_by_name",
        f"""
MATCH (n:Entity {{name: $name}})
WHERE {_seen("n")}
RETURN n.id AS id, n.name AS name, {_neo4j_label("n")} AS label
ORDER BY id""",
        ladybug=f"""
MATCH (n)
WHERE n.name = $name AND {_seen("n")}
RETURN n.id AS id, n.name AS name, label(n) AS label
ORDER BY id""",
        params={"name": "str", "max_seq": "int"},
        returns=("id", "name", "label"),
    ),
    NamedQuery(
        "find_entities_by_names",
        f"""
MATCH (n:Entity)
WHERE n.name IN $names AND {_seen("n")}
RETURN n.id AS id, n.name AS name, {_neo4j_label("n")} AS label
ORDER BY id""",
        ladybug=f"""
MATCH (n)
WHERE n.name IN $names AND {_seen("n")}
RETURN n.id AS id, n.name AS name, label(n) AS label
ORDER BY id""",
        params={"names": "str_list", "max_seq": "int"},
        returns=("id", "name", "label"),
    ),
    NamedQuery(
        "get_entities",
        f"""
MATCH (n:Entity)
WHERE n.id IN $ids AND {_seen("n")}
RETURN n.id AS id, n.name AS name, {_neo4j_label("n")} AS label
ORDER BY id""",
        ladybug=f"""
MATCH (n)
WHERE n.id IN $ids AND {_seen("n")}
RETURN n.id AS id, n.name AS name, label(n) AS label
ORDER BY id""",
        params={"ids": "str_list", "max_seq": "int"},
        returns=("id", "name", "label"),
    ),
    NamedQuery(
        "entities_by_label",
        f"""
MATCH (n:{{{{label}}}})
WHERE {_seen("n")}
RETURN n.id AS id, n.name AS name, '{{{{label}}}}' AS label
ORDER BY id SKIP $skip LIMIT $limit""",
        params={"label": "label", "max_seq": "int", "skip": "int", "limit": "int"},
        defaults={"skip": 0, "limit": 100_000},
        inline={"label": NODE_LABELS},
        returns=("id", "name", "label"),
    ),
    NamedQuery(
        "expand_out",
        f"""
MATCH (s:Entity)-[r:{{{{rel}}}}]->(d:Entity)
WHERE s.id IN $ids AND {_seen("s", "r", "d")}
RETURN s.id AS src, d.id AS dst, d.name AS dst_name, {_neo4j_label("d")} AS dst_label
ORDER BY src, dst""",
        ladybug=f"""
MATCH (s)-[r:{{{{rel}}}}]->(d)
WHERE s.id IN $ids AND {_seen("s", "r", "d")}
RETURN s.id AS src, d.id AS dst, d.name AS dst_name, label(d) AS dst_label
ORDER BY src, dst""",
        params={"ids": "str_list", "rel": "rel", "max_seq": "int"},
        inline={"rel": _REL_NAMES},
        returns=("src", "dst", "dst_name", "dst_label"),
    ),
    NamedQuery(
        "expand_in",
        f"""
MATCH (s:Entity)<-[r:{{{{rel}}}}]-(d:Entity)
WHERE s.id IN $ids AND {_seen("s", "r", "d")}
RETURN s.id AS src, d.id AS dst, d.name AS dst_name, {_neo4j_label("d")} AS dst_label
ORDER BY src, dst""",
        ladybug=f"""
MATCH (s)<-[r:{{{{rel}}}}]-(d)
WHERE s.id IN $ids AND {_seen("s", "r", "d")}
RETURN s.id AS src, d.id AS dst, d.name AS dst_name, label(d) AS dst_label
ORDER BY src, dst""",
        params={"ids": "str_list", "rel": "rel", "max_seq": "int"},
        inline={"rel": _REL_NAMES},
        returns=("src", "dst", "dst_name", "dst_label"),
    ),
    # One source node: the key index answers `s.id = $id` where `s.id IN $ids` scans the label table (ladybug:
    # ~0.5 ms against ~3 ms), so a backend runs these per id for small frontiers. Ladybug's planner needs the
    # source's label for the index; the id carries it.
    NamedQuery(
        "expand_out_by_id",
        f"""
MATCH (s:Entity {{id: $id}})-[r:{{{{rel}}}}]->(d:Entity)
WHERE {_seen("s", "r", "d")}
RETURN s.id AS src, d.id AS dst, d.name AS dst_name, {_neo4j_label("d")} AS dst_label
ORDER BY dst""",
        ladybug=f"""
MATCH (s:{{{{label}}}} {{id: $id}})-[r:{{{{rel}}}}]->(d)
WHERE {_seen("s", "r", "d")}
RETURN s.id AS src, d.id AS dst, d.name AS dst_name, label(d) AS dst_label
ORDER BY dst""",
        params={"id": "str", "label": "label", "rel": "rel", "max_seq": "int"},
        inline={"rel": _REL_NAMES, "label": NODE_LABELS},
        public=False,
        returns=("src", "dst", "dst_name", "dst_label"),
    ),
    NamedQuery(
        "expand_in_by_id",
        f"""
MATCH (s:Entity {{id: $id}})<-[r:{{{{rel}}}}]-(d:Entity)
WHERE {_seen("s", "r", "d")}
RETURN s.id AS src, d.id AS dst, d.name AS dst_name, {_neo4j_label("d")} AS dst_label
ORDER BY dst""",
        ladybug=f"""
MATCH (s:{{{{label}}}} {{id: $id}})<-[r:{{{{rel}}}}]-(d)
WHERE {_seen("s", "r", "d")}
RETURN s.id AS src, d.id AS dst, d.name AS dst_name, label(d) AS dst_label
ORDER BY dst""",
        params={"id": "str", "label": "label", "rel": "rel", "max_seq": "int"},
        inline={"rel": _REL_NAMES, "label": NODE_LABELS},
        public=False,
        returns=("src", "dst", "dst_name", "dst_label"),
    ),
    # every edge of one type, paged: what the graph algorithms (PageRank, communities) are computed over
    NamedQuery(
        "edges_of_type",
        f"""
MATCH (s:Entity)-[r:{{{{rel}}}}]->(d:Entity)
WHERE {_seen("s", "r", "d")}
RETURN s.id AS src, d.id AS dst
ORDER BY src, dst SKIP $skip LIMIT $limit""",
        ladybug=f"""
MATCH (s)-[r:{{{{rel}}}}]->(d)
WHERE {_seen("s", "r", "d")}
RETURN s.id AS src, d.id AS dst
ORDER BY src, dst SKIP $skip LIMIT $limit""",
        params={"rel": "rel", "max_seq": "int", "skip": "int", "limit": "int"},
        defaults={"skip": 0, "limit": 100_000},
        inline={"rel": _REL_NAMES},
        returns=("src", "dst"),
    ),
    NamedQuery(
        "neighbors",
        f"""
MATCH (s:Entity)-[r]->(d:Entity)
WHERE s.id IN $ids AND {_seen("s", "r", "d")}
RETURN s.id AS src, type(r) AS rel, 'out' AS direction, d.id AS dst, d.name AS dst_name,
       {_neo4j_label("d")} AS dst_label
UNION ALL
MATCH (s:Entity)<-[r]-(d:Entity)
WHERE s.id IN $ids AND {_seen("s", "r", "d")}
RETURN s.id AS src, type(r) AS rel, 'in' AS direction, d.id AS dst, d.name AS dst_name,
       {_neo4j_label("d")} AS dst_label""",
        ladybug=f"""
MATCH (s)-[r]->(d)
WHERE s.id IN $ids AND {_seen("s", "r", "d")}
RETURN s.id AS src, label(r) AS rel, 'out' AS direction, d.id AS dst, d.name AS dst_name, label(d) AS dst_label
UNION ALL
MATCH (s)<-[r]-(d)
WHERE s.id IN $ids AND {_seen("s", "r", "d")}
RETURN s.id AS src, label(r) AS rel, 'in' AS direction, d.id AS dst, d.name AS dst_name, label(d) AS dst_label""",
        params={"ids": "str_list", "max_seq": "int"},
        returns=("src", "rel", "direction", "dst", "dst_name", "dst_label"),
    ),
    NamedQuery(
        "shortest_path",
        f"""
MATCH (a:Entity {{id: $src_id}}), (b:Entity {{id: $dst_id}})
WHERE {_seen("a", "b")}
MATCH p = shortestPath((a)-[*..{{{{max_hops}}}}]-(b))
WHERE all(n IN nodes(p) WHERE n.snapshot_seq <= $max_seq)
  AND all(r IN relationships(p) WHERE r.snapshot_seq <= $max_seq)
RETURN [n IN nodes(p) | n.name] AS names, [n IN nodes(p) | n.id] AS ids, [r IN relationships(p) | type(r)] AS rels""",
        ladybug=f"""
MATCH p = (a)-[* SHORTEST 1..{{{{max_hops}}}} (r, n | WHERE {_seen("r", "n")})]-(b)
WHERE a.id = $src_id AND b.id = $dst_id AND {_seen("a", "b")}
RETURN properties(nodes(p), 'name') AS names, properties(nodes(p), 'id') AS ids,
       list_transform(rels(p), x -> label(x)) AS rels""",
        params={"src_id": "str", "dst_id": "str", "max_hops": "int", "max_seq": "int"},
        defaults={"max_hops": 3},
        inline={"max_hops": _HOPS},
        check=_distinct_ends,
        returns=("names", "ids", "rels"),
    ),
    NamedQuery(
        "node_count",
        f"""
MATCH (n:Entity)
WHERE {_seen("n")}
RETURN {_neo4j_label("n")} AS label, count(*) AS count
ORDER BY label""",
        ladybug=f"""
MATCH (n)
WHERE label(n) <> 'KnowledgeSnapshot' AND {_seen("n")}
RETURN label(n) AS label, count(*) AS count
ORDER BY label""",
        params={"max_seq": "int"},
        returns=("label", "count"),
    ),
    NamedQuery(
        "edge_count",
        f"""
MATCH ()-[r]->()
WHERE {_seen("r")}
RETURN type(r) AS rel, count(*) AS count
ORDER BY rel""",
        ladybug=f"""
MATCH ()-[r]->()
WHERE {_seen("r")}
RETURN label(r) AS rel, count(*) AS count
ORDER BY rel""",
        params={"max_seq": "int"},
        returns=("rel", "count"),
    ),
    NamedQuery(
        "list_snapshots",
        """
MATCH (s:KnowledgeSnapshot)
RETURN s.snapshot_id AS snapshot_id, s.seq AS seq, s.source AS source, s.created_unix_s AS created_unix_s,
       s.fingerprint AS fingerprint, s.status AS status, s.done_batches AS done_batches, s.info AS info
ORDER BY seq""",
        params={},
        returns=("snapshot_id", "seq", "source", "created_unix_s", "fingerprint", "status", "done_batches", "info"),
    ),
    # ---- writes and the reads that size them: internal, reached through GraphStore's methods only ----
    NamedQuery(
        "save_snapshot",
        """
MERGE (s:KnowledgeSnapshot {snapshot_id: $snapshot_id})
SET s.seq = $seq, s.source = $source, s.created_unix_s = $created_unix_s, s.fingerprint = $fingerprint,
    s.status = $status, s.done_batches = $done_batches, s.info = $info""",
        params={
            "snapshot_id": "str",
            "seq": "int",
            "source": "str",
            "created_unix_s": "float",
            "fingerprint": "str",
            "status": "str",
            "done_batches": "int_list",
            "info": "str",
        },
        write=True,
        public=False,
    ),
    # ladybug creates where Neo4j merges: the caller drops the ids that exist within the same transaction (one
    # writer per store), and ladybug's MERGE costs about 5x its CREATE
    NamedQuery(
        "existing_nodes",
        """
UNWIND $ids AS i
MATCH (n:Entity {id: i})
RETURN n.id AS id""",
        ladybug="""
UNWIND $ids AS i
MATCH (n:{{label}} {id: i})
RETURN n.id AS id""",
        params={"ids": "str_list", "label": "label"},
        inline={"label": NODE_LABELS},
        public=False,
    ),
    NamedQuery(
        "merge_nodes",
        """
UNWIND $rows AS row
MERGE (n:Entity {id: row.id})
ON CREATE SET n:{{label}}, n.name = row.name, n.snapshot_id = $snapshot_id, n.snapshot_seq = $snapshot_seq""",
        ladybug="""
UNWIND $rows AS row
CREATE (n:{{label}} {id: row.id, name: row.name, snapshot_id: $snapshot_id, snapshot_seq: $snapshot_seq})""",
        params={"rows": "rows", "label": "label", "snapshot_id": "str", "snapshot_seq": "int"},
        inline={"label": NODE_LABELS},
        write=True,
        public=False,
    ),
    NamedQuery(
        "existing_edges",
        """
UNWIND $srcs AS s
MATCH (a:Entity {id: s})-[:{{rel}}]->(b:Entity)
RETURN a.id AS src, b.id AS dst""",
        ladybug="""
UNWIND $srcs AS s
MATCH (a:{{src_label}} {id: s})-[:{{rel}}]->(b:{{dst_label}})
RETURN a.id AS src, b.id AS dst""",
        params={"srcs": "str_list", "rel": "rel", "src_label": "label", "dst_label": "label"},
        inline={"rel": _REL_NAMES, "src_label": NODE_LABELS, "dst_label": NODE_LABELS},
        public=False,
    ),
    # two MATCH clauses, not one with a comma: ladybug plans the comma form as a cross product (60x slower)
    NamedQuery(
        "merge_edges",
        """
UNWIND $rows AS row
MATCH (a:Entity {id: row.src})
MATCH (b:Entity {id: row.dst})
MERGE (a)-[r:{{rel}}]->(b)
ON CREATE SET r.snapshot_id = $snapshot_id, r.snapshot_seq = $snapshot_seq""",
        ladybug="""
UNWIND $rows AS row
MATCH (a:{{src_label}} {id: row.src})
MATCH (b:{{dst_label}} {id: row.dst})
CREATE (a)-[r:{{rel}} {snapshot_id: $snapshot_id, snapshot_seq: $snapshot_seq}]->(b)""",
        params={
            "rows": "rows",
            "rel": "rel",
            "src_label": "label",
            "dst_label": "label",
            "snapshot_id": "str",
            "snapshot_seq": "int",
        },
        inline={"rel": _REL_NAMES, "src_label": NODE_LABELS, "dst_label": NODE_LABELS},
        write=True,
        public=False,
    ),
    NamedQuery(
        "delete_snapshot_edges",
        f"""
MATCH ()-[r:{{{{rel}}}}]->()
WHERE r.snapshot_id = $snapshot_id
WITH r LIMIT {DELETE_CHUNK}
DELETE r
RETURN count(*) AS removed""",
        params={"rel": "rel", "snapshot_id": "str"},
        inline={"rel": _REL_NAMES},
        write=True,
        public=False,
    ),
    NamedQuery(
        "delete_snapshot_nodes",
        f"""
MATCH (n:{{{{label}}}})
WHERE n.snapshot_id = $snapshot_id
WITH n LIMIT {DELETE_CHUNK}
DETACH DELETE n
RETURN count(*) AS removed""",
        params={"label": "label", "snapshot_id": "str"},
        inline={"label": NODE_LABELS},
        write=True,
        public=False,
    ),
]

QUERIES: dict[str, NamedQuery] = {q.name: q for q in _QUERIES}
PUBLIC_QUERIES: tuple[str, ...] = tuple(q.name for q in _QUERIES if q.public)


def normalize_rel(value: str) -> str:
    """A relationship type from its name (`STARS`) or its MetaQA relation (`starred_actors`)."""
    if value in RELATIONSHIPS:
        return value
    if value in METAQA_RELATIONS:
        return METAQA_RELATIONS[value][0]
    raise InvalidArgument(
        f"unknown relationship {value!r}; use one of {sorted(RELATIONSHIPS)} or a MetaQA relation "
        f"({sorted(METAQA_RELATIONS)})"
    )


def _check(query: str, name: str, kind: ParamKind, value: Any) -> Any:
    def bad(expected: str) -> InvalidArgument:
        return InvalidArgument(f"query {query!r}: parameter {name!r} must be {expected}, not {type(value).__name__}")

    if kind in ("str", "rel", "label"):
        if not isinstance(value, str):
            raise bad("a string")
        if kind == "rel":
            return normalize_rel(value)
        if kind == "label" and value not in NODE_LABELS:
            raise InvalidArgument(f"query {query!r}: unknown label {value!r}; use one of {list(NODE_LABELS)}")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad("a number")
        return float(value)
    if kind in ("str_list", "int_list"):
        item = str if kind == "str_list" else int
        if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
            raise bad(f"a list of {item.__name__}")
        if not all(isinstance(v, item) and not isinstance(v, bool) for v in value):
            raise bad(f"a list of {item.__name__}")
        return list(value)
    if kind == "rows":
        if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
            raise bad("a list of mappings")
        return value
    raise AssertionError(kind)


def bind(query_name: str, params: Mapping[str, Any] | None, backend: Backend) -> tuple[NamedQuery, str, dict[str, Any]]:
    """Checks `params` against the query's declaration; returns the query, its text for `backend`, the parameters."""
    query = QUERIES.get(query_name)
    if query is None:
        raise NotFound(f"unknown query {query_name!r}; the registry has {sorted(QUERIES)}")
    given = dict(params or {})
    unknown = sorted(set(given) - set(query.params))
    if unknown:
        raise InvalidArgument(f"query {query_name!r} takes {sorted(query.params)}; remove {unknown}")
    values: dict[str, Any] = {}
    for name, kind in query.params.items():
        if name in given and given[name] is not None:
            values[name] = _check(query_name, name, kind, given[name])
        elif name in query.defaults:
            values[name] = query.defaults[name]
        elif name == "max_seq":
            values[name] = MAX_SEQ
        else:
            raise InvalidArgument(f"query {query_name!r} needs the parameter {name!r}")
    if query.check is not None:
        query.check(values)
    text = query.text(backend)
    for name, allowed in query.inline.items():
        literal = str(values.pop(name))
        if literal not in allowed:
            raise InvalidArgument(f"query {query_name!r}: {name} must be one of {list(allowed)}, not {literal!r}")
        text = text.replace("{{" + name + "}}", literal)
    if _PLACEHOLDER.search(text):  # a placeholder without a declared inline value would reach the engine as text
        raise AssertionError(f"query {query_name!r} has undeclared placeholders: {_PLACEHOLDER.findall(text)}")
    return query, text.strip(), values

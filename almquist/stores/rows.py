"""The rows a graph backend is asked to write, checked against the schema and made unique: one place, so every
backend refuses the same bad input with the same message (InvalidArgument) before it writes anything."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from almquist.errors import InvalidArgument
from almquist.stores.schema import NODE_LABELS, RELATIONSHIPS, label_of, node_id


def unique_nodes(label: str, rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    """Node id -> {id, name} for `rows` of a known `label`; a row without a name or with a wrong id is refused."""
    if label not in NODE_LABELS:
        raise InvalidArgument(f"unknown label {label!r}; use one of {list(NODE_LABELS)}")
    unique: dict[str, dict[str, str]] = {}
    for i, row in enumerate(rows):
        name = row.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidArgument(f"{label} row {i} has no name; every node needs a non-empty string `name`")
        expected = node_id(label, name)
        given = row.get("id", expected)
        if given != expected:
            raise InvalidArgument(f"{label} row {i}: id {given!r} should be {expected!r} (`label:name`)")
        unique.setdefault(expected, {"id": expected, "name": name})
    return unique


def unique_edges(
    rel_type: str, src_label: str, dst_label: str, rows: Sequence[Mapping[str, Any]]
) -> list[dict[str, str]]:
    """The distinct {src, dst} of `rows` of a known relationship between the labels it connects."""
    pairs = RELATIONSHIPS.get(rel_type)
    if pairs is None:
        raise InvalidArgument(f"unknown relationship type {rel_type!r}; use one of {sorted(RELATIONSHIPS)}")
    if (src_label, dst_label) not in pairs:
        raise InvalidArgument(f"{rel_type} connects {list(pairs)}, not ({src_label!r}, {dst_label!r})")
    unique: dict[tuple[str, str], dict[str, str]] = {}
    for i, row in enumerate(rows):
        src, dst = row.get("src"), row.get("dst")
        if not isinstance(src, str) or not isinstance(dst, str):
            raise InvalidArgument(f"edge row {i} needs string node ids `src` and `dst`")
        if label_of(src) != src_label or label_of(dst) != dst_label:
            raise InvalidArgument(f"edge row {i}: {src!r} -> {dst!r} is not {src_label} -> {dst_label}")
        unique.setdefault((src, dst), {"src": src, "dst": dst})
    return list(unique.values())

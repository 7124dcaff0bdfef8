"""`open_graph_store(config)`: the graph backend `GraphStoreConfig.backend` names, opened and with its schema in
place (ladybug embedded by default, Neo4j by URI, or the in-memory store of tests).

Backends are imported only when opened (each pulls in its own driver), and none imports this module. A new backend
is one opener in `BACKENDS` (and its name in `GraphStoreConfig.backend`).
"""

from __future__ import annotations

from collections.abc import Callable

from almquist.config.knowledge import GraphStoreConfig
from almquist.stores.graph import GraphStore


def _ladybug(config: GraphStoreConfig) -> GraphStore:
    from almquist.stores.ladybug_store import LadybugGraphStore

    return LadybugGraphStore(config)


def _neo4j(config: GraphStoreConfig) -> GraphStore:
    from almquist.stores.neo4j_store import Neo4jGraphStore

    return Neo4jGraphStore(config)


def _memory(config: GraphStoreConfig) -> GraphStore:
    from almquist.stores.memory_store import InMemoryGraphStore

    return InMemoryGraphStore()


BACKENDS: dict[str, Callable[[GraphStoreConfig], GraphStore]] = {
    "ladybug": _ladybug,
    "neo4j": _neo4j,
    "memory": _memory,
}


def open_graph_store(config: GraphStoreConfig) -> GraphStore:
    """The configured backend, opened and with its schema in place."""
    return BACKENDS[config.backend](config)

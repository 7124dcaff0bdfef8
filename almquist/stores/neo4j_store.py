"""The server graph backend: Neo4j 5 through the official driver (`session.execute_read/execute_write`).

In: a `GraphStoreConfig` with `uri`, `user`, `password_env` (the env var holding the password) and `database`.
Every entity carries the `Entity` label besides its own, so one uniqueness constraint on `Entity.id` and one index
on `Entity.name` serve every lookup; per-label and per-type indexes on `snapshot_id` serve rollback.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from almquist.config.knowledge import GraphStoreConfig
from almquist.errors import FailedPrecondition, InvalidArgument, Unavailable
from almquist.stores.cypher_store import CypherGraphStore, Run
from almquist.stores.schema import ENTITY_LABEL, NODE_LABELS, RELATIONSHIPS, SNAPSHOT_LABEL

T = TypeVar("T")


def schema_statements() -> list[str]:
    """Constraints and indexes, idempotent (`IF NOT EXISTS`), one per transaction."""
    statements = [
        f"CREATE CONSTRAINT entity_id IF NOT EXISTS FOR (n:{ENTITY_LABEL}) REQUIRE n.id IS UNIQUE",
        f"CREATE INDEX entity_name IF NOT EXISTS FOR (n:{ENTITY_LABEL}) ON (n.name)",
        f"CREATE CONSTRAINT snapshot_id IF NOT EXISTS FOR (s:{SNAPSHOT_LABEL}) REQUIRE s.snapshot_id IS UNIQUE",
    ]
    statements += [
        f"CREATE INDEX {label.lower()}_snapshot IF NOT EXISTS FOR (n:{label}) ON (n.snapshot_id)"
        for label in NODE_LABELS
    ]
    statements += [
        f"CREATE INDEX {rel.lower()}_snapshot IF NOT EXISTS FOR ()-[r:{rel}]-() ON (r.snapshot_id)"
        for rel in RELATIONSHIPS
    ]
    return statements


def _rows(tx: Any, text: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    return tx.run(text, params).data()


class Neo4jGraphStore(CypherGraphStore):
    """`GraphStore` over a Neo4j server; `driver` is injectable (tests), otherwise built from the config."""

    backend = "neo4j"

    def __init__(self, config: GraphStoreConfig, driver: Any | None = None) -> None:
        import neo4j

        self._config = config
        if driver is None:
            try:
                driver = neo4j.GraphDatabase.driver(config.uri, auth=_auth(config))
            except ValueError as error:  # the driver's word for a URI it cannot use
                raise InvalidArgument(f"graph.uri {config.uri!r}: {error}; use e.g. neo4j://host:7687") from error
        self._driver = driver
        with self._errors():  # fails at once, where the first transaction would retry for 30 s
            self._driver.verify_connectivity()
        self.ensure_schema()

    def ensure_schema(self) -> None:
        for text in schema_statements():

            def work(run: Run, text: str = text) -> None:
                run(text, {})

            self._transaction(work)

    def _read(self, text: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        with self._errors(), self._session() as session:
            return session.execute_read(_rows, text, params)

    def _transaction(self, work: Callable[[Run], T]) -> T:
        # the driver retries the whole function on transient errors, so `work` must start from nothing each time
        def in_tx(tx: Any) -> T:
            return work(lambda text, params: _rows(tx, text, params))

        with self._errors(), self._session() as session:
            return session.execute_write(in_tx)

    def _session(self) -> Any:
        if self._config.database:
            return self._driver.session(database=self._config.database)
        return self._driver.session()

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        from neo4j.exceptions import AuthError, ServiceUnavailable

        try:
            yield
        except ServiceUnavailable as error:
            raise Unavailable(
                f"Neo4j at {self._config.uri} is unreachable ({error}); start it or set graph.uri to a running server"
            ) from error
        except AuthError as error:
            raise FailedPrecondition(
                f"Neo4j at {self._config.uri} refused user {self._config.user!r}; check the password in "
                f"${self._config.password_env}"
            ) from error

    def close(self) -> None:
        self._driver.close()


def _auth(config: GraphStoreConfig) -> tuple[str, str] | None:
    if config.password_env is None:
        return None
    password = os.environ.get(config.password_env)
    if password is None:
        raise FailedPrecondition(
            f"set the environment variable {config.password_env} to the Neo4j password of user {config.user!r} "
            "(graph.password_env names it; the secret never goes in config)"
        )
    return config.user, password

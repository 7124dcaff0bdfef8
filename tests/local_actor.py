"""`LocalActor`: a plain object standing in for a Ray actor or a deployment handle in tests, so that
`await target.method.remote(...)` calls the method directly, in this process."""

from __future__ import annotations

from typing import Any


class _Remote:
    def __init__(self, method: Any) -> None:
        self._method = method

    async def remote(self, *args: Any) -> Any:
        return self._method(*args)


class LocalActor:
    """`actor.method.remote(...)` awaited, on a plain object (a KnowledgeStore, an engine)."""

    def __init__(self, target: Any) -> None:
        self._target = target

    def __getattr__(self, name: str) -> _Remote:
        return _Remote(getattr(self._target, name))

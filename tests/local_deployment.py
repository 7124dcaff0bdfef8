"""`LocalDeployment`: a deployment class instance called like a handle, in this process, for tests of the code that
holds the handle: `await handle.method.remote(...)` and `handle.options(stream=True).method.remote(...)` (an async
iterator) call the real deployment's methods directly."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from typing import Any


class _Response:
    """What `.remote()` returns: awaitable for a plain method, async-iterable for a streaming one."""

    def __init__(self, result: Any) -> None:
        self._result = result
        self.cancelled = False

    def __await__(self) -> Any:
        async def value() -> Any:
            result = self._result
            return await result if inspect.isawaitable(result) else result

        return value().__await__()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._result.__aiter__()

    def cancel(self) -> None:
        self.cancelled = True


class _Method:
    def __init__(self, method: Any) -> None:
        self._method = method

    def remote(self, *args: Any, **kwargs: Any) -> _Response:
        return _Response(self._method(*args, **kwargs))


class LocalDeployment:
    """Wraps an instance of a deployment's class (`Deployment.func_or_class(...)`)."""

    def __init__(self, instance: Any) -> None:
        self._instance = instance

    def options(self, **_: Any) -> LocalDeployment:
        return self

    def __getattr__(self, name: str) -> _Method:
        return _Method(getattr(self._instance, name))

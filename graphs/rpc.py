"""How the gRPC ingress ends an RPC with an AlmquistError: the one place that turns errors into statuses.

`abort` sets the status and details (Serve keeps them when the exception propagates) and counts the error.
`aborting` wraps any code of an RPC (awaited handle calls, streamed ones, request decoding): an AlmquistError raised
inside it, here or in any deployment or actor downstream (Ray wraps those in its task errors), ends the RPC with
that error's status; anything else propagates and the client sees INTERNAL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

from almquist import metrics
from almquist.errors import AlmquistError, as_almquist_error

T = TypeVar("T")


def abort(grpc_context: Any, error: AlmquistError) -> NoReturn:
    error.aborted = True  # type: ignore[attr-defined]  # counted once, even when `aborting` sees it pass
    metrics.record(metrics.ERRORS, 1, code=error.code.name, where="rpc")
    if grpc_context is not None:  # None when a method is called by handle rather than through the proxy
        grpc_context.set_code(error.code)
        grpc_context.set_details(error.message)
    raise error


@contextmanager
def aborting(grpc_context: Any) -> Iterator[None]:
    """Ends the RPC with the status of an AlmquistError raised inside the block, unwrapped from Ray's errors.

    Works around `await`s and `async for ... yield` alike; cancellation and a closed stream (BaseExceptions) pass.
    """
    try:
        yield
    except Exception as error:
        if getattr(error, "aborted", False):
            raise
        ours = as_almquist_error(error)
        if ours is None:
            raise
        abort(grpc_context, ours)


async def streamed(grpc_context: Any, stream: AsyncIterator[T]) -> AsyncIterator[T]:
    """The items of a streaming handle call, under `aborting`: errors arrive while iterating, not from one await."""
    with aborting(grpc_context):
        async for item in stream:
            yield item

"""How the gRPC ingress ends an RPC with an error: the one place that turns exceptions into statuses.

`abort` sets the status and details (Serve keeps them when the exception propagates) and counts the error.
`aborting` wraps any code of an RPC (awaited handle calls, streamed ones, request decoding): an exception raised
inside it, here or in any deployment or actor downstream (Ray wraps those in its task errors), ends the RPC with a
code and a plain message (almquist.errors.public_error): an AlmquistError's own; UNAVAILABLE or RESOURCE_EXHAUSTED,
saying "retry", when a part of the server died, is restarting or is overloaded; otherwise INTERNAL with a short
reference, the traceback (pids, addresses, actor ids, paths) logged under it and never sent.
`streamed` does the same for a streaming handle call, whose errors arrive while iterating.

Whatever escapes all of these (code outside `aborting`) is still scrubbed by the proxy (almquist.proxy_guard).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

import grpc

from almquist import metrics
from almquist.errors import AlmquistError, public_error

T = TypeVar("T")


def abort(grpc_context: Any, error: AlmquistError) -> NoReturn:
    """Ends the RPC with `error`'s code and message; an INTERNAL one is first given a reference (and logged)."""
    if error.code == grpc.StatusCode.INTERNAL and "(reference " not in error.message:
        error = public_error(error)  # a reference for the client, the message to the log
    error.aborted = True  # type: ignore[attr-defined]  # counted once, even when `aborting` sees it pass
    metrics.record(metrics.ERRORS, 1, code=error.code.name, where="rpc")
    if grpc_context is not None:  # None when a method is called by handle rather than through the proxy
        grpc_context.set_code(error.code)
        grpc_context.set_details(error.message)
    raise error


@contextmanager
def aborting(grpc_context: Any, what: str = "the call") -> Iterator[None]:
    """Ends the RPC with a code and a plain message for any exception raised inside the block (see the module).

    Works around `await`s and `async for ... yield` alike; cancellation and a closed stream (BaseExceptions) pass.
    `what` names the operation in the message ("retry the search in a moment").
    """
    try:
        yield
    except Exception as error:
        if getattr(error, "aborted", False):
            raise
        abort(grpc_context, public_error(error, what))


async def streamed(grpc_context: Any, stream: AsyncIterator[T], what: str = "the call") -> AsyncIterator[T]:
    """The items of a streaming handle call, under `aborting`: errors arrive while iterating, not from one await."""
    with aborting(grpc_context, what):
        async for item in stream:
            yield item

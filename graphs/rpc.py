"""How the gRPC ingress ends an RPC with an AlmquistError: one place for every service it serves.

`abort` sets the status and details (Serve keeps them when the exception propagates) and counts the error;
`call_or_abort` awaits a deployment call and turns an AlmquistError raised anywhere downstream into the RPC's
status, letting anything else propagate as INTERNAL.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, NoReturn

from almquist import metrics
from almquist.errors import AlmquistError, as_almquist_error


def abort(grpc_context: Any, error: AlmquistError) -> NoReturn:
    metrics.record(metrics.ERRORS, 1, code=error.code.name, where="rpc")
    if grpc_context is not None:  # None when a method is called by handle rather than through the proxy
        grpc_context.set_code(error.code)
        grpc_context.set_details(error.message)
    raise error


async def call_or_abort(grpc_context: Any, call: Awaitable[Any]) -> Any:
    try:
        return await call
    except Exception as error:
        ours = as_almquist_error(error)
        if ours is None:
            raise
        abort(grpc_context, ours)

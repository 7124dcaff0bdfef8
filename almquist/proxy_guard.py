"""The door of Serve's gRPC proxy: message size limits, corrupt request bytes, and errors that tell nothing away.

Listed first in a profile's `grpc_options.grpc_servicer_functions` (`almquist.proxy_guard.guard_server`), it runs in
Ray Serve's proxy before the services are registered and wraps every method handler the proxy makes for them. Ray
Serve 2.60's proxy (ray/serve/_private/grpc_util.py, proxy.py) keeps each method's request deserializer (the
generated `Message.FromString`), parses the request itself and pickles it to the ingress replica; it has no per-method
hook and no interceptors, so this is the earliest place a request can be judged:

- Size: each request message's raw bytes are compared with its RPC's limit (almquist.limits.RPC_LIMITS) before they
  are parsed or sent on; a client stream's messages are also summed against the stream's total. Over a limit:
  RESOURCE_EXHAUSTED, as gRPC itself answers for a message over its receive limit. (The proxy's gRPC server refuses
  anything over RAY_SERVE_GRPC_MAX_MESSAGE_SIZE before buffering it: set it to almquist.limits.GLOBAL_MAX_BYTES
  where Ray starts; a warning is logged here when it is larger.)
- Corrupt bytes: a request that does not parse as its message answers INVALID_ARGUMENT with a plain message (gRPC
  would answer UNKNOWN "Unexpected <class DecodeError>...").
- Errors: a call that ends INTERNAL or UNKNOWN without an Almquist reference in its details (an exception that
  escaped the services' `graphs.rpc.aborting`, which Serve reports with its whole traceback: pids, addresses, actor
  ids, paths) is given a plain message and a reference instead, and the details go to the proxy's log under that
  reference; Ray's dead or unavailable actors answer UNAVAILABLE (retryable). Serve's back-pressure refusal
  (RESOURCE_EXHAUSTED) gets a plain "busy, retry" message.

The wrapped handlers add one `isinstance` check per request message and one status check per call.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from almquist.errors import RETRYABLE_RAY_ERRORS, RETRYABLE_RAY_MESSAGES, new_reference
from almquist.limits import GLOBAL_MAX_BYTES, PROXY_ENV, MessageLimit, human_bytes, limit_for
from almquist.quotas import RETRY_AFTER

logger = logging.getLogger("ray.serve")  # the proxy's own log file

_CODES = {code.value[0]: code for code in grpc.StatusCode}
BUSY = "the server is busy (too many calls are waiting): retry in a moment"


class Refused:
    """What the guarded deserializer returns for a request it will not pass on: the status to answer with."""

    __slots__ = ("code", "message")

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        self.code = code
        self.message = message


def guard_server(servicer: Any, server: Any) -> None:
    """A `grpc_servicer_functions` entry (listed before the services): guard every handler registered after it."""
    if getattr(server, "_almquist_guarded", False):
        return
    override = getattr(server, "_override_method_handler", None)
    if override is None:  # Ray Serve changed how its proxy builds handlers: refuse to serve unguarded
        raise TypeError(
            "almquist.proxy_guard: Ray Serve's gRPC server has no _override_method_handler to wrap "
            f"({type(server).__name__}); message limits and error scrubbing cannot be installed"
        )

    def guarded(service_method: str, method_handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        return guard_handler(service_method, override(service_method, method_handler))

    server._override_method_handler = guarded
    server._almquist_guarded = True
    _check_global_cap()


def _check_global_cap() -> None:
    try:
        from ray.serve._private.constants import RAY_SERVE_GRPC_MAX_MESSAGE_SIZE as cap
    except ImportError:  # not in a Ray process (a test building handlers by hand)
        return
    if cap > GLOBAL_MAX_BYTES:
        name, value = next(iter(PROXY_ENV.items()))
        logger.warning(
            "the gRPC proxy reads messages up to %s before their per-RPC limit is checked: start Ray with %s=%s",
            human_bytes(cap),
            name,
            value,
        )


def guard_handler(service_method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """`handler` (the proxy's, for `service_method`) with its requests checked and its errors scrubbed."""
    limit = limit_for(service_method)
    rpc = service_method.rsplit("/", 1)[-1]
    parse = handler.request_deserializer
    descriptor = getattr(getattr(parse, "__self__", None), "DESCRIPTOR", None)
    message_name = descriptor.full_name if descriptor is not None else f"{rpc} request"

    def deserialize(raw: bytes) -> Any:
        if len(raw) > limit.max_bytes:
            return Refused(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the {message_name} is {len(raw):,} bytes; {rpc} accepts at most {human_bytes(limit.max_bytes)} "
                "per message",
            )
        if parse is None:
            return raw
        try:
            return parse(raw)
        except Exception:
            return Refused(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the request is not a valid {message_name}: its bytes do not parse as that message",
            )

    return handler._replace(  # type: ignore[attr-defined]  # grpc's handlers are namedtuples
        request_deserializer=deserialize,
        unary_unary=_unary_unary(handler.unary_unary, rpc),
        unary_stream=_unary_stream(handler.unary_stream, rpc),
        stream_unary=_stream_unary(handler.stream_unary, rpc, limit),
        stream_stream=_stream_stream(handler.stream_stream, rpc, limit),
    )


def _unary_unary(behavior: Callable | None, rpc: str) -> Callable | None:
    if behavior is None:
        return None

    async def unary_unary(request: Any, context: Any) -> Any:
        if isinstance(request, Refused):
            await context.abort(request.code, request.message)
        try:
            response = await behavior(request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await _fail(context, rpc, error)
        scrub(context, rpc)
        return response

    return unary_unary


def _unary_stream(behavior: Callable | None, rpc: str) -> Callable | None:
    if behavior is None:
        return None

    async def unary_stream(request: Any, context: Any) -> AsyncIterator[Any]:
        if isinstance(request, Refused):
            await context.abort(request.code, request.message)
        try:
            async for response in behavior(request, context):
                yield response
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await _fail(context, rpc, error)
        scrub(context, rpc)

    return unary_stream


def _stream_unary(behavior: Callable | None, rpc: str, limit: MessageLimit) -> Callable | None:
    if behavior is None:
        return None

    async def stream_unary(requests: Any, context: Any) -> Any:
        try:
            response = await behavior(checked(requests, context, rpc, limit), context)
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await _fail(context, rpc, error)
        scrub(context, rpc)
        return response

    return stream_unary


def _stream_stream(behavior: Callable | None, rpc: str, limit: MessageLimit) -> Callable | None:
    if behavior is None:
        return None

    async def stream_stream(requests: Any, context: Any) -> AsyncIterator[Any]:
        try:
            async for response in behavior(checked(requests, context, rpc, limit), context):
                yield response
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await _fail(context, rpc, error)
        scrub(context, rpc)

    return stream_stream


async def checked(requests: AsyncIterator[Any], context: Any, rpc: str, limit: MessageLimit) -> AsyncIterator[Any]:
    """A client stream's messages, ending the call at the first refused one or when the stream's total is over."""
    total = 0
    async for request in requests:
        if isinstance(request, Refused):
            await context.abort(request.code, request.message)
        if limit.max_stream_bytes is not None:
            total += request.ByteSize()
            if total > limit.max_stream_bytes:
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"the {rpc} stream sent more than {human_bytes(limit.max_stream_bytes)} in all: "
                    "send the rest in another call",
                )
        yield request


def _code(context: Any) -> grpc.StatusCode | None:
    code = context.code()
    if code is None or isinstance(code, grpc.StatusCode):
        return code
    return _CODES.get(int(code))


def scrub(context: Any, rpc: str) -> None:
    """Replaces details that would tell internals away (see the module); an Almquist reference is kept as it is."""
    code = _code(context)
    details = context.details() or ""
    if isinstance(details, bytes):
        details = details.decode(errors="replace")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        # Serve's proxy drops the replica's trailing metadata when a call fails, so the `retry-after` a quota
        # refusal asks for is set here, from the message that says it ("try again in N s")
        wait = re.search(r"try again in (\d+) s", details)
        context.set_trailing_metadata(((RETRY_AFTER, wait.group(1) if wait else "1"),))
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and details.startswith("Request dropped due to backpressure"):
        context.set_details(BUSY)
        return
    if code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN) or "(reference " in details:
        return
    reference = new_reference()
    if any(name in details for name in (*RETRYABLE_RAY_ERRORS, *RETRYABLE_RAY_MESSAGES)):
        logger.warning("[ref %s] %s failed: a part of the server is unavailable: %s", reference, rpc, details)
        context.set_code(grpc.StatusCode.UNAVAILABLE)
        context.set_details(
            f"a part of the server stopped or is restarting: retry {rpc} in a moment (reference {reference})"
        )
        return
    logger.error("[ref %s] %s failed: %s", reference, rpc, details)
    context.set_code(grpc.StatusCode.INTERNAL)
    context.set_details(f"{rpc} failed on the server (reference {reference}); the server's log has the details")


async def _fail(context: Any, rpc: str, error: Exception) -> None:
    """An exception in the proxy's own handler (gRPC would answer UNKNOWN with its repr)."""
    reference = new_reference()
    logger.error("[ref %s] %s failed in the proxy", reference, rpc, exc_info=error)
    await context.abort(
        grpc.StatusCode.INTERNAL,
        f"{rpc} failed on the server (reference {reference}); the server's log has the details",
    )

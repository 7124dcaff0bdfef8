"""Errors that carry their gRPC status code, so every layer reports bad input the same way.

A deployment raises one of these; the gRPC ingress turns it into a status (`grpc_context.set_code`) or an
in-band `ErrorEvent`, and the replica keeps serving.
"""

from __future__ import annotations

import grpc


class AlmquistError(Exception):
    """Base error: a message that says what was wrong and what to change, plus a gRPC status code."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __reduce__(self):  # keep the subclass (and so the code) across Ray's pickling
        return (type(self), (self.message,))


class InvalidArgument(AlmquistError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(AlmquistError):
    code = grpc.StatusCode.NOT_FOUND


class FailedPrecondition(AlmquistError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(AlmquistError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(AlmquistError):
    code = grpc.StatusCode.UNAVAILABLE


class Unimplemented(AlmquistError):
    code = grpc.StatusCode.UNIMPLEMENTED


def status_code_of(error: BaseException) -> grpc.StatusCode:
    """The gRPC status for an exception, unwrapping Ray's task errors to reach an AlmquistError."""
    cause = getattr(error, "cause", None)  # ray.exceptions.RayTaskError keeps the user's exception here
    if isinstance(cause, AlmquistError):
        return cause.code
    if isinstance(error, AlmquistError):
        return error.code
    return grpc.StatusCode.INTERNAL


def unwrap(error: BaseException) -> BaseException:
    """The user exception inside a Ray task error, or the error itself."""
    cause = getattr(error, "cause", None)
    return cause if isinstance(cause, BaseException) else error

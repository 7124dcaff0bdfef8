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


class Unauthenticated(AlmquistError):
    """No credential, or one that is unknown, revoked or expired."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(AlmquistError):
    """A known identity whose role does not allow the call (never used to hide another's data: that is NotFound)."""

    code = grpc.StatusCode.PERMISSION_DENIED


def status_code_of(error: BaseException) -> grpc.StatusCode:
    """The gRPC status for an exception, unwrapping Ray's task errors to reach an AlmquistError."""
    cause = getattr(error, "cause", None)  # ray.exceptions.RayTaskError keeps the user's exception here
    if isinstance(cause, AlmquistError):
        return cause.code
    if isinstance(error, AlmquistError):
        return error.code
    return grpc.StatusCode.INTERNAL


def unwrap(error: BaseException) -> BaseException:
    """The user exception inside (possibly nested) Ray task errors, or the error itself."""
    for _ in range(8):  # a call through several deployments/actors nests one RayTaskError per hop
        cause = getattr(error, "cause", None)
        if not isinstance(cause, BaseException):
            break
        error = cause
    return error


def as_almquist_error(error: BaseException) -> AlmquistError | None:
    """A plain AlmquistError (the right subclass, its message) for an error raised anywhere downstream, else None.

    Ray re-raises a remote exception as a class deriving from both RayTaskError and the original class; that
    class cannot be constructed or pickled again, so rebuild the original from its module's own subclass.
    """
    cause = unwrap(error)
    if not isinstance(cause, AlmquistError):
        return None
    own = next(c for c in type(cause).__mro__ if issubclass(c, AlmquistError) and c.__module__ == __name__)
    return own(getattr(cause, "message", None) or str(cause))

"""Errors that carry their gRPC status code, so every layer reports bad input the same way.

A deployment raises one of these; the gRPC ingress turns it into a status (`grpc_context.set_code`) or an
in-band `ErrorEvent`, and the replica keeps serving.

Any other exception is told to a client by `public_error`: a plain message with a short reference, the traceback
kept in the server's log under that reference (INTERNAL), or UNAVAILABLE / RESOURCE_EXHAUSTED / CANCELLED where
Ray says a part died or is restarting, is overloaded, or the call was cancelled (retryable, and the message says
so). Ids that name a user's data (session ids) are logged through `log_id`, a short hash, never as they are.
"""

from __future__ import annotations

import hashlib
import logging
import uuid

import grpc

logger = logging.getLogger("ray.serve")  # in a replica or proxy, Ray Serve's log file of that process


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


class Cancelled(AlmquistError):
    code = grpc.StatusCode.CANCELLED


class Internal(AlmquistError):
    """A failure the client cannot fix: its message is plain and names the reference the log keeps it under."""

    code = grpc.StatusCode.INTERNAL


def log_id(value: object) -> str:
    """A short, stable stand-in for an id in logs (a session id, a user id): the first 12 hex digits of its sha256.

    The same id always logs the same way (a log can be searched for it: `log_id(session_id)`), and the log does not
    hold the id itself, which is all a caller needs to resume another user's session.
    """
    return hashlib.sha256(str(value).encode()).hexdigest()[:12]


def new_reference() -> str:
    """A short id for one failure, told to the client and logged beside the details."""
    return uuid.uuid4().hex[:12]


# Ray's exceptions by class name (no Ray import here: the client and CLI use this module too).
# A part of the server died, is restarting or cannot be reached: the same call may succeed later.
RETRYABLE_RAY_ERRORS = {
    "RayActorError",
    "ActorDiedError",
    "ActorUnavailableError",
    "ActorUnschedulableError",
    "WorkerCrashedError",
    "NodeDiedError",
    "LocalRayletDiedError",
    "OwnerDiedError",
    "ObjectLostError",
    "ObjectFetchTimedOutError",
    "ObjectReconstructionFailedError",
    "DeploymentUnavailableError",
    "ReplicaUnavailableError",
}
# What Ray says when an actor died under a call, where only its message reaches us (Serve's proxy reports a dead
# ingress replica by the message alone: "The actor died unexpectedly before finishing this task ...")
RETRYABLE_RAY_MESSAGES = ("The actor died unexpectedly", "The actor is dead", "actor died unexpectedly")
_OVERLOADED = {"BackPressureError"}  # a deployment's queue is full (max_queued_requests)
_CANCELLED = {"TaskCancelledError", "RequestCancelledError"}


def _ray_kind(error: BaseException, names: set[str]) -> bool:
    return any(c.__name__ in names and c.__module__.startswith("ray.") for c in type(error).__mro__)


def public_error(error: BaseException, what: str = "the call") -> AlmquistError:
    """What a client is told about `error`, raised anywhere downstream: a code and a plain message, nothing else.

    An AlmquistError keeps its class and message (except INTERNAL ones, which get a reference like any other failure).
    Ray's dead/restarting actors and unavailable deployments answer UNAVAILABLE, a full queue RESOURCE_EXHAUSTED
    (both: "retry"), a cancelled task CANCELLED. Anything else is INTERNAL with a reference; the traceback, which
    names pids, addresses, actor ids and paths, goes to the server's log under that reference.
    """
    ours = as_almquist_error(error)
    if ours is not None and ours.code != grpc.StatusCode.INTERNAL:
        return ours
    reference = new_reference()
    layers = [error, *_causes(error)]
    if any(_ray_kind(e, _OVERLOADED) for e in layers):
        logger.warning("[ref %s] %s refused: a deployment's queue is full: %s", reference, what, error)
        return ResourceExhausted(
            f"the server is busy (a queue is full): retry {what} in a moment (reference {reference})"
        )
    if any(_ray_kind(e, RETRYABLE_RAY_ERRORS) for e in layers):
        logger.warning("[ref %s] %s failed: a part of the server is unavailable", reference, what, exc_info=error)
        return Unavailable(
            f"a part of the server stopped or is restarting: retry {what} in a moment (reference {reference})"
        )
    if any(_ray_kind(e, _CANCELLED) for e in layers):
        return Cancelled(f"{what} was cancelled")
    logger.error("[ref %s] %s failed", reference, what, exc_info=error)
    return Internal(f"{what} failed on the server (reference {reference}); the server's log has the details")


def _causes(error: BaseException) -> list[BaseException]:
    """The exceptions nested in Ray's task errors (`.cause`), outermost first."""
    found = []
    for _ in range(8):
        cause = getattr(error, "cause", None)
        if not isinstance(cause, BaseException):
            break
        found.append(cause)
        error = cause
    return found


class Unauthenticated(AlmquistError):
    """No credential, or one that is unknown, revoked or expired."""

    code = grpc.StatusCode.UNAUTHENTICATED


class DeadlineExceeded(AlmquistError):
    """A stream idle past its limit, or a wait that ran out."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Aborted(AlmquistError):
    """The call lost a race it cannot win by waiting (another stream took over its session's lease)."""

    code = grpc.StatusCode.ABORTED


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

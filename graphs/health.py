"""The standard `grpc.health.v1.Health` service (grpcio-health-checking's protos), for load balancers and tools.

In: `HealthCheckRequest`s naming a service ("" for the whole server, or a full service name such as
`almquist.v1.Conversation`). Out: SERVING while the probe says the application's deployments answer, else
NOT_SERVING; a name this server does not serve is NOT_FOUND for `Check` and SERVICE_UNKNOWN in `Watch`, as the
health protocol says. Every known name shares the one status: the services are all answered by the same
application. Served by the single gRPC ingress (graphs/ingress.py), so it is routed like every other RPC: with
several Serve applications, the caller names one in the `application` metadata (README, "gRPC for tools").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeAlias

from grpc_health.v1 import health_pb2
from ray import serve

from almquist.errors import NotFound
from graphs.rpc import abort

logger = logging.getLogger(__name__)

Probe: TypeAlias = Callable[[], Awaitable[bool]]
Status: TypeAlias = health_pb2.HealthCheckResponse.ServingStatus
SERVING: Status = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING: Status = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN: Status = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
FAILED_DEPLOYMENT = {"UNHEALTHY", "DEPLOY_FAILED"}


def application_serving(app_name: str | None = None) -> Probe:
    """A probe: does every deployment of `app_name` (default: the application of the calling replica) have a
    running replica, none unhealthy or failed? Asks Serve's controller (`serve.status()`, which blocks, so in a
    thread); the controller health-checks each replica, so a running replica is one that answers."""

    async def probe() -> bool:
        name = app_name or serve.get_replica_context().app_name
        application = (await asyncio.to_thread(serve.status)).applications.get(name)
        if application is None or not application.deployments:
            return False
        for deployment in application.deployments.values():
            running = sum(count for state, count in deployment.replica_states.items() if state == "RUNNING")
            if running == 0 or deployment.status in FAILED_DEPLOYMENT:
                return False
        return True

    return probe


class HealthService:
    """gRPC methods of `grpc.health.v1.Health`: Check, Watch (server streaming) and List.

    `services`: the full names this server serves ("" is always known). `probe`: whether the deployments behind
    them answer. `watch_interval_s`: how often a `Watch` stream asks the probe again (it sends only changes)."""

    def __init__(self, services: Iterable[str], probe: Probe, watch_interval_s: float = 5.0) -> None:
        self._services = frozenset(["", *services])
        self._probe = probe
        self._watch_interval_s = watch_interval_s

    async def _status(self) -> Status:
        try:
            return SERVING if await self._probe() else NOT_SERVING
        except Exception:  # the controller unreachable, say: the server cannot vouch for its deployments
            logger.warning("health probe failed", exc_info=True)
            return NOT_SERVING

    async def Check(
        self, request: health_pb2.HealthCheckRequest, grpc_context: Any = None
    ) -> health_pb2.HealthCheckResponse:
        if request.service not in self._services:
            abort(grpc_context, NotFound(f"unknown service {request.service!r}; known: {sorted(self._services)}"))
        return health_pb2.HealthCheckResponse(status=await self._status())

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, grpc_context: Any = None
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        """The current status at once, then each change, until the client leaves (Serve cancels the stream)."""
        known = request.service in self._services
        last: Status | None = None
        while True:
            status = await self._status() if known else SERVICE_UNKNOWN
            if status != last:
                yield health_pb2.HealthCheckResponse(status=status)
                last = status
            await asyncio.sleep(self._watch_interval_s)

    async def List(
        self, request: health_pb2.HealthListRequest, grpc_context: Any = None
    ) -> health_pb2.HealthListResponse:
        status = await self._status()
        return health_pb2.HealthListResponse(
            statuses={name: health_pb2.HealthCheckResponse(status=status) for name in sorted(self._services)}
        )

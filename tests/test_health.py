"""The Health service and the ingress's RPC table, without Serve: `graphs/health.py` with a probe we set, and
`graphs.ingress.rpc_methods` (the proxy routes by method name alone, so two services may not share one)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TypeAlias
from unittest import mock

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health_pb2

from almquist.errors import NotFound
from graphs import ingress
from graphs.health import HealthService

Response: TypeAlias = health_pb2.HealthCheckResponse
SERVICES = ["almquist.v1.Conversation", "almquist.v1.Knowledge", "almquist.v1.Media", "almquist.v1.Account"]


class Probe:
    """Answers what `serving` says; counts its calls."""

    def __init__(self, serving: bool = True) -> None:
        self.serving = serving
        self.calls = 0

    async def __call__(self) -> bool:
        self.calls += 1
        return self.serving


def check(service: HealthService, name: str) -> Response:
    return asyncio.run(service.Check(health_pb2.HealthCheckRequest(service=name)))


@pytest.mark.parametrize("name", ["", *SERVICES])
def test_check_knows_the_server_and_each_service(name):
    assert check(HealthService(SERVICES, Probe(True)), name).status == Response.SERVING
    assert check(HealthService(SERVICES, Probe(False)), name).status == Response.NOT_SERVING


def test_check_of_an_unknown_service_is_not_found():
    context = mock.Mock()
    with pytest.raises(NotFound):
        asyncio.run(HealthService(SERVICES, Probe()).Check(health_pb2.HealthCheckRequest(service="nope.V1"), context))
    context.set_code.assert_called_once_with(grpc.StatusCode.NOT_FOUND)


def test_a_failing_probe_is_not_serving():
    async def broken() -> bool:
        raise ConnectionError("controller gone")

    assert check(HealthService(SERVICES, broken), "").status == Response.NOT_SERVING


async def first(stream: AsyncIterator[Response], count: int) -> list[int]:
    statuses = []
    async for response in stream:
        statuses.append(response.status)
        if len(statuses) == count:
            break
    await stream.aclose()  # type: ignore[attr-defined]
    return statuses


def test_watch_sends_the_status_then_only_its_changes():
    probe = Probe(True)
    service = HealthService(SERVICES, probe, watch_interval_s=0.01)

    async def run() -> list[int]:
        stream = service.Watch(health_pb2.HealthCheckRequest(service="almquist.v1.Media"))
        statuses = [(await anext(stream)).status]
        probe.serving = False
        statuses.append((await anext(stream)).status)
        probe.serving = True
        statuses += await first(stream, 1)
        return statuses

    assert asyncio.run(run()) == [Response.SERVING, Response.NOT_SERVING, Response.SERVING]


def test_watch_of_an_unknown_service_says_so_and_keeps_the_stream():
    probe = Probe()
    service = HealthService(SERVICES, probe, watch_interval_s=0.01)
    stream = service.Watch(health_pb2.HealthCheckRequest(service="nope.V1"))
    assert asyncio.run(first(stream, 1)) == [Response.SERVICE_UNKNOWN]
    assert probe.calls == 0


def test_list_gives_every_known_name():
    response = asyncio.run(HealthService(SERVICES, Probe()).List(health_pb2.HealthListRequest()))
    assert sorted(response.statuses) == sorted(["", *SERVICES])
    assert {r.status for r in response.statuses.values()} == {Response.SERVING}


def test_the_ingress_serves_health_beside_the_almquist_services():
    names = ingress.service_names()
    assert names == [*SERVICES, "grpc.health.v1.Health"]
    methods = ingress.rpc_methods({name: mock.Mock() for name in names})
    assert {"Check", "Watch", "List", "Ask", "Query", "Embed"} <= set(methods)


def other_service(method: str) -> descriptor_pb2.ServiceDescriptorProto:
    """`test.Other` with one RPC named `method`, in a pool of its own."""
    file = descriptor_pb2.FileDescriptorProto(name="other.proto", package="test", syntax="proto3")
    file.message_type.add(name="Empty")
    file.service.add(name="Other").method.add(name=method, input_type=".test.Empty", output_type=".test.Empty")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return pool.FindServiceByName("test.Other")


def test_rpc_methods_rejects_two_services_with_one_method_name(monkeypatch):
    monkeypatch.setattr(ingress, "SERVICES", (*ingress.SERVICES, other_service("Check")))
    services = {d.full_name: mock.Mock() for d in ingress.SERVICES}
    with pytest.raises(TypeError, match="two gRPC services define Check"):
        ingress.rpc_methods(services)


def test_rpc_methods_rejects_an_unimplemented_rpc(monkeypatch):
    monkeypatch.setattr(ingress, "SERVICES", (other_service("Fresh"),))
    with pytest.raises(TypeError, match=r"does not implement test\.Other\.Fresh"):
        ingress.rpc_methods({"test.Other": object()})

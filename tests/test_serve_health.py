"""Tools' view of the deployed local profile through Serve's gRPC proxy: the standard health service
(`grpc.health.v1.Health`, answered by the conversation ingress) and server reflection (answered by the proxy)."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

pytestmark = pytest.mark.serve
METADATA = (("application", "conversation"),)
SERVING = health_pb2.HealthCheckResponse.SERVING


@pytest.fixture(scope="module")
def channel(serve_stack):
    with grpc.insecure_channel(serve_stack.target) as channel:
        yield channel


@pytest.fixture(scope="module")
def health(channel):
    return health_pb2_grpc.HealthStub(channel)


@pytest.mark.parametrize("service", ["", "almquist.v1.Conversation", "almquist.v1.Knowledge", "almquist.v1.Media"])
def test_check_says_serving(health, service):
    response = health.Check(health_pb2.HealthCheckRequest(service=service), metadata=METADATA, timeout=60)
    assert response.status == SERVING


def test_check_of_an_unknown_service_is_not_found(health):
    with pytest.raises(grpc.RpcError) as caught:
        health.Check(health_pb2.HealthCheckRequest(service="almquist.v1.Nope"), metadata=METADATA, timeout=60)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "almquist.v1.Nope" in caught.value.details()


def test_watch_sends_serving_first(health):
    stream = health.Watch(health_pb2.HealthCheckRequest(service=""), metadata=METADATA, timeout=60)
    try:
        assert next(stream).status == SERVING
    finally:
        stream.cancel()  # the client leaves; the ingress's stream ends with it


def test_list_names_every_service(health):
    response = health.List(health_pb2.HealthListRequest(), metadata=METADATA, timeout=60)
    assert {"", "almquist.v1.Conversation", "grpc.health.v1.Health"} <= set(response.statuses)


def test_a_health_client_without_metadata_must_name_the_application(health):
    """The local profile has two Serve applications (conversation, avatar_web): Serve's proxy routes a call with
    no `application` metadata only when there is a single one, so a plain health client gets NOT_FOUND."""
    with pytest.raises(grpc.RpcError) as caught:
        health.Check(health_pb2.HealthCheckRequest(service=""), timeout=60)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "Application metadata not set" in caught.value.details()


def test_reflection_lists_the_services_and_resolves_a_method(channel):
    """Server reflection runs in the proxy itself: no metadata needed."""
    database = ProtoReflectionDescriptorDatabase(channel)
    services = set(database.get_services())
    expected = {"almquist.v1.Conversation", "almquist.v1.Knowledge", "almquist.v1.Media", "grpc.health.v1.Health"}
    assert expected <= services
    ask = DescriptorPool(database).FindServiceByName("almquist.v1.Conversation").methods_by_name["Ask"]
    assert ask.input_type.full_name == "almquist.v1.AskRequest"
    assert "text" in ask.input_type.fields_by_name

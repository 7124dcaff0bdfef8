"""The Knowledge gRPC service on the deployed local profile (served by the conversation ingress).

These check the service's wiring and its answers while nothing is committed; tests/test_serve_grounded.py loads a
MetaQA slice into the same stack and rolls it back when it is done (its snapshots stay listed, as rolled back).
"""

from __future__ import annotations

import grpc
import pytest

from almquist.client import call_metadata
from almquist.v1 import knowledge_pb2, knowledge_pb2_grpc

pytestmark = pytest.mark.serve


@pytest.fixture(scope="module")
def knowledge(serve_stack):
    channel = grpc.insecure_channel(serve_stack.target)
    yield knowledge_pb2_grpc.KnowledgeStub(channel)
    channel.close()


def test_snapshots_of_an_empty_knowledge_base(knowledge):
    response = knowledge.ListSnapshots(knowledge_pb2.ListSnapshotsRequest(), metadata=call_metadata(), timeout=120)
    assert [s.snapshot_id for s in response.snapshots if s.status != "rolled_back"] == []


def test_query_before_loading_says_what_to_run(knowledge):
    with pytest.raises(grpc.RpcError) as caught:
        knowledge.Query(knowledge_pb2.KnowledgeQuery(question="who directed [Inception]"), metadata=call_metadata())
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "almquist kb" in caught.value.details()


@pytest.mark.parametrize(
    ("call", "request_message", "code"),
    [
        ("Query", knowledge_pb2.KnowledgeQuery(question=""), grpc.StatusCode.INVALID_ARGUMENT),
        ("Query", knowledge_pb2.KnowledgeQuery(question="x" * 5000), grpc.StatusCode.INVALID_ARGUMENT),
        ("Search", knowledge_pb2.SearchRequest(text="  "), grpc.StatusCode.INVALID_ARGUMENT),
        ("Rollback", knowledge_pb2.RollbackRequest(snapshot_id="s999999-nope"), grpc.StatusCode.NOT_FOUND),
    ],
)
def test_bad_knowledge_requests(knowledge, call, request_message, code):
    with pytest.raises(grpc.RpcError) as caught:
        getattr(knowledge, call)(request_message, metadata=call_metadata(), timeout=120)
    assert caught.value.code() == code, caught.value.details()

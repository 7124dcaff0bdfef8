"""The Knowledge service's graph tools (Influential, Community, ShortestPath) on the deployed local profile.

The session's knowledge base has nothing committed here (tests/test_serve_grounded.py rolls back all it loads), so
these check the wiring through ingress -> GraphRAG (which computes) -> KnowledgeStore actor (which serves the rows)
and the status of every refusal: an empty knowledge base is FAILED_PRECONDITION with what to run, bad arguments
INVALID_ARGUMENT. Results over a loaded graph are checked in tests/test_graph_algorithms.py (GraphRAG's GraphTools
over a KnowledgeStore and over the real actor, GraphRAG's methods, the ingress's messages).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from almquist.client import Client
from almquist.v1 import knowledge_pb2

pytestmark = pytest.mark.serve


@pytest.fixture(scope="module")
def client(serve_stack):
    with Client(serve_stack.target, timeout_s=120) as client:
        yield client


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.influential(),
        lambda c: c.community("Person:Tom Hanks"),
        lambda c: c.community(),
        lambda c: c.shortest_path("Person:Tom Hanks", "Movie:Inception", max_hops=2),
    ],
    ids=["influential", "community", "communities", "path"],
)
def test_graph_tools_on_an_empty_knowledge_base_say_what_to_run(client, call):
    with pytest.raises(grpc.RpcError) as caught:
        call(client)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION, caught.value.details()
    assert "knowledge base is empty" in caught.value.details() and "almquist kb metaqa" in caught.value.details()


@pytest.mark.parametrize(
    ("call", "request_message", "detail"),
    [
        ("ShortestPath", knowledge_pb2.ShortestPathRequest(src_id="Person:Tom Hanks"), "give both src_id and dst_id"),
        ("Influential", knowledge_pb2.InfluentialRequest(snapshot_id="s999999-nope"), "unknown snapshot"),
        ("Community", knowledge_pb2.CommunityRequest(snapshot_id="s999999-nope"), "unknown snapshot"),
        # checked before the store's state: INVALID_ARGUMENT even though the knowledge base is empty
        ("Influential", knowledge_pb2.InfluentialRequest(limit=5000), "limit must be an integer from 1 to 1000"),
        ("Influential", knowledge_pb2.InfluentialRequest(relations=["LIKES"]), "unknown relationship 'LIKES'"),
        ("Community", knowledge_pb2.CommunityRequest(entity_id="Person:X", label="Studio"), "unknown label"),
        (
            "ShortestPath",
            knowledge_pb2.ShortestPathRequest(src_id="Person:A", dst_id="Person:B", max_hops=9),
            "max_hops must be an integer from 1 to 6",
        ),
    ],
)
def test_bad_graph_tool_requests(client, call, request_message, detail):
    with pytest.raises(grpc.RpcError) as caught:
        getattr(client.knowledge, call)(request_message, metadata=client.metadata, timeout=120)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert detail in caught.value.details()


def test_cli_prints_the_status_and_what_to_run(serve_stack):
    almquist = str(Path(sys.executable).with_name("almquist"))
    result = subprocess.run(
        [almquist, "kb", "influential", "--limit", "5", "--target", serve_stack.target],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 2, result.stderr
    assert "FAILED_PRECONDITION" in result.stderr and "almquist kb metaqa" in result.stderr

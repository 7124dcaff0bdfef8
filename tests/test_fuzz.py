"""The fuzz suite in CI: every RPC of graphs.ingress.SERVICES, generated from the proto descriptors
(benchmarks/fuzz.py), through Serve's gRPC proxy for about two minutes, seeded (ALMQUIST_FUZZ_SEED, else random,
printed with every failing input).

Asserted: no call ends INTERNAL or UNKNOWN; every call is answered within its deadline (DEADLINE_EXCEEDED counts
unless the client abandoned the call); an over-limit message is RESOURCE_EXHAUSTED; no Serve actor (controller,
proxy, replica) restarted or was replaced; afterwards every identity of the pool still gets its own calls through
(abandoned streams released their slots). ALMQUIST_FUZZ_SECONDS changes the length.
"""

from __future__ import annotations

import os
import random
import time

import grpc
import pytest

from almquist.client import Client
from almquist.config.security import StateConfig
from almquist.state import StateStore
from almquist.v1 import conversation_pb2
from benchmarks import fuzz

SECONDS = float(os.environ.get("ALMQUIST_FUZZ_SECONDS", "100"))
SEED = int(os.environ.get("ALMQUIST_FUZZ_SEED") or random.SystemRandom().randrange(2**32))


@pytest.fixture(scope="module")
def identities(serve_stack):
    """API keys of fresh users (the quotas are per identity: several spread the calls), a curator, an admin for
    the admin RPCs, and a JWT identity."""
    store = StateStore(StateConfig())
    stamp = time.monotonic_ns() % 10**9
    keys = []
    for i, role in enumerate(["user"] * 8 + ["curator"]):
        user = store.add_user(f"fuzz-{role}-{i}-{stamp}", role)
        keys.append(store.create_key(user.user_id)[1])
    admin = store.create_key(store.add_user(f"fuzz-admin-{stamp}", "admin").user_id)[1]
    keys.append(serve_stack.issuer.token(f"fuzz-{stamp}@example.com", lifetime_s=3600))
    store.close()
    return keys, [admin]


def test_fuzz_every_rpc_without_internal_errors_timeouts_or_restarts(serve_stack, identities):
    keys, admins = identities
    before = fuzz.serve_actors()
    assert any(k.startswith("proxy ") for k in before), before
    assert not [key for key, (_, pid, _) in before.items() if not pid], before  # a restart in place changes a pid
    print(
        f"\nfuzz seed {SEED} ({SECONDS:.0f} s); replay one call with: python -m benchmarks.fuzz --seed {SEED} "
        "--replay INDEX:RPC:KIND --target ..."
    )
    report = fuzz.run(
        serve_stack.target,
        keys,
        SECONDS,
        seed=SEED,
        workers=4,
        admins=admins,
        caps=fuzz.SLOW_CAPS,
        huge_per_rpc=1,
        huge_cap=24 * 1024 * 1024,
    )
    time.sleep(5)  # a replica that crashed on the last calls shows up as gone or replaced
    report.restarts = fuzz.restarts(before, fuzz.serve_actors())
    print(report.summary())
    assert {o.case.rpc.name for o in report.outcomes} == {r.name for r in fuzz.rpcs()}, "an RPC was never called"
    assert not report.failures, f"seed {SEED}: {len(report.failures)} failing calls\n{report.summary()}"
    assert not report.restarts, f"seed {SEED}: Serve actors restarted: {report.restarts}"
    assert report.elapsed_s < SECONDS + 2 * fuzz.SLOW_DEADLINE_S


def test_every_identity_still_works_after_the_fuzz(serve_stack, identities):
    """Abandoned and garbage streams did not keep their stream slots (max_streams per identity): each identity opens
    a Converse and asks its own WhoAmI."""
    keys, admins = identities
    deadline = time.monotonic() + 60
    for key in [*keys, *admins]:
        with Client(serve_stack.target, timeout_s=60, api_key=key) as client:
            client.whoami()
            while True:
                conversation = client.converse(conversation_pb2.SessionStart(max_tokens=4))
                try:
                    assert conversation.next_event().session_started.session_id
                    conversation.cancel()
                    break
                except grpc.RpcError as error:  # stream slots of cancelled streams are released within their lease
                    if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or time.monotonic() > deadline:
                        raise
                    time.sleep(2)

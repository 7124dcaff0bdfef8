"""Per-identity token buckets, caps and the LLM's fair share (almquist/quotas.py), on a clock the test moves."""

from __future__ import annotations

import asyncio

import pytest

from almquist.config.security import QuotaConfig
from almquist.identity import Identity
from almquist.quotas import UNCAPPED, FairShare, QuotaExceeded, Quotas

ANN, BOB = Identity("a" * 32, "ann", "user"), Identity("b" * 32, "bob", "user")
OWNER = Identity("o" * 32, "owner", "admin")


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_is_admitted_then_refused_with_the_wait_and_refilled_at_the_rate() -> None:
    clock = Clock()
    quotas = Quotas(QuotaConfig(turns_per_minute=6, turn_burst=3), clock)
    for _ in range(3):
        quotas.admit(ANN, "turn")
    with pytest.raises(QuotaExceeded) as refused:
        quotas.admit(ANN, "turn")
    assert refused.value.retry_after_s == pytest.approx(10.0)  # 6 a minute: one token every 10 s
    assert "try again in 10 s" in refused.value.message
    quotas.admit(BOB, "turn")  # another identity has a bucket of its own
    clock.now += 10
    quotas.admit(ANN, "turn")
    with pytest.raises(QuotaExceeded):
        quotas.admit(ANN, "turn")


def test_exempt_roles_have_no_rates_and_no_caps_and_others_have_the_configured_caps() -> None:
    quotas = Quotas(QuotaConfig(turn_burst=1, max_sessions=7, max_streams=2))
    for _ in range(50):
        quotas.admit(OWNER, "turn")
    assert quotas.caps(OWNER) == UNCAPPED
    assert (quotas.caps(ANN).sessions, quotas.caps(ANN).streams) == (7, 2)
    strict = Quotas(QuotaConfig(turn_burst=1, exempt_roles=[]))
    strict.admit(OWNER, "turn")
    with pytest.raises(QuotaExceeded):
        strict.admit(OWNER, "turn")


def test_one_identity_has_at_most_its_share_of_turns_in_the_llm_and_the_rest_wait() -> None:
    async def run() -> tuple[int, int]:
        share, inside, most = FairShare(2), {"ann": 0, "bob": 0}, {"ann": 0, "bob": 0}

        async def turn(user: str) -> None:
            async with share.turn(user):
                inside[user] += 1
                most[user] = max(most[user], inside[user])
                await asyncio.sleep(0.01)
                inside[user] -= 1

        await asyncio.gather(*(turn("ann") for _ in range(10)), turn("bob"))
        return most["ann"], most["bob"]

    assert asyncio.run(run()) == (2, 1)

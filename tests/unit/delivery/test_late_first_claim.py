"""A batch's FIRST claim (not a renewal: it must take free ids) whose reply was lost is not
cancelled either: it may land after the ids were released, and take them again under an attempt
that sends nothing. The renewal mode cannot help it (lua/claim.lua ARGV[9]): the ids it claims,
once released, count as given up, so the events this replica sends round again take over what the
late call may leave (`Claim.let_go`) instead of being held back a lease and then dead-lettered
`ambiguous` though never sent (a stray phone reservation, armed, lapsing into a contact nobody made).

Two ways: a try lost, the next answered, the ids released later (held by the contact cooldown,
held by the send window, refused...); or Redis staying away, the release after the last try landing."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

import consumer.delivery.claims as claims_module
from consumer.delivery.backoff import Backoff
from consumer.delivery.claims import Claim
from consumer.errors import StateStoreError
from consumer.operations.metrics import Metrics
from consumer.state.cooldown import MemoryCooldown
from consumer.state.dedup import Settlement
from consumer.state.memory import MemoryDedup
from tests.support.fakes import FakePisano, event, rig
from tests.unit.delivery.test_renewal_lost import DAY, OK, cooldown_on, stores


def lose_first_calls(dedup: MemoryDedup, phones: MemoryCooldown | None, count: int) -> list[Callable[[], Any]]:
    """The first `count` trips' replies are lost: their calls run later (the returned list lands
    them); every later trip is answered."""
    late: list[Callable[[], Any]] = []
    real_claim, real_reserve = dedup.claim, phones.reserve if phones is not None else None
    lost = [0, 0]

    def claim(tag, requests, *rest, **named):  # type: ignore[no-untyped-def]
        if lost[0] < count:
            lost[0] += 1
            late.append(lambda: real_claim(tag, requests, *rest, **named))
            if phones is None:
                raise StateStoreError("Timeout reading from Redis")
            return None  # the trip's last step, the phones', fails it
        return real_claim(tag, requests, *rest, **named)

    def reserve(tag, requests, **named):  # type: ignore[no-untyped-def]
        assert real_reserve is not None
        if lost[1] < count:
            lost[1] += 1
            late.append(lambda: real_reserve(tag, requests, **named))
            raise StateStoreError("Timeout reading from Redis")
        return real_reserve(tag, requests, **named)

    dedup.claim = claim  # type: ignore[method-assign]
    if phones is not None:
        phones.reserve = reserve  # type: ignore[method-assign]
    return late


@pytest.fixture(autouse=True)
def _no_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(claims_module, "REDIS_BACKOFF", Backoff(0.0, 0.0, jitter=False))


@pytest.mark.parametrize("with_phones", [False, True], ids=["claims", "phones"])
@pytest.mark.parametrize("away", [False, True], ids=["answered-on-retry", "redis-stays-away"])
def test_a_first_claim_landing_after_the_release_is_taken_over_by_the_next_attempt(
        away: bool, with_phones: bool) -> None:
    dedup, phones = stores()
    events = [event(i) for i in range(3)]
    ids = [e.recipient.event_id for e in events]
    late = lose_first_calls(dedup, phones if with_phones else None, claims_module.CLAIM_TRIES if away else 1)
    claim = Claim(dedup, Metrics(), threading.Event(), cooldown=cooldown_on(phones) if with_phones else None,
                  window_ms=DAY if with_phones else 0)
    with claim:
        if away:
            with pytest.raises(StateStoreError):
                claim.claim(events)  # released after the last try: the sender requeues them
        else:
            assert len(claim.claim(events).claimed) == 3
            claim.settle(Settlement.RELEASED, events)  # e.g. held by the send window: requeued
        requeued = claim.let_go(events)
    assert [dedup.state(i) for i in ids] == [None] * 3
    assert late
    for land in late:
        land()  # the lost call lands now, after the release: it takes the ids again
    # This replica's next attempt of the events: sent at once, not held back a lease (and then
    # dead-lettered `ambiguous`, its phone's stray reservation lapsing into a contact).
    nxt = Claim(dedup, Metrics(), threading.Event(), cooldown=cooldown_on(phones) if with_phones else None,
                window_ms=DAY if with_phones else 0)
    with nxt:
        answer = nxt.claim(requeued)
        assert [e.recipient.event_id for e in answer.claimed] == ids, (answer.held, answer.phone_held)
        nxt.settle(Settlement.DELIVERED, answer.claimed)


def test_a_sender_whose_claim_lands_after_its_release_sends_the_events_round_once() -> None:
    """The whole sender: Redis does not answer the batch's claim (each try lands later), the trip
    is released and the events requeued; the late tries land; the events sent round again are
    delivered at once, in one request."""
    dedup, _ = stores()
    r = rig(FakePisano(default=OK), dedup=dedup)
    late = lose_first_calls(dedup, None, claims_module.CLAIM_TRIES)
    events = [event(i) for i in range(3)]
    r.process(events)
    assert r.kinds() == {e.recipient.event_id: {"requeue"} for e in events}
    for land in late:
        land()
    requeued = [e for o in r.outcomes if o.kind == "requeue" for e in o.events]
    r.outcomes.clear()
    r.process(requeued)
    assert r.kinds() == {e.recipient.event_id: {"delivered"} for e in events}, r.reasons()
    assert len(r.pisano.requests) == 1

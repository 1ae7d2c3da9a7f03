"""An open token circuit skips the duplicates it would have skipped when closed (h-sender).

While the token's circuit is open, a due batch is dead-lettered at once, burning no slot
(`Sender._short_circuit`). It did so without looking at dedup: an event already delivered (read
again after a rebalance, or a duplicate on the topic) ended `pisano_error`, so a replay of the
dead-letters would send it a second time, while the normal path ends it `skipped`. The short
circuit now peeks at the dedup marks (no claim, nothing sent) and gives the delivered ones the
normal path's outcome; every record still ends with exactly one.
"""

from __future__ import annotations

from consumer.errors import PisanoApiError
from consumer.state.dedup import Settlement
from tests.support.fakes import FakePisano, event, rig


def test_an_open_circuit_skips_an_event_already_delivered() -> None:
    r = rig(FakePisano([PisanoApiError(401, 13001, "Wrong token")]))
    r.process([event(1)])  # the circuit opens
    r.dedup.settle(Settlement.DELIVERED, r.dedup.new_tag(), ["e2"])  # e2 was delivered before
    r.outcomes.clear()
    r.batcher.add([event(2), event(3)])
    r.batcher.flush_all()
    assert r.sender._short_circuit()
    assert len(r.pisano.requests) == 1  # nothing sent
    assert r.kinds() == {"e2": {"skipped"}, "e3": {"dead_letter"}}
    assert r.reasons() == {"e3": "pisano_error"}
    assert sum(len(o.events) for o in r.outcomes) == 2  # exactly one outcome each
    assert r.dedup.state("e2") == "d" and r.dedup.state("e3") is None  # nothing claimed


def test_a_dedup_store_that_cannot_answer_holds_the_batch_as_the_claim_would() -> None:
    # Redis away: the batch waits (fail closed, as a claim that fails), never ends without the check.
    from consumer.errors import StateStoreError

    r = rig(FakePisano([PisanoApiError(401, 13001, "Wrong token")]))
    r.process([event(1)])
    r.outcomes.clear()

    def unreachable(event_ids):  # type: ignore[no-untyped-def]
        raise StateStoreError("Redis unreachable")

    r.dedup.states = unreachable  # type: ignore[method-assign]
    r.batcher.add([event(2)])
    r.batcher.flush_all()
    assert r.sender._short_circuit()
    assert r.kinds() == {"e2": {"requeue"}} and len(r.pisano.requests) == 1


def test_an_open_campaign_circuit_skips_an_event_already_delivered() -> None:
    """Carried from the sender review: the campaign's circuit refused a delivered duplicate
    `pisano_error` too, before any slot, and when it opened while the slot was awaited."""
    from tests.unit.delivery.test_sender import campaign_rig, run_once

    broken = PisanoApiError(404, 13002, "Requested resource not found!")
    r, _limiter = campaign_rig(FakePisano([broken]))
    r.process([event(1)])  # the campaign's circuit opens
    r.dedup.settle(Settlement.DELIVERED, r.dedup.new_tag(), ["e2"])  # e2 was delivered before
    r.outcomes.clear()
    r.batcher.add([event(2), event(3)])
    r.batcher.flush_all()
    run_once(r)  # refused at once, before any slot
    assert len(r.pisano.requests) == 1  # nothing sent
    assert r.kinds() == {"e2": {"skipped"}, "e3": {"dead_letter"}}
    assert sum(len(o.events) for o in r.outcomes) == 2  # exactly one outcome each
    assert r.dedup.state("e3") is None  # nothing claimed

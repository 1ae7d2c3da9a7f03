"""Claims a Redis outage left behind (consumer/delivery/claims.py, `Claim.let_go`): a claim trip
whose reply was lost after some masters ran it, and whose release failed too, must not hold its
events back for the whole lease and then dead-letter them as `ambiguous`, never sent. The events
this replica sends round again carry the attempt's tag, and their next claim takes over what it
left, ids and phones; what the attempt still holds for a request that may leave is never taken
over, so no customer is texted twice.

On in-memory fakes: `Outage` runs a claim (the masters that answered did) and loses its reply, and
refuses every settlement, until it is over."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from consumer.delivery import claims
from consumer.delivery.claims import Claim
from consumer.delivery.pisano import Accepted
from consumer.errors import PisanoApiError, StateStoreError
from consumer.operations.metrics import Metrics
from consumer.state.cooldown import MemoryCooldown
from consumer.state.dedup import ClaimRequest, Settlement
from consumer.state.memory import MemoryDedup
from tests.support.fakes import CAMPAIGN, Rig, event, rig
from tests.unit.delivery.test_contact_cooldown import DAY, cooled, phone_state, same_phone

OK = Accepted(200, "req", 0.01)


def refuse_settlements(dedup: MemoryDedup, cooldown: MemoryCooldown | None, down: Callable[[], bool]) -> None:
    """Every settlement of ids (and of phones, with a cooldown store) fails while `down()`."""
    dedup.settle = _failing_while(down, dedup.settle)  # type: ignore[method-assign]
    if cooldown is not None:
        cooldown.settle = _failing_while(down, cooldown.settle)  # type: ignore[method-assign]


def _failing_while(down: Callable[[], bool], call: Callable[..., None]) -> Callable[..., None]:
    def failing(*args: object) -> None:
        if down():
            raise StateStoreError("connection refused")
        call(*args)

    return failing


class Outage:
    """While `down`: a claim runs, then its reply is lost; a settlement fails."""

    def __init__(self, dedup: MemoryDedup, cooldown: MemoryCooldown | None = None) -> None:
        self.down = True
        real_claim = dedup.claim

        def claim(tag, requests, *rest):  # type: ignore[no-untyped-def]
            statuses = real_claim(tag, requests, *rest)
            if self.down:
                raise StateStoreError("reply lost")
            return statuses

        dedup.claim = claim  # type: ignore[method-assign]
        refuse_settlements(dedup, cooldown, lambda: self.down)
        if cooldown is not None:
            real_reserve = cooldown.reserve

            def reserve(tag, requests, *, window_ms, **rest):  # type: ignore[no-untyped-def]
                statuses = real_reserve(tag, requests, window_ms=window_ms, **rest)
                if self.down:
                    raise StateStoreError("reply lost")
                return statuses

            cooldown.reserve = reserve  # type: ignore[method-assign]


@pytest.fixture(autouse=True)
def _fast_settlements(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(claims, "SETTLE_TRIES", 1)  # a release given up at once, not after a minute


def lost_then_back(r: Rig, events: list, outage: Outage) -> None:  # type: ignore[type-arg]
    """Process the events during the outage (no waiting out the retries), then once it is over."""
    r.sender._stop.set()
    r.process(events)
    assert {e.recipient.event_id for o in r.outcomes for e in o.events} == {e.recipient.event_id for e in events}
    assert all(o.kind == "requeue" for o in r.outcomes) and not r.pisano.requests
    r.sender._stop.clear()
    outage.down = False
    r.process(events)  # the same events, sent round again by the poll loop


def test_a_claim_lost_with_its_release_is_taken_over_by_the_events_next_claim() -> None:
    r = rig()
    outage = Outage(r.dedup)
    e1, e2 = event(1), event(2)
    lost_then_back(r, [e1, e2], outage)
    assert r.kinds() == {"e1": {"requeue", "delivered"}, "e2": {"requeue", "delivered"}}
    assert len(r.pisano.requests) == 1 and r.dedup.state("e1") == "d"
    assert len(e1.abandoned_by) == 1  # the lost attempt's tag, and only it


def test_a_copy_that_does_not_carry_the_tag_waits() -> None:
    """Only the events this replica sends round again carry the tag: another read of the record
    (another replica's, after a rebalance) finds the claim held until its lease, as before."""
    r = rig()
    outage = Outage(r.dedup)
    e1 = event(1)
    r.sender._stop.set()
    r.process([e1])
    r.sender._stop.clear()
    outage.down = False
    r.outcomes.clear()
    r.process([event(1)])
    assert r.kinds() == {"e1": {"requeue"}} and not r.pisano.requests
    r.outcomes.clear()
    r.process([e1])
    assert r.kinds() == {"e1": {"delivered"}} and len(r.pisano.requests) == 1


def test_a_phone_reservation_lost_with_its_release_is_taken_over_too() -> None:
    r = rig()
    cooldown = cooled(r)
    assert isinstance(cooldown.store, MemoryCooldown)
    outage = Outage(r.dedup, cooldown.store)
    lost_then_back(r, [event(1), event(2)], outage)
    assert r.kinds() == {"e1": {"requeue", "delivered"}, "e2": {"requeue", "delivered"}}
    assert (phone_state(cooldown, 1) or "").startswith("c|")  # a contact now, not a reservation
    r.process([same_phone(1, "x1", CAMPAIGN)])
    assert r.kinds()["x1"] == {"cooldown"} and len(r.pisano.requests) == 1


def test_a_release_given_up_after_a_failed_request_is_taken_over() -> None:
    """A retriable failure whose release never landed, the claim lost before the retry: the events
    go round again and their next claim takes over the attempt's claims and reservations."""
    r = rig()
    cooldown = cooled(r)
    assert isinstance(cooldown.store, MemoryCooldown)
    outage = Outage(r.dedup, cooldown.store)
    outage.down = False
    e1 = event(1)

    def failing_over(phones):  # type: ignore[no-untyped-def]
        outage.down = True  # Redis goes away while the first request fails: no renewal, no release
        return PisanoApiError(503, None, "Service Unavailable")

    r.pisano.answers = [failing_over, OK]
    r.process([e1])
    assert r.kinds() == {"e1": {"requeue"}} and len(e1.abandoned_by) == 1
    outage.down = False
    r.process([e1])
    assert r.kinds() == {"e1": {"requeue", "delivered"}} and len(r.pisano.requests) == 2
    assert (phone_state(cooldown, 1) or "").startswith("c|")


def test_what_an_attempt_gave_up_it_never_asks_for_again() -> None:
    """Round 0 gives up a phone (its release failed); the top-up of round 1 brings another event
    of the same customer: the attempt must not reserve that phone again, since the tagged event
    may take it over and send too (a second SMS within the cooldown)."""
    r = rig()
    cooldown = cooled(r)
    assert isinstance(cooldown.store, MemoryCooldown)
    r.dedup.claim(r.dedup.new_tag(), [ClaimRequest("e1")])  # in flight elsewhere
    claim = Claim(r.dedup, Metrics(), threading.Event(), cooldown=cooldown, window_ms=30 * DAY)
    with claim:
        store = cooldown.store
        real_settle = store.settle
        store.settle = lambda *a: (_ for _ in ()).throw(StateStoreError("refused"))  # type: ignore[method-assign]
        copy, other = event(1), event(2)
        answer = claim.claim([copy, other])  # e1 held: its phone, reserved with the claim, released unused
        store.settle = real_settle  # type: ignore[method-assign]
        assert answer.held == [copy] and answer.claimed == [other]
        key = cooldown.key(copy.recipient.phone)
        assert store.state(key).startswith("r|")  # the release of its phone did not land
        again = claim.claim([same_phone(1, "x1", CAMPAIGN)])  # the top-up: same customer
        assert again.claimed == [] and len(again.phone_held) == 1
        tagged = claim.let_go(again.phone_held)
        assert tagged[0].abandoned_by == (claim.tag,)
        claim.settle(Settlement.RELEASED, answer.claimed)


def test_an_event_whose_phone_the_attempt_still_holds_is_never_tagged() -> None:
    """Two events of one customer in a batch: the phone goes to the first; the second is held back.
    Even if its id's release failed, it must not carry the tag: its next claim would take over the
    phone from the request that is about to text the customer."""
    r = rig()
    cooldown = cooled(r)
    assert isinstance(cooldown.store, MemoryCooldown)
    claim = Claim(r.dedup, Metrics(), threading.Event(), cooldown=cooldown, window_ms=30 * DAY)
    first, second = event(1), same_phone(1, "x1", CAMPAIGN)
    with claim:
        real_settle = r.dedup.settle
        r.dedup.settle = lambda *a, **k: (_ for _ in ()).throw(StateStoreError("refused"))  # type: ignore[method-assign]
        answer = claim.claim([first, second])
        r.dedup.settle = real_settle  # type: ignore[method-assign]
        assert answer.claimed == [first] and answer.phone_held == [second]
        assert claim.let_go(answer.phone_held)[0].abandoned_by == ()
        claim.settle(Settlement.DELIVERED, answer.claimed)
    # Untagged, it waits out the lease of the claim its failed release left (the price of never
    # texting twice), and the first event's contact stands.
    r.process([second])
    assert r.kinds()["x1"] == {"requeue"} and not r.pisano.requests
    assert (phone_state(cooldown, 1) or "").startswith("c|")


def test_the_tags_an_event_carries_are_bounded() -> None:
    r = rig()
    Outage(r.dedup)
    e1 = event(1)
    r.sender._stop.set()
    for _ in range(claims.ABANDONED_LIMIT + 3):
        r.process([e1])
    assert len(e1.abandoned_by) == claims.ABANDONED_LIMIT
    assert len(set(e1.abandoned_by)) == claims.ABANDONED_LIMIT


def test_what_a_replay_gave_up_is_taken_over_only_by_a_replay_of_the_same_attempt() -> None:
    """A signed replay's claim overrode the unknown mark of the attempt an SRE checked; given up,
    it may be taken over by that replay, never by a plain copy of the event (which must still
    find the mark and be dead-lettered as ambiguous)."""
    r = rig()
    first = r.dedup.new_tag()
    r.dedup.claim(first, [ClaimRequest("e1")])
    r.dedup.settle(Settlement.UNKNOWN, first, ["e1"])
    claim = Claim(r.dedup, Metrics(), threading.Event())
    replay, plain = event(1, replay_of=first), event(1)
    with claim:
        assert claim.claim([replay]).claimed == [replay]
        real_settle = r.dedup.settle
        r.dedup.settle = lambda *a, **k: (_ for _ in ()).throw(StateStoreError("refused"))  # type: ignore[method-assign]
        claim.settle(Settlement.RELEASED, [replay])
        r.dedup.settle = real_settle  # type: ignore[method-assign]
        assert claim.claim([plain]).held == [plain]  # the top-up brings a plain copy
        assert claim.let_go([plain])[0].abandoned_by == ()
        assert claim.let_go([replay])[0].abandoned_by == (claim.tag,)
    r.process([plain])
    assert r.kinds() == {"e1": {"requeue"}}  # held by the given-up claim, not taken over
    r.outcomes.clear()
    r.process([replay])
    assert r.kinds() == {"e1": {"delivered"}} and len(r.pisano.requests) == 1


def test_events_held_back_are_logged_sparingly_never_silently(caplog: pytest.LogCaptureFixture) -> None:
    r = rig()
    other = r.dedup.new_tag()
    r.dedup.claim(other, [ClaimRequest("e1"), ClaimRequest("e2")])  # in flight elsewhere
    with caplog.at_level("INFO", logger="consumer.delivery.sender"):
        r.process([event(1)])
        r.process([event(2)])
    lines = [m for m in caplog.messages if "held back" in m]
    assert len(lines) == 1 and "claimed by another attempt" in lines[0]
    assert r.sender.metrics.events_held._value.get() == 2

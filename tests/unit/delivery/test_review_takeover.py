"""Review of 49e958e (claims taken over by the events' next claim, `Claim.let_go`): sequences the
change leaves stuck, found by review. Each test states what the fix promises (an event this
replica sends round again is never held for the whole lease and then dead-lettered as
`ambiguous`, never sent, because of what an outage left of its own attempt's claim); each fails
on 49e958e.

On in-memory fakes, like tests/unit/delivery/test_given_up_claims.py."""

from __future__ import annotations

import threading

import pytest

from consumer.delivery import claims
from consumer.delivery.admission import Admission
from consumer.delivery.claims import Claim
from consumer.errors import StateStoreError
from consumer.operations.metrics import Metrics
from consumer.state.cooldown import MemoryCooldown
from consumer.state.dedup import Settlement
from consumer.state.memory import MemoryDedup
from consumer.state.suppression import MemoryOptOutList, OptOutHasher, Suppression
from tests.support.fakes import event, rig
from tests.unit.delivery.test_contact_cooldown import DAY, cooled, phone_state
from tests.unit.delivery.test_given_up_claims import refuse_settlements

KEY = b"k" * 32


@pytest.fixture(autouse=True)
def _fast_settlements(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(claims, "SETTLE_TRIES", 1)  # a release given up at once, not after a minute
    monkeypatch.setattr("consumer.delivery.contacts.SETTLE_TRIES", 1)


class SecondTripLost:
    """Redis goes away between the two trips of a claim with the opt-out list on: the first trip
    (the ids that are not replays) is answered; every later claim runs and loses its reply, every
    settlement fails, until `down` is cleared."""

    def __init__(self, dedup: MemoryDedup, cooldown: MemoryCooldown | None = None) -> None:
        self.down = True
        self.trips = 0
        real_claim = dedup.claim

        def claim(tag, requests, *rest):  # type: ignore[no-untyped-def]
            statuses = real_claim(tag, requests, *rest)
            self.trips += 1
            if self.down and self.trips > 1:
                raise StateStoreError("reply lost")
            return statuses

        dedup.claim = claim  # type: ignore[method-assign]
        refuse_settlements(dedup, cooldown, lambda: self.down)


def test_the_first_trip_of_a_claim_whose_second_trip_was_lost_is_not_left_claimed() -> None:
    """Defect (review of 49e958e): with the opt-out list on, a batch holding a signed replay is
    claimed in two trips (`Claim.claim`). The first trip's ids are claimed (answered); the second
    trip's reply is lost and its release fails: `_claim` requeues every candidate through
    `let_go`, but the first trip's events are still in the claim's `_held` then, so they get no
    tag. Their release comes only at the claim's exit, after they were requeued; Redis still
    away, it fails, and nobody tags them. Next time round they find their own attempt's claim
    held: requeued for the whole lease, then dead-lettered as `ambiguous`, never sent (the very
    outcome 49e958e removes for the single-trip path)."""
    r = rig()
    r.sender.admission = Admission(suppression=Suppression(OptOutHasher(KEY, "TR"), MemoryOptOutList(),
                                                           digits_are_e164=False))
    outage = SecondTripLost(r.dedup)
    plain, replay = event(1), event(2, replay_of="someone|00000001")
    r.sender._stop.set()  # no waiting out the retries
    r.process([plain, replay])
    assert r.kinds() == {"e1": {"requeue"}, "e2": {"requeue"}} and not r.pisano.requests
    assert replay.abandoned_by  # the lost second trip's event is tagged ...
    r.sender._stop.clear()
    outage.down = False
    r.outcomes.clear()
    r.process([plain, replay])  # the same events, sent round again by the poll loop
    # ... but the first trip's event is held by its own attempt's claim, never taken over.
    assert r.kinds()["e1"] == {"delivered"}, (plain.abandoned_by, r.dedup.state("e1"))


def test_the_first_trip_phone_reservation_is_not_left_to_count_as_a_contact() -> None:
    """The same sequence with the contact cooldown on: the first trip's phone reservation, whose
    release at the claim's exit failed (`PhoneReservation.settle` records no `given_up` either),
    is not tagged; the event is held back by its own attempt's reservation until the lease, then
    that reservation counts as a contact and the event ends `cooldown`, never sent."""
    r = rig()
    cooldown = cooled(r)
    assert isinstance(cooldown.store, MemoryCooldown)
    r.sender.admission = Admission(suppression=Suppression(OptOutHasher(KEY, "TR"), MemoryOptOutList(),
                                                           digits_are_e164=False))
    outage = SecondTripLost(r.dedup, cooldown.store)
    plain, replay = event(1), event(2, replay_of="someone|00000001")
    r.sender._stop.set()
    r.process([plain, replay])
    assert (phone_state(cooldown, 1) or "").startswith("r|")  # the first trip's reservation, left behind
    r.sender._stop.clear()
    outage.down = False
    # Say the id's release at the exit landed after all (one master answered): only the phone is left.
    mark = r.dedup.state("e1") or ""
    r.dedup.settle(Settlement.RELEASED, mark[2:].rsplit("|", 1)[0], ["e1"])
    assert r.dedup.state("e1") is None
    r.outcomes.clear()
    r.process([plain, replay])
    assert r.kinds()["e1"] == {"delivered"}, (plain.abandoned_by, phone_state(cooldown, 1))


class FirstLandsThenAway:
    """The first claim runs (its master answered) and its reply is lost; then the id's master is
    away: later claims never run and fail; every settlement fails; until `down` is cleared."""

    def __init__(self, dedup: MemoryDedup) -> None:
        self.down = True
        self.trips = 0
        real_claim = dedup.claim

        def claim(tag, requests, *rest):  # type: ignore[no-untyped-def]
            self.trips += 1
            if self.down and self.trips > 1:
                raise StateStoreError("connection refused")
            statuses = real_claim(tag, requests, *rest)
            if self.down:
                raise StateStoreError("reply lost")
            return statuses

        dedup.claim = claim  # type: ignore[method-assign]
        refuse_settlements(dedup, None, lambda: self.down)


def test_the_bound_on_tags_keeps_the_one_attempt_whose_claim_is_still_there() -> None:
    """Defect (review of 49e958e), low: `abandoned_by` keeps the newest ABANDONED_LIMIT tags. The
    one claim that landed is the first attempt's (its master answered, then went away); the next
    eight attempts never reached that master, yet each adds its tag (its release failed too), and
    the ninth pushes out the only tag that holds. With the master back inside the lease, the
    event finds its own first attempt's claim held: requeued for the rest of the lease, then
    dead-lettered as `ambiguous`, never sent. (Eight attempts take well under a lease: HOLD_S is
    2 s, the claim's tries a second or so.)"""
    r = rig()
    outage = FirstLandsThenAway(r.dedup)
    e1 = event(1)
    r.sender._stop.set()
    for _ in range(claims.ABANDONED_LIMIT + 1):
        r.process([e1])
    assert r.dedup.state("e1").startswith("c|")  # the first attempt's claim, in its lease
    r.sender._stop.clear()
    outage.down = False
    r.outcomes.clear()
    r.process([e1])
    assert r.kinds() == {"e1": {"delivered"}}, (e1.abandoned_by, r.dedup.state("e1"))


def test_a_phone_release_given_up_at_the_claims_exit_is_remembered() -> None:
    """Root cause of the phone half above, at the claim's level: the exit settles left-over phones
    with `PhoneReservation.settle`, whose give-up records nothing in `given_up` (unlike
    `Claim._record`), so `let_go` after the exit (`Sender._conclude_open`) leaves the event
    untagged while its reservation may still be in Redis."""
    r = rig()
    cooldown = cooled(r)
    store = cooldown.store
    assert isinstance(store, MemoryCooldown)
    claim = Claim(r.dedup, Metrics(), threading.Event(), cooldown=cooldown, window_ms=30 * DAY)
    e1 = event(1)
    with claim:
        assert claim.claim([e1]).claimed == [e1]
        store.settle = lambda *a: (_ for _ in ()).throw(StateStoreError("refused"))  # type: ignore[method-assign]
    assert (phone_state(cooldown, 1) or "").startswith("r|")  # left behind
    assert r.dedup.state("e1") is None  # the id's release landed
    assert claim.let_go([e1])[0].abandoned_by == (claim.tag,)

"""Second review of the takeover of given-up claims (49e958e, fixes in c7b2b59): the replay scope
`Claim.let_go` checks before tagging an event (fix 4). Each test states what the design promises;
each failed on c7b2b59.

On in-memory fakes, like tests/unit/delivery/test_given_up_claims.py."""

from __future__ import annotations

import threading

import pytest

from consumer.delivery import claims
from consumer.delivery.claims import Claim
from consumer.errors import StateStoreError
from consumer.operations.metrics import Metrics
from consumer.state.cooldown import MemoryCooldown, PhoneFate, PhoneRequest
from consumer.state.dedup import ClaimRequest, Settlement
from tests.support.fakes import CAMPAIGN, event, rig
from tests.unit.delivery.test_contact_cooldown import DAY, cooled, same_phone


@pytest.fixture(autouse=True)
def _fast_settlements(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(claims, "SETTLE_TRIES", 1)  # a release given up at once, not after a minute
    monkeypatch.setattr("consumer.delivery.contacts.SETTLE_TRIES", 1)


def _refused(*args: object, **kwargs: object) -> None:
    raise StateStoreError("connection refused")


def test_a_replay_does_not_take_over_a_phone_another_replays_reservation_gave_up() -> None:
    """Defect (high: a customer texted within the cooldown). `let_go` computes the scope as
    `self._replays.get(id) or phones.replay_of.get(key)`: for an event that is itself a signed
    replay, its id's scope wins and the phone's is never looked at. Sequence, one attempt T:

    1. Round 0: replay R2 (of attempt Y) for phone P. Its id is held elsewhere; P, whose value is
       Y's unknown contact, is reserved over it (a replay of Y may) and released unused; the
       release never lands: P given up, its reservation `r|..|T#u|..|Y` still in Redis.
    2. The top-up (P is free again for the batcher: R2 was not claimed) brings replay R of
       another attempt X for the same customer. P is given up: R is held back (`phone_held`).
    3. `let_go([R])`: scope = `_replays[R] = X`, equal to R's `replay_of`, so R is tagged with T.
    4. R's next claim (attempt U) carries T: reserve_phones.lua takes over T's reservation with
       the unknown contact of Y it covers, and R is sent. Nobody checked Y's request for R: the
       customer may have been texted by it within the cooldown. Untagged, R would be held by
       T's reservation, then find it lapsed into a contact (`cooldown`), as the design wants."""
    r = rig()
    cooldown = cooled(r)
    store = cooldown.store
    assert isinstance(store, MemoryCooldown)
    phone = event(1).recipient.phone
    key = cooldown.key(phone)
    y, x, z = r.dedup.new_tag(), r.dedup.new_tag(), r.dedup.new_tag()
    store.reserve(y, [PhoneRequest(key)], window_ms=30 * DAY)
    store.settle(PhoneFate.UNKNOWN, y, [key])  # attempt Y's request may have texted the customer
    r.dedup.claim(z, [ClaimRequest("r2")])  # R2's id: in flight elsewhere (another copy of the replay)
    r.dedup.claim(x, [ClaimRequest("r")])
    r.dedup.settle(Settlement.UNKNOWN, x, ["r"])  # R's own ambiguous attempt, checked by an SRE
    replay_y = same_phone(1, "r2", CAMPAIGN)
    replay_y.replay_of = y
    replay_x = same_phone(1, "r", CAMPAIGN)
    replay_x.replay_of = x

    claim = Claim(r.dedup, Metrics(), threading.Event(), cooldown=cooldown, window_ms=30 * DAY)
    with claim:
        real_settle = store.settle
        store.settle = _refused  # type: ignore[method-assign]
        first = claim.claim([replay_y])
        store.settle = real_settle  # type: ignore[method-assign]
        assert first.held == [replay_y] and first.claimed == []
        assert (store.state(key) or "").startswith("r|") and "#u|" in (store.state(key) or "")
        claim.let_go(first.held)
        top_up = claim.claim([replay_x])
        assert top_up.phone_held == [replay_x] and top_up.claimed == []
        claim.let_go(top_up.phone_held)
    assert (store.state(key) or "").endswith(f"|{y}")  # still T's reservation over Y's contact

    later = Claim(r.dedup, Metrics(), threading.Event(), cooldown=cooldown, window_ms=30 * DAY)
    with later:
        answer = later.claim([replay_x])
        # R must not be sent over Y's unknown contact: held back (then `cooldown`), never reserved.
        assert answer.claimed == [], (replay_x.abandoned_by, store.state(key))


def test_a_plain_event_is_tagged_for_a_phone_a_replay_asked_for_earlier_in_the_attempt() -> None:
    """Defect (medium: an event waits out the lease of its own attempt's claim, then is
    dead-lettered `ambiguous`, never sent). `PhoneReservation.replay_of` is written when a replay
    asks for a key and never cleared or overwritten by a plain ask. Sequence, one attempt T:

    1. Round 0: replay R (of X) for phone P; its id was delivered already (`skipped`), P's
       optimistic reservation is released unused (it lands). `replay_of[P] = X` stays.
    2. The top-up brings plain event B for the same customer (P free again for the batcher). Its
       claim trip runs and loses its reply, the release fails: B's id and P given up.
    3. `let_go([B])`: the id has no scope, the phone's is the stale X != None: B is not tagged.
    4. B's next claim finds T's claim of its id held (then lapsed into `u|T`: `ambiguous`) and
       T's reservation of P (then a contact: `cooldown`). Both were plain, B's own: tagging B
       was safe, and is what the design does for every other given-up claim."""
    r = rig()
    cooldown = cooled(r)
    store = cooldown.store
    assert isinstance(store, MemoryCooldown)
    key = cooldown.key(event(1).recipient.phone)
    x, w = r.dedup.new_tag(), r.dedup.new_tag()
    r.dedup.claim(w, [ClaimRequest("e1")])
    r.dedup.settle(Settlement.DELIVERED, w, ["e1"])  # R's event was delivered by another replay
    replay = event(1, replay_of=x)
    plain = same_phone(1, "x1", CAMPAIGN)

    stop = threading.Event()
    stop.set()  # a lost reply is not waited on: released (or given up) at once
    claim = Claim(r.dedup, Metrics(), stop, cooldown=cooldown, window_ms=30 * DAY)
    with claim:
        first = claim.claim([replay])
        assert first.delivered == [replay] and store.state(key) is None  # P released unused
        real = (r.dedup.settle, store.reserve, store.settle)

        def reserve_lost(tag, requests, *, window_ms, **rest):  # type: ignore[no-untyped-def]
            real[1](tag, requests, window_ms=window_ms, **rest)  # the trip ran (the id's claim too) ...
            raise StateStoreError("reply lost")  # ... and its reply was lost

        r.dedup.settle = _refused  # type: ignore[method-assign]
        store.reserve, store.settle = reserve_lost, _refused  # type: ignore[method-assign]
        with pytest.raises(StateStoreError):
            claim.claim([plain])
        r.dedup.settle, store.reserve, store.settle = real  # type: ignore[method-assign]
        assert (r.dedup.state("x1") or "").startswith("c|") and (store.state(key) or "").startswith("r|")
        claim.let_go([plain])

    later = Claim(r.dedup, Metrics(), threading.Event(), cooldown=cooldown, window_ms=30 * DAY)
    with later:
        answer = later.claim([plain])
        assert answer.claimed == [plain], (plain.abandoned_by, r.dedup.state("x1"), store.state(key))
        later.settle(Settlement.RELEASED, answer.claimed)


def test_through_the_sender_a_replay_texts_a_customer_over_another_replays_unknown_contact() -> None:
    """The first defect through `Sender.process`: round 0 holds R2 back and gives its phone up
    (the release of the unused reservation fails once); the top-up (`Batcher.top_up`) brings R, of
    another ambiguous attempt, for the same customer; R is requeued tagged, and its next claim
    sends it over attempt Y's unknown contact, which nobody checked for R."""
    r = rig()
    cooldown = cooled(r)
    store = cooldown.store
    assert isinstance(store, MemoryCooldown)
    key = cooldown.key(event(1).recipient.phone)
    y, x, z = r.dedup.new_tag(), r.dedup.new_tag(), r.dedup.new_tag()
    store.reserve(y, [PhoneRequest(key)], window_ms=30 * DAY)
    store.settle(PhoneFate.UNKNOWN, y, [key])
    r.dedup.claim(z, [ClaimRequest("r2")])
    r.dedup.claim(x, [ClaimRequest("r")])
    r.dedup.settle(Settlement.UNKNOWN, x, ["r"])
    replay_y = same_phone(1, "r2", CAMPAIGN)
    replay_y.replay_of = y
    replay_x = same_phone(1, "r", CAMPAIGN)
    replay_x.replay_of = x
    r.batcher.add([replay_x])  # waiting in the buffer: the top-up's candidate
    real_settle, failures = store.settle, [1]

    def settle_once_refused(fate, tag, keys):  # type: ignore[no-untyped-def]
        if failures:
            failures.pop()
            raise StateStoreError("connection refused")
        real_settle(fate, tag, keys)

    store.settle = settle_once_refused  # type: ignore[method-assign]
    r.process([replay_y])
    assert r.kinds() == {"r2": {"requeue"}, "r": {"requeue"}} and not r.pisano.requests
    r.outcomes.clear()
    r.process([replay_x])  # sent round again by the poll loop
    assert r.kinds() == {"r": {"requeue"}} and not r.pisano.requests, (replay_x.abandoned_by, store.state(key))


def test_a_plain_copy_is_tagged_for_the_claim_it_made_after_a_replay_of_its_id_was_held() -> None:
    """Defect (low: rare, one event id both as a signed replay and as a plain record in one
    attempt; the same outcome as the second defect). `Claim._replays` is written when a replay's
    id is asked and never cleared when a plain copy of that id claims it later. Sequence, one
    attempt T: round 0 asks replay R of id e1 (held elsewhere: requeued), `_replays[e1] = X`; the
    top-up (e1 is not in the request) brings the plain copy, which claims e1 (the other holder
    let it go); its release fails. `let_go` finds the stale scope X and leaves the copy
    untagged: its next claim is held by T's plain claim, for the lease, then `ambiguous`."""
    r = rig()
    x, z = r.dedup.new_tag(), r.dedup.new_tag()
    r.dedup.claim(z, [ClaimRequest("e1")])  # e1 in flight elsewhere
    replay, plain = event(1, replay_of=x), event(1)
    claim = Claim(r.dedup, Metrics(), threading.Event())
    with claim:
        assert claim.claim([replay]).held == [replay]
        claim.let_go([replay])
        r.dedup.settle(Settlement.RELEASED, z, ["e1"])  # the other attempt let e1 go
        assert claim.claim([plain]).claimed == [plain]
        real_settle = r.dedup.settle
        r.dedup.settle = _refused  # type: ignore[method-assign]
        claim.settle(Settlement.RELEASED, [plain])  # e.g. the claim lost before a retry
        r.dedup.settle = real_settle  # type: ignore[method-assign]
        claim.let_go([plain])
    later = Claim(r.dedup, Metrics(), threading.Event())
    with later:
        answer = later.claim([plain])
        assert answer.claimed == [plain], (plain.abandoned_by, r.dedup.state("e1"))
        later.settle(Settlement.RELEASED, answer.claimed)

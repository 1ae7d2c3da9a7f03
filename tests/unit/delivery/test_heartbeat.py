"""A request's claims kept alive while it waits (consumer/delivery/heartbeat.py): a wait for a slot
or a backoff longer than the lease keeps the claims, so the lease need only outlive one request
(Settings.claim_lease_ms); a claim found lost ends the request unsent; Redis unreachable at a beat
is left to the renewal before the POST.

The leases here are a fraction of a second (the heartbeat's period follows: a quarter of it), and
RENEWAL_REACH_S is shrunk to match: Settings keeps a real lease far above the reach."""

from __future__ import annotations

import itertools
import logging
import threading
import time

import pytest

from consumer.config.windows import parse_rate_limits
from consumer.delivery import slots
from consumer.delivery.attempts import RetryPolicy
from consumer.delivery.backoff import Backoff
from consumer.delivery.batching import Batch
from consumer.delivery.pisano import Accepted
from consumer.delivery.slots import Slot
from consumer.errors import PisanoApiError, StateStoreError
from consumer.state.dedup import ClaimRequest, ClaimStatus, Settlement
from consumer.state.limiter import Grant
from consumer.state.memory import MemoryDedup
from consumer.state.trip import Step
from tests.support.fakes import CAMPAIGN, FakePisano, Rig, event, rig

LEASE_MS = 400
OK = Accepted(200, "req", 0.01)


class FarSlots:
    """A throttle whose every slot is `wait_s` away (a busy fleet's queue)."""

    windows = parse_rate_limits("100/1s")

    def __init__(self, wait_s: float) -> None:
        self.wait_s = wait_s

    def acquire(self, pace_ms: int = 0, prepare_ms: int = 0) -> Grant:
        return Grant(granted=True, wait_s=self.wait_s, slot_ms=0)

    def pause(self, seconds: float) -> float:
        return 0.0  # it pauses nothing

    def paused_until_ms(self) -> int:  # it pauses nothing: no slot lies inside a pause
        return 0

    def stage_pause_read(self) -> Step[None]:
        return Step.answered(None)

    def utilisation(self) -> dict:  # type: ignore[type-arg]
        return {}


@pytest.fixture(autouse=True)
def _short_reach(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slots, "RENEWAL_REACH_S", 0.05)


def short_lease_rig(pisano: FakePisano | None = None, **kwargs) -> Rig:  # type: ignore[no-untyped-def]
    return rig(pisano, dedup=MemoryDedup(lease_ms=LEASE_MS, horizon_s=3600), **kwargs)


def claimant_at(r: Rig, after_s: float, event_id: str = "e1") -> dict[str, ClaimStatus]:
    """Another replica claims `event_id` after `after_s`, while the request waits."""
    seen: dict[str, ClaimStatus] = {}
    other = r.dedup.replica()

    def claim() -> None:
        time.sleep(after_s)
        seen[event_id] = other.claim(other.new_tag(), [ClaimRequest(event_id)])[0]

    threading.Thread(target=claim, daemon=True).start()
    return seen


def slow_backoff(r: Rig, seconds: float) -> None:
    r.sender.attempts.retry = RetryPolicy(3, 60.0, Backoff(seconds, seconds, jitter=False))


def test_a_request_waiting_for_a_slot_longer_than_the_lease_keeps_its_claims() -> None:
    r = short_lease_rig(limiter=FarSlots(1.0))  # type: ignore[arg-type]
    seen = claimant_at(r, 0.7)  # the lease ran out long before, without a heartbeat
    r.sender.process(Batch(CAMPAIGN, [event(1)]), slot=Slot(time.monotonic() + 1.0))
    assert seen == {"e1": ClaimStatus.HELD}, "another replica could take a live request's claim"
    assert r.kinds() == {"e1": {"delivered"}} and len(r.pisano.requests) == 1
    assert r.dedup.state("e1") == "d"


def test_a_request_backing_off_longer_than_the_lease_keeps_its_claims() -> None:
    r = short_lease_rig(FakePisano([PisanoApiError(503, None, "busy"), OK]))
    slow_backoff(r, 1.0)
    seen = claimant_at(r, 0.7)
    r.process([event(1)])
    assert seen == {"e1": ClaimStatus.HELD}, "another replica could take a backing-off request's claim"
    assert r.kinds() == {"e1": {"delivered"}} and len(r.pisano.requests) == 2
    assert r.dedup.state("e1") == "d"


def test_bisection_keeps_the_claims_of_the_half_not_yet_sent_while_the_other_backs_off() -> None:
    bad = event(2).recipient.phone
    answers = [lambda phones: PisanoApiError(422, 13028, "Invalid parameters"),  # the whole batch
               PisanoApiError(503, None, "busy")]  # the first half's first try: a backoff, e1 waits
    r = short_lease_rig(FakePisano(answers, default=lambda phones: PisanoApiError(
        422, 13028, "Invalid parameters") if bad in phones else OK))
    slow_backoff(r, 1.0)
    seen = claimant_at(r, 0.7, "e3")
    r.process([event(i) for i in range(1, 5)])
    assert seen == {"e3": ClaimStatus.HELD}
    assert r.reasons() == {"e2": "pisano_error"}
    assert {e: k for e, k in r.kinds().items() if e != "e2"} == {e: {"delivered"} for e in ("e1", "e3", "e4")}


def test_a_claim_lost_while_waiting_for_the_slot_ends_the_request_unsent_at_the_next_beat() -> None:
    r = short_lease_rig(limiter=FarSlots(3.0))  # type: ignore[arg-type]
    other = r.dedup.replica()
    threading.Timer(0.3, lambda: other.settle(Settlement.DELIVERED, other.new_tag(), ["e1"])).start()
    started = time.monotonic()
    r.sender.process(Batch(CAMPAIGN, [event(1)]), slot=Slot(time.monotonic() + 3.0))
    assert not r.pisano.requests
    assert r.kinds() == {"e1": {"requeue"}}
    assert time.monotonic() - started < 1.5, "the lost claim was noticed only at the slot"


def test_a_claim_lost_while_backing_off_means_not_sent() -> None:
    r = short_lease_rig(FakePisano([PisanoApiError(503, None, "busy"), OK]))
    slow_backoff(r, 3.0)
    other = r.dedup.replica()
    threading.Timer(0.3, lambda: other.settle(Settlement.DELIVERED, other.new_tag(), ["e1"])).start()
    started = time.monotonic()
    r.process([event(1)])
    assert len(r.pisano.requests) == 1, "a retry left on a claim that was lost"
    assert r.kinds() == {"e1": {"requeue"}}
    assert time.monotonic() - started < 1.5, "the lost claim was noticed only after the backoff"


def test_redis_unreachable_at_a_beat_is_said_once_and_left_to_the_renewal_before_the_post(
        caplog: pytest.LogCaptureFixture) -> None:
    # Lease 2 s, beats every 0.5 s: the beats during the first 1.2 s find Redis away; the claim
    # is still alive at the gate renewal before the POST, which decides.
    r = rig(dedup=MemoryDedup(lease_ms=2000, horizon_s=3600), limiter=FarSlots(1.7))  # type: ignore[arg-type]
    real_claim = r.dedup.claim
    calls: list[float] = []
    started = time.monotonic()

    def claim(tag, requests, *rest):  # type: ignore[no-untyped-def]
        calls.append(time.monotonic() - started)
        if len(calls) > 1 and calls[-1] < 1.2:
            raise StateStoreError("connection refused")
        return real_claim(tag, requests, *rest)

    r.dedup.claim = claim  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING):
        r.sender.process(Batch(CAMPAIGN, [event(1)]), slot=Slot(time.monotonic() + 1.7))
    assert r.kinds() == {"e1": {"delivered"}} and len(r.pisano.requests) == 1
    # The claim, beats at about 0.5 s and 1.0 s (failed, one try each), 1.5 s, and the renewal
    # before the POST: no hammering.
    assert 4 <= len(calls) <= 5, calls
    said = [m for m in caplog.messages if "could not renew" in m]
    assert len(said) == 1, said


def slow(answer, seconds: float):  # type: ignore[no-untyped-def]
    """An answer Pisano takes `seconds` to give (a slow request, well within its timeouts)."""
    def answering(phones):  # type: ignore[no-untyped-def]
        time.sleep(seconds)
        return answer(phones) if callable(answer) else answer
    return answering


def test_bisection_without_a_throttle_keeps_the_claims_of_the_groups_still_to_send() -> None:
    # PISANO_RATE_LIMITS=off: every slot is immediate, so no wait of a bisected batch lasts long
    # enough to beat in; requests each well within the lease follow one another, and the claims of
    # the groups not yet sent must still be renewed between them.
    bad = event(8).recipient.phone
    r = short_lease_rig(FakePisano(default=slow(lambda phones: PisanoApiError(
        422, 13028, "Invalid parameters") if bad in phones else OK, 0.25)))
    # Requests of 0.25 s each: the whole batch (its claims taken at 0), e1-e4 (accepted), e5-e6,
    # e7, then e8 alone at about 1.0 s: without a beat between them, e8's claim lapses at 0.4 s.
    seen = claimant_at(r, 0.7, "e8")
    r.process([event(i) for i in range(1, 9)])
    assert seen == {"e8": ClaimStatus.HELD}, "a live replica's claim lapsed between bisection's requests"
    assert r.reasons() == {"e8": "pisano_error"}
    assert {e: k for e, k in r.kinds().items() if e != "e8"} == {f"e{i}": {"delivered"} for i in range(1, 8)}


class CountedSlots(FarSlots):
    def __init__(self, wait_s: float) -> None:
        super().__init__(wait_s)
        self.granted = 0

    def acquire(self, pace_ms: int = 0, prepare_ms: int = 0) -> Grant:
        self.granted += 1
        return super().acquire(pace_ms, prepare_ms)


def test_no_beat_between_the_renewal_before_the_post_and_its_slot() -> None:
    # Lease 0.4 s: beats every 0.1 s after the claim. The slot is 0.45 s away, so the claims are
    # renewed at its lead time (0.25 s), after the beats at 0.1 and 0.2 s; the next is due at
    # 0.3 s, between the renewal and the slot. A beat there (a Redis slow to answer: 0.5 s) makes
    # the POST leave after its slot's lateness allowance (0.25 s), wasting the slot.
    limiter = CountedSlots(0.45)
    r = short_lease_rig(limiter=limiter)  # type: ignore[arg-type]
    real_claim = r.dedup.claim
    calls: list[float] = []
    started = time.monotonic()

    def claim(tag, requests, *rest):  # type: ignore[no-untyped-def]
        calls.append(time.monotonic() - started)
        answer = real_claim(tag, requests, *rest)
        if len(calls) == 5:  # after the claim, the beats at 0.1 and 0.2 s and the renewal: a beat
            time.sleep(0.5)
        return answer

    r.dedup.claim = claim  # type: ignore[method-assign]
    r.sender.process(Batch(CAMPAIGN, [event(1)]), slot=Slot(time.monotonic() + 0.45))
    assert r.kinds() == {"e1": {"delivered"}} and len(r.pisano.requests) == 1
    assert limiter.granted == 0, f"the POST left late and took another slot (claims asked at {calls})"
    assert len(calls) == 4, calls



def test_bisection_at_the_shortest_lease_allowed_keeps_the_claims_of_the_groups_still_to_send() -> None:
    # DEDUP_CLAIM_LEASE_MS at its floor (one request + a margin): a request of 0.15 s, from a
    # renewal 0.2 s (the slot's lead) before it, fits the 0.4 s lease. But a group not yet sent is
    # renewed by beats alone: the last one may come a period (0.1 s) before the renewal of the
    # group that is sent, and the next only after that request, 0.45 s later: its claims lapsed.
    # So the renewal before each POST renews e8's claim too: then no stretch without one is
    # longer than the slot's lead and one request, what the lease's floor allows for. Shown by
    # the order of the claims and the POSTs, not by the time between them: on a loaded machine
    # the stretch also holds the sleeps' oversleeping, which eats a test lease's 50 ms of margin
    # (a real lease's margin is 10 s).
    bad = event(8).recipient.phone
    # In order: ("claim", the event ids renewed: a beat's, or "gate" inside the renewal before a
    # POST, which may take more than one trip) and ("post", its phones).
    trace: list[tuple[str, set[str]]] = []

    def answer(phones):  # type: ignore[no-untyped-def]
        trace.append(("post", set(phones)))
        time.sleep(0.15)
        return PisanoApiError(422, 13028, "Invalid parameters") if bad in phones else OK

    r = short_lease_rig(FakePisano(default=answer), limiter=FarSlots(0.39))  # type: ignore[arg-type]
    real_claim, real_renew = r.dedup.claim, r.sender._renew
    gate = threading.Event()

    def claim(tag, requests, *rest):  # type: ignore[no-untyped-def]
        trace.append(("gate" if gate.is_set() else "claim", {q.event_id for q in requests}))
        return real_claim(tag, requests, *rest)

    def renew(*args):  # type: ignore[no-untyped-def]
        gate.set()
        try:
            return real_renew(*args)
        finally:
            gate.clear()

    r.dedup.claim = claim  # type: ignore[method-assign]
    r.sender._renew = renew  # type: ignore[method-assign]
    r.sender.process(Batch(CAMPAIGN, [event(i) for i in range(1, 9)]), slot=Slot(time.monotonic() + 0.39))
    assert r.reasons() == {"e8": "pisano_error"}
    assert {e: k for e, k in r.kinds().items() if e != "e8"} == {f"e{i}": {"delivered"} for i in range(1, 8)}
    posts = [n for n, (what, _) in enumerate(trace) if what == "post"]
    last = next(n for n in posts if trace[n][1] == {bad})  # e8 sent alone: its claim ends with it
    assert len(posts) >= 4 and posts[-1] == last, trace  # the batch, e1-e4, ..., e8
    for previous, n in itertools.pairwise([-1, *posts]):
        if previous < 0:
            continue  # the batch's first POST: its claims were just taken, no renewal
        since = trace[previous + 1:n]
        # The renewal right before the POST (a slot given up for lateness on a busy machine
        # brings beats and a renewal again: the last one counts), and what came first.
        trips = list(itertools.takewhile(lambda entry: entry[0] == "gate", reversed(since)))
        assert trips, f"no renewal right before the POST of {trace[n][1]}: {trace}"
        assert "e8" in set().union(*(ids for _, ids in trips)), \
            f"the renewal before the POST of {trace[n][1]} left e8's claim out: {trace}"
        assert "e8" in since[0][1], f"e8's claim was not renewed first after a POST: {trace}"


def test_a_claim_lost_in_the_middle_of_bisection_sends_no_group_again_and_ends_every_event_once() -> None:
    # Another replica delivers e7 while e1-e4 are sent: every later request's renewal (which
    # covers every claim the batch still holds) finds it lost, so no group leaves; each event
    # still ends once (the rest go round again, free: Pisano refused the request they were in).
    bad = event(8).recipient.phone
    r = short_lease_rig(FakePisano(default=slow(lambda phones: PisanoApiError(
        422, 13028, "Invalid parameters") if bad in phones else OK, 0.1)))
    other = r.dedup.replica()
    threading.Timer(0.15, lambda: other.settle(Settlement.DELIVERED, other.new_tag(), ["e7"])).start()
    r.process([event(i) for i in range(1, 9)])
    assert len(r.pisano.requests) == 2, r.pisano.requests  # the whole batch, then e1-e4
    kinds = r.kinds()
    assert all(len(k) == 1 for k in kinds.values()) and len(kinds) == 8, kinds
    assert kinds == {**{f"e{i}": {"delivered"} for i in range(1, 5)}, **{f"e{i}": {"requeue"} for i in range(5, 9)}}
    assert r.dedup.state("e7") == "d"
    assert all(r.dedup.state(f"e{i}") is None for i in (5, 6, 8)), "a group not sent stayed claimed"

"""Pending claims in the sender (consumer/state/arming.py): a request that certainly failed makes
its claims pending while its retry waits; the renewal before every POST arms them; no POST ever
leaves under a pending claim.

Before: a replica killed while a retry waited (a backoff after a 503, a far slot) left armed
claims, which lapsed into "fate unknown": every event of the request was dead-lettered `ambiguous`
though nothing had reached Pisano, and its survey waited for an SRE's replay."""

from __future__ import annotations

import time
from typing import Any

import pytest

from consumer.config.windows import parse_rate_limits
from consumer.delivery.contacts import ContactCooldown, CooldownWindows
from consumer.delivery.pisano import Accepted
from consumer.errors import PisanoApiError, StateStoreError
from consumer.state.arming import Arming
from consumer.state.cooldown import MemoryCooldown, PhoneRequest, PhoneStatus
from consumer.state.dedup import ClaimRequest, ClaimStatus
from consumer.state.limiter import Grant
from consumer.state.memory import MemoryDedup
from consumer.state.redis import Keys
from consumer.state.suppression import MemoryOptOutList, OptOutHasher, Suppression
from consumer.state.trip import Step
from tests.support.fakes import FakePisano, Rig, event, rig

OK = Accepted(200, "req", 0.01)
LEASE_MS = 60_000
DAY = 86_400_000


def with_cooldown(r: Rig, store: MemoryCooldown | None = None) -> ContactCooldown:
    """The sender's contact cooldown on: 30 days, in `store`."""
    suppression = Suppression(OptOutHasher(b"k" * 32, "TR"), MemoryOptOutList(), digits_are_e164=False)
    r.sender.cooldown = ContactCooldown(store or MemoryCooldown(lease_ms=LEASE_MS, ttl_ms=30 * DAY),
                                        CooldownWindows(30 * DAY), Keys("t"), suppression.phone_entry)
    return r.sender.cooldown


def lose_the_first_disarm_reply(r: Rig, nth: int = 1) -> list[Any]:
    """The `nth` disarm (a PENDING claim) times out, its script applied only just after the next
    arming renewal; returns the calls still to land (the test lands them)."""
    late: list[Any] = []
    real_claim = r.dedup.claim
    disarms = iter(range(1, 1_000))

    def claim(tag, requests, *rest):  # type: ignore[no-untyped-def]
        arming = rest[0] if rest else Arming.ARM
        if arming is Arming.PENDING and next(disarms) == nth:
            late.append(lambda: real_claim(tag, requests, *rest))  # sent, its reply lost
            raise StateStoreError("Timeout reading from Redis")
        answer = real_claim(tag, requests, *rest)
        while late and arming is Arming.ARM:  # the late disarm lands just after the renewal
            late.pop()()
        return answer

    r.dedup.claim = claim  # type: ignore[method-assign]
    return late


def armed_at_the_wire(r: Any, pisano: FakePisano, seen: list[list[str]]) -> None:
    """Record, as each request would leave, the claims of every event it carries."""

    def check() -> None:
        values = [str(r.dedup.state(e)) for e in list(current)]
        seen.append(values)

    current: list[str] = []
    pisano.on_wire = check
    real_send = pisano.send

    def send(campaign_id: str, body: bytes, leave_by: float | None = None) -> Accepted:
        import json

        phones = json.loads(body)["phone_numbers"]
        current[:] = [f"e{int(p[-5:])}" for p in phones]
        return real_send(campaign_id, body, leave_by)

    pisano.send = send  # type: ignore[method-assign]


def is_pending(value: str) -> bool:
    return value.startswith("c|") and value.rsplit("|", 1)[1].startswith("0")


@pytest.mark.parametrize("answers", [
    [PisanoApiError(503, None, "busy"), OK],
    [PisanoApiError(500, None, "oops"), PisanoApiError(503, None, "busy"), OK],
    [PisanoApiError(429, None, "slow down", retry_after_s=0.01), OK],
    [lambda phones: PisanoApiError(422, 13028, "Invalid parameters") if "+905321200002" in phones else OK],
], ids=["503", "500-503", "429", "bisection"])
def test_no_post_leaves_under_a_pending_claim(answers: list[Any]) -> None:
    pisano = FakePisano(list(answers[:-1]) if len(answers) > 1 else [], default=answers[-1])
    r = rig(pisano)
    seen: list[list[str]] = []
    armed_at_the_wire(r, pisano, seen)
    r.process([event(i) for i in range(4)])
    assert r.outcome_count() == 4
    assert len(seen) >= 2, "the scenario sent one request only"
    for values in seen:
        assert values and all(v.startswith("c|") and not is_pending(v) for v in values), values


class Snapshot:
    """A throttle granting every slot at once that, at the retry's slot (its second), copies the
    dedup state: what Redis holds if the replica is SIGKILLed while the retry waits there."""

    windows = parse_rate_limits("100/1s")
    margin_ms = 0

    def __init__(self, dedup: MemoryDedup) -> None:
        self.dedup = dedup
        self.calls = 0
        self.marks: dict[str, Any] | None = None

    def acquire(self, pace_ms: int = 0, prepare_ms: int = 0) -> Grant:
        self.calls += 1
        if self.calls == 2:
            self.marks = dict(self.dedup._marks)
        return Grant(granted=True, wait_s=prepare_ms / 1000, slot_ms=0)

    def pause(self, seconds: float) -> float:
        return 0.0  # it pauses nothing

    def paused_until_ms(self) -> int:  # it pauses nothing: no slot lies inside a pause
        return 0

    def stage_pause_read(self) -> Step[None]:
        return Step.answered(None)

    def utilisation(self) -> dict:  # type: ignore[type-arg]
        return {}


@pytest.mark.parametrize("failure", [PisanoApiError(503, None, "busy"), PisanoApiError(500, None, "oops"),
                                     PisanoApiError(429, None, "slow down", retry_after_s=0.01)],
                         ids=["503", "500", "429"])
def test_a_replica_killed_while_a_retry_waits_leaves_its_events_to_be_sent(failure: PisanoApiError) -> None:
    dedup = MemoryDedup(lease_ms=LEASE_MS, horizon_s=3600)
    throttle = Snapshot(dedup)
    r = rig(FakePisano([failure]), limiter=throttle, dedup=dedup)  # type: ignore[arg-type]
    events = [event(i) for i in range(3)]
    r.process(events)
    assert throttle.marks is not None, "the request was not retried in a slot of its own"
    # The next replica, once the dead one's lease ran out, reads the records again.
    later = int(time.time() * 1000) + LEASE_MS + 1000
    survivor = MemoryDedup(lease_ms=LEASE_MS, horizon_s=3600, clock=lambda: later, shared=throttle.marks)
    found = survivor.claim(survivor.new_tag(), [ClaimRequest(e.recipient.event_id) for e in events])
    assert list(found) == [ClaimStatus.CLAIMED] * 3, \
        f"dead-lettered as ambiguous though nothing reached Pisano: {[s.value for s in found]}"


def test_a_replica_killed_after_an_ambiguous_answer_still_leaves_them_unknown() -> None:
    """The other side: a timeout after the request left (the default policy dead-letters it at
    once, never retried) stays unknown, as does a claim killed mid-POST."""
    dedup = MemoryDedup(lease_ms=LEASE_MS, horizon_s=3600)
    r = rig(FakePisano(), dedup=dedup)
    marks: dict[str, Any] = {}
    r.pisano.on_wire = lambda: marks.update(dedup._marks)  # killed with the POST on the wire
    events = [event(i) for i in range(3)]
    r.process(events)
    later = int(time.time() * 1000) + LEASE_MS + 1000
    survivor = MemoryDedup(lease_ms=LEASE_MS, horizon_s=3600, clock=lambda: later, shared=marks)
    found = survivor.claim(survivor.new_tag(), [ClaimRequest(e.recipient.event_id) for e in events])
    assert list(found) == [ClaimStatus.UNKNOWN] * 3


class Immediate:
    """A throttle granting every slot within the preparation's lead, as the real one does."""

    windows = parse_rate_limits("100/1s")

    def acquire(self, pace_ms: int = 0, prepare_ms: int = 0) -> Grant:
        return Grant(granted=True, wait_s=prepare_ms / 1000, slot_ms=0)

    def pause(self, seconds: float) -> float:
        return 0.0  # it pauses nothing

    def paused_until_ms(self) -> int:  # it pauses nothing: no slot lies inside a pause
        return 0

    def stage_pause_read(self) -> Step[None]:
        return Step.answered(None)

    def utilisation(self) -> dict:  # type: ignore[type-arg]
        return {}


def test_a_request_late_at_the_wire_waits_pending_and_leaves_armed() -> None:
    """Its first attempt found late at the wire sent nothing: the claims are pending while it waits
    for a new slot, and that slot's POST renews (arms) them first, although they were taken for
    the first slot within a renewal's reach."""
    pisano = FakePisano()
    r = rig(pisano, limiter=Immediate())  # type: ignore[arg-type]
    seen: list[list[str]] = []
    armed_at_the_wire(r, pisano, seen)
    check = pisano.on_wire
    stalls = [r.sender.slots.max_lateness_s + 0.05]

    def stall_once() -> None:
        assert check is not None
        check()
        if stalls:
            time.sleep(stalls.pop())

    pisano.on_wire = stall_once
    pending: list[bool] = []
    real_claim = r.dedup.claim

    def claim(tag, requests, *rest):  # type: ignore[no-untyped-def]
        answer = real_claim(tag, requests, *rest)
        pending.append(all(is_pending(str(r.dedup.state(q.event_id))) for q in requests))
        return answer

    r.dedup.claim = claim  # type: ignore[method-assign]
    r.process([event(i) for i in range(2)])
    assert r.kinds() == {"e0": {"delivered"}, "e1": {"delivered"}} and pisano.missed == 1
    assert pending == [False, True, False], "claimed, made pending after the miss, armed before the POST"
    assert len(seen) == 2 and all(not is_pending(v) for v in seen[1])


def test_the_phone_reservations_follow_their_claims() -> None:
    """With a contact cooldown, a phone reserved by a request killed while its retry waited is no
    contact: counted as one, the event read again would end `cooldown`, its survey never sent."""

    store = MemoryCooldown(lease_ms=LEASE_MS, ttl_ms=30 * DAY)
    dedup = MemoryDedup(lease_ms=LEASE_MS, horizon_s=3600)
    throttle = Snapshot(dedup)
    r = rig(FakePisano([PisanoApiError(503, None, "busy")]), limiter=throttle, dedup=dedup)  # type: ignore[arg-type]
    cooldown = with_cooldown(r, store)
    phones: dict[str, Any] = {}
    real_acquire = throttle.acquire

    def acquire(pace_ms: int = 0, prepare_ms: int = 0) -> Grant:
        if throttle.calls == 1:
            phones.update(store._values)
        return real_acquire(pace_ms, prepare_ms)

    throttle.acquire = acquire  # type: ignore[method-assign]
    events = [event(i) for i in range(3)]
    r.process(events)
    assert r.kinds() == {e.recipient.event_id: {"delivered"} for e in events} and phones
    later = int(time.time() * 1000) + LEASE_MS + 1000
    survivor = MemoryCooldown(lease_ms=LEASE_MS, ttl_ms=30 * DAY, clock=lambda: later, shared=phones)
    keys = [cooldown.key(e.recipient.phone) for e in events]
    assert survivor.reserve("next|1", [PhoneRequest(k) for k in keys], window_ms=30 * DAY) == \
        [PhoneStatus.RESERVED] * 3


@pytest.mark.parametrize("with_phones", [False, True], ids=["claims", "claims+phones"])
def test_a_disarm_whose_reply_never_came_back_is_no_ground_for_another_post(with_phones: bool) -> None:
    """A disarm that timed out (Redis slow, a lost segment retransmitted late) may still be applied,
    later than anything this replica sends after it: a script call on a connection given up is
    not cancelled, and the renewal before the next POST goes on another connection, which Redis may
    serve first. Applied after that renewal, it leaves the claims pending under a POST that may
    reach Pisano: a replica killed before settling (or a settlement that never lands) leaves them to
    lapse into free, and the next replica sends the events again. So no POST goes under the claims
    of a request whose disarm is in doubt: it ends unsent, its claims released and its events back
    to be claimed anew (landing after the release, the late disarm leaves nothing: a disarm takes
    no id, lua/claim.lua's renewal mode)."""

    pisano = FakePisano([PisanoApiError(503, None, "busy")])
    r = rig(pisano)
    if with_phones:
        with_cooldown(r)
    seen: list[list[str]] = []
    armed_at_the_wire(r, pisano, seen)
    late = lose_the_first_disarm_reply(r)
    events = [event(i) for i in range(3)]
    r.process(events)
    assert r.outcome_count() == 3
    for values in seen:
        assert values and all(not is_pending(v) for v in values), f"a POST left under pending claims: {values}"
    if len(seen) == 1:  # ended unsent after the doubtful disarm: the events go round again
        assert r.kinds() == {e.recipient.event_id: {"requeue"} for e in events}
        while late:  # it lands after the release: it finds the ids free and writes nothing
            late.pop()()
        assert [r.dedup.state(e.recipient.event_id) for e in events] == [None] * 3
        r.outcomes.clear()
        r.process(events)  # their next attempt claims them afresh, and sends them once
        assert r.kinds() == {e.recipient.event_id: {"delivered"} for e in events}
        assert len(seen) == 2 and all(not is_pending(v) for v in seen[1])


def test_a_bisection_group_whose_disarm_is_in_doubt_ends_alone() -> None:
    """The same for one group of a bisection: it ends unsent and goes round again; the batch's
    other groups are sent under their own claims, armed. (The first disarm is the batch's, after
    Pisano refused it for a recipient: its parts wait pending.)"""

    pisano = FakePisano([PisanoApiError(422, 13028, "Invalid parameters"), PisanoApiError(503, None, "busy")])
    r = rig(pisano)
    seen: list[list[str]] = []
    armed_at_the_wire(r, pisano, seen)
    late = lose_the_first_disarm_reply(r, nth=2)
    events = [event(i) for i in range(4)]
    r.process(events)
    for values in seen:
        assert values and all(not is_pending(v) for v in values), f"a POST left under pending claims: {values}"
    assert len(seen) == 3  # the batch, its first half (503), its second half
    assert r.kinds() == {"e0": {"requeue"}, "e1": {"requeue"}, "e2": {"delivered"}, "e3": {"delivered"}}
    # the late disarm landed after the group's release (just after the next renewal): nothing left
    assert not late and r.dedup.state("e0") is None and r.dedup.state("e1") is None


class SnapshotAt(Snapshot):
    """As Snapshot, at the `at`-th slot: a bisection's second part waits for it while its first
    part has gone (`at` 3), or its first part waits (`at` 2)."""

    def __init__(self, dedup: MemoryDedup, at: int) -> None:
        super().__init__(dedup)
        self.at = at

    def acquire(self, pace_ms: int = 0, prepare_ms: int = 0) -> Grant:
        self.calls += 1
        if self.calls == self.at:
            self.marks = dict(self.dedup._marks)
        return Grant(granted=True, wait_s=prepare_ms / 1000, slot_ms=0)


@pytest.mark.parametrize("at", [2, 3], ids=["first-part-waits", "second-part-waits"])
def test_a_replica_killed_while_bisection_waits_leaves_its_unsent_parts_to_be_sent(at: int) -> None:
    """Pisano refused the whole request for one recipient (13028): nothing reached it, as after a
    503. Bisection then sends the batch's parts one at a time, each in a slot of its own (minutes,
    with a throttle), and the parts waiting their turn were left armed (the batch's first claim,
    then every part's renewal armed them all): a replica killed meanwhile left every event not yet
    sent to lapse into "fate unknown", dead-lettered `ambiguous` for an SRE though none reached
    Pisano. They wait pending, as a retry's claims do; each part's renewal arms its own only."""
    dedup = MemoryDedup(lease_ms=LEASE_MS, horizon_s=3600)
    throttle = SnapshotAt(dedup, at)
    bad = "+905321200003"
    pisano = FakePisano(default=lambda phones: PisanoApiError(422, 13028, "Invalid parameters") if bad in phones
                        else OK)
    r = rig(pisano, limiter=throttle, dedup=dedup)  # type: ignore[arg-type]
    events = [event(i) for i in range(4)]
    r.process(events)
    assert r.kinds() == {"e0": {"delivered"}, "e1": {"delivered"}, "e2": {"delivered"},
                         "e3": {"dead_letter"}}, r.kinds()
    assert throttle.marks is not None, "bisection took fewer slots than the scenario needs"
    waiting = ["e0", "e1", "e2", "e3"] if at == 2 else ["e2", "e3"]  # the first part (e0, e1) went in slot 2
    later = int(time.time() * 1000) + LEASE_MS + 1000
    survivor = MemoryDedup(lease_ms=LEASE_MS, horizon_s=3600, clock=lambda: later, shared=throttle.marks)
    found = survivor.claim(survivor.new_tag(), [ClaimRequest(i) for i in waiting])
    assert list(found) == [ClaimStatus.CLAIMED] * len(waiting), \
        f"dead-lettered as ambiguous though nothing reached Pisano: {[s.value for s in found]}"


def test_a_refused_batch_whose_disarm_is_in_doubt_is_not_bisected_under_its_claims() -> None:
    """The batch's own disarm after Pisano refused it for a recipient timed out: it may land under a
    part's POST, so no part goes under these claims. The batch ends unsent, its claims released,
    and goes round again (landing after the release, the late disarm leaves nothing)."""
    bad = "+905321200003"
    pisano = FakePisano(default=lambda phones: PisanoApiError(422, 13028, "Invalid parameters") if bad in phones
                        else OK)
    r = rig(pisano)
    late = lose_the_first_disarm_reply(r)
    events = [event(i) for i in range(4)]
    r.process(events)
    assert len(pisano.requests) == 1 and r.kinds() == {e.recipient.event_id: {"requeue"} for e in events}
    while late:
        late.pop()()
    assert [r.dedup.state(e.recipient.event_id) for e in events] == [None] * 4

"""ReplicatedDedup: a claim is relied on, and an outcome reported, only after the wait for replicas."""

from __future__ import annotations

import pytest

from consumer.errors import StateStoreError
from consumer.state.dedup import ClaimRequest, ClaimStatus, Settlement
from consumer.state.memory import MemoryDedup
from consumer.state.replication import ReplicatedDedup


class Wait:
    """Counts the waits; fails them while `replicas_away`."""

    def __init__(self) -> None:
        self.calls = 0
        self.replicas_away = False

    def __call__(self) -> None:
        self.calls += 1
        if self.replicas_away:
            raise StateStoreError("only 0 of 1 Redis replicas acknowledged")


def store() -> tuple[ReplicatedDedup, Wait]:
    wait = Wait()
    return ReplicatedDedup(MemoryDedup(lease_ms=60_000, horizon_s=3600), wait), wait


def test_a_granted_claim_and_every_settlement_wait_for_the_replicas() -> None:
    dedup, wait = store()
    tag = dedup.new_tag()
    assert dedup.claim(tag, [ClaimRequest("e1")]) == [ClaimStatus.CLAIMED]
    assert wait.calls == 1
    dedup.settle(Settlement.DELIVERED, tag, ["e1"])
    assert wait.calls == 2
    assert dedup.state("e1") == "d"


def test_a_claim_that_grants_nothing_sends_nothing_and_does_not_wait() -> None:
    dedup, wait = store()
    tag = dedup.new_tag()
    dedup.claim(tag, [ClaimRequest("e1")])
    dedup.settle(Settlement.DELIVERED, tag, ["e1"])
    calls = wait.calls
    assert dedup.claim(dedup.new_tag(), [ClaimRequest("e1")]) == [ClaimStatus.DELIVERED]
    dedup.settle(Settlement.RELEASED, tag, [])
    assert wait.calls == calls


def test_replicas_away_fail_the_claim_closed_and_a_retry_under_the_same_tag_succeeds() -> None:
    dedup, wait = store()
    tag = dedup.new_tag()
    wait.replicas_away = True
    with pytest.raises(StateStoreError):
        dedup.claim(tag, [ClaimRequest("e1")])  # no POST: the sender treats it as Redis away
    with pytest.raises(StateStoreError):
        dedup.settle(Settlement.DELIVERED, tag, ["e1"])  # the sender retries the settlement
    wait.replicas_away = False
    assert dedup.claim(tag, [ClaimRequest("e2")]) == [ClaimStatus.CLAIMED]
    dedup.settle(Settlement.DELIVERED, tag, ["e1", "e2"])  # settling again is idempotent
    assert dedup.state("e1") == dedup.state("e2") == "d"


def test_a_granted_phone_reservation_and_every_contact_wait_for_the_replicas() -> None:
    from consumer.state.cooldown import MemoryCooldown, PhoneFate, PhoneRequest, PhoneStatus
    from consumer.state.replication import ReplicatedCooldown

    wait = Wait()
    phones = ReplicatedCooldown(MemoryCooldown(lease_ms=60_000, ttl_ms=60_000), wait)
    assert phones.reserve("a|1", [PhoneRequest("k1")], window_ms=60_000) == [PhoneStatus.RESERVED]
    assert wait.calls == 1
    assert phones.reserve("b|1", [PhoneRequest("k1")], window_ms=60_000) == [PhoneStatus.HELD]
    assert wait.calls == 1  # nothing granted: nothing relied on
    phones.settle(PhoneFate.ACCEPTED, "a|1", ["k1"])
    assert wait.calls == 2 and (phones.state("k1") or "").startswith("c|")
    phones.settle(PhoneFate.RELEASED, "a|1", ["k1"])
    assert wait.calls == 2  # a release lost in a failover blocks the phone longer, never lets one through
    wait.replicas_away = True
    with pytest.raises(StateStoreError):  # fail closed: the reservation is not relied on
        phones.reserve("c|1", [PhoneRequest("k2")], window_ms=60_000)


def test_a_claim_and_its_phones_in_one_trip_wait_once_and_before_the_answer_is_read() -> None:
    """consumer/state/trip.py: the dedup store and the cooldown share the process's wait, so the
    round trip holding the claim and the phone reservations waits once; a wait that fails fails the
    whole trip (nothing is sent), and an answer that grants nothing does not wait."""
    from consumer.state.cooldown import MemoryCooldown, PhoneRequest, PhoneStatus
    from consumer.state.replication import ReplicatedCooldown
    from consumer.state.trip import together

    wait = Wait()
    dedup = ReplicatedDedup(MemoryDedup(lease_ms=60_000, horizon_s=3600), wait)
    phones = ReplicatedCooldown(MemoryCooldown(lease_ms=60_000, ttl_ms=86_400_000), wait)
    tag = dedup.new_tag()
    claims, reserved = together([dedup.stage_claim(tag, [ClaimRequest("e1")]),
                                 phones.stage_reserve(tag, [PhoneRequest("{t:p:0:0}:cd:1")], window_ms=60_000)])
    assert claims == [ClaimStatus.CLAIMED] and reserved == [PhoneStatus.RESERVED] and wait.calls == 1
    wait.replicas_away = True
    with pytest.raises(StateStoreError):
        together([dedup.stage_claim(tag, [ClaimRequest("e2")]), phones.stage_reserve(tag, [], window_ms=60_000)])
    wait.replicas_away = False
    calls = wait.calls
    other = dedup.new_tag()
    assert together([dedup.stage_claim(other, [ClaimRequest("e1")]),
                     phones.stage_reserve(other, [PhoneRequest("{t:p:0:0}:cd:1")], window_ms=60_000)]) == \
        [[ClaimStatus.HELD], [PhoneStatus.HELD]]
    assert wait.calls == calls

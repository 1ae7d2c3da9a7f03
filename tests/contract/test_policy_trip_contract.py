"""A batch's opt-out lookup, dedup claim and phone reservations in one round trip (issue 13: "each
policy consulted in the same Redis round trip as the dedup claim"; consumer/state/trip.py,
consumer/delivery/claims.py): the same outcomes as the steps taken in turn, in memory, on a single
Redis and on a Redis Cluster, and on Redis the packets counted.

A packet is one `send_packed_command` of redis-py (a pipeline sends all its commands in one): on a
single Redis one per batch, with the throttle out of the picture; on a cluster at most one per
master. The follow-up that releases what the optimistic claim and reservation took costs one
more packet (per master), and only when some event of the batch did not use them."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis.connection

from consumer.delivery.batching import PendingEvent
from consumer.delivery.claims import Claim
from consumer.delivery.contacts import ContactCooldown, CooldownWindows
from consumer.ingest.mapping import Recipient
from consumer.operations.metrics import Metrics
from consumer.state.cooldown import CooldownStore, MemoryCooldown, PhoneFate, PhoneRequest, RedisCooldown
from consumer.state.dedup import ClaimRequest, ClaimStatus, DedupStore, RedisDedup, Settlement
from consumer.state.memory import MemoryDedup
from consumer.state.redis import Keys
from consumer.state.suppression import MemoryOptOutList, OptOutHasher, OptOutList, RedisOptOutList, Suppression
from tests.contract.conftest import IMPLEMENTATIONS, _connect
from tests.support.redis_trips import HANDSHAKE, _command_name

DAY = 86_400_000
HASHER = OptOutHasher(b"trip-contract-key-0123456789", "TR")
CAMPAIGN = "0b6f6e2c-3c4e-4f7b-9a55-8f7d0b5a1c21"


@dataclass
class Replica:
    """One process's view of the three stores (one Redis client, as the application builds them)."""

    dedup: DedupStore
    cooldown: CooldownStore
    opt_out: OptOutList
    policy: ContactCooldown
    suppression: Suppression

    def claim(self, window_ms: int = DAY) -> Claim:
        return Claim(self.dedup, Metrics(), threading.Event(), cooldown=self.policy, window_ms=window_ms,
                     suppression=self.suppression)


@pytest.fixture(params=IMPLEMENTATIONS)
def fleet(request: pytest.FixtureRequest) -> Callable[[], Replica]:
    """Each call: another replica of one fleet's state."""
    memory = (MemoryDedup(lease_ms=60_000, horizon_s=3600), MemoryCooldown(lease_ms=60_000, ttl_ms=30 * DAY),
              MemoryOptOutList())
    if request.param != "memory":  # the list imported once (empty), as a deployment starts it: armed
        armed = RedisOptOutList(_connect(request), Keys("t"))
        armed.holding_marker = True
        armed.complete()

    def replica() -> Replica:
        if request.param == "memory":
            dedup: Any = memory[0].replica()
            cooldown: Any = memory[1].replica()
            opt_out: Any = memory[2]
        else:
            client = _connect(request)
            dedup = RedisDedup(client, Keys("t"), lease_ms=60_000, horizon_s=3600)
            cooldown = RedisCooldown(client, lease_ms=60_000, ttl_ms=30 * DAY)
            opt_out = RedisOptOutList(client, Keys("t"))
        suppression = Suppression(HASHER, opt_out, digits_are_e164=False)
        policy = ContactCooldown(cooldown, CooldownWindows(DAY), Keys("t"), suppression.phone_entry)
        return Replica(dedup, cooldown, opt_out, policy, suppression)

    return replica


@pytest.fixture
def packets(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[int]]:
    """Packets sent to Redis, by server port, while the test runs (tests/support/redis_trips.py
    counts them by command; here the port tells the masters apart)."""
    sent: Counter[int] = Counter()
    original = redis.connection.AbstractConnection.send_packed_command

    def counting(self: Any, command: Any, check_health: bool = True) -> None:
        if _command_name(command) not in HANDSHAKE:  # a new connection's own packets are not the trip's
            sent[self.port] += 1
        original(self, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)
    yield sent


def event(i: int, replay_of: str | None = None) -> PendingEvent:
    recipient = Recipient(event_id=f"e{i}", campaign_id=CAMPAIGN, phone=f"+9053212{i:05d}")
    return PendingEvent(message=None, tp=("t", 0), offset=i, epoch=0, recipient=recipient, enqueued_at=0.0,
                        replay_of=replay_of)


def same_phone(i: int, event_id: str) -> PendingEvent:
    """Another event for event i's customer."""
    other = event(i)
    other.recipient = Recipient(event_id=event_id, campaign_id=CAMPAIGN, phone=other.recipient.phone)
    return other


def warm(r: Replica) -> None:
    """Scripts loaded, the dedup layout read, a connection open to every master: what a replica's
    first batches do (a new connection's handshake is a few packets of its own)."""
    claim = r.claim()
    batch = [event(i) for i in range(900, 1000)]
    claim.claim(batch)
    claim.settle(Settlement.RELEASED, batch)


def ids(answer: Any) -> dict[str, list[str]]:
    return {kind: [e.recipient.event_id for e in getattr(answer, kind)]
            for kind in ("claimed", "delivered", "held", "unknown", "cooling", "phone_held", "suppressed")}


def unclaimed(r: Replica, *event_ids: str) -> bool:
    tag = r.dedup.new_tag()
    statuses = r.dedup.claim(tag, [ClaimRequest(i) for i in event_ids])
    r.dedup.settle(Settlement.RELEASED, tag, list(event_ids))
    return all(s is ClaimStatus.CLAIMED for s in statuses)


def key(r: Replica, i: int) -> str:
    return r.policy.key(event(i).recipient.phone)


def free(r: Replica, *numbers: int) -> bool:
    """Nobody holds or delivered these ids, nor reserved their phones (a fresh attempt gets them all)."""
    tag = r.dedup.new_tag()
    ids = [f"e{i}" for i in numbers]
    statuses = r.dedup.claim(tag, [ClaimRequest(i) for i in ids])
    r.dedup.settle(Settlement.RELEASED, tag, ids)
    phones = r.cooldown.reserve(tag, [PhoneRequest(key(r, i)) for i in numbers], window_ms=DAY)
    r.cooldown.settle(PhoneFate.RELEASED, tag, [key(r, i) for i in numbers])
    return all(s is ClaimStatus.CLAIMED for s in statuses) and all(p.value == "R" for p in phones)


def test_every_policy_answers_in_one_trip_with_the_outcomes_of_the_steps_in_turn(
        fleet: Callable[[], Replica], packets: Counter[int], request: pytest.FixtureRequest) -> None:
    a, other = fleet(), fleet()
    # e1 delivered before (its delivery started its phone's cooldown); x2 a new event for e2's
    # customer, just surveyed; e3 on the opt-out list; e4 claimed by a live attempt elsewhere, e5's
    # phone reserved by one; e7 and e8 new.
    earlier = other.claim()
    earlier.claim([event(1), event(2)])
    earlier.settle(Settlement.DELIVERED, [event(1), event(2)])
    other.opt_out.add([HASHER.canonical_phone(event(3).recipient.phone)])
    busy = other.dedup.new_tag()
    other.dedup.claim(busy, [ClaimRequest("e4")])
    other.cooldown.reserve(busy, [PhoneRequest(key(other, 5))], window_ms=DAY)
    contact_1 = other.cooldown.state(key(other, 1))
    warm(a)
    packets.clear()
    claim = a.claim()
    answer = claim.claim([event(1), same_phone(2, "x2"), *(event(i) for i in (3, 4, 5, 7, 8))])
    assert ids(answer) == {"claimed": ["e7", "e8"], "delivered": ["e1"], "held": ["e4"], "unknown": [],
                           "cooling": ["x2"], "phone_held": ["e5"], "suppressed": ["e3"]}
    if request.node.callspec.params["fleet"] == "redis":
        # One packet with everything; one with the releases (the claims of e3, x2 and e5, the
        # phones of e3 and e4).
        assert sum(packets.values()) == 2, packets
    elif request.node.callspec.params["fleet"] == "cluster":
        assert len(packets) <= 3 and max(packets.values()) <= 2, packets  # the same, per master
    # Nothing the optimistic claim and reservation took is kept for an event that does not use it.
    assert a.cooldown.state(key(a, 1)) == contact_1
    assert a.cooldown.state(key(a, 4)) is None and busy in (a.cooldown.state(key(a, 5)) or "")
    assert free(a, 3) and unclaimed(a, "x2", "e5")
    claim.settle(Settlement.RELEASED, answer.claimed)
    assert free(a, 7, 8)


def test_a_skipped_events_phone_keeps_the_contact_its_optimistic_reservation_covered(
        fleet: Callable[[], Replica]) -> None:
    """A campaign with a short cooldown reserves, optimistically, the phone of an event delivered
    before, whose contact it does not count: the event is skipped, and its phone's contact is put
    back as it was (a campaign with a longer cooldown still counts it)."""
    a, other = fleet(), fleet()
    earlier = other.claim()
    earlier.claim([event(1)])
    earlier.settle(Settlement.DELIVERED, [event(1)])
    contact = other.cooldown.state(key(other, 1))
    time.sleep(0.05)
    answer = a.claim(window_ms=10).claim([event(1)])
    assert ids(answer)["delivered"] == ["e1"]
    assert a.cooldown.state(key(a, 1)) == contact
    assert [e.recipient.event_id for e in a.claim().claim([same_phone(1, "x1")]).cooling] == ["x1"]


def test_a_clean_batch_is_one_packet_per_master(fleet: Callable[[], Replica], packets: Counter[int],
                                                request: pytest.FixtureRequest) -> None:
    a = fleet()
    warm(a)
    packets.clear()
    batch = [event(i) for i in range(200)]
    answer = a.claim().claim(batch)
    assert len(answer.claimed) == 200
    if request.node.callspec.params["fleet"] == "redis":
        assert sum(packets.values()) == 1, packets  # the opt-out lookup, the claim, the phones: one packet
    elif request.node.callspec.params["fleet"] == "cluster":
        assert len(packets) <= 3 and set(packets.values()) == {1}, packets  # one per master, in parallel


def test_signed_replays_are_claimed_once_the_opt_out_list_answered(
        fleet: Callable[[], Replica], packets: Counter[int], request: pytest.FixtureRequest) -> None:
    """A replay's claim may override an unknown mark; released, the mark would be gone: a replay
    the list has is never claimed, and the others are claimed in a second packet, theirs alone."""
    a, other = fleet(), fleet()
    crashed = other.dedup.new_tag()
    other.dedup.claim(crashed, [ClaimRequest("e1"), ClaimRequest("e2")])
    other.dedup.settle(Settlement.UNKNOWN, crashed, ["e1", "e2"])
    other.opt_out.add([HASHER.canonical_phone(event(1).recipient.phone)])
    warm(a)
    packets.clear()
    answer = a.claim().claim([event(1, replay_of=crashed), event(2, replay_of=crashed), event(3)])
    assert ids(answer)["suppressed"] == ["e1"] and ids(answer)["claimed"] == ["e3", "e2"]
    if request.node.callspec.params["fleet"] == "redis":
        assert sum(packets.values()) == 2, packets
    assert a.dedup.state("e1") == f"u|{crashed}"  # the unknown mark stands


def test_the_cooldown_refuses_a_phone_and_releases_its_claim_in_the_follow_up(
        fleet: Callable[[], Replica], packets: Counter[int], request: pytest.FixtureRequest) -> None:
    a, other = fleet(), fleet()
    earlier = other.claim()
    earlier.claim([event(1)])
    earlier.settle(Settlement.DELIVERED, [event(1)])
    warm(a)
    packets.clear()
    answer = a.claim().claim([same_phone(1, "x1"), event(2)])
    assert [e.recipient.event_id for e in answer.cooling] == ["x1"]
    assert [e.recipient.event_id for e in answer.claimed] == ["e2"]
    if request.node.callspec.params["fleet"] == "redis":
        assert sum(packets.values()) == 2, packets  # the trip, and the release of x1's claim
    tag = a.dedup.new_tag()
    assert a.dedup.claim(tag, [ClaimRequest("x1")]) == [ClaimStatus.CLAIMED]  # released


def test_scripts_lost_by_redis_are_loaded_again_for_every_script_of_the_trip(
        fleet: Callable[[], Replica], request: pytest.FixtureRequest) -> None:
    """A Redis restarted (or a replica promoted) has no script: each one the trip sends answers
    NOSCRIPT, is loaded and its calls sent again; the answers are the same."""
    if request.node.callspec.params["fleet"] == "memory":
        pytest.skip("no scripts in memory")
    a = fleet()
    warm(a)
    client: Any = a.dedup.client  # type: ignore[attr-defined]
    if request.node.callspec.params["fleet"] == "cluster":
        for node in client.get_primaries():
            client.get_redis_connection(node).script_flush()
    else:
        client.script_flush()
    a.opt_out.add([HASHER.canonical_phone(event(3).recipient.phone)])
    claim = a.claim()
    answer = claim.claim([event(i) for i in range(1, 6)])
    assert ids(answer)["claimed"] == ["e1", "e2", "e4", "e5"] and ids(answer)["suppressed"] == ["e3"]
    claim.settle(Settlement.DELIVERED, answer.claimed)
    assert free(a, 3) and a.dedup.state("e1") == "d" and (a.cooldown.state(key(a, 1)) or "").startswith("c|")

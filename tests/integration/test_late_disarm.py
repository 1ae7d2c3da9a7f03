"""A disarm whose reply was lost, landing late, against a real Redis (single and Cluster), through
the sender (consumer/delivery/claims.py `Claim.disarm`, attempts.py `disarmed`).

The request ends unsent (`claim_lost`): released, its events requeued. The late call then lands
after the release: in the renewal mode (lua/claim.lua, lua/reserve_phones.lua) it finds the ids
and phones free, answers lost and writes nothing. The events' next attempt claims them afresh and
sends each once, armed at the wire; a copy read by another replica is sent at once (it used to be
held back a lease by the late call's stray claim): neither `ambiguous` nor `cooldown`. Every event
ends with exactly one outcome per processing."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from consumer.delivery.contacts import ContactCooldown, CooldownWindows
from consumer.delivery.pisano import Accepted
from consumer.errors import PisanoApiError, StateStoreError
from consumer.state.arming import Arming
from consumer.state.cooldown import RedisCooldown
from consumer.state.dedup import RedisDedup
from consumer.state.redis import Keys
from consumer.state.suppression import MemoryOptOutList, OptOutHasher, Suppression
from consumer.state.trip import Step, together
from tests.conftest import flushed_client
from tests.support.fakes import FakePisano, Rig, event, lands_late_then_sent_once, rig

LEASE_MS = 1500
DAY = 86_400_000
OK = Accepted(200, "req", 0.01)


def _rig(client: Any, pisano: FakePisano, late: list[Callable[[], Any]]) -> Rig:
    """A sender on a real Redis, with the contact cooldown, whose first disarm loses its reply: the
    script calls are kept in `late`, to land when the test says."""
    dedup = RedisDedup(client, Keys("t"), lease_ms=LEASE_MS, horizon_s=3600)
    phones = RedisCooldown(client, lease_ms=LEASE_MS, ttl_ms=DAY)
    r = rig(pisano, dedup=dedup)  # type: ignore[arg-type]
    suppression = Suppression(OptOutHasher(b"k" * 32, "TR"), MemoryOptOutList(), digits_are_e164=False)
    r.sender.cooldown = ContactCooldown(phones, CooldownWindows(DAY), Keys("t"), suppression.phone_entry)
    real_claim, real_reserve = dedup.stage_claim, phones.stage_reserve
    lost = [False, False]

    def lose(which: int, real: Callable[[], Step[Any]]) -> Step[Any]:
        def run() -> Any:
            late.append(lambda: together([real()]))  # sent, its reply lost
            if which == 1:  # the trip's last step (the claim's comes first): the trip fails
                raise StateStoreError("Timeout reading from Redis")
        lost[which] = True
        return Step.local("a disarm whose reply is lost", run)

    def stage_claim(tag: str, requests: Any, arming: Arming = Arming.ARM, renewal: bool = False) -> Step[Any]:
        if arming is Arming.PENDING and not lost[0]:
            return lose(0, lambda: real_claim(tag, requests, arming, renewal))
        return real_claim(tag, requests, arming, renewal)

    def stage_reserve(tag: str, requests: Any, *, window_ms: int, arming: Arming = Arming.ARM,
                      renewal: bool = False) -> Step[Any]:
        if arming is Arming.PENDING and not lost[1]:
            return lose(1, lambda: real_reserve(tag, requests, window_ms=window_ms, arming=arming, renewal=renewal))
        return real_reserve(tag, requests, window_ms=window_ms, arming=arming, renewal=renewal)

    dedup.stage_claim = stage_claim  # type: ignore[method-assign]
    phones.stage_reserve = stage_reserve  # type: ignore[method-assign]
    return r


def _watch_the_wire(r: Rig, seen: list[list[str]]) -> None:
    """Record, as each request leaves, the dedup value of every event it carries."""
    real_send = r.pisano.send

    def send(campaign_id: str, body: bytes, leave_by: float | None = None) -> Accepted:
        carried = [f"e{int(p[-5:])}" for p in json.loads(body)["phone_numbers"]]
        seen.append([str(r.dedup.state(i)) for i in carried])
        return real_send(campaign_id, body, leave_by)

    r.pisano.send = send  # type: ignore[method-assign]


def _pending(value: str) -> bool:
    return value.startswith("c|") and value.rsplit("|", 1)[1].startswith("0")


def _nothing_left(r: Rig, events: list[Any]) -> None:
    """No claim and no phone reservation of these events is left in Redis."""
    cooldown = r.sender.cooldown
    assert cooldown is not None
    assert [r.dedup.state(e.recipient.event_id) for e in events] == [None] * len(events)
    assert [cooldown.store.state(cooldown.key(e.recipient.phone)) for e in events] == [None] * len(events)


@pytest.mark.parametrize("variant", ["redis", "cluster"])
def test_a_late_disarm_leaves_nothing_and_each_copy_is_sent_once(request: pytest.FixtureRequest, variant: str) -> None:
    client = flushed_client(request, variant)
    late: list[Callable[[], Any]] = []
    pisano = FakePisano([PisanoApiError(503, None, "busy")], default=OK)
    mine = _rig(client, pisano, late)
    seen: list[list[str]] = []
    _watch_the_wire(mine, seen)
    events = [event(i) for i in range(4)]
    mine.process(events)
    assert mine.kinds() == {e.recipient.event_id: {"requeue"} for e in events}
    assert len(seen) == 1 and len(late) == 2
    while late:  # the late disarm lands after the release: it finds the ids free, writes nothing
        late.pop()()
    _nothing_left(mine, events)

    other = rig(FakePisano(default=OK), dedup=RedisDedup(client, Keys("t"), lease_ms=LEASE_MS, horizon_s=3600))  # type: ignore[arg-type]
    other.sender.cooldown = mine.sender.cooldown
    _watch_the_wire(other, seen)
    other.process([event(3)])  # a copy of e3 read elsewhere: sent at once, no lease to wait
    assert other.kinds() == {"e3": {"delivered"}}, other.outcomes

    mine.outcomes.clear()
    mine.process(events[:3])  # e3's partition was revoked here: only e0..e2 come back
    assert mine.kinds() == {f"e{i}": {"delivered"} for i in range(3)}
    assert all(not _pending(v) for request in seen[1:] for v in request), seen
    other.outcomes.clear()
    other.process([event(0)])  # and a copy of a delivered one is skipped
    assert other.kinds() == {"e0": {"skipped"}}
    carried = [i for request in seen[1:] for i in request]
    assert len(carried) == 4  # each event in exactly one POST after the failed one


@pytest.mark.parametrize("variant", ["redis", "cluster"])
def test_a_late_renewal_leaves_nothing_behind(
        request: pytest.FixtureRequest, variant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The renewal before the retry's POST gets no reply (one try here): the request ends unsent,
    released; the renewal lands after and finds the ids and phones free: it writes nothing (it
    used to take them again, armed: held a lease, then dead-lettered `ambiguous` or `cooldown`).
    Their next attempt sends each event once."""
    import consumer.delivery.claims as claims_module

    monkeypatch.setattr(claims_module, "RENEW_TRIES", 1)
    client = flushed_client(request, variant)
    dedup = RedisDedup(client, Keys("t"), lease_ms=60_000, horizon_s=3600)
    phones = RedisCooldown(client, lease_ms=60_000, ttl_ms=DAY)
    pisano = FakePisano([PisanoApiError(503, None, "busy")], default=OK)
    r = rig(pisano, dedup=dedup)  # type: ignore[arg-type]
    suppression = Suppression(OptOutHasher(b"k" * 32, "TR"), MemoryOptOutList(), digits_are_e164=False)
    r.sender.cooldown = ContactCooldown(phones, CooldownWindows(DAY), Keys("t"), suppression.phone_entry)
    late: list[Callable[[], Any]] = []
    real_claim, real_reserve = dedup.stage_claim, phones.stage_reserve
    armed = [0, 0]

    def stage_claim(tag: str, requests: Any, arming: Arming = Arming.ARM, renewal: bool = False) -> Step[Any]:
        armed[0] += arming is Arming.ARM
        if arming is Arming.ARM and armed[0] == 2:
            late.append(lambda: together([real_claim(tag, requests, arming, renewal)]))
            return Step.local("a renewal whose reply is lost", lambda: None)
        return real_claim(tag, requests, arming, renewal)

    def stage_reserve(tag: str, requests: Any, *, window_ms: int, arming: Arming = Arming.ARM,
                      renewal: bool = False) -> Step[Any]:
        armed[1] += arming is Arming.ARM
        if arming is Arming.ARM and armed[1] == 2:
            late.append(lambda: together([real_reserve(tag, requests, window_ms=window_ms, arming=arming,
                                                       renewal=renewal)]))

            def lost() -> Any:
                raise StateStoreError("Timeout reading from Redis")
            return Step.local("a renewal whose reply is lost", lost)
        return real_reserve(tag, requests, window_ms=window_ms, arming=arming, renewal=renewal)

    dedup.stage_claim = stage_claim  # type: ignore[method-assign]
    phones.stage_reserve = stage_reserve  # type: ignore[method-assign]
    events = [event(i) for i in range(3)]
    r.process(events)
    assert len(late) == 2

    lands_late_then_sent_once(r, events, late, lambda: _nothing_left(r, events))
    assert len(pisano.requests) == 2

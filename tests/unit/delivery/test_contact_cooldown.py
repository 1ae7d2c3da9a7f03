"""Issue 13 point 1 in the sender, on in-memory fakes: a phone's cooldown starts only when Pisano
accepted a request carrying it (or may have), refuses the phone to every campaign for the asking
campaign's window, and no path leaves a phone reservation behind (consumer/delivery/contacts.py)."""

from __future__ import annotations

from typing import Any

import pytest

from consumer.delivery.batching import PendingEvent
from consumer.delivery.contacts import ContactCooldown, CooldownWindows
from consumer.delivery.pisano import Accepted
from consumer.errors import PisanoApiError, PisanoTransportError, StateStoreError
from consumer.ingest.mapping import Recipient
from consumer.state.cooldown import MemoryCooldown, PhoneFate, PhoneRequest, PhoneStatus
from consumer.state.dedup import ClaimRequest, ClaimStatus, Settlement
from consumer.state.memory import MemoryDedup
from consumer.state.redis import Keys
from consumer.state.suppression import MemoryOptOutList, OptOutHasher, Suppression
from tests.support.fakes import CAMPAIGN, FakePisano, Rig, event, rig

DAY = 86_400_000
OTHER = "5d1c9a7e-2b0f-4c3a-8e61-0f4a2b9c7d13"
KEY = b"k" * 32
OK = Accepted(200, "req", 0.01)


def policy(store: MemoryCooldown | None = None, windows: CooldownWindows | None = None) -> ContactCooldown:
    phones = Suppression(OptOutHasher(KEY, "TR"), MemoryOptOutList(), digits_are_e164=False)
    return ContactCooldown(store or MemoryCooldown(lease_ms=60_000, ttl_ms=30 * DAY),
                           windows or CooldownWindows(30 * DAY), Keys("t"), phones.phone_entry)


def cooled(r: Rig, cooldown: ContactCooldown | None = None) -> ContactCooldown:
    r.sender.cooldown = cooldown or policy()
    return r.sender.cooldown


def same_phone(i: int, event_id: str, campaign: str = OTHER) -> PendingEvent:
    """Another event (another id, another campaign) for event i's customer."""
    e = event(i)
    e.recipient = Recipient(event_id=event_id, campaign_id=campaign, phone=e.recipient.phone)
    return e


def phone_state(cooldown: ContactCooldown, i: int) -> str | None:
    return cooldown.store.state(cooldown.key(event(i).recipient.phone))


def unclaimed(r: Rig, *event_ids: str) -> bool:
    """Nobody holds or delivered these ids: a fresh claim gets them all (and lets them go again)."""
    tag = r.dedup.new_tag()
    statuses = r.dedup.claim(tag, [ClaimRequest(i) for i in event_ids])
    r.dedup.settle(Settlement.RELEASED, tag, list(event_ids))
    return all(s is ClaimStatus.CLAIMED for s in statuses)


def test_an_accepted_request_starts_the_cooldown_for_every_campaign() -> None:
    r = rig()
    cooldown = cooled(r)
    r.process([event(1), event(2)])
    assert (phone_state(cooldown, 1) or "").startswith("c|")
    r.process([same_phone(1, "x1"), same_phone(3, "x3")])
    assert r.kinds() == {"e1": {"delivered"}, "e2": {"delivered"}, "x1": {"cooldown"}, "x3": {"delivered"}}
    assert r.pisano.requests[-1] == [event(3).recipient.phone]
    assert unclaimed(r, "x1")  # its claim released: a final outcome, nothing held


def test_an_event_delivered_before_is_skipped_not_cooldown() -> None:
    r = rig()
    cooled(r)
    r.process([event(1)])
    r.process([event(1)])  # read again after a crash before its commit
    assert [o.kind for o in r.outcomes] == ["delivered", "skipped"]


def test_a_refused_request_leaves_the_phone_free() -> None:
    r = rig(FakePisano([PisanoApiError(404, 13002, "Campaign not found")]))
    cooldown = cooled(r)
    r.process([event(1)])
    assert r.reasons() == {"e1": "pisano_error"}
    assert phone_state(cooldown, 1) is None
    r.process([same_phone(1, "x1")])
    assert r.kinds()["x1"] == {"delivered"}


@pytest.mark.parametrize(("policy_name", "mark"), [("dead_letter", "u|"), ("assume_delivered", "c|"), ("resend", None)])
def test_an_unknown_fate_counts_as_a_contact_unless_resent(policy_name: str, mark: str | None) -> None:
    r = rig(FakePisano([PisanoTransportError("read timeout", ambiguous=True)]), ambiguous=policy_name)
    cooldown = cooled(r)
    r.process([event(1)])
    state = phone_state(cooldown, 1)
    assert (state is None) if mark is None else (state or "").startswith(mark)
    r.process([same_phone(1, "x1")])
    assert r.kinds()["x1"] == ({"delivered"} if mark is None else {"cooldown"})


def test_a_phone_another_attempt_holds_is_held_back_and_its_claim_released() -> None:
    r = rig()
    cooldown = cooled(r)
    other = cooldown.store.replica()  # type: ignore[attr-defined]
    assert other.reserve("b|1", [PhoneRequest(cooldown.key(event(1).recipient.phone))], window_ms=DAY) \
        == [PhoneStatus.RESERVED]
    r.process([event(1), event(2)])
    assert r.kinds() == {"e1": {"requeue"}, "e2": {"delivered"}}
    assert r.pisano.sent_phones == [event(2).recipient.phone]
    assert unclaimed(r, "e1")


def test_bisection_cools_only_the_recipients_accepted() -> None:
    bad = event(3).recipient.phone
    r = rig(FakePisano(default=lambda phones: PisanoApiError(422, 13028, "Invalid") if bad in phones else OK))
    cooldown = cooled(r)
    r.process([event(i) for i in range(6)])
    assert r.reasons() == {"e3": "pisano_error"}
    assert phone_state(cooldown, 3) is None
    assert all((phone_state(cooldown, i) or "").startswith("c|") for i in (0, 1, 2, 4, 5))


def test_an_exception_after_sending_leaves_a_contact_and_before_sending_frees_the_phone() -> None:
    r = rig(FakePisano([RuntimeError("?")]))
    cooldown = cooled(r)
    r.process([event(1)])
    assert r.reasons() == {"e1": "ambiguous"}
    assert (phone_state(cooldown, 1) or "").startswith("u|")

    r = rig()
    cooldown = cooled(r)
    broken = event(2)
    broken.recipient.custom_attributes["when"] = object()  # type: ignore[assignment]  # cannot be encoded
    r.process([broken])
    assert r.reasons() == {"e2": "internal_error"}
    assert phone_state(cooldown, 2) is None


class Away(MemoryCooldown):
    def reserve(self, tag, requests, *, window_ms, **rest):  # type: ignore[no-untyped-def]
        raise StateStoreError("Redis unreachable for the phone reservation")


def test_redis_away_while_reserving_requeues_sends_nothing_and_releases_the_ids() -> None:
    r = rig()
    cooled(r, policy(Away(lease_ms=60_000, ttl_ms=DAY)))
    r.sender._stop.set()  # do not wait out the backoff
    r.process([event(1), event(2)])
    assert r.kinds() == {"e1": {"requeue"}, "e2": {"requeue"}} and not r.pisano.requests
    assert unclaimed(r, "e1", "e2")


def test_windows_per_campaign_and_destination() -> None:
    windows = CooldownWindows(30 * DAY, {"default": 7 * DAY}, {OTHER: 0})
    assert windows.window_ms("default", CAMPAIGN) == 7 * DAY
    assert windows.window_ms("cards", CAMPAIGN) == 30 * DAY
    assert windows.window_ms("default", OTHER) == 0
    assert windows.longest_ms == 30 * DAY
    assert not CooldownWindows(0, {}, {})
    r = rig()
    cooldown = cooled(r, policy(windows=windows))
    r.process([event(1)])
    r.process([same_phone(1, "x1", OTHER), same_phone(2, "x2", OTHER)])  # a campaign with no cooldown
    assert r.kinds() == {"e1": {"delivered"}, "x1": {"delivered"}, "x2": {"delivered"}}
    assert phone_state(cooldown, 2) is None  # it starts none either


def test_a_replay_of_an_ambiguous_event_may_send_over_its_own_attempts_contact_only() -> None:
    r = rig(FakePisano([PisanoTransportError("read timeout", ambiguous=True)]))
    cooldown = cooled(r)
    r.process([event(1)])
    attempt = r.attempts()["e1"]
    r.process([same_phone(1, "x1", CAMPAIGN)])  # another event for the customer: cooldown
    r.process([event(1, replay_of=attempt)])  # the SRE checked with Pisano: not delivered
    assert [o.kind for o in r.outcomes] == ["dead_letter", "cooldown", "delivered"]
    assert (phone_state(cooldown, 1) or "").startswith("c|")


class LosesFirstReply(MemoryCooldown):
    """Reserves, then loses the reply once (a timeout after Redis ran the script)."""

    lost = False

    def reserve(self, tag, requests, *, window_ms, **rest):  # type: ignore[no-untyped-def]
        statuses = super().reserve(tag, requests, window_ms=window_ms, **rest)
        if not self.lost:
            self.lost = True
            raise StateStoreError("reply lost")
        return statuses


def test_a_lost_reservation_reply_is_asked_again_under_the_same_tag_and_finds_its_own() -> None:
    r = rig()
    cooldown = cooled(r, policy(LosesFirstReply(lease_ms=60_000, ttl_ms=DAY)))
    r.process([event(1)])
    assert r.kinds() == {"e1": {"delivered"}}
    assert (phone_state(cooldown, 1) or "").startswith("c|")


def test_a_phone_taken_over_before_a_retry_is_not_sent_and_its_event_goes_round_again() -> None:
    """The renewal before a retry finds the phone contacted by another attempt (its own lease ran
    out meanwhile, and the other request was accepted): the retry is not sent."""
    r = rig()
    cooldown = cooled(r)
    key = cooldown.key(event(1).recipient.phone)

    def taken_over(phones):  # type: ignore[no-untyped-def]
        cooldown.store.settle(PhoneFate.ACCEPTED, "other|attempt", [key])
        return PisanoApiError(503, None, "Service Unavailable")

    r.pisano.answers = [taken_over]
    r.process([event(1)])
    assert len(r.pisano.requests) == 1 and r.kinds() == {"e1": {"requeue"}}
    assert unclaimed(r, "e1")
    r.process([event(1)])  # round again: the other attempt's contact stands
    assert r.kinds()["e1"] == {"requeue", "cooldown"} and len(r.pisano.requests) == 1


def test_a_replay_of_a_killed_replicas_attempt_may_send_over_its_lapsed_reservation() -> None:
    """A replica killed between the POST and recording the answer leaves its id's claim and its
    phone's reservation to lapse (README "Contact cooldown": the commonest unknown fate). The next
    copy finds the lapsed claim and is dead-lettered as ambiguous naming that attempt; the SRE
    checks with Pisano (not delivered) and replays it: the replay may send over the contact its own
    attempt left, which here is the lapsed reservation, not a `u|` contact. It must not end as
    `cooldown` (final: the survey the SRE asked for would never go), and no other event may."""
    now = [1_000_000_000]
    dedup = MemoryDedup(lease_ms=60_000, horizon_s=3600, clock=lambda: now[0])
    store = MemoryCooldown(lease_ms=60_000, ttl_ms=30 * DAY, clock=lambda: now[0])
    r = rig(dedup=dedup)
    cooldown = cooled(r, policy(store))
    killed = dedup.replica()
    tag = killed.new_tag()
    assert killed.claim(tag, [ClaimRequest("e1")]) == [ClaimStatus.CLAIMED]
    assert store.replica().reserve(tag, [PhoneRequest(cooldown.key(event(1).recipient.phone))],
                                   window_ms=30 * DAY) == [PhoneStatus.RESERVED]
    now[0] += 61_000  # the lease ran out: the replica is gone
    r.process([event(1)])  # a copy read again
    assert r.kinds() == {"e1": {"dead_letter"}} and r.attempts()["e1"] == tag
    r.process([same_phone(1, "x1", CAMPAIGN)])  # another event for the customer: the lapse counts
    r.process([event(1, replay_of=tag)])  # the signed replay of that dead letter
    assert [o.kind for o in r.outcomes] == ["dead_letter", "cooldown", "delivered"]
    assert len(r.pisano.requests) == 1 and (phone_state(cooldown, 1) or "").startswith("c|")


def test_an_id_an_attempt_released_is_never_claimed_again_under_its_tag() -> None:
    """A release whose reply was lost is asked again, and the call whose reply was lost may still
    land later (a call is not cancelled when its connection is given up: consumer/delivery/
    claims.py). So an attempt must never claim again an id it released: that late release would
    remove the new claim while its request is on the wire, and the id, unclaimed, could be sent by
    another replica meanwhile. The top-up after the claim's first round did: a copy of a record
    refused for its phone's cooldown (an upstream duplicate with another phone) was claimed again
    under the tag that had just released the id."""
    r = rig()
    cooled(r)
    r.process([event(1)])  # its phone is contacted: in cooldown from now on
    r.outcomes.clear()
    refused = same_phone(1, "x1", CAMPAIGN)  # id x1, the phone in cooldown
    copy = event(5)
    copy.recipient = Recipient(event_id="x1", campaign_id=CAMPAIGN, phone=event(5).recipient.phone)
    r.batcher.add([copy])
    late: list[Any] = []
    real_settle = r.dedup.settle

    def settle(outcome, tag, ids, tombstone=False):  # type: ignore[no-untyped-def]
        if outcome is Settlement.RELEASED and list(ids) == ["x1"] and not late:
            late.append(lambda: real_settle(outcome, tag, ids, tombstone))  # sent, its reply lost
            raise StateStoreError("Timeout reading from Redis")
        return real_settle(outcome, tag, ids, tombstone)

    r.dedup.settle = settle  # type: ignore[method-assign]
    at_the_wire: list[str | None] = []

    def land_late() -> None:
        while late:
            late.pop()()
        at_the_wire.append(r.dedup.state("x1"))

    r.pisano.on_wire = land_late
    r.process([refused])
    assert [o.kind for o in r.outcomes if refused in o.events] == ["cooldown"]
    assert all(state is not None and state.startswith("c|") for state in at_the_wire), \
        f"an id left in a request with its claim gone: {at_the_wire}"

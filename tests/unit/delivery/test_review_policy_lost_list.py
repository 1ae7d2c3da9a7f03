"""Adversarial review of the contact policy, continued (README "Contact policy"): the opt-out list
lost under a running fleet. Each test failed on the code before its fix."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from consumer.delivery.contacts import PhoneReservation
from consumer.errors import StateStoreError
from consumer.state.cooldown import MemoryCooldown, PhoneFate, PhoneRequest, PhoneStatus
from consumer.state.suppression import MemoryOptOutList, OptOutHasher
from tests.support.fakes import CAMPAIGN, event, rig
from tests.unit.delivery.test_contact_cooldown import DAY, cooled, same_phone
from tests.unit.delivery.test_review_contact_policy import KEY, _stamped, suppressing_rig


def test_an_opt_out_list_lost_under_a_running_replica_sends_nothing() -> None:
    """Redis restarted without its data (or was flushed, or failed over to a replica without the
    set): the list is then an empty set, every lookup answered "not on the list", and the customer
    who opted out was surveyed at the next event. A replica that has seen the list fails closed
    until it is imported again, as when Redis does not answer."""
    hasher = OptOutHasher(KEY.encode(), "TR")
    store = MemoryOptOutList([hasher.phone("+905321200001")])
    r = suppressing_rig(store)
    r.process([_stamped(0, "+905321200001"), _stamped(1, "+905321200000")])
    assert r.kinds() == {"e0": {"suppressed"}, "e1": {"delivered"}}

    store._entries.clear()  # the list is gone from Redis
    r.process([_stamped(2, "+905321200001")])
    assert "+905321200001" not in r.pisano.sent_phones, "an opted-out customer was surveyed after the list was lost"
    assert r.kinds()["e2"] == {"requeue"}  # held back, uncommitted, as with Redis away

    with pytest.raises(StateStoreError, match="no marker"):  # a routine `suppress add`: refused
        store.add([hasher.phone("+905321200000")])
    r.process([_stamped(5, "+905321200001")])
    assert "+905321200001" not in r.pisano.sent_phones, "an add re-armed the lost list"
    assert r.kinds()["e5"] == {"requeue"}
    store.holding_marker = True  # `suppress import` of the whole list: the list answers again
    store.add([hasher.phone("+905321200001")])
    store.complete()
    r.process([_stamped(3, "+905321200001"), _stamped(4, "+905321200002")])
    assert r.kinds()["e3"] == {"suppressed"} and r.kinds()["e4"] == {"delivered"}
    assert r.pisano.sent_phones == ["+905321200000", "+905321200002"]


def _cooled_in_memory(r: Any) -> tuple[Any, MemoryCooldown]:
    """The rig's contact cooldown and its in-memory store."""
    cooldown = cooled(r)
    assert isinstance(cooldown.store, MemoryCooldown)
    return cooldown, cooldown.store


def test_a_phone_given_up_unsent_is_taken_over_whichever_event_of_the_batch_asks_for_it_first() -> None:
    """An attempt A of this replica reserved a phone, sent nothing to it and could not release it
    (Redis failing): its event carries A (`abandoned_by`) so that its next claim takes A's
    reservation over (lua/reserve_phones.lua: "it must neither hold the phone back nor count as a
    contact"). A phone twice in a batch is asked once, for the first event: when that was another
    event for the same customer, fresh from Kafka, the request carried no `abandoned_by`, A's
    reservation held both events back round after round until its lease ran out, and then counted as
    a contact: both ended as `cooldown`, and the customer, never texted, got no survey at all."""
    r = rig()
    cooldown, store = _cooled_in_memory(r)
    given_up = event(1)
    key = cooldown.key(given_up.recipient.phone)
    a = r.dedup.new_tag()
    assert store.reserve(a, [PhoneRequest(key)], window_ms=30 * DAY) == [PhoneStatus.RESERVED]
    given_up.abandoned_by = (a,)  # A gave the phone up unsent; its release never landed
    fresh = same_phone(1, "fresh", CAMPAIGN)  # another event for the same customer, read since

    r.process([fresh, given_up])
    assert r.pisano.sent_phones == [given_up.recipient.phone], r.kinds()
    r.process([e for e in (fresh, given_up) if r.kinds()[e.recipient.event_id] == {"requeue"}])
    kinds = r.kinds()
    assert sorted(sorted(kinds[i]) for i in ("fresh", "e1")) == [["cooldown", "requeue"], ["delivered"]]
    assert r.pisano.sent_phones == [given_up.recipient.phone]  # once


def test_a_replays_given_up_reservation_is_not_lent_to_another_event_of_the_batch() -> None:
    """The merge above stays inside one replay scope: a reservation a signed replay gave up may cover
    the unknown mark it was allowed to override, which nobody checked for any other event."""
    r = rig()
    cooldown, store = _cooled_in_memory(r)
    replay = event(1)
    key = cooldown.key(replay.recipient.phone)
    y, a = r.dedup.new_tag(), r.dedup.new_tag()
    store.reserve(y, [PhoneRequest(key)], window_ms=30 * DAY)
    store.settle(PhoneFate.UNKNOWN, y, [key])  # attempt Y may have texted the customer
    assert store.reserve(a, [PhoneRequest(key, y)], window_ms=30 * DAY) == [PhoneStatus.RESERVED]
    replay.replay_of, replay.abandoned_by = y, (a,)
    fresh = same_phone(1, "fresh", CAMPAIGN)
    reservation = PhoneReservation(cooldown, 30 * DAY, r.dedup.new_tag(), r.sender.metrics, threading.Event())
    asked = reservation.ask([fresh, replay])
    assert [(q.replay_of, q.abandoned_by) for q in asked.requests] == [(None, ())]


def test_an_external_id_a_plug_in_mapper_gives_as_a_whole_float_is_looked_up() -> None:
    """The recipient check lets a plug-in mapper send `external_id` as any finite JSON number, and
    Pisano gets it; the opt-out lookup read strings and ints only, so an id decoded as a float
    (1042.0: JSON numbers read by a generic decoder, an Avro double) was never looked up and the
    customer put on the list with `suppress add --external-id 1042` was surveyed."""
    hasher = OptOutHasher(KEY.encode(), "TR")
    store = MemoryOptOutList([hasher.external_id("1042")])
    r = suppressing_rig(store)
    events = [_stamped(0, "+905321200000"), _stamped(1, "+905321200001"), _stamped(2, "+905321200002")]
    events[1].recipient.custom_attributes["external_id"] = 1042.0
    events[2].recipient.custom_attributes["external_id"] = 1042.5  # no customer's id: looked up as nothing
    r.process(events)
    assert r.kinds() == {"e0": {"delivered"}, "e1": {"suppressed"}, "e2": {"delivered"}}

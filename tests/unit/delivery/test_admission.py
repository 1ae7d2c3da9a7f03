"""Issue 13 points 3 and 4: expired events end before the claim, suppressed ones in the claim's
round trip (consumer/delivery/admission.py, consumer/delivery/claims.py); neither is sent nor left
claimed; a Redis failure fails closed."""

from __future__ import annotations

import time
from collections.abc import Sequence

from consumer.app import build_admission
from consumer.config.resources import default_mapping_file
from consumer.config.settings import Settings
from consumer.delivery.admission import Admission
from consumer.errors import StateStoreError
from consumer.ingest.freshness import Freshness
from consumer.ingest.mapping import DeclarativeMapper
from consumer.ingest.records import InboundRecord
from consumer.state.dedup import ClaimRequest, ClaimStatus
from consumer.state.suppression import MemoryOptOutList, OptOutHasher, Suppression
from tests.support.fakes import Rig, event, rig

KEY = b"k" * 32


def stamped(i: int, age_ms: int, external_id: str | None = None) -> object:
    e = event(i)
    e.message = InboundRecord("t", 0, i, None, b"", [], (1, int(time.time() * 1000) - age_ms))
    if external_id:
        e.recipient.custom_attributes["external_id"] = external_id
    return e


def suppression(store: MemoryOptOutList, region: str | None = "TR") -> Suppression:
    return Suppression(OptOutHasher(KEY, region), store, digits_are_e164=False)


def test_suppressed_and_expired_events_are_never_claimed_nor_sent() -> None:
    store = MemoryOptOutList()
    hasher = OptOutHasher(KEY, "TR")
    events = [stamped(i, 0) for i in range(6)]
    store.add([hasher.phone("0532 120 00 01"),  # event 1's phone, as an operator typed it
               hasher.external_id("cust-3")])
    events[3].recipient.custom_attributes["external_id"] = "cust-3"  # type: ignore[attr-defined]
    events[5] = stamped(5, 3 * 3_600_000)
    r = rig()
    r.sender.admission = Admission(freshness=Freshness(3_600_000), suppression=suppression(store))
    r.process(events)  # type: ignore[arg-type]
    assert r.kinds() == {"e0": {"delivered"}, "e1": {"suppressed"}, "e2": {"delivered"}, "e3": {"suppressed"},
                         "e4": {"delivered"}, "e5": {"expired"}}
    assert sorted(r.pisano.sent_phones) == ["+905321200000", "+905321200002", "+905321200004"]
    assert unclaimed(r, "e1", "e3", "e5")


def unclaimed(r: Rig, *event_ids: str) -> bool:
    """Nobody holds or delivered these ids: a fresh claim gets them all."""
    statuses = r.dedup.claim(r.dedup.new_tag(), [ClaimRequest(i) for i in event_ids])
    return all(s is ClaimStatus.CLAIMED for s in statuses)


class Failing(MemoryOptOutList):
    def contains(self, entries: Sequence[str]) -> list[bool]:
        raise StateStoreError("Redis unreachable for the opt-out list")


def test_an_unreadable_list_fails_closed_nothing_sent_nothing_claimed() -> None:
    r = rig()
    r.sender.admission = Admission(suppression=suppression(Failing()))
    r.sender.outage.stop.set()  # no back-off wait in a unit test
    r.process([stamped(i, 0) for i in range(3)])  # type: ignore[list-item]
    assert r.kinds() == {f"e{i}": {"requeue"} for i in range(3)}
    assert r.pisano.sent_phones == [] and unclaimed(r, "e0", "e1", "e2")


def test_a_phone_that_cannot_be_looked_up_is_dead_lettered_not_sent() -> None:
    r = rig()
    r.sender.admission = Admission(suppression=suppression(MemoryOptOutList(), region=None))
    events = [stamped(0, 0), stamped(1, 0)]
    events[1].recipient.phone = "05321200001"  # type: ignore[attr-defined]  # digits only, no region
    r.process(events)  # type: ignore[arg-type]
    assert r.kinds() == {"e0": {"delivered"}, "e1": {"dead_letter"}}
    assert r.reasons() == {"e1": "invalid_event"}


def test_without_a_policy_admission_is_skipped() -> None:
    r = rig()
    r.sender.admission = None
    r.process([stamped(0, 10 * 86_400_000)])  # type: ignore[list-item]
    assert r.kinds() == {"e0": {"delivered"}}


def test_an_event_that_grew_past_the_stale_limit_while_it_waited_is_dead_lettered_as_stale_not_sent() -> None:
    """The stale guard weighed a record's age at intake only. One re-read after its group lost its
    offsets, 5.5 days old (under the 6-day limit), then held by quiet hours over a weekend (Fri
    21:00 to Mon 09:00: 60 h) was claimed at 8 days, past DEDUP_HORIZON_S: its delivered mark could
    be gone and the claim succeed, a second SMS. STALE_MARGIN_S (1 day) does not cover that wait.
    Before: sent (the production admission had nothing to check without MAX_EVENT_AGE)."""
    settings = Settings(kafka_topics=["t"], pisano_url="https://pisano.invalid")
    admission = build_admission(settings, None, DeclarativeMapper.from_file(default_mapping_file()))  # type: ignore[arg-type]
    r = rig()
    r.sender.admission = admission if admission else None  # as Sender.__init__ takes it
    waited = stamped(0, settings.stale_after_ms + 3_600_000)
    fresh = stamped(1, settings.stale_after_ms - 3_600_000)
    r.process([waited, fresh])  # type: ignore[list-item]
    assert r.kinds() == {"e0": {"dead_letter"}, "e1": {"delivered"}}
    assert r.reasons() == {"e0": "stale"}
    assert r.pisano.sent_phones == ["+905321200001"]
    assert unclaimed(r, "e0")

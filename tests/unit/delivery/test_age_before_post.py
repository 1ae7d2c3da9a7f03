"""MAX_EVENT_AGE and `stale` weighed again just before every POST, after the request's waits
(consumer/delivery/admission.py, `Admission.at_post`): an event that grew too old while its request
waited (a backoff, a far slot, an outage, bisection's earlier groups) is never sent; it ends
`expired` (or dead-lettered `stale`), its claim released, and the rest of the request goes on.

The wall clock the admission reads is a fake one, moved on by the scripted Pisano's answers."""

from __future__ import annotations

import pytest

from consumer.delivery import admission as admission_module
from consumer.delivery.admission import Admission
from consumer.delivery.pisano import Accepted
from consumer.errors import PisanoApiError
from consumer.ingest.freshness import Freshness
from consumer.ingest.records import InboundRecord
from consumer.state.dedup import ClaimRequest, ClaimStatus
from tests.support.fakes import FakePisano, Rig, event, rig

HOUR_MS = 3_600_000
START_MS = 1_800_000_000_000
OK = Accepted(200, "req", 0.01)


class FakeClock:
    """Stands in for the `time` module admission.py reads the wall clock from."""

    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def time(self) -> float:
        return self.now_ms / 1000

    def advance(self, ms: int) -> None:
        self.now_ms += ms


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock(START_MS)
    monkeypatch.setattr(admission_module, "time", fake)
    return fake


def aged(i: int, age_ms: int) -> object:
    e = event(i)
    e.message = InboundRecord("t", 0, i, None, b"", [], (1, START_MS - age_ms))
    return e


def unclaimed(r: Rig, *event_ids: str) -> bool:
    statuses = r.dedup.claim(r.dedup.new_tag(), [ClaimRequest(i) for i in event_ids])
    return all(s is ClaimStatus.CLAIMED for s in statuses)


def after(clock: FakeClock, ms: int, answer: object):  # type: ignore[no-untyped-def]
    """A Pisano answer given after `ms` of the fake clock (the request's wait, compressed)."""
    def answering(phones: list[str]) -> object:
        clock.advance(ms)
        return answer
    return answering


def test_an_event_that_grows_too_old_during_a_retrys_backoff_is_not_sent_and_ends_expired(clock: FakeClock) -> None:
    events = [aged(0, 0), aged(1, 2 * HOUR_MS - 60_000), aged(2, 0)]  # e1 is a minute from MAX_EVENT_AGE
    r = rig(FakePisano([after(clock, 5 * 60_000, PisanoApiError(503, None, "busy")), OK]))  # type: ignore[list-item]
    r.sender.admission = Admission(freshness=Freshness(2 * HOUR_MS))
    r.process(events)  # type: ignore[arg-type]
    assert r.kinds() == {"e0": {"delivered"}, "e1": {"expired"}, "e2": {"delivered"}}
    assert len(r.pisano.requests) == 2
    assert events[1].recipient.phone not in r.pisano.requests[1]  # type: ignore[attr-defined]
    assert unclaimed(r, "e1"), "an expired event's claim must be released, not remembered as delivered"


def test_a_request_whose_every_event_grew_too_old_is_not_sent(clock: FakeClock) -> None:
    events = [aged(0, 2 * HOUR_MS - 60_000), aged(1, 2 * HOUR_MS - 30_000)]
    r = rig(FakePisano([after(clock, 5 * 60_000, PisanoApiError(503, None, "busy"))]))  # type: ignore[list-item]
    r.sender.admission = Admission(freshness=Freshness(2 * HOUR_MS))
    r.process(events)  # type: ignore[arg-type]
    assert r.kinds() == {"e0": {"expired"}, "e1": {"expired"}}
    assert len(r.pisano.requests) == 1
    assert unclaimed(r, "e0", "e1")


def test_bisections_later_groups_leave_without_the_events_that_grew_too_old(clock: FakeClock) -> None:
    bad = event(0).recipient.phone

    def refuse(phones: list[str]) -> object:
        clock.advance(60_000)  # each request takes a minute of the fake clock
        return PisanoApiError(422, 13028, "Invalid parameters") if bad in phones else OK

    events = [aged(0, 0), aged(1, 0), aged(2, 2 * HOUR_MS - 90_000), aged(3, 0)]
    r = rig(FakePisano(default=refuse))  # type: ignore[arg-type]
    r.sender.admission = Admission(freshness=Freshness(2 * HOUR_MS))
    r.process(events)  # type: ignore[arg-type]
    kinds = r.kinds()
    assert kinds["e2"] == {"expired"} and kinds["e0"] == {"dead_letter"}
    assert all(len(k) == 1 for k in kinds.values()) and len(kinds) == 4
    sent_after_expiry = r.pisano.requests[2:]  # two minutes in: e2 is past the age
    assert all(events[2].recipient.phone not in request for request in sent_after_expiry)  # type: ignore[attr-defined]
    assert unclaimed(r, "e2")


def test_an_event_that_goes_stale_while_its_request_waits_is_dead_lettered_stale_unsent(clock: FakeClock) -> None:
    stale_after_ms = 24 * HOUR_MS
    events = [aged(0, 0), aged(1, stale_after_ms - 60_000)]
    r = rig(FakePisano([after(clock, 5 * 60_000, PisanoApiError(503, None, "busy")), OK]))  # type: ignore[list-item]
    r.sender.admission = Admission(stale_after_ms=stale_after_ms)
    r.process(events)  # type: ignore[arg-type]
    assert r.kinds() == {"e0": {"delivered"}, "e1": {"dead_letter"}}
    assert r.reasons() == {"e1": "stale"}
    assert events[1].recipient.phone not in r.pisano.requests[1]  # type: ignore[attr-defined]
    assert unclaimed(r, "e1")

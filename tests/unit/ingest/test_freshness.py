"""Issue 13 point 3: MAX_EVENT_AGE; events too old end as `expired`, not dead letters
(consumer/ingest/freshness.py, consumer/ingest/backlog.py)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from consumer.config.loading import load_settings
from consumer.errors import ConfigError
from consumer.ingest.backlog import Backlog
from consumer.ingest.freshness import Freshness
from consumer.ingest.mapping import DeclarativeMapper
from consumer.ingest.records import InboundRecord
from consumer.operations.health import Health
from consumer.operations.logs import LogBudget
from consumer.operations.metrics import Metrics

CAMPAIGN = "ae51458c-9e82-417f-8f1d-e074891ea5c1"
HOUR_MS = 3_600_000


def test_max_event_age_takes_a_duration_and_stays_within_the_stale_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().max_event_age_ms is None
    for text, ms in (("48h", 48 * HOUR_MS), ("90m", 5_400_000), ("2d", 48 * HOUR_MS), ("3600s", HOUR_MS)):
        monkeypatch.setenv("MAX_EVENT_AGE", text)
        assert load_settings().max_event_age_ms == ms
    monkeypatch.setenv("MAX_EVENT_AGE", "48 hours")
    with pytest.raises(ConfigError, match="MAX_EVENT_AGE"):
        load_settings()
    monkeypatch.setenv("MAX_EVENT_AGE", "7d")  # past DEDUP_HORIZON_S minus STALE_MARGIN_S (6 days)
    with pytest.raises(ConfigError, match="at most DEDUP_HORIZON_S minus STALE_MARGIN_S"):
        load_settings()
    monkeypatch.setenv("MAX_EVENT_AGE", "0h")
    with pytest.raises(ConfigError, match="more than 0"):
        load_settings()


class Values:
    def __init__(self, values: dict[bytes, dict[str, Any]]) -> None:
        self.values = values

    def decode(self, value: bytes) -> dict[str, Any]:
        return self.values[value]


def value(event_id: str, occurred: datetime | None) -> dict[str, Any]:
    return {"event_id": event_id, "occurred_at": occurred, "phone": "+905321234567", "campaign_id": CAMPAIGN,
            "customer_id": "c1"}


def backlog(mapping: dict[str, Any], values: dict[bytes, dict[str, Any]],
            max_age_ms: int | None) -> tuple[Backlog, list[Any], list[Any]]:
    expired: list[Any] = []
    letters: list[Any] = []
    mapper = DeclarativeMapper({"event_id": "event_id", "phone": "phone", "campaign_id": "campaign_id",
                                "custom_attributes": {"external_id": "customer_id"}, **mapping})
    b = Backlog(Values(values), mapper, 1 << 20, metrics=Metrics(), health=Health(joined=True),
                dead_letter=lambda record, tp, epoch, failure: letters.append(failure), log_budget=LogBudget(),
                freshness=Freshness(max_age_ms) if max_age_ms else None, expire=expired.extend)
    return b, expired, letters


def add(b: Backlog, value_key: bytes, offset: int, kafka_ms: int) -> None:
    b.add(InboundRecord("t", 0, offset, None, value_key, [], (1, kafka_ms)), ("t", 0), 0)


def test_by_kafka_timestamp_old_events_expire_and_fresh_ones_pass() -> None:
    now_ms = int(time.time() * 1000)
    b, expired, letters = backlog({}, {b"a": value("old", None), b"b": value("new", None)}, 48 * HOUR_MS)
    add(b, b"a", 1, now_ms - 49 * HOUR_MS)
    add(b, b"b", 2, now_ms - 47 * HOUR_MS)
    events = b.decode(time.monotonic(), time.monotonic() + 5, lambda tp, epoch, offset: True)
    assert [e.recipient.event_id for e in events] == ["new"]
    assert [e.recipient.event_id for e in expired] == ["old"] and not letters


def test_the_mapping_s_event_time_wins_over_the_kafka_timestamp() -> None:
    now = datetime.now(UTC)
    b, expired, letters = backlog({"event_time": "occurred_at"},
                                  {b"a": value("paid-4-days-ago", now - timedelta(days=4)),
                                   b"b": value("paid-now", now), b"c": value("no-time", None)}, 48 * HOUR_MS)
    fresh_kafka = int(time.time() * 1000)
    for offset, key in enumerate((b"a", b"b", b"c")):
        add(b, key, offset, fresh_kafka)  # produced just now, whatever the transaction's time
    events = b.decode(time.monotonic(), time.monotonic() + 5, lambda tp, epoch, offset: True)
    assert [e.recipient.event_id for e in events] == ["paid-now"]
    assert [e.recipient.event_id for e in expired] == ["paid-4-days-ago"]
    # Declared but missing: no guess from the Kafka timestamp, a dead letter saying so.
    assert [(f.reason, f.message) for f in letters] == [
        ("invalid_event", "no event time at the mapping's event_time path")]


def test_event_time_in_iso_or_epoch_millis() -> None:
    m = DeclarativeMapper({"event_id": "event_id", "phone": "phone", "campaign_id": "campaign_id",
                           "event_time": "t", "time_zone": "Europe/Istanbul"})
    base = {"event_id": "e", "phone": "+905321234567", "campaign_id": CAMPAIGN}
    assert m.map({**base, "t": 1_726_549_175_000}).event_time_ms == 1_726_549_175_000
    assert m.map({**base, "t": "2024-09-17T04:59:35Z"}).event_time_ms == 1_726_549_175_000
    assert m.map({**base, "t": "2024-09-17 07:59:35"}).event_time_ms == 1_726_549_175_000  # naive: Istanbul


def test_freshness_expired_is_what_a_holding_policy_asks() -> None:
    freshness = Freshness(HOUR_MS)

    class Event:
        def __init__(self, event_ms: int | None, kafka_ms: int) -> None:
            self.recipient = type("R", (), {"event_time_ms": event_ms})()
            self.message = InboundRecord("t", 0, 0, None, b"", [], (1, kafka_ms))

    now = 10 * HOUR_MS
    assert freshness.expired(Event(None, now - HOUR_MS - 1), now)
    assert not freshness.expired(Event(None, now - HOUR_MS), now)
    assert not freshness.expired(Event(now - 60_000, now - 5 * HOUR_MS), now)  # its own time wins
    assert not freshness.expired(Event(None, -1), now)  # no time at all: no age, as the stale check


def test_an_event_time_in_seconds_or_microseconds_is_dead_lettered_not_expired_or_never_expiring() -> None:
    # Found in review: an int event time is taken as epoch milliseconds whatever it holds. A producer
    # writing seconds (1.7e9: 1970-01-21 as milliseconds) had every event end `expired`, committed,
    # never sent and never replayable; one writing microseconds (1.7e15: year 55,000) had none ever
    # expire, MAX_EVENT_AGE silently off. Either is the mapping's mistake: a dead letter that says so.
    now = datetime.now(UTC)
    seconds, micros = int(now.timestamp()), int(now.timestamp() * 1_000_000)
    four_days_ago_ms = int((now - timedelta(days=4)).timestamp() * 1000)
    b, expired, letters = backlog({"event_time": "occurred_at"},
                                  {b"s": {**value("seconds", None), "occurred_at": seconds},
                                   b"u": {**value("micros", None), "occurred_at": micros},
                                   b"m": {**value("millis", None), "occurred_at": four_days_ago_ms}}, 48 * HOUR_MS)
    for offset, key in enumerate((b"s", b"u", b"m")):
        add(b, key, offset, int(time.time() * 1000))
    events = b.decode(time.monotonic(), time.monotonic() + 5, lambda tp, epoch, offset: True)
    assert not events
    assert [e.recipient.event_id for e in expired] == ["millis"]
    assert [f.reason for f in letters] == ["invalid_event", "invalid_event"]
    for failure, digits in zip(letters, (10, 16), strict=True):
        assert f"{digits} digits" in failure.message and "milliseconds" in failure.message, failure.message
        assert str(seconds) not in failure.message and str(micros) not in failure.message


def test_without_max_event_age_an_event_time_in_another_unit_is_still_sent() -> None:
    """Found in review of the check above, first made for every event: a fleet whose mapping's
    event_time holds seconds and that sets no MAX_EVENT_AGE worked (the time labels its receipts
    only), and would have dead-lettered every survey after the upgrade."""
    seconds = int(time.time())
    b, expired, letters = backlog({"event_time": "occurred_at"},
                                  {b"s": {**value("seconds", None), "occurred_at": seconds}}, None)
    add(b, b"s", 0, int(time.time() * 1000))
    events = b.decode(time.monotonic(), time.monotonic() + 5, lambda tp, epoch, offset: True)
    assert [e.recipient.event_id for e in events] == ["seconds"] and not expired and not letters


def test_a_replay_s_age_runs_from_its_source_record_not_from_its_republishing() -> None:
    # Found in review: `replay` re-publishes a dead-letter as a new record with a new Kafka timestamp,
    # and without the mapping's event_time MAX_EVENT_AGE counted from that: a survey about a payment
    # four days old went out with MAX_EVENT_AGE=48h when an SRE replayed its `throttled` dead-letter.
    # The replay carries its source record's time (dlq.source.timestamp); the age runs from the older.
    now_ms = int(time.time() * 1000)
    b, expired, letters = backlog({}, {v: value(v.decode(), None) for v in (b"old", b"young", b"forged", b"junk")},
                                  48 * HOUR_MS)
    source = [(b"old", str(now_ms - 96 * HOUR_MS).encode()), (b"young", str(now_ms - HOUR_MS).encode()),
              (b"forged", str(now_ms + 96 * HOUR_MS).encode()), (b"junk", "٩٦".encode())]
    for offset, (key, stamp) in enumerate(source):
        kafka_ms = now_ms if key != b"forged" else now_ms - 49 * HOUR_MS  # a later source time is no younger
        b.add(InboundRecord("t", 0, offset, None, key, [("dlq.source.timestamp", stamp)], (1, kafka_ms)), ("t", 0), 0)
    events = b.decode(time.monotonic(), time.monotonic() + 5, lambda tp, epoch, offset: True)
    assert sorted(e.recipient.event_id for e in events) == ["junk", "young"]
    assert sorted(e.recipient.event_id for e in expired) == ["forged", "old"] and not letters

"""MAX_EVENT_AGE: a survey about a payment made days ago is not sent (issue 13, point 3).

An event's age runs from its own time: the mapping's `event_time` when set (the moment of the
transaction), else the record's Kafka timestamp. An event older than MAX_EVENT_AGE ends with the
outcome `expired`: never sent, never claimed, counted in `pisano_sms_events_filtered_total{reason}`
and committed like a skipped duplicate. It is not a dead letter: nothing is wrong with it and
nothing should be replayed.

It is weighed at intake, for every event (one comparison, no Redis), again at admission just
before the claim (consumer/delivery/admission.py), for events that waited since: held back while
their id was in flight elsewhere, in a Redis outage, or by quiet hours
(consumer/delivery/quiet_hours.py), whose held events pass admission when their window opens; and
before every POST, after the request's own waits (`admission.AgeScreen`).

Not to be confused with `stale` (consumer/ingest/intake.py): a record older than DEDUP_HORIZON_S
minus STALE_MARGIN_S by its Kafka timestamp may have lost its delivered mark, so it is
dead-lettered to be looked at. Settings refuse a MAX_EVENT_AGE beyond that limit: stale is checked
first and would always win.
"""

from __future__ import annotations

from typing import Any

from consumer.ingest.records import older

# An event time in epoch milliseconds lies between 1973 and the year 5138 (12 to 14 digits). A count
# of seconds (10 digits today) falls below, of microseconds or nanoseconds (16, 19) above: taken as
# milliseconds, the first made every event `expired` (January 1970), the second none ever (tens of
# millennia ahead, MAX_EVENT_AGE silently off). Either is the mapping's mistake, dead-lettered; only
# under MAX_EVENT_AGE, which is what the time decides: without it the time only labels a receipt,
# and dead-lettering every survey for a label would stop a fleet that worked.
_EVENT_TIME_MS = range(10**11, 10**14)


class Freshness:
    def __init__(self, max_age_ms: int) -> None:
        self.max_age_ms = max_age_ms

    @staticmethod
    def wrong_unit(recipient: Any) -> str | None:
        """Why the mapping's event time cannot be epoch milliseconds (its digits, never its value),
        or None: the dead letter's message (`invalid_event`, consumer/ingest/backlog.py)."""
        stamp = recipient.event_time_ms
        if stamp is None or stamp in _EVENT_TIME_MS:
            return None
        return (f"event time of {len(str(abs(stamp)))} digits is not epoch milliseconds (12 to 14 digits, 1973 to "
                "5138: seconds or microseconds?), so MAX_EVENT_AGE cannot weigh it; map the event_time to "
                "milliseconds, an Avro timestamp or ISO 8601 (a custom mapper converts it), then replay")

    @staticmethod
    def event_time_ms(recipient: Any, record: Any) -> int | None:
        """When the event happened: the mapping's event_time, else the record's Kafka timestamp, or
        a replay's source record's time when older (`records.SOURCE_TIMESTAMP_HEADER`)."""
        stamp = recipient.event_time_ms
        if stamp is not None:
            return stamp  # type: ignore[no-any-return]
        _, stamp = record.timestamp()
        stamp = older(stamp, getattr(record, "source_timestamp_ms", 0))
        return stamp if stamp > 0 else None  # as the stale check: no timestamp, no age

    def too_old(self, recipient: Any, record: Any, now_ms: int) -> bool:
        stamp = self.event_time_ms(recipient, record)
        return stamp is not None and now_ms - stamp > self.max_age_ms

    def expired(self, event: Any, now_ms: int) -> bool:
        """Whether a PendingEvent is past MAX_EVENT_AGE at `now_ms` (wall clock, epoch ms)."""
        return self.too_old(event.recipient, event.message, now_ms)

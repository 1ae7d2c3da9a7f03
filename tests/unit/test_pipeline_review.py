"""Adversarial review of the outcome path (poll loop, dead letters, receipts, revocations): each
test names the way a record could end with no outcome, two, or hold its partition, before the fix."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from consumer.config.resources import default_mapping_file
from consumer.ingest.avro import SchemalessDecoder
from consumer.ingest.mapping import DeclarativeMapper, Mapper, Recipient
from consumer.ingest.samples import default_schema, encode, phone_for, transaction
from tests.support.fake_kafka import CAMPAIGN, FakeMessage, pipeline

MAPPER = DeclarativeMapper.from_file(default_mapping_file())


def good(offset: int) -> FakeMessage:
    record = transaction(f"e-{offset}", phone_for(offset), CAMPAIGN, n=offset)
    return FakeMessage("t", 0, offset, encode(record), key=f"e-{offset}".encode())


class EventTimeAsDatetime(Mapper):
    """A company's mapper that passes an Avro `timestamp-millis` on as it is: fastavro decodes it
    to a datetime, not epoch milliseconds."""

    def map(self, record: Mapping[str, Any]) -> Recipient:
        recipient = MAPPER.map(record)
        recipient.event_time_ms = datetime.now(UTC)  # type: ignore[assignment]
        return recipient


def test_a_mappers_event_time_that_is_not_epoch_ms_dead_letters_its_record_not_the_poll_loop() -> None:
    """Before: `check_recipient` let any `event_time_ms` through; with MAX_EVENT_AGE the poll loop
    raised TypeError (`now_ms - datetime`) in `Backlog.decode`, outside the record's guard: the
    replica died, restarted, read the same record and died again (a crash loop, the partition stuck);
    with receipts the receipt's encoder raised the same way after the SMS was sent."""
    loop, consumer, producer = pipeline(SchemalessDecoder(default_schema()), EventTimeAsDatetime(),
                                        max_event_age="1h")
    consumer.queue = [good(0), good(1)]
    for _ in range(3):
        loop._step()
    assert [p["headers"]["dlq.reason"] for p in producer.produced] == [b"invalid_event", b"invalid_event"]
    loop._commit()
    assert consumer.committed == {("t", 0): 2}

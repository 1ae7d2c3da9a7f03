"""An adversarial review of the receipts (consumer/outcomes/receipts.py): a receipt read back with
the timestamps it was written with, and no second receipt for a record whose first was
acknowledged after its partition came back to this replica or after a marks outage at its assignment."""

from __future__ import annotations

import random
import time
from typing import Any

import pytest

from consumer.ingest.mapping import Recipient
from consumer.ingest.records import InboundRecord
from consumer.outcomes.deadletter import MARKS_PAUSE_S
from consumer.outcomes.receipts import PhoneHasher, Receipt, ReceiptCodec, ReceiptWriter
from consumer.state.memory import MemoryReceiptMarks
from tests.unit.outcomes.test_receipts import CAMPAIGN, PHONE, SALT, HoldingProducer

TP = ("transactions", 3)


def message(offset: int) -> InboundRecord:
    return InboundRecord(TP[0], TP[1], offset, b"k", b"v", [], (1, 1_700_000_000_000))


def writer(producer: HoldingProducer, marks: Any) -> ReceiptWriter:
    return ReceiptWriter(producer, "receipts", group="g", hasher=PhoneHasher(SALT), codec=ReceiptCodec(),
                         marks=marks)


@pytest.mark.parametrize("schema_id", [None, 7])
def test_a_receipt_decodes_to_the_milliseconds_it_was_written_with(schema_id: int | None) -> None:
    """fastavro decodes timestamp-millis to a datetime; a float product of it lost a millisecond
    on about one timestamp in 170 (1088007481705 read back as ...704). And an event time past
    year 9999 (a mapper's microseconds taken for milliseconds: a valid Avro long) made the
    decoding, hence the demo and a reader using `ReceiptCodec`, raise."""
    codec = ReceiptCodec(schema_id)
    rng = random.Random(5)
    stamps = [1_088_007_481_705, 0, -1, -62_135_596_800_001, 2**62, -(2**63), 2**63 - 1] + \
        [rng.randrange(0, 4_000_000_000_000) for _ in range(5000)]
    for ms in stamps:
        receipt = Receipt("t", 0, 0, "g", "accepted", consumed_at=ms, decided_at=ms, event_time=ms)
        assert codec.decode(codec.encode(receipt)) == receipt, ms


def test_a_receipt_acknowledged_after_its_partition_came_back_counts_for_the_copy_read_again() -> None:
    """Revoked (its flush timed out: the receipt topic is slow) or lost while a receipt was in
    flight, then assigned back to this replica: the marks were loaded at the new assignment,
    before that receipt was acknowledged. Its mark reached Redis, but the copy of the record
    read again checked the marks loaded earlier and got a second receipt."""
    marks, producer, done = MemoryReceiptMarks(), HoldingProducer(), []
    receipts = writer(producer, marks)
    receipts.assigned([TP])
    producer.hold.add("receipts")
    receipts.record(message(7), "delivered", lambda: done.append("first"), recipient=Recipient("tx-7", CAMPAIGN, PHONE))
    receipts.poll()
    receipts.forget({TP})  # lost (or revoked after the flush timed out): nothing committed
    receipts.assigned([TP])  # assigned back: loads the marks, the receipt of 7 is not there yet
    producer.hold.clear()
    receipts.poll()  # the first receipt is acknowledged, and marked
    assert set(marks.receipted("g", TP)) == {7}
    receipts.record(message(7), "skipped", lambda: done.append("again"), recipient=Recipient("tx-7", CAMPAIGN, PHONE))
    receipts.poll()
    assert len(producer.on("receipts")) == 1  # the copy read again ends without a second receipt
    # (the first's callback still runs: the poll loop's tracker ignores an earlier epoch's finish)
    assert done == ["first", "again"] and receipts.already_receipted == 1 and receipts.in_flight == 0


def test_the_marks_of_a_partition_assigned_while_they_paused_are_loaded_once_they_are_back() -> None:
    """A partition assigned while the marks paused (Redis was away a moment before) had its marks
    never loaded: every record read again in that whole assignment, long after Redis came
    back, got a second receipt. They are loaded on the first poll after the pause."""
    marks, producer, done = MemoryReceiptMarks(), HoldingProducer(), []
    first = writer(producer, marks)
    first.assigned([TP])
    first.record(message(7), "delivered", lambda: done.append(7), recipient=Recipient("tx-7", CAMPAIGN, PHONE))
    first.poll()
    assert set(marks.receipted("g", TP)) == {7}

    second = writer(producer, marks)  # the next owner, Redis away a moment ago
    second._marks_paused_until = time.monotonic() + MARKS_PAUSE_S
    second.assigned([TP])
    second._marks_paused_until = 0.0  # Redis is back, 30 s later
    second.poll()  # a poll turn before the record is read again
    second.record(message(7), "skipped", lambda: done.append(-7), recipient=Recipient("tx-7", CAMPAIGN, PHONE))
    second.poll()
    assert len(producer.on("receipts")) == 1 and second.already_receipted == 1 and done == [7, -7]


def test_a_partition_revoked_during_the_pause_is_not_loaded_after_it() -> None:
    marks, producer = MemoryReceiptMarks(), HoldingProducer()
    receipts = writer(producer, marks)
    receipts._marks_paused_until = time.monotonic() + MARKS_PAUSE_S
    receipts.assigned([TP])
    receipts.forget({TP})
    marks.mark("g", [])
    receipts._marks_paused_until = 0.0
    receipts.poll()
    assert TP not in receipts._receipted and not receipts._unloaded

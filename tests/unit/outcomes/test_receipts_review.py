"""An adversarial review of the receipts (consumer/outcomes/receipts.py): a receipt read back with
the timestamps it was written with, and no second receipt for a record whose first was
acknowledged after its partition came back to this replica or after a marks outage at its assignment."""

from __future__ import annotations

import random
import time
from typing import Any

import pytest
from confluent_kafka import KafkaError

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
    assert receipts._receipted.of(TP) is None and not receipts._receipted.unloaded


def test_a_late_acceptance_on_a_partition_assigned_back_is_the_only_receipt() -> None:
    """Pisano accepted an event after its partition was revoked (the poll loop's
    `_late_acceptance`: committing nothing), and the partition came back to this replica. The
    copy read again waits for that request (its id is in flight), then ends `skipped`: it got a
    second receipt, `duplicate`, though this replica had the acknowledged `accepted` one."""
    marks, producer, done = MemoryReceiptMarks(), HoldingProducer(), []
    receipts = writer(producer, marks)
    receipts.assigned([TP])
    receipts.forget({TP})
    receipts.assigned([TP])  # assigned back
    receipts.record(message(7), "delivered", lambda: None, recipient=Recipient("tx-7", CAMPAIGN, PHONE))
    receipts.poll()  # the late acceptance's receipt is acknowledged
    receipts.record(message(7), "skipped", lambda: done.append(7), recipient=Recipient("tx-7", CAMPAIGN, PHONE),
                    counts=lambda: True)
    receipts.poll()
    assert len(producer.on("receipts")) == 1 and done == [7] and receipts.already_receipted == 1


class BatchLimitProducer:
    """A receipt topic whose max.message.bytes takes `cap` receipts in one producer batch: what
    was produced since the last poll is one batch, refused whole (MSG_SIZE_TOO_LARGE) when larger."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._batch: list[Any] = []
        self.written = 0
        self.refused = 0

    def produce(self, topic: str, key: Any = None, value: Any = None, headers: Any = None,
                on_delivery: Any = None) -> None:
        self._batch.append(on_delivery)

    def poll(self, timeout: float = 0) -> int:
        batch, self._batch = self._batch, []
        error = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE) if len(batch) > self.cap else None
        for report in batch:
            report(error, None)
        if error is None:
            self.written += len(batch)
        else:
            self.refused += len(batch)
        return len(batch)


def test_receipts_refused_as_a_batch_too_large_get_through_in_smaller_batches() -> None:
    """Measured on Kafka: a receipt topic with max.message.bytes=100000 (each receipt ~250 B)
    refuses librdkafka's batches of a burst as too large; every refused receipt was produced again
    at once, batched again, refused again: 3,525 of 20,000 receipts never written, their
    partitions' commits held for good. They go again in smaller turns now, and all get through."""
    producer, done = BatchLimitProducer(cap=40), []
    receipts = ReceiptWriter(producer, "receipts", group="g", hasher=PhoneHasher(SALT), codec=ReceiptCodec())
    for offset in range(1000):
        receipts.record(message(offset), "delivered", lambda: done.append(1),
                        recipient=Recipient(f"tx-{offset}", CAMPAIGN, PHONE))
    for _ in range(200):
        receipts.poll()
        if not receipts.in_flight:
            break
    assert len(done) == 1000 and receipts.in_flight == 0 and producer.written == 1000
    assert producer.refused <= 3000  # a few rounds of refusals, not one per turn for ever
    # Back to full batches once the topic takes them: the limit is not kept for ever.
    for offset in range(1000, 1300):
        receipts.record(message(offset), "delivered", lambda: done.append(1),
                        recipient=Recipient(f"tx-{offset}", CAMPAIGN, PHONE))
    producer.cap = 10_000
    for _ in range(30):
        receipts.poll()
    assert len(done) == 1300 and receipts.in_flight == 0


def test_a_receipt_the_topic_refuses_alone_waits_its_backoff() -> None:
    """A receipt refused even alone: the topic is misconfigured, not a batch too large. It is
    held (offsets wait, the stuck-record alarm fires) with the backoff, not produced every turn."""
    producer, done = BatchLimitProducer(cap=0), []
    receipts = ReceiptWriter(producer, "receipts", group="g", hasher=PhoneHasher(SALT), codec=ReceiptCodec())
    receipts.record(message(1), "delivered", lambda: done.append(1), recipient=Recipient("tx-1", CAMPAIGN, PHONE))
    for _ in range(20):
        receipts.poll()
    assert done == [] and receipts.in_flight == 1 and producer.refused <= 3
    assert min(receipts._retry.due_at()) > time.monotonic()


def test_failed_receipts_are_logged_once_a_turn_not_once_each(caplog: pytest.LogCaptureFixture) -> None:
    """A receipt topic refusing everything (down, or not authorised) logged one ERROR line per
    receipt and retry: 10,000 lines for one failed round of 10,000 receipts, and again each
    backoff. One line a poll turn, with the count and the reason."""
    producer = HoldingProducer()
    producer.failing.add("receipts")
    receipts = ReceiptWriter(producer, "receipts", group="g", hasher=PhoneHasher(SALT), codec=ReceiptCodec())
    for offset in range(500):
        receipts.record(message(offset), "delivered", lambda: None,
                        recipient=Recipient(f"tx-{offset}", CAMPAIGN, PHONE))
    with caplog.at_level("ERROR", logger="consumer.outcomes.receipts"):
        receipts.poll()
        receipts.poll()
    lines = [r for r in caplog.records if r.name == "consumer.outcomes.receipts"]
    assert len(lines) == 1 and "receipt to receipts failed for 500 records" in lines[0].getMessage()
    assert receipts.in_flight == 500
    assert "timed out" in lines[0].getMessage().lower()

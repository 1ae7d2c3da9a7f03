"""A record read again that was dead-lettered before is decoded on the poll thread, for its
receipt's event id only (`Pipeline._named_for_receipt`). Found in the review of the Kafka side:
a registry that hangs cost a registry timeout (2 s) for every such record, with no backoff: 480
records read again after a SIGKILL stalled the poll loop for minutes (ARCHITECTURE.md invariant
4: the poll loop never blocks). Now a registry failure there backs off as the backlog's does."""

from __future__ import annotations

from typing import Any

from confluent_kafka import TopicPartition

from consumer.config.resources import default_mapping_file
from consumer.config.settings import Settings
from consumer.delivery.batching import Batcher
from consumer.delivery.lanes import Lane, Lanes
from consumer.errors import RegistryError
from consumer.ingest.avro import SchemalessDecoder
from consumer.ingest.mapping import DeclarativeMapper
from consumer.ingest.records import InboundRecord
from consumer.ingest.samples import default_schema, encode, phone_for, transaction
from consumer.operations.health import Health
from consumer.operations.metrics import Metrics
from consumer.outcomes.receipts import PhoneHasher, ReceiptCodec, ReceiptWriter
from consumer.pipeline import Pipeline
from consumer.state.dead_letters import Origin
from consumer.state.memory import MemoryDeadLetterMarks, MemoryReceiptMarks
from tests.support.fake_kafka import CAMPAIGN, FakeConsumer, FakeMessage, FakeProducer, IdleSender

SALT = "a-salt-of-sixteen-or-more-characters"


class HangingRegistry:
    """A registry decoder whose every fetch times out (the 2 s are counted, not slept)."""

    def __init__(self) -> None:
        self.asked = 0

    def decode(self, value: bytes) -> Any:
        self.asked += 1
        raise RegistryError("schema registry unreachable (ReadTimeout)", kind="unreachable")


def owner(records: list[FakeMessage], decoder: Any) -> tuple[Pipeline, FakeConsumer, FakeProducer]:
    """A replica assigned t[0], whose `records` were each dead-lettered (`throttled`) before."""
    marks = MemoryDeadLetterMarks(horizon_s=3600, group="g", dlq_topic="dlq")
    marks.mark([Origin.of(InboundRecord.of(m)) for m in records], ["throttled"] * len(records))
    consumer, producer = FakeConsumer(), FakeProducer()
    config = Settings(kafka_topics=["t"], kafka_group_id="g", pisano_url="https://pisano.invalid",
                      outcome_topic="receipts", outcome_phone_salt=SALT, dlq_topic="dlq")
    lanes = Lanes({"default": Lane(Batcher(5000, 1.0), IdleSender())}, route=lambda campaign: "default")  # type: ignore[arg-type]
    receipts = ReceiptWriter(producer, "receipts", group="g", hasher=PhoneHasher(SALT), codec=ReceiptCodec(),
                             marks=MemoryReceiptMarks())
    loop = Pipeline(config, consumer_factory=lambda on_commit: consumer, producer=producer, decoder=decoder,
                    mapper=DeclarativeMapper.from_file(default_mapping_file()),
                    delivery_factory=lambda report: lanes, metrics=Metrics(), health=Health(joined=True),
                    dead_letter_marks=marks, receipts=receipts)
    consumer.incremental_assign = lambda partitions: None  # type: ignore[attr-defined]
    consumer.resume = consumer.pause = lambda partitions: None  # type: ignore[method-assign]
    loop._on_assign(consumer, [TopicPartition("t", 0)])
    consumer.queue = list(records)
    for _ in range(3):
        loop._step()
    loop._commit(sync=True)
    return loop, consumer, producer


def test_records_read_again_do_not_each_wait_for_a_hanging_registry() -> None:
    records = [FakeMessage("t", 0, n, b"\x00\x00\x00\x00\x01payload") for n in range(50)]
    decoder = HangingRegistry()
    _, consumer, producer = owner(records, decoder)
    assert consumer.committed == {("t", 0): 50}  # each ended as dead-lettered before, with its receipt
    assert decoder.asked == 1  # before: 50, a registry timeout each on the poll thread
    receipts = [ReceiptCodec().decode(p["value"]) for p in producer.produced]
    assert len(receipts) == 50 and {r.outcome for r in receipts} == {"dead_lettered"}


def test_a_record_read_again_is_still_named_in_its_receipt_when_the_registry_answers() -> None:
    records = [FakeMessage("t", 0, n, encode(transaction(f"ev-{n}", phone_for(n), CAMPAIGN, n=n))) for n in range(3)]
    _, consumer, producer = owner(records, SchemalessDecoder(default_schema()))
    assert consumer.committed == {("t", 0): 3}
    receipts = [ReceiptCodec().decode(p["value"]) for p in producer.produced]
    assert sorted(r.event_id or "" for r in receipts) == ["ev-0", "ev-1", "ev-2"]

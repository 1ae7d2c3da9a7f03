"""The poll loop's commit path against a model of Kafka, seeded (review h-offsets): rebalances
(revoke, loss, and a partition given back within the consume call that took it, whose records
fetched before the rebalance come back late), positions moved back (an offset reset), the
registry failing, full buffers, outcomes of every kind in any order, dead-letters and receipts
acknowledged late or refused, with and without marks. At every commit: the partition is owned and
every record below the offset has a durable outcome (delivered, skipped or expired reported, a
dead-letter acknowledged; with receipts, its receipt acknowledged). At the end, with everything
delivered and acknowledged, every owned partition has committed its last record (or holds its
commit point after a give-back, `OffsetTracker.assign`).

Before the hold (`held`), seeds 30 and 57 (and 40 with receipts and marks) of these 60 committed past
records no one had read."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import TopicPartition

from consumer.config.settings import Settings
from consumer.delivery.batching import Batcher, PendingEvent
from consumer.delivery.lanes import Lane, Lanes
from consumer.delivery.outcome import Outcome
from consumer.errors import RegistryError
from consumer.ingest.avro import SchemalessDecoder
from consumer.ingest.samples import default_schema, encode, phone_for, transaction
from consumer.operations.health import Health
from consumer.operations.metrics import Metrics
from consumer.outcomes.deadletter import Failure
from consumer.outcomes.receipts import PhoneHasher, ReceiptCodec, ReceiptWriter
from consumer.pipeline import Pipeline
from consumer.state.memory import MemoryDeadLetterMarks, MemoryReceiptMarks
from tests.support.fake_kafka import CAMPAIGN, FakeMessage, IdleSender
from tests.unit.test_pipeline import MAPPER

N = 40  # records per partition; every 7th cannot be decoded (dead-lettered)
CODEC = ReceiptCodec()
TPKey = tuple[str, int]
LOG = {p: [FakeMessage("t", p, o, encode(transaction(f"e-{p}-{o}", phone_for(o), CAMPAIGN, n=o)) if o % 7
                       else b"\x00bad", key=f"e-{p}-{o}".encode()) for o in range(N)] for p in range(2)}


class Model:
    def __init__(self) -> None:
        self.durable: set[tuple[TPKey, int]] = set()
        self.violations: list[str] = []


class Consumer:
    """librdkafka as the poll loop sees it: a position per partition, fetched from the committed
    offset on assignment; pauses kept across unassign and assign; rebalance callbacks served
    inside consume; records fetched before a revocation handed back by the consume that served it."""

    def __init__(self, rnd: random.Random, model: Model) -> None:
        self.rnd, self.model = rnd, model
        self.assigned: set[TPKey] = set()
        self.paused: set[TPKey] = set()
        self.pos: dict[TPKey, int] = {}
        self.committed: dict[TPKey, int] = {}
        self.calls: list[Callable[[], None]] = []  # rebalance callbacks the next consume serves
        self.stale: list[FakeMessage] = []

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        calls, self.calls = self.calls, []
        for call in calls:
            call()
        out, self.stale = self.stale, []
        for tp in sorted(self.assigned - self.paused):
            n = self.rnd.randint(0, 3)
            while n and self.pos[tp] < N and len(out) < num_messages:
                out.append(LOG[tp[1]][self.pos[tp]])
                self.pos[tp] += 1
                n -= 1
        return out

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(*tp) for tp in sorted(self.assigned)]

    def memberid(self) -> str:
        return "member-1"  # the model's member never leaves the group on its own

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused |= {(p.topic, p.partition) for p in partitions}

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused -= {(p.topic, p.partition) for p in partitions}

    def incremental_assign(self, partitions: list[TopicPartition]) -> None:
        for p in partitions:
            tp = (p.topic, p.partition)
            self.assigned.add(tp)
            self.pos[tp] = self.committed.get(tp, 0)

    def incremental_unassign(self, partitions: list[TopicPartition]) -> None:
        for p in partitions:
            tp = (p.topic, p.partition)
            self.assigned.discard(tp)
            if self.rnd.random() < 0.5 and self.pos.get(tp):  # fetched before, handed back late
                k = self.rnd.randint(1, 3)
                self.stale += LOG[tp[1]][max(0, self.pos[tp] - k):self.pos[tp]]

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> list[TopicPartition]:
        for p in offsets:
            tp = (p.topic, p.partition)
            if tp not in self.assigned:
                self.model.violations.append(f"commit of {tp}@{p.offset}, not owned")
            missing = [o for o in range(p.offset) if (tp, o) not in self.model.durable]
            if missing:
                self.model.violations.append(f"commit of {tp}@{p.offset} past {missing[0]}, without a durable outcome")
            self.committed[tp] = p.offset
        return offsets

    def get_watermark_offsets(self, tp: Any, cached: bool) -> tuple[int, int]:
        return 0, N


class _Refused:
    def code(self) -> int:
        return -1

    def str(self) -> str:
        return "refused"

    def fatal(self) -> bool:
        return False

    def retriable(self) -> bool:
        return True

    def name(self) -> str:
        return "refused"


class Producer:
    """Acknowledges some of what it holds on each poll, refuses some; `calm`: all, at once."""

    def __init__(self, rnd: random.Random, model: Model, receipts: bool) -> None:
        self.rnd, self.model, self.receipts = rnd, model, receipts
        self.reports: list[tuple[tuple[TPKey, int] | None, Callable[[Any, Any], None]]] = []
        self.calm = False

    def produce(self, topic: str, key: Any = None, value: Any = None, headers: Any = None,
                on_delivery: Callable[[Any, Any], None] | None = None) -> None:
        assert on_delivery is not None
        if topic == "receipts":
            t, p, o = CODEC.decode(value).origin
            self.reports.append((((t, p), o), on_delivery))
            return
        h = dict(headers or [])
        origin = (("t", int(h["dlq.original.partition"])), int(h["dlq.original.offset"]))
        self.reports.append((None if self.receipts else origin, on_delivery))

    def poll(self, timeout: float = 0) -> int:
        due = [r for r in self.reports if self.calm or self.rnd.random() < 0.5]
        self.reports = [r for r in self.reports if r not in due]
        for origin, report in due:
            if not self.calm and self.rnd.random() < 0.2:
                report(_Refused(), None)
            else:
                if origin is not None:
                    self.model.durable.add(origin)
                report(None, None)
        return len(due)

    def flush(self, timeout: float = 0) -> int:
        while self.reports:
            self.poll()
        return 0


class FlakyRegistry:
    def __init__(self, rnd: random.Random) -> None:
        self.rnd, self.inner, self.calm = rnd, SchemalessDecoder(default_schema()), False

    def decode(self, value: bytes) -> Any:
        if not self.calm and self.rnd.random() < 0.05:
            raise RegistryError("down", kind=self.rnd.choice(["server", "busy"]))
        return self.inner.decode(value)


def run(seed: int, receipts: bool, marks: bool) -> list[str]:
    rnd, model = random.Random(seed), Model()
    consumer, producer, registry = Consumer(rnd, model), Producer(rnd, model, receipts), FlakyRegistry(rnd)
    config = Settings(kafka_topics=["t"], pisano_url="https://pisano.invalid", revoke_grace_ms=0, commit_interval_ms=10,
                      max_buffered_events=rnd.choice([5, 10, 1000]))
    lanes = Lanes({"default": Lane(Batcher(5000, 60.0), IdleSender())}, route=lambda c: "default")  # type: ignore[arg-type]
    writer = ReceiptWriter(producer, "receipts", group="g", hasher=PhoneHasher("s" * 20), codec=CODEC,
                           marks=MemoryReceiptMarks() if marks else None) if receipts else None
    loop = Pipeline(config, consumer_factory=lambda on_commit: consumer, producer=producer, decoder=registry,
                    mapper=MAPPER, delivery_factory=lambda report: lanes, metrics=Metrics(), health=Health(joined=True),
                    receipts=writer, dead_letter_marks=MemoryDeadLetterMarks(horizon_s=3600) if marks else None)
    loop._on_assign(consumer, [TopicPartition("t", 0), TopicPartition("t", 1)])
    taken: list[PendingEvent] = []

    def turn() -> None:
        loop._held = type(loop._held)((0.0, events) for _, events in loop._held)
        loop.dlq._retry.all_due_now()
        if loop.receipts is not None:
            loop.receipts._retry.all_due_now()
        loop._step()
        loop._last_commit = 0

    for _ in range(300):
        r, tp = rnd.random(), ("t", rnd.choice([0, 1]))
        if r < 0.03 and tp in consumer.assigned and not consumer.calls:
            give_up = loop._on_revoke if rnd.random() < 0.7 else loop._on_lost
            consumer.calls.append(lambda g=give_up, tp=tp: g(consumer, [TopicPartition(*tp)]))  # type: ignore[misc]
            if rnd.random() < 0.3:  # given back within the same consume call
                consumer.calls.append(lambda tp=tp: loop._on_assign(consumer, [TopicPartition(*tp)]))  # type: ignore[misc]
        elif r < 0.06 and tp not in consumer.assigned and not consumer.calls:
            loop._on_assign(consumer, [TopicPartition(*tp)])
        elif r < 0.08 and tp in consumer.assigned and consumer.pos[tp] > 0:
            consumer.pos[tp] = rnd.randint(0, consumer.pos[tp] - 1)  # an offset reset: the position moves back
        taken += loop.delivery.drop(lambda e: rnd.random() < 0.5)  # senders take some
        rnd.shuffle(taken)
        while taken and rnd.random() < 0.6:
            n = rnd.randint(1, len(taken))
            batch, taken = taken[:n], taken[n:]
            kind = rnd.choice(["delivered", "skipped", "dead_letter", "requeue", "expired"])
            if kind in ("delivered", "skipped", "expired") and not receipts:
                model.durable.update((e.tp, e.offset) for e in batch)
            loop.outcomes.put(Outcome(kind, batch, Failure("ambiguous", "x") if kind == "dead_letter" else None,  # type: ignore[arg-type]
                                      accepted_at_ms=int(time.time() * 1000)))
        if rnd.random() < 0.3:
            loop.backlog._retry_at = 0
        turn()
        if model.violations:
            return model.violations
    producer.calm = registry.calm = True
    loop.backlog._retry_at = 0
    for _ in range(400):
        taken += loop.delivery.drop(lambda e: True)
        if taken:
            if not receipts:
                model.durable.update((e.tp, e.offset) for e in taken)
            loop.outcomes.put(Outcome("delivered", taken, accepted_at_ms=int(time.time() * 1000)))
            taken = []
        turn()
        if model.violations:
            return model.violations
    return [f"{tp} committed {consumer.committed.get(tp)}, not {N}" for tp in sorted(consumer.assigned)
            if consumer.committed.get(tp) != N and not getattr(loop.tracker._partitions[tp], "held", False)]


@pytest.mark.parametrize(("receipts", "marks"), [(False, False), (True, True)])
def test_every_commit_is_owned_and_behind_durable_outcomes_and_every_partition_gets_to_its_end(
        receipts: bool, marks: bool) -> None:
    failed = {seed: v[:2] for seed in range(60) if (v := run(seed, receipts, marks))}
    assert not failed, failed

#!/usr/bin/env python3
"""CPU of the poll loop's own work per event, without Kafka's fetching or the senders beside it.

    python scripts/localstack.py run -- python benchmarks/poll_loop.py --events 50000

N events of the default schema go into a fresh topic; a plain confluent-kafka consumer reads them
into memory; then the consumer's `Pipeline` (its real backlog, decoder, declarative mapper,
recipient check, batcher and offset tracker; the collector tuned as `run` tunes it) takes them
from an in-memory stand-in for the Kafka consumer, turn by turn, and every batch is reported
delivered back to it, so each record is snapshotted, decoded, mapped, checked, batched and
finished. The figure is the process's CPU time over that loop, per event: the part of the
end-to-end run (benchmarks/throughput.py) that holds the GIL in the poll loop's thread, measured
where two cores shared with the senders, Kafka, Redis and the simulator do not move it.

`--stand-in decode` (or `decode-and-map`) looks their results up instead of computing them: the
poll loop's CPU if a native decoder (and mapper) cost next to nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from throughput import produce  # noqa: E402

from consumer.config.resources import default_mapping_file  # noqa: E402
from consumer.config.settings import Settings  # noqa: E402
from consumer.delivery.batching import Batcher  # noqa: E402
from consumer.delivery.lanes import Lane, Lanes  # noqa: E402
from consumer.delivery.outcome import Outcome  # noqa: E402
from consumer.ingest.avro import SchemalessDecoder  # noqa: E402
from consumer.ingest.mapping import DeclarativeMapper  # noqa: E402
from consumer.ingest.samples import default_schema  # noqa: E402
from consumer.operations.collector import tune_for_throughput  # noqa: E402
from consumer.operations.health import Health  # noqa: E402
from consumer.operations.metrics import Metrics  # noqa: E402
from consumer.pipeline import Pipeline  # noqa: E402


class InMemoryConsumer:
    """Hands out the records read beforehand, 1000 per consume, as librdkafka would."""

    def __init__(self, messages: list[Any]) -> None:
        self.messages = messages
        self.next = 0

    @property
    def left(self) -> int:
        return len(self.messages) - self.next

    def consume(self, num_messages: int, timeout: float) -> list[Any]:
        # By index: slicing off the rest at every call copied what was left (quadratic), CPU the
        # figure counted as the poll loop's.
        start, self.next = self.next, min(len(self.messages), self.next + min(num_messages, 1000))
        return self.messages[start:self.next]

    def assignment(self) -> list[Any]:
        return []

    def memberid(self) -> str:
        return "in-memory"  # always inside its group: the loop never replaces it

    def pause(self, partitions: list[Any]) -> None: ...

    def resume(self, partitions: list[Any]) -> None: ...

    def commit(self, offsets: list[Any], asynchronous: bool) -> list[Any]:
        return offsets

    def get_watermark_offsets(self, tp: Any, cached: bool) -> tuple[int, int]:
        return 0, 0


class NoProducer:
    """Valid records only: nothing is dead-lettered."""

    def produce(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("a valid record was dead-lettered")

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        return 0


class NoSender:
    """The batches are taken by the loop below, not by sender threads."""

    def start(self) -> None: ...

    def stop(self, timeout: float) -> None: ...

    def in_flight(self, partitions: Any = None) -> int:
        return 0


def read(bootstrap: str, topic: str, events: int) -> list[Any]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"loop-{uuid.uuid4().hex[:6]}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    messages: list[Any] = []
    while len(messages) < events:
        messages.extend(m for m in consumer.consume(1000, 1.0) if m.error() is None)
    consumer.close()
    return messages[:events]


class DecodedBefore:
    """`--stand-in`: the decoder's (and the mapper's) results computed before the timed loop and
    looked up by the record's bytes, as a native decoder and mapper costing next to nothing would
    hand them over. What is left is the loop's own work: the bound such code could reach."""

    def __init__(self, decoder: Any, mapper: Any, values: list[bytes], map_too: bool) -> None:
        self.records = {value: decoder.decode(value) for value in values}
        self.recipients = {value: mapper.map(self.records[value]) for value in values} if map_too else None
        self.mapper = mapper

    def decode(self, value: bytes) -> Any:
        return self.records[value]

    def map_kafka(self, record: Any, kafka: Any) -> Any:
        if self.recipients is None:
            return self.mapper.map_kafka(record, kafka)
        return self.recipients[kafka.value()]


def loop_cpu(messages: list[Any], topic: str, *, python: bool = False, stand_in: str = "none"
             ) -> tuple[float, int]:
    """(CPU microseconds per event of the consumer's `Pipeline` taking `messages` from memory to
    their outcomes, the events left without one); module docstring. Also a stage of
    benchmarks/throughput.py."""
    source = InMemoryConsumer(messages)
    batcher = Batcher(5000, 1.0)
    lanes = Lanes({"default": Lane(batcher, NoSender())}, route=lambda campaign: "default")  # type: ignore[arg-type]
    settings = Settings(kafka_topics=[topic], pisano_url="https://pisano.invalid")
    mapper: Any = DeclarativeMapper.from_file(default_mapping_file())
    # As `run` decodes: natively where the native core takes the records (consumer/ingest/fused.py),
    # unless `python` asks for the Python path (NATIVE_INTAKE=off).
    decoder: Any = SchemalessDecoder(default_schema(), mapper.fields_read(), None if python else mapper)
    if stand_in != "none":
        decoder = mapper = DecodedBefore(decoder, mapper, [m.value() for m in messages],
                                         map_too=stand_in == "decode-and-map")
    loop = Pipeline(settings, consumer_factory=lambda on_commit: source, producer=NoProducer(),
                    decoder=decoder, mapper=mapper,
                    delivery_factory=lambda report: lanes, metrics=Metrics(), health=Health(joined=True))
    for partition in {m.partition() for m in messages}:
        loop.tracker.assign((topic, partition))
    tune_for_throughput()
    started = time.process_time()
    while source.left or loop.backlog:
        loop._step()
        while (batch := batcher.take()) is not None:
            loop.outcomes.put(Outcome("delivered", batch.events, accepted_at_ms=int(time.time() * 1000)))
    loop._step()
    cpu = time.process_time() - started
    left = sum(loop.tracker.unfinished(tp) for tp in loop.tracker.assigned())
    return cpu * 1e6 / len(messages), left


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--python", action="store_true", help="decode and map in Python (NATIVE_INTAKE=off)")
    parser.add_argument("--stand-in", choices=("none", "decode", "decode-and-map"), default="none",
                        help="replace the decoder (and the mapper) by a lookup of results computed before "
                             "the timed loop: the poll loop's CPU if they cost next to nothing")
    args = parser.parse_args()
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
    topic = f"loop-{uuid.uuid4().hex[:8]}"
    produce(bootstrap, topic, args.events)
    messages = read(bootstrap, topic, args.events)
    cpu_us, left = loop_cpu(messages, topic, python=args.python, stand_in=args.stand_in)
    stand_in = "" if args.stand_in == "none" else f", {args.stand_in} looked up"
    print(f"  poll loop alone   {cpu_us:8.2f} us/event CPU ({args.events:,} events, "
          f"{left} without an outcome{stand_in})")
    if left:
        raise SystemExit(f"{left} events without an outcome")


if __name__ == "__main__":
    main()

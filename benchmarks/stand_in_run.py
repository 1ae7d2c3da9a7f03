#!/usr/bin/env python3
"""`pisano-sms run` with the record decoded and mapped before the run: the end-to-end bound of
a native per-record path (issue 14). Started by `benchmarks/throughput.py --stand-in`, with the
same environment as `pisano-sms run`.

Before the consumer starts, every record of KAFKA_TOPICS is read, decoded and mapped once, with
the decoder and mapper `run` builds; the run then looks each record's decoded value and recipient up
by its bytes, as a decoder and mapper written natively and costing next to nothing would hand them
over. Everything else is the real consumer: the snapshot of each message, the replay check, the
recipient check, routing, offset bookkeeping, batching, dedup, the POST, commits and metrics. The
throughput and CPU it reaches are the most that making decode and map native could give.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import consumer.app as app  # noqa: E402
from consumer.cli import main  # noqa: E402


class LookedUpMapper:
    """The real mapper for everything but `map_kafka`, which finds the recipient computed before."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.recipients: dict[bytes, Any] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def map_kafka(self, record: Any, kafka: Any) -> Any:
        return self.recipients[kafka.value()]


class LookedUpDecoder:
    def __init__(self, real: Any) -> None:
        self.real = real
        self.records: dict[bytes, Any] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def decode(self, value: bytes) -> Any:
        return self.records[value]


def topic_values() -> list[bytes]:
    """Every record's value in KAFKA_TOPICS, read from the start to the end offsets now."""
    consumer = Consumer({"bootstrap.servers": os.environ["KAFKA_BOOTSTRAP_SERVERS"],
                         "group.id": f"stand-in-{uuid.uuid4().hex[:6]}", "enable.auto.commit": False})
    values: list[bytes] = []
    try:
        for topic in os.environ["KAFKA_TOPICS"].split(","):
            partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
            ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in partitions}
            consumer.assign([TopicPartition(topic, p, low) for p, (low, _) in ends.items()])
            left = sum(high - low for low, high in ends.values())
            while left:
                for message in consumer.consume(1000, 1.0):
                    if message.error() is None:
                        values.append(message.value())
                        left -= 1
    finally:
        consumer.close()
    return values


def looked_up() -> None:
    real_load_mapper, real_build_decoder = app.load_mapper, app.build_decoder
    mapper: LookedUpMapper | None = None

    def load_mapper(settings: Any) -> Any:
        nonlocal mapper
        mapper = LookedUpMapper(real_load_mapper(settings))
        return mapper

    def build_decoder(*args: Any) -> Any:
        decoder = LookedUpDecoder(real_build_decoder(*args))
        assert mapper is not None
        values = topic_values()
        for value in values:
            decoder.records[value] = record = decoder.real.decode(value)
            mapper.recipients[value] = mapper.real.map(record)
        print(f"[stand-in] {len(values):,} records decoded and mapped before the run", file=sys.stderr)
        return decoder

    app.load_mapper, app.build_decoder = load_mapper, build_decoder  # type: ignore[assignment]


if __name__ == "__main__":
    looked_up()
    main(["run"])

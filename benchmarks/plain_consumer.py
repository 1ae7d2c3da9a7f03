#!/usr/bin/env python3
"""The issue's hand-written consumer: the baseline `benchmarks/throughput.py` runs beside ours.

    python benchmarks/plain_consumer.py --topic T --group G --pisano-url URL --events N

What a team would write in an afternoon (issue 14: "a plain at-least-once consumer of about 70
lines"): confluent-kafka, `fastavro.schemaless_reader`, batches per campaign of up to 5,000
phones or 1 s, httpx, a synchronous commit after each round of POSTs. No dedup, no validation,
no dead letters, no throttle: every event is sent, a bad one would stop it, a crash sends again.
The same attributes as the default mapping, so its requests carry what ours carry.

It reads the topic from the beginning until it has committed N events, and prints one JSON line:
events per second from its first poll to its last commit, and its process CPU per event, whole
and from the first poll (`time.process_time`: every thread, librdkafka's included).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path

import fastavro
import httpx
from confluent_kafka import Consumer, TopicPartition

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = fastavro.parse_schema(json.loads((ROOT / "schemas" / "transaction_event.avsc").read_text()))
BATCH, LINGER_S = 5000, 1.0


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("--topic", "--group", "--pisano-url"):
        parser.add_argument(name, required=True)
    parser.add_argument("--events", type=int, required=True)
    args = parser.parse_args()
    consumer = Consumer({"bootstrap.servers": os.environ["KAFKA_BOOTSTRAP_SERVERS"], "group.id": args.group,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([args.topic])
    client = httpx.Client(base_url=args.pisano_url, timeout=30,
                          headers={"Authorization": f"Token token={os.environ['PISANO_API_TOKEN']}"})
    batches: dict[str, list[dict]] = {}
    positions: dict[tuple[str, int], int] = {}  # the next offset of each partition, once processed
    oldest = consumed = committed = 0
    first_poll = cpu_at_first_poll = None

    def send_all() -> int:
        for campaign, events in batches.items():
            body = {"phone_numbers": [e["customer"]["phone"] for e in events],
                    "custom_attributes": {e["customer"]["phone"]: {
                        "name": e["customer"]["name"], "external_id": e["customer"]["id"],
                        "email": e["customer"]["email"]} for e in events}}
            client.post(f"/v1/sms_campaigns/{campaign}/sms_sharings", json=body).raise_for_status()
        batches.clear()
        # At least once: only what was sent, never a position the poll merely reached.
        consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in positions.items()], asynchronous=False)
        return consumed

    while committed < args.events:
        messages = consumer.consume(1000, 0.1)
        if messages and first_poll is None:
            first_poll, cpu_at_first_poll = time.monotonic(), time.process_time()
        for message in messages:
            if message.error() is not None:
                raise SystemExit(f"Kafka: {message.error()}")
            event = fastavro.schemaless_reader(io.BytesIO(message.value()), SCHEMA)
            if not batches:
                oldest = time.monotonic()
            batch = batches.setdefault(event["campaign_id"], [])
            batch.append(event)
            consumed += 1
            positions[(message.topic(), message.partition())] = message.offset() + 1
            if len(batch) >= BATCH:  # Pisano takes at most 5,000 phones a request
                committed = send_all()
        if batches and time.monotonic() - oldest >= LINGER_S:
            committed = send_all()
    elapsed = time.monotonic() - (first_poll or time.monotonic())
    cpu = time.process_time()
    consumer.close()
    print(json.dumps({"events_per_s": committed / elapsed, "seconds": elapsed,
                      "cpu_us_per_event": cpu * 1e6 / committed,
                      "cpu_after_start_us_per_event": (cpu - (cpu_at_first_poll or 0.0)) * 1e6 / committed}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()

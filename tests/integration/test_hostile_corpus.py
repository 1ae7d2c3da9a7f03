"""Issue 10 acceptance: 40 kinds of hostile records interleaved with valid events, two replicas.

No replica exits, every valid event is delivered exactly once (the simulator's delivery log),
every hostile record is dead-lettered with its reason or delivered where it is in fact valid, and
the committed offsets reach the end. The worst decode-and-map time per hostile record is printed
(README guarantee 7)."""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from consumer.config.resources import default_mapping_file, default_schema_file
from consumer.errors import RecordError
from consumer.ingest.avro import RegistryClient, RegistryDecoder
from consumer.ingest.intake import decode_and_map
from consumer.ingest.kafka import produce_waiting
from consumer.ingest.mapping import DeclarativeMapper
from consumer.ingest.records import InboundRecord
from consumer.ingest.samples import default_schema, encode_confluent, phone_for, transaction
from consumer.simulator import SimulatorConfig, SimulatorServer
from tests.conftest import Stack, unique
from tests.support.consumers import ConsumerProcess, consumer_env, wait_until
from tests.support.hostile import NULL_ITEMS, RECURSIVE, Hostile, corpus, nested_schema
from tests.support.kafka import all_committed, end_offsets, headers_of, read_all
from tests.support.raw_kafka import produce_raw
from tests.support.registry import RegistryServer
from tests.support.scenario import CAMPAIGNS, delivered_phones

TOKEN = "hostile-token-7c"
VALID = 300
MAX_MESSAGE_BYTES = 256 * 1024


def key_of(item: Hostile) -> bytes | None:
    """The kind names the record, so its dead-letter can be found; except where the key is the test."""
    if item.kind == "no key":
        return None
    return item.key if item.key is not None else item.kind.encode()


def worst_local_times(items: list[Hostile], registry_url: str) -> dict[str, float]:
    """Each hostile record through the same guard the replicas use (schemas already fetched):
    the best of three runs, so a busy machine's stall is not counted as the record's cost."""
    client = RegistryClient(registry_url)
    decoder = RegistryDecoder(client)
    mapper = DeclarativeMapper.from_file(default_mapping_file())
    times = {}
    for item in items:
        record = InboundRecord("t", 0, 0, item.key, item.value, [], (1, 0),
                               "header name not UTF-8" if item.raw_headers else None)
        runs = []
        for _ in range(3):
            started = time.perf_counter()
            with contextlib.suppress(RecordError):
                decode_and_map(record, decoder, mapper, MAX_MESSAGE_BYTES)
            runs.append(time.perf_counter() - started)
        times[item.kind] = min(runs)
    client.close()
    return times


def test_hostile_corpus_with_two_replicas(stack: Stack, tmp_path: Path, redis_client, processes) -> None:  # type: ignore[no-untyped-def]
    topic, dlq, group = unique("hostile"), unique("dlq"), unique("g")
    admin = AdminClient({"bootstrap.servers": stack.bootstrap})
    for future in admin.create_topics([NewTopic(topic, 4, 1, config={"max.message.bytes": str(4 * 1024 * 1024)}),
                                       NewTopic(dlq, 1, 1, config={"max.message.bytes": str(4 * 1024 * 1024)})]
                                      ).values():
        future.result(30)

    with RegistryServer() as registry, SimulatorServer(SimulatorConfig(
            tokens=frozenset({TOKEN}), campaigns=frozenset(CAMPAIGNS), rate_limits=(),
            delivery_log_path=tmp_path / "deliveries.jsonl")) as simulator:
        schema = default_schema()
        ids = {"default": registry.register(f"{topic}-value", json.loads(default_schema_file().read_text())),
               "recursive": registry.register("recursive-value", RECURSIVE),
               "deep": registry.register("deep-value", nested_schema(40)),
               "null_items": registry.register("nulls-value", NULL_ITEMS),
               "protobuf": registry.register_text("proto-value", 'syntax = "proto3"; message M { int32 a = 1; }',
                                                  "PROTOBUF")}
        items = corpus(schema, ids)
        assert len({item.kind for item in items}) >= 30

        env = consumer_env(bootstrap=stack.bootstrap, redis_url=stack.redis_url, topic=topic, dlq=dlq, group=group,
                           pisano_url=simulator.url, token=TOKEN, SCHEMA_REGISTRY_URL=registry.url,
                           MAX_MESSAGE_BYTES=MAX_MESSAGE_BYTES, PYTHONFAULTHANDLER="1")
        replicas = [ConsumerProcess(env, tmp_path / f"consumer-{n}.log").start() for n in range(2)]
        processes.extend(replicas)
        for replica in replicas:
            replica.wait_ready()
        # Both replicas own partitions before the first record arrives: the corpus meets the fleet.
        wait_until(lambda: all(r.metric("pisano_sms_assigned_partitions") > 0 for r in replicas), 60,
                   "both replicas own partitions")

        valid_phones = {phone_for(n) for n in range(VALID)}
        records: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]] | None]] = []
        interleaved = iter(item for item in items if item.raw_headers is None)
        for n in range(VALID):
            event = encode_confluent(transaction(f"v-{n}", phone_for(n), CAMPAIGNS[n % 2], n=n), schema, ids["default"])
            records.append((f"v-{n}".encode(), event, None))
            if n % 7 == 0:
                item = next(interleaved, None)
                if item is not None:
                    records.append((key_of(item), item.value, item.headers))
        records.extend((key_of(item), item.value, item.headers) for item in interleaved)
        producer = Producer({"bootstrap.servers": stack.bootstrap, "enable.idempotence": True,
                             "message.max.bytes": 4 * 1024 * 1024})
        for key, value, headers in records:
            produce_waiting(producer, topic, key=key, value=value, headers=headers)
        assert producer.flush(60) == 0
        for item in items:
            if item.raw_headers is not None:
                produce_raw(stack.bootstrap, topic, 0, key_of(item), item.value, item.raw_headers)

        ends = end_offsets(stack.bootstrap, topic)

        def finished() -> bool:
            for replica in replicas:
                assert replica.alive(), f"a replica exited:\n{replica.log_tail()}"
            return all_committed(stack.bootstrap, group, topic, ends)

        wait_until(finished, 120, "every record has an outcome and the offsets reach the end")
        dead_expected = [item for item in items if item.expected != "delivered"]
        wait_until(lambda: sum(r.metric("pisano_sms_dead_letters_total") for r in replicas) >= len(dead_expected),
                   30, "dead-letter counters")
        for replica in replicas:
            assert replica.terminate() == 0
        times = worst_local_times(items, registry.url)

    delivered = delivered_phones(tmp_path / "deliveries.jsonl")
    hostile_phones = {item.phone for item in items if item.expected == "delivered"}
    assert None not in hostile_phones
    assert set(delivered) == valid_phones | hostile_phones
    assert all(count == 1 for count in delivered.values()), [p for p, c in delivered.items() if c > 1]

    dead = read_all(stack.bootstrap, dlq)
    assert len(dead) == len(dead_expected)  # each once: no replica died, so none was dead-lettered twice
    by_key = {(m.key() or b"").decode("utf-8", "replace"): m for m in dead}
    for item in dead_expected:
        message = by_key[(key_of(item) or b"").decode("utf-8", "replace")]
        headers = headers_of(message)
        assert headers["dlq.reason"] == item.expected, (item.kind, headers)
        assert headers["dlq.original.topic"] == topic
        assert message.value() == (item.value if item.value is not None else None) or (
            item.value in (b"", None) and message.value() in (b"", None))
    reasons = Counter(item.expected for item in items)
    worst = max(times, key=lambda kind: times[kind])
    print(f"\nhostile corpus: {len(items)} kinds ({dict(reasons)}) among {VALID} valid events, 2 replicas; "
          f"worst decode-and-map time {times[worst] * 1000:.2f} ms ({worst})")

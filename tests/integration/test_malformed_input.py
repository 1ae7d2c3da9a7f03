"""Malformed input of every kind ends in the dead-letter topic with a reason; the consumer keeps
going (no crash, no stall) and the good events around it are delivered."""

from __future__ import annotations

import json
import os
import struct
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from consumer.config.resources import default_schema_file
from consumer.ingest.samples import default_schema, encode_confluent, phone_for, transaction
from consumer.simulator import SimulatorConfig, SimulatorServer
from tests.conftest import Stack, unique
from tests.support.consumers import ConsumerProcess, consumer_env, wait_until
from tests.support.kafka import all_committed, end_offsets, headers_of, produce, read_all
from tests.support.registry import RegistryServer
from tests.support.scenario import CAMPAIGNS, delivered_phones

TOKEN = "malformed-token-4b"
UNKNOWN_CAMPAIGN = "deadbeef-0000-4000-8000-000000000000"  # a campaign id Pisano does not know


@pytest.mark.parametrize("dlq_max_bytes", [16 * 1024 * 1024, 2 * 1024 * 1024])
def test_every_kind_of_bad_record_is_dead_lettered_with_its_reason(
        stack: Stack, tmp_path: Path, redis_client, processes, dlq_max_bytes: int) -> None:  # type: ignore[no-untyped-def]
    topic, dlq, group = unique("events"), unique("dlq"), unique("g")
    admin = AdminClient({"bootstrap.servers": stack.bootstrap})
    for future in admin.create_topics([
        NewTopic(topic, 2, 1, config={"max.message.bytes": str(16 * 1024 * 1024)}),
        # A dead-letter topic that takes smaller records than the source: the 10 MB value is then
        # dead-lettered without its value (still in the source topic), never stuck.
        NewTopic(dlq, 1, 1, config={"max.message.bytes": str(dlq_max_bytes)}),
    ]).values():
        future.result(30)

    with RegistryServer() as registry, SimulatorServer(SimulatorConfig(
            tokens=frozenset({TOKEN}), campaigns=frozenset(CAMPAIGNS), rate_limits=(),
            delivery_log_path=tmp_path / "deliveries.jsonl")) as simulator:
        schema_id = registry.register(f"{topic}-value", json.loads(default_schema_file().read_text()))
        schema = default_schema()

        def event(n: int, phone: str | None = None, campaign: str | None = CAMPAIGNS[0]) -> bytes:
            return encode_confluent(transaction(f"m-{n}", phone if phone is not None else phone_for(n), campaign,
                                                n=n), schema, schema_id)

        good = [(f"m-{n}".encode(), event(n)) for n in range(100)]
        valid = event(900)
        bad: list[tuple[str, bytes | None, str]] = [
            ("not avro", b"\x00\x00\x00\x00\x01just some bytes, not Avro \xff\xfe", "decode_error"),
            ("no magic byte", b"{\"event_id\": \"json, not avro\"}", "decode_error"),
            ("wrong schema id", struct.pack(">bI", 0, 4242) + valid[5:], "decode_error"),
            ("truncated", valid[:-9], "decode_error"),
            ("empty value", b"", "decode_error"),
            ("tombstone", None, "decode_error"),
            ("missing phone", event(901, phone=""), "invalid_event"),
            ("invalid phone", event(902, phone="+90 555 12"), "invalid_event"),
            ("no campaign", event(903, campaign=None), "unroutable"),
            ("campaign not a uuid", event(904, campaign="summer-campaign"), "unroutable"),
            ("unknown campaign", event(905, campaign=UNKNOWN_CAMPAIGN), "pisano_error"),
            # random, so that compression cannot shrink it below the dead-letter topic's limit
            ("10 MB value", struct.pack(">bI", 0, schema_id) + os.urandom(10 * 1024 * 1024), "oversize"),
        ]
        records: list[tuple[bytes | None, bytes | None]] = []
        for n, (key, value) in enumerate(good):
            records.append((key, value))
            if n < len(bad):
                records.append((bad[n][0].encode(), bad[n][1]))
        produce(stack.bootstrap, topic, records)

        env = consumer_env(bootstrap=stack.bootstrap, redis_url=stack.redis_url, topic=topic, dlq=dlq, group=group,
                           pisano_url=simulator.url, token=TOKEN, SCHEMA_REGISTRY_URL=registry.url)
        replica = ConsumerProcess(env, tmp_path / "consumer.log").start()
        processes.append(replica)
        ends = end_offsets(stack.bootstrap, topic)
        wait_until(lambda: all_committed(stack.bootstrap, group, topic, ends), 90, "every record has an outcome")
        assert replica.alive()
        dead_count = replica.metric("pisano_sms_dead_letters_total")
        assert replica.terminate() == 0

    assert len(delivered_phones(tmp_path / "deliveries.jsonl")) == 100
    dead = read_all(stack.bootstrap, dlq, expected=len(bad))
    assert dead_count == len(bad)
    by_key = {(m.key() or b"").decode(): m for m in dead}
    for name, value, reason in bad:
        headers = headers_of(by_key[name])
        assert headers["dlq.reason"] == reason, (name, headers)
        assert headers["dlq.original.topic"] == topic
        if reason == "pisano_error":
            assert headers["pisano.error.code"] == "13002" and headers["pisano.http.status"] == "404"
        if name == "10 MB value":
            if dlq_max_bytes > 10 * 1024 * 1024:
                assert by_key[name].value() == value
            else:
                assert by_key[name].value() in (b"", None) and headers["dlq.value.omitted"] == str(len(value or b""))
        elif value is not None:
            assert by_key[name].value() == value  # the original bytes, untouched
    assert Counter(headers_of(m)["dlq.reason"] for m in dead) == Counter(reason for _, _, reason in bad)

"""Other event contracts end to end: Confluent wire format through a registry (with schema
evolution and a registry outage), and a foreign schema mapped with JMESPath, routes and
national-format phones."""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import fastavro
import pytest

from consumer.ingest.samples import encode_confluent
from consumer.simulator import SimulatorConfig, SimulatorServer
from tests.conftest import Stack, unique
from tests.support.consumers import ConsumerProcess, consumer_env, wait_until
from tests.support.kafka import all_committed, committed, end_offsets, headers_of, produce, read_all
from tests.support.registry import RegistryServer
from tests.support.scenario import CAMPAIGNS

TOKEN = "contracts-token-77"

PAYMENT_V1 = {"type": "record", "name": "Payment", "namespace": "bank", "fields": [
    {"name": "id", "type": "string"},
    {"name": "msisdn", "type": "string"},
    {"name": "kind", "type": "string"},
    {"name": "legacy_flag", "type": "int"},
]}
# v2 drops a field and adds one with a default: readers on v2 still read v1 records.
PAYMENT_V2 = {"type": "record", "name": "Payment", "namespace": "bank", "fields": [
    {"name": "id", "type": "string"},
    {"name": "msisdn", "type": "string"},
    {"name": "kind", "type": "string"},
    {"name": "customer_name", "type": "string", "default": "valued customer"},
]}
PAYMENT_MAPPING = f"""
event_id: id
phone: msisdn
campaign_routes:
  field: kind
  routes: {{LOAN: {CAMPAIGNS[0]}, CARD: {CAMPAIGNS[1]}}}
custom_attributes: {{name: customer_name}}
"""


@pytest.fixture
def simulator(tmp_path: Path):  # type: ignore[no-untyped-def]
    config = SimulatorConfig(tokens=frozenset({TOKEN}), campaigns=frozenset(CAMPAIGNS), rate_limits=(),
                             delivery_log_path=tmp_path / "deliveries.jsonl")
    with SimulatorServer(config) as server:
        yield server


def run_until_committed(stack: Stack, env: dict[str, str], topic: str, group: str, log: Path,
                        before_wait: Callable[[], None] | None = None) -> ConsumerProcess:
    replica = ConsumerProcess(env, log).start()
    if before_wait:
        before_wait()
    ends = end_offsets(stack.bootstrap, topic)
    wait_until(lambda: all_committed(stack.bootstrap, group, topic, ends), 90, "all offsets committed")
    return replica


def test_registry_wire_format_with_evolution_and_an_outage(
        stack: Stack, new_topic: Callable[..., str], simulator: SimulatorServer, tmp_path: Path,
        redis_client) -> None:  # type: ignore[no-untyped-def]
    topic, dlq, group = new_topic(partitions=2), new_topic("dlq"), unique("g")
    with RegistryServer() as registry:
        v1 = registry.register(f"{topic}-value", PAYMENT_V1)
        w1 = fastavro.parse_schema(PAYMENT_V1)
        records = [(f"p{n}".encode(), encode_confluent(
            {"id": f"p{n}", "msisdn": f"+90533{n:07d}", "kind": "LOAN" if n % 2 else "CARD", "legacy_flag": 1},
            w1, v1)) for n in range(200)]
        records.append((b"bad", encode_confluent({"id": "x", "msisdn": "+905331111111", "kind": "LOAN",
                                                   "legacy_flag": 1}, w1, 999)))  # id not in the registry
        produce(stack.bootstrap, topic, records)
        reader = tmp_path / "payment-v2.avsc"
        reader.write_text(json.dumps(PAYMENT_V2))
        mapping = tmp_path / "mapping.yaml"
        mapping.write_text(PAYMENT_MAPPING)
        env = consumer_env(bootstrap=stack.bootstrap, redis_url=stack.redis_url, topic=topic, dlq=dlq,
                           group=group, pisano_url=simulator.url, token=TOKEN, SCHEMA_REGISTRY_URL=registry.url,
                           AVRO_SCHEMA_FILE=reader, MAPPING_FILE=mapping)
        replica = run_until_committed(stack, env, topic, group, tmp_path / "consumer.log")

        # The producer moves to v2 while the registry is down: records wait, none is lost.
        v2 = registry.register(f"{topic}-value", PAYMENT_V2)
        registry.down = True
        w2 = fastavro.parse_schema(PAYMENT_V2)
        produce(stack.bootstrap, topic, [(f"q{n}".encode(), encode_confluent(
            {"id": f"q{n}", "msisdn": f"+90534{n:07d}", "kind": "CARD", "customer_name": f"Name {n}"}, w2, v2))
            for n in range(100)])
        wait_until(lambda: v2 in registry.fetches or replica.log_text().count("registry unavailable") > 0, 30,
                   "the consumer tried the registry")
        assert committed(stack.bootstrap, group, topic) != end_offsets(stack.bootstrap, topic)
        registry.down = False
        ends = end_offsets(stack.bootstrap, topic)
        wait_until(lambda: all_committed(stack.bootstrap, group, topic, ends), 60, "resumed after the outage")
        assert replica.terminate() == 0
        assert registry.fetches.count(v1) == 1  # parsed once, cached per id

    deliveries = [json.loads(line) for line in (tmp_path / "deliveries.jsonl").read_text().splitlines()]
    by_phone = {d["phone"]: d for d in deliveries}
    assert len(deliveries) == len(by_phone) == 300
    assert by_phone["+905330000001"]["campaign_id"] == CAMPAIGNS[0]
    assert by_phone["+905330000002"]["campaign_id"] == CAMPAIGNS[1]
    assert by_phone["+905330000002"]["custom_attributes"] == {"name": "valued customer"}  # v1: reader default
    assert by_phone["+905340000007"]["custom_attributes"] == {"name": "Name 7"}
    dead = read_all(stack.bootstrap, dlq, expected=1)
    assert [headers_of(m)["dlq.reason"] for m in dead] == ["decode_error"]
    assert "999" in headers_of(dead[0])["pisano.error.message"]


FOREIGN_SCHEMA = {
    "type": "record", "name": "CoreBankingEvent", "namespace": "corebank", "fields": [
        {"name": "header", "type": {"type": "record", "name": "Header", "fields": [
            {"name": "messageId", "type": "string"}, {"name": "source", "type": "string"}]}},
        {"name": "payload", "type": {"type": "record", "name": "Payload", "fields": [
            {"name": "operation", "type": "string"},
            {"name": "party", "type": {"type": "record", "name": "Party", "fields": [
                {"name": "fullName", "type": "string"},
                {"name": "contacts", "type": {"type": "array", "items": {
                    "type": "record", "name": "Contact", "fields": [
                        {"name": "kind", "type": "string"}, {"name": "value", "type": "string"}]}}}]}},
            {"name": "branch", "type": ["null", {"type": "record", "name": "Branch", "fields": [
                {"name": "code", "type": "string"}]}], "default": None}]}}]}

FOREIGN_MAPPING = f"""
event_id: header.messageId
phone: "payload.party.contacts[?kind=='MOBILE'] | [0].value"
phone_region: TR
phone_format: national
campaign_routes:
  field: payload.operation
  routes: {{LOAN_PAYOUT: {CAMPAIGNS[0]}, CARD_PAYMENT: {CAMPAIGNS[1]}}}
  default: null
custom_attributes: {{name: payload.party.fullName, source: header.source}}
built_in_responses: {{customerDetailedInformation1: payload.branch.code}}
"""


def test_foreign_schema_mapping_end_to_end(stack: Stack, new_topic: Callable[..., str], simulator: SimulatorServer,
                                           tmp_path: Path, redis_client) -> None:  # type: ignore[no-untyped-def]
    topic, dlq, group = new_topic(partitions=2), new_topic("dlq"), unique("g")
    schema = fastavro.parse_schema(FOREIGN_SCHEMA)
    operations = ["LOAN_PAYOUT", "CARD_PAYMENT", "DEPOSIT"]

    def encode(n: int) -> bytes:
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, schema, {
            "header": {"messageId": f"m-{n}", "source": "core"},
            "payload": {"operation": operations[n % 3],
                        "party": {"fullName": f"Müşteri {n}", "contacts": [
                            {"kind": "EMAIL", "value": f"c{n}@bank.example"},
                            {"kind": "MOBILE", "value": f"0535 {n // 10000 % 1000:03d} {n % 10000:04d}"}]},
                        "branch": {"code": f"BR{n % 7}"} if n % 2 else None}})
        return buffer.getvalue()

    produce(stack.bootstrap, topic, [(f"m-{n}".encode(), encode(n)) for n in range(300)])
    schema_file, mapping = tmp_path / "corebank.avsc", tmp_path / "mapping.yaml"
    schema_file.write_text(json.dumps(FOREIGN_SCHEMA))
    mapping.write_text(FOREIGN_MAPPING)
    env = consumer_env(bootstrap=stack.bootstrap, redis_url=stack.redis_url, topic=topic, dlq=dlq, group=group,
                       pisano_url=simulator.url, token=TOKEN, AVRO_SCHEMA_FILE=schema_file, MAPPING_FILE=mapping)
    replica = run_until_committed(stack, env, topic, group, tmp_path / "consumer.log")
    assert replica.terminate() == 0

    deliveries = {d["phone"]: d for d in map(json.loads, (tmp_path / "deliveries.jsonl").read_text().splitlines())}
    assert len(deliveries) == 200  # the DEPOSIT third has no route
    first = deliveries["05350000001"]  # national format, digits only
    assert first["campaign_id"] == CAMPAIGNS[1]
    assert first["custom_attributes"] == {"name": "Müşteri 1", "source": "core"}
    assert first["built_in_responses"] == {"customerDetailedInformation1": "BR1"}
    assert deliveries["05350000000"]["built_in_responses"] is None  # no branch: nothing embedded
    dead = read_all(stack.bootstrap, dlq, expected=100)
    assert Counter(headers_of(m)["dlq.reason"] for m in dead) == {"unroutable": 100}
    assert "DEPOSIT" in headers_of(dead[0])["pisano.error.message"]

"""Issue 13: the contact policy and the mapping's new inputs, end to end with two replicas and
the simulator: MAX_EVENT_AGE (expired), the opt-out list (suppressed), Kafka metadata in the
mapping, typed attributes. Expired and suppressed events are final outcomes: never sent, never
dead-lettered, committed, counted in pisano_sms_events_filtered_total{reason}.

What each test holds exactly comes from the simulator's delivery log and the dead-letter topic.
The replicas' counters are at least the expected counts: a record ended but not yet committed
when the group rebalances is read again by the next owner, and ends (and is counted) again."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from confluent_kafka import Producer

from consumer.cli import main
from consumer.ingest.kafka import produce_waiting
from consumer.ingest.samples import encode, phone_for, transaction
from consumer.operations.logs import mask_phone
from tests.conftest import unique
from tests.support.consumers import ConsumerProcess, consumer_env
from tests.support.kafka import read_all
from tests.support.runs import Run
from tests.support.scenario import CAMPAIGNS

OPT_OUT_KEY = "opt-out-key-for-tests-0123456789"
Record = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]


def produce(bootstrap: str, topic: str, records: list[Record], timestamp_ms: int | None = None) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "enable.idempotence": True})
    for key, value, headers in records:
        extra: dict[str, Any] = {} if timestamp_ms is None else {"timestamp": timestamp_ms}
        produce_waiting(producer, topic, key=key, value=value, headers=headers or None, **extra)
    assert producer.flush(30) == 0


def two_replicas(run: Run, new_topic: Callable[..., str], **settings: Any) -> list[ConsumerProcess]:
    """Two replicas of one group on a fresh 4-partition topic (records are produced by the caller)."""
    run.topic, run.dlq, run.group = new_topic(partitions=4), new_topic("dlq"), unique("g")
    env = consumer_env(bootstrap=run.stack.bootstrap, redis_url=run.stack.redis_url, topic=run.topic,
                       dlq=run.dlq, group=run.group, pisano_url=run.simulator.url, token=run.token,
                       PISANO_BACKOFF_BASE_MS=50, PISANO_BACKOFF_MAX_MS=500, **settings)
    replicas = [ConsumerProcess(env, run.tmp_path / f"{run.topic}-{i}.log").start() for i in range(2)]
    run.processes.extend(replicas)
    for replica in replicas:  # both in the group before the records come: fewer rebalances mid-run
        replica.wait_ready()
    return replicas


def finish(run: Run, replicas: list[ConsumerProcess], dead_letters: int) -> dict[str, float]:
    """Wait until every record is committed; the replicas' summed metrics; stop them; read the DLQ."""
    run.wait_all_committed()
    totals: dict[str, float] = {}
    for replica in replicas:
        for name, value in replica.metrics().items():
            totals[name] = totals.get(name, 0.0) + value
    for replica in replicas:
        assert replica.terminate() == 0, replica.log_tail()
    run.dead = read_all(run.stack.bootstrap, run.dlq, expected=dead_letters)
    assert len(run.dead) == dead_letters
    return totals


def mapping_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mapping.yaml"
    path.write_text(text)
    return path


def event(n: int, prefix: str, **fields: Any) -> dict[str, Any]:
    record = transaction(f"{prefix}-{n}", phone_for(n), CAMPAIGNS[n % 2], n=n)
    record.update(fields)
    return record


def test_events_past_max_event_age_expire_unsent_by_their_own_time(run: Run, new_topic: Callable[..., str],
                                                                   tmp_path: Path) -> None:
    prefix = unique("fresh")
    now = datetime.now(UTC)
    paid_long_ago = [event(n, prefix, occurred_at=now - timedelta(minutes=5)) for n in range(20)]
    paid_now = [event(n, prefix) for n in range(20, 40)]
    replicas = two_replicas(run, new_topic, MAX_EVENT_AGE="2m", MAPPING_FILE=mapping_file(tmp_path, """
event_id: event_id
phone: customer.phone
campaign_id: campaign_id
event_time: occurred_at
custom_attributes: {external_id: customer.id}
"""))
    # Both produced now: the transaction's own time decides; and a record whose Kafka timestamp is
    # old (a backfill) but whose payment is recent is sent.
    produce(run.stack.bootstrap, run.topic, [(None, encode(r), []) for r in paid_long_ago + paid_now[:10]])
    old_record_ms = int((now - timedelta(minutes=10)).timestamp() * 1000)
    produce(run.stack.bootstrap, run.topic, [(None, encode(r), []) for r in paid_now[10:]], timestamp_ms=old_record_ms)
    metrics = finish(run, replicas, dead_letters=0)

    delivered = run.delivered()
    assert set(delivered) == {phone_for(n) for n in range(20, 40)} and max(delivered.values()) == 1
    assert metrics["pisano_sms_events_filtered_total{reason=expired}"] >= 20
    assert metrics["pisano_sms_events_filtered_total{reason=suppressed}"] == 0


def test_opted_out_phones_and_external_ids_are_suppressed_never_sent(run: Run, new_topic: Callable[..., str],
                                                                     tmp_path: Path) -> None:
    prefix = unique("optout")
    records = [event(n, prefix) for n in range(40)]
    # Ten phones opted out, written as a CRM exports them (national, spaced); five customers by id.
    csv = tmp_path / "opt-outs.csv"
    lines = ["phone,external_id"] + [f"0532 {n // 10000:03d} {n % 10000:04d}," for n in range(10)]
    lines += [f",cust-{n}" for n in range(10, 15)] + ["+90 12,"]
    csv.write_text("\n".join(lines) + "\n")
    env = {"REDIS_URL": run.stack.redis_url, "SUPPRESSION_KEY": OPT_OUT_KEY}
    cli = CliRunner()
    imported = cli.invoke(main, ["suppress", "import", str(csv)], env=env)
    assert imported.exit_code == 1, imported.output  # the invalid row: an opted-out customer left off
    assert "rows read 16; entries 15: added 15, already on the list 0; invalid 1" in imported.output
    assert "line 17: phone" in imported.output and "+90 12" not in imported.output
    again = cli.invoke(main, ["suppress", "import", str(csv)], env=env)
    assert "added 0, already on the list 15" in again.output and again.exit_code == 1
    checked = cli.invoke(main, ["suppress", "check", "--phone", phone_for(3), "--phone", phone_for(30)], env=env)
    assert checked.exit_code == 1
    assert checked.output.splitlines() == [f"phone {mask_phone(phone_for(3))}: suppressed",  # never in clear
                                           f"phone {mask_phone(phone_for(30))}: not on the list"]
    exported = cli.invoke(main, ["suppress", "export"], env=env)
    rows = exported.stdout.splitlines()
    assert rows[0] == "entry" and len(rows) == 16 and not any("0532" in row for row in rows)

    replicas = two_replicas(run, new_topic, SUPPRESSION_KEY=OPT_OUT_KEY)
    produce(run.stack.bootstrap, run.topic, [(None, encode(r), []) for r in records])
    metrics = finish(run, replicas, dead_letters=0)

    delivered = run.delivered()
    assert set(delivered) == {phone_for(n) for n in range(15, 40)} and max(delivered.values()) == 1
    assert metrics["pisano_sms_events_filtered_total{reason=suppressed}"] >= 15
    assert metrics["pisano_sms_events_filtered_total{reason=expired}"] == 0
    removed = cli.invoke(main, ["suppress", "remove", "--external-id", "cust-10"], env=env)
    assert removed.output.strip() == "removed 1, not on the list 0"


def test_kafka_headers_and_key_feed_the_event_id_routes_and_attributes(run: Run, new_topic: Callable[..., str],
                                                                         tmp_path: Path) -> None:
    prefix = unique("outbox")
    replicas = two_replicas(run, new_topic, MAPPING_FILE=mapping_file(tmp_path, f"""
event_id: $kafka.headers.id
phone: customer.phone
campaign_routes:
  field: $kafka.headers.ce_type
  routes: {{payment.done: {CAMPAIGNS[0]}}}
  default: {CAMPAIGNS[1]}
custom_attributes:
  external_id: customer.id
  order: $kafka.key
"""))
    records: list[Record] = []
    for n in range(30):
        headers = [("id", f"{prefix}-{n}".encode())] + ([("ce_type", b"payment.done")] if n % 2 else [])
        records.append((f"order-{n}".encode(), encode(event(n, f"{prefix}-body")), headers))
    # The outbox relays five events again under new payload ids: the header id is the event id.
    records += [(f"order-{n}".encode(), encode(event(n, f"{prefix}-again")), [("id", f"{prefix}-{n}".encode())])
                for n in range(5)]
    records.append((b"order-x", encode(event(99, prefix)), [("id", b"\xff\xfe")]))
    produce(run.stack.bootstrap, run.topic, records)
    metrics = finish(run, replicas, dead_letters=1)

    delivered = run.delivered()
    assert set(delivered) == {phone_for(n) for n in range(30)} and max(delivered.values()) == 1
    # The five relayed again carry new payload ids: skipped by their header id, never sent twice.
    assert metrics["pisano_sms_duplicates_skipped_total"] >= 5
    lines = [json.loads(line) for line in run.simulator_log.read_text().splitlines()]
    by_phone = {line["phone"]: line for line in lines}
    assert by_phone[phone_for(7)]["campaign_id"] == CAMPAIGNS[0]
    assert by_phone[phone_for(8)]["campaign_id"] == CAMPAIGNS[1]
    assert by_phone[phone_for(7)]["custom_attributes"]["order"] == "order-7"
    (dead,) = run.dead_headers()
    assert dead["dlq.reason"] == "invalid_event" and "header 'id' is not UTF-8" in dead["pisano.error.message"]


def test_typed_attributes_are_sent_in_their_written_form_or_dead_lettered(run: Run, new_topic: Callable[..., str],
                                                                         tmp_path: Path) -> None:
    prefix = unique("typed")
    paid = datetime(2024, 9, 17, 1, 59, 35, tzinfo=UTC)
    records = [event(n, prefix, occurred_at=paid, attributes={"amount": f"{n}.50", "first": "TRUE"})
               for n in range(20)]
    records.append(event(20, prefix, attributes={"amount": "12,50", "first": "true"}))
    replicas = two_replicas(run, new_topic, MAPPING_FILE=mapping_file(tmp_path, """
event_id: event_id
phone: customer.phone
campaign_id: campaign_id
time_zone: Europe/Istanbul
custom_attributes:
  external_id: customer.id
  amount: {path: attributes.amount, type: float}
  first_payment: {path: attributes.first, type: boolean}
  paid_at: {path: occurred_at, type: datetime}
  paid_on: {path: occurred_at, type: date}
"""))
    produce(run.stack.bootstrap, run.topic, [(None, encode(r), []) for r in records])
    finish(run, replicas, dead_letters=1)

    lines = [json.loads(line) for line in run.simulator_log.read_text().splitlines()]
    assert len(lines) == 20
    by_phone = {line["phone"]: line["custom_attributes"] for line in lines}
    assert by_phone[phone_for(7)] == {"external_id": "cust-7", "amount": "7.50", "first_payment": "true",
                                      "paid_at": "2024-09-17 04:59:35", "paid_on": "2024-09-17"}
    (dead,) = run.dead_headers()
    assert dead["dlq.reason"] == "invalid_event"
    assert "custom_attributes.amount: a string of 5 characters is not a valid float" in dead["pisano.error.message"]

"""`pisano-sms demo`: the whole product on the local stack, in one command.

Starts the Pisano simulator, creates a demo topic and its dead-letter topic, produces sample
transaction events (with duplicates and invalid ones among them), runs the consumer with the
cloud throttle until every record has an outcome, and reports what happened, checked against
the simulator's own delivery log. The contact policy is on (MAX_EVENT_AGE=48h, an opt-out list,
CONTACT_COOLDOWN=30d): a few customers opted out, a few records are three days old, and a few
customers made a second transaction that another campaign would survey; none of those is sent
(of each customer's two surveys, one goes out). Each run uses
fresh topics and a fresh Redis key prefix, so it can be repeated and never touches other data.

Receipts are on (OUTCOME_TOPIC, with a salt made for the run): a record counts as done once its
receipt is acknowledged, and at the end the receipt topic is read back and its counts per outcome
are checked against the metrics, the simulator's log and the dead-letters.
"""

from __future__ import annotations

import random
import secrets
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import click
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from consumer.app import build_pipeline
from consumer.config.settings import Settings
from consumer.ingest.kafka import make_producer, produce_waiting
from consumer.ingest.samples import encode, phone_for, transaction
from consumer.operations.health import Health
from consumer.operations.metrics import Metrics
from consumer.outcomes.receipts import Receipt, ReceiptCodec, first_receipts
from consumer.simulator import SimulatorConfig, SimulatorServer
from consumer.state.redis import Keys

CAMPAIGNS = ["ae51458c-9e82-417f-8f1d-e074891ea5c1", "9a1e0000-0000-4000-8000-000000000001",
             "3f0c0000-0000-4000-8000-000000000002"]
DEMO_TOKEN = "demo-token"
DEMO_MAX_EVENT_AGE = "48h"
DEMO_CONTACT_COOLDOWN = "30d"
OLD_RECORD_AGE_MS = 3 * 86_400_000  # older than DEMO_MAX_EVENT_AGE, within the stale limit (6 days)
TIMEOUT_S = 300


@dataclass
class SampleTraffic:
    records: list[tuple[bytes, bytes]] = field(default_factory=list)
    unique: int = 0
    duplicates: int = 0
    invalid: Counter[str] = field(default_factory=Counter)
    opted_out: list[str] = field(default_factory=list)  # phones on the opt-out list
    suppressed: int = 0  # records of those phones (duplicates too): never sent
    old_records: list[tuple[bytes, bytes]] = field(default_factory=list)  # three days old: expired
    # Customers with a second transaction, for another campaign: one of their two surveys is sent,
    # the other ends as `cooldown`.
    surveyed_twice: list[str] = field(default_factory=list)


def sample_traffic(events: int, run_id: str, rng: random.Random) -> SampleTraffic:
    """`events` unique transactions; about 5% sent twice, about 1% of each kind of bad record."""
    traffic = SampleTraffic(unique=events)
    for n in range(events):
        event_id = f"demo-{run_id}-{n}"
        value = encode(transaction(event_id, phone_for(n), CAMPAIGNS[n % len(CAMPAIGNS)], n=n))
        opted_out = n % 200 == 7  # a customer who opted out (KVKK / İYS)
        if opted_out:
            traffic.opted_out.append(phone_for(n))
            traffic.suppressed += 1
        if n % 200 == 11:  # a transaction whose record sat three days in an outbox
            traffic.old_records.append((event_id.encode(), value))
            continue
        traffic.records.append((event_id.encode(), value))
        if n % 200 == 23:  # a second transaction, another campaign would survey it: the cooldown's
            again = f"{event_id}-again"
            traffic.records.append((again.encode(), encode(transaction(
                again, phone_for(n), CAMPAIGNS[(n + 1) % len(CAMPAIGNS)], n=n))))
            traffic.surveyed_twice.append(phone_for(n))
            continue  # no duplicate of these: either of the two may win, a duplicate would end either way
        if rng.random() < 0.05:
            traffic.records.append((event_id.encode(), value))
            traffic.duplicates += 1
            traffic.suppressed += opted_out
        roll = rng.random()
        if roll < 0.01:
            bad = encode(transaction(f"{event_id}-x", "+90 123", CAMPAIGNS[0], n=n))
            traffic.invalid["invalid_event"] += 1
        elif roll < 0.02:
            bad = encode(transaction(f"{event_id}-x", phone_for(n), None, n=n))
            traffic.invalid["unroutable"] += 1
        elif roll < 0.03:
            bad = b"this is not an Avro record"
            traffic.invalid["decode_error"] += 1
        else:
            continue
        traffic.records.append((f"{event_id}-x".encode(), bad))
    rng.shuffle(traffic.records)
    return traffic


def run_demo(settings: Settings, events: int) -> None:
    run_id = uuid.uuid4().hex[:8]
    topic, dlq = f"pisano-sms-demo-{run_id}.transactions", f"pisano-sms-demo-{run_id}.dlq"
    receipts = f"pisano-sms-demo-{run_id}.receipts"
    say(f"Kafka {settings.kafka_bootstrap_servers}, run {run_id}: creating {topic} (6 partitions), {dlq} and "
        f"{receipts} (3 partitions)")
    _create_topics(settings, {topic: 6, dlq: 1, receipts: 3})

    with SimulatorServer(SimulatorConfig(tokens=frozenset({DEMO_TOKEN}), campaigns=frozenset(CAMPAIGNS),
                                         rate_limits=settings.rate_windows)) as simulator:
        say(f"Pisano simulator on {simulator.url}, throttle {settings.pisano_rate_limits}")
        traffic = sample_traffic(events, run_id, random.Random(run_id))
        total = len(traffic.records) + len(traffic.old_records)
        say(f"producing {total:,} records: {traffic.unique:,} transactions, "
            f"{traffic.duplicates:,} duplicates, {sum(traffic.invalid.values()):,} invalid, "
            f"{len(traffic.old_records):,} of them three days old (MAX_EVENT_AGE={DEMO_MAX_EVENT_AGE}), "
            f"{len(traffic.surveyed_twice):,} customers' second transaction for another campaign "
            f"(CONTACT_COOLDOWN={DEMO_CONTACT_COOLDOWN})")
        _produce(settings, topic, traffic.records)
        _produce(settings, topic, traffic.old_records, timestamp_ms=int(time.time() * 1000) - OLD_RECORD_AGE_MS)

        demo_settings = settings.model_copy(update={
            "kafka_topics": [topic], "dlq_topic": dlq, "kafka_group_id": f"pisano-sms-demo-{run_id}",
            "pisano_url": simulator.url, "pisano_api_token": _secret(DEMO_TOKEN), "pisano_api_token_file": None,
            "pisano_allow_insecure": True,  # the demo's simulator serves plain http on loopback
            "redis_key_prefix": f"pisano-sms-demo-{run_id}", "batch_max_wait_ms": 500, "mapping_file": None,
            "schema_registry_url": None, "avro_schema_file": None, "mapper": "declarative",
            "max_event_age": DEMO_MAX_EVENT_AGE, "suppression_key": _secret(uuid.uuid4().hex),
            "suppression_key_file": None, "contact_cooldown": DEMO_CONTACT_COOLDOWN,
            "contact_cooldown_campaigns": {},
            # A salt for this run only: the demo's phones are samples, and nobody looks them up.
            "outcome_topic": receipts, "outcome_phone_salt": _secret(secrets.token_hex(32)),
            "outcome_phone_salt_file": None, "outcome_schema_id": None,
        })
        _opt_out(demo_settings, traffic.opted_out)
        say(f"opt-out list: {len(traffic.opted_out):,} customers (their phones stored as keyed hashes)")
        metrics, health = Metrics(), Health()
        pipeline, _probe = build_pipeline(demo_settings, metrics, health)
        thread = threading.Thread(target=pipeline.run, name="demo-consumer", daemon=True)
        started = time.monotonic()
        thread.start()
        try:
            _wait_for_every_outcome(metrics, total, started)
        finally:
            pipeline.request_stop()
            thread.join(60)
        elapsed = time.monotonic() - started
        deliveries = simulator.state.deliveries.records()
        requests = simulator.state.requests.records()
    written = read_receipts(settings, receipts)
    _report(traffic, metrics, deliveries, requests, elapsed, dlq)
    _report_receipts(len(traffic.records) + len(traffic.old_records), metrics, written, deliveries, receipts)


def _secret(value: str) -> Any:
    from pydantic import SecretStr

    return SecretStr(value)


def say(message: str) -> None:
    click.echo(click.style("demo: ", fg="cyan") + message)


def _create_topics(settings: Settings, topics: dict[str, int]) -> None:
    config = {"bootstrap.servers": settings.kafka_bootstrap_servers, **settings.kafka}
    admin = AdminClient(config)
    futures = admin.create_topics([NewTopic(name, partitions, 1) for name, partitions in topics.items()])
    for name, future in futures.items():
        try:
            future.result(timeout=30)
        except KafkaException as exc:
            raise click.ClickException(f"cannot create topic {name} ({exc}); is Kafka up? (make up)") from exc


def _opt_out(settings: Settings, phones: list[str]) -> None:
    """The demo's opt-out list, written as `pisano-sms suppress import` writes one: a list is armed
    (its marker written) only by a whole import, never by an `add` (consumer/state/suppression.py)."""
    from consumer.app import build_state, opt_out_hasher
    from consumer.ingest.mapping import load_mapper
    from consumer.state.suppression import RedisOptOutList

    hasher = opt_out_hasher(settings, load_mapper(settings))
    assert hasher is not None
    store = RedisOptOutList(build_state(settings).client, Keys(settings.redis_key_prefix), key_check=hasher.key_check)
    store.holding_marker = True
    store.add([hasher.phone(phone) for phone in phones])
    store.complete()


def _produce(settings: Settings, topic: str, records: list[tuple[bytes, bytes]],
             timestamp_ms: int | None = None) -> None:
    producer = make_producer(settings)
    when = {} if timestamp_ms is None else {"timestamp": timestamp_ms}
    for key, value in records:
        produce_waiting(producer, topic, key=key, value=value, **when)
    if producer.flush(60):
        raise click.ClickException("Kafka did not acknowledge the sample events within 60s")


def _wait_for_every_outcome(metrics: Metrics, records: int, started: float) -> None:
    """Every record ends with an outcome, whichever (its receipt acknowledged); show progress until then."""
    interactive = sys.stdout.isatty()
    next_line = 0.0
    while True:
        done = _value(metrics, "receipts")
        consumed = _value(metrics, "events_consumed")
        elapsed = time.monotonic() - started
        line = f"  {elapsed:5.1f}s  consumed {consumed:>8,.0f}   with an outcome {done:>8,.0f} / {records:,}"
        finished = done >= records
        if interactive:
            click.echo("\r" + line, nl=finished)
        elif finished or elapsed >= next_line:
            click.echo(line)
            next_line += 2.0
        if finished:
            return
        if elapsed > TIMEOUT_S:
            raise click.ClickException(f"not every record had an outcome after {TIMEOUT_S}s; see the logs above")
        time.sleep(0.25)


def _value(metrics: Metrics, name: str, label: str | None = None) -> float:
    total = 0.0
    for family in metrics.registry.collect():
        if family.name == f"pisano_sms_{name}":
            for sample in family.samples:
                if sample.name.endswith("_total") and (label is None or label in sample.labels.values()):
                    total += sample.value
    return total


def _report(traffic: SampleTraffic, metrics: Metrics, deliveries: list[dict[str, Any]],
            requests: list[dict[str, Any]], elapsed: float, dlq: str) -> None:
    phones = Counter(d["phone"] for d in deliveries)
    dead: Counter[str] = Counter()
    for family in metrics.registry.collect():
        if family.name == "pisano_sms_dead_letters":
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.value:
                    dead[sample.labels["reason"]] += int(sample.value)
    statuses = Counter(str(r.get("http_status")) for r in requests)
    delivered = int(_value(metrics, "recipients_delivered"))
    expired, suppressed = int(_value(metrics, "events_filtered", "expired")), \
        int(_value(metrics, "events_filtered", "suppressed"))
    opted_out_sent = sum(phones[p] for p in traffic.opted_out)
    cooled = int(_value(metrics, "events_filtered", "cooldown"))
    twice_sent = Counter(phones[p] for p in traffic.surveyed_twice)
    sizes = [r["recipients"] or 0 for r in requests if r.get("http_status") == 200]
    click.echo()
    click.secho(f"Demo finished in {elapsed:.1f}s", bold=True)
    rows = [
        ("events in", f"{len(traffic.records) + len(traffic.old_records):,}", f"{traffic.unique:,} transactions, "
         f"{traffic.duplicates:,} duplicates, {sum(traffic.invalid.values()):,} invalid, "
         f"{len(traffic.surveyed_twice):,} customers' second transactions"),
        ("requests sent", f"{len(requests):,}", ", ".join(f"HTTP {s}: {n}" for s, n in sorted(statuses.items()))
         + (f"; {min(sizes):,} to {max(sizes):,} recipients each" if sizes else "")),
        ("recipients delivered", f"{delivered:,}",
         f"simulator log: {sum(phones.values()):,} recipients, "
         + ("each exactly once" if phones and max(phones.values()) == 1 else "SOME TWICE")),
        ("duplicates skipped", f"{int(_value(metrics, 'duplicates_skipped')):,}", ""),
        ("suppressed", f"{suppressed:,}", f"on the opt-out list, never sent (simulator log: {opted_out_sent} of "
         f"their phones)"),
        ("expired", f"{expired:,}", f"older than MAX_EVENT_AGE={DEMO_MAX_EVENT_AGE}, never sent"),
        ("cooldown", f"{cooled:,}", f"a second survey within CONTACT_COOLDOWN={DEMO_CONTACT_COOLDOWN}, never sent "
         f"(simulator log: of {len(traffic.surveyed_twice)} customers with two transactions, "
         f"{twice_sent[1]} surveyed once, {sum(n for k, n in twice_sent.items() if k != 1)} not once)"),
        ("dead letters", f"{sum(dead.values()):,}", ", ".join(f"{r} {n}" for r, n in sorted(dead.items()))),
    ]
    for name, value, detail in rows:
        click.echo(f"  {name:<22}{value:>8}   {detail}")
    sent = traffic.unique - len(traffic.opted_out) - len(traffic.old_records)
    ok = delivered == sent == len(phones) and max(phones.values(), default=1) == 1 \
        and dead == traffic.invalid and suppressed == traffic.suppressed and not opted_out_sent \
        and expired == len(traffic.old_records) \
        and cooled == len(traffic.surveyed_twice) == twice_sent[1]
    click.echo(f"  dead-letter topic: {dlq}")
    if ok:
        click.secho("Every transaction was delivered exactly once, except the opted-out, the expired ones and "
                    "second surveys within the cooldown, never sent; every bad record is in the dead-letter topic.",
                    fg="green")
    else:
        raise click.ClickException("the outcome does not match the sample traffic; see the report above")



def read_receipts(settings: Settings, topic: str, timeout_s: float = 60) -> list[Receipt]:
    """Every receipt in `topic`, in each partition's order."""
    codec = ReceiptCodec()
    reader = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers, **settings.kafka,
                       "group.id": f"pisano-sms-demo-reader-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False,
                       "auto.offset.reset": "earliest", "enable.partition.eof": True})
    try:
        partitions = reader.list_topics(topic, timeout=10).topics[topic].partitions
        reader.assign([TopicPartition(topic, p, 0) for p in partitions])
        ends = {p: reader.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
        done = {p for p, end in ends.items() if end == 0}
        receipts: list[Receipt] = []
        deadline = time.monotonic() + timeout_s
        while len(done) < len(partitions):
            if time.monotonic() > deadline:
                raise click.ClickException(f"could not read {topic} to its end within {timeout_s:.0f}s")
            message = reader.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() == error._PARTITION_EOF:
                    done.add(message.partition())
                    continue
                raise click.ClickException(f"reading {topic}: {error.str()}")
            receipts.append(codec.decode(message.value() or b""))
            if (message.offset() or 0) + 1 >= ends[message.partition()]:
                done.add(message.partition())
        return receipts
    finally:
        reader.close()


def _report_receipts(records: int, metrics: Metrics, written: list[Receipt],
                     deliveries: list[dict[str, Any]], topic: str) -> None:
    """The receipt topic's counts per outcome (each record's first receipt), checked against the
    metrics and the simulator's log: every outcome the receipts name must be counted there too."""
    first = first_receipts(written)
    counts = Counter(r.outcome for r in first.values())
    again = len(written) - len(first)
    click.echo(f"  {'receipts':<22}{len(written):>8,}   "
               + ", ".join(f"{outcome} {n:,}" for outcome, n in sorted(counts.items()))
               + (f"; {again:,} records read again got a second receipt" if again else ""))
    click.echo(f"  receipt topic: {topic} ('accepted' means accepted by Pisano, not that an SMS was sent)")
    dead = int(_value(metrics, "dead_letters"))
    expected = {"accepted": len(deliveries), "duplicate": int(_value(metrics, "duplicates_skipped")),
                "dead_lettered": dead, "expired": int(_value(metrics, "events_filtered", "expired")),
                "suppressed": int(_value(metrics, "events_filtered", "suppressed")),
                "cooldown": int(_value(metrics, "events_filtered", "cooldown"))}
    mismatched = {k: (counts.get(k, 0), expected.get(k)) for k in set(counts) | set(expected)
                  if counts.get(k, 0) != expected.get(k, 0)}
    if len(first) != records or mismatched:
        raise click.ClickException(f"the receipt topic holds {len(first):,} records' receipts for "
                                   f"{records:,} records; (receipts, expected) by outcome: {mismatched}")
    click.secho(f"Every record has {'exactly one receipt' if not again else 'its receipts'}, and they match the "
                "simulator's log and the dead-letter topic.", fg="green")

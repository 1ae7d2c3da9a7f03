"""Issue 13 point 1, end to end with two replicas and the simulator: the per-phone contact
cooldown is fleet-wide and atomic with the claim (the same phone for two campaigns at the same
moment, on two replicas: exactly one accepted, the other receipted as `cooldown`, over many
trials), starts only when Pisano
accepted a request, and ends. An event inside the cooldown ends as `cooldown`: never sent, never
dead-lettered, committed, counted in pisano_sms_events_filtered_total{reason="cooldown"}.

Exact counts come from the simulator's delivery log; the replicas' counters are at least the
expected counts (a record ended but not committed when the group rebalances ends again)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis
from confluent_kafka import Producer

from consumer.ingest.kafka import produce_waiting
from consumer.ingest.samples import encode, phone_for, transaction
from consumer.outcomes.receipts import first_receipts
from tests.conftest import ClusterStack, close_redis, unique
from tests.integration.test_contact_policy import OPT_OUT_KEY, finish, two_replicas
from tests.integration.test_receipts import SALT, receipts_of
from tests.support.runs import Run
from tests.support.scenario import CAMPAIGNS

TRIALS = 5  # rounds, each a race on PHONES_PER_TRIAL phones
PHONES_PER_TRIAL = 24


def produce_at_once(bootstrap: str, topic: str, records: list[tuple[int, dict[str, Any]]]) -> None:
    """(partition, record) produced in one flush: the replicas read them within milliseconds."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True})
    for partition, record in records:
        produce_waiting(producer, topic, value=encode(record), partition=partition)
    assert producer.flush(30) == 0


def pair(n: int, prefix: str) -> list[tuple[int, dict[str, Any]]]:
    """Phone n's two events, one per campaign, on partitions two apart (4 partitions over two
    replicas: whatever the assignment, half the pairs or more are split across the replicas)."""
    first = n % 4
    return [(first, transaction(f"{prefix}-a-{n}", phone_for(n), CAMPAIGNS[0], n=n)),
            ((first + 2) % 4, transaction(f"{prefix}-b-{n}", phone_for(n), CAMPAIGNS[1], n=n))]


def test_the_same_phone_for_two_campaigns_on_two_replicas_is_accepted_exactly_once(
        run: Run, new_topic: Callable[..., str]) -> None:
    prefix, receipts = unique("cool"), new_topic("receipts", partitions=3)
    # Each request holds its phones 150 ms at the simulator: the other campaign's request, read at
    # the same moment on the other replica, comes while they are reserved, not after.
    run.faults(latency_ms=150)
    replicas = two_replicas(run, new_topic, CONTACT_COOLDOWN="30d", SUPPRESSION_KEY=OPT_OUT_KEY,
                            BATCH_MAX_WAIT_MS=20, MAX_IN_FLIGHT_REQUESTS=4, OUTCOME_TOPIC=receipts,
                            OUTCOME_PHONE_SALT=SALT)
    phones = 0
    for trial in range(TRIALS):
        numbers = range(trial * PHONES_PER_TRIAL, (trial + 1) * PHONES_PER_TRIAL)
        produce_at_once(run.stack.bootstrap, run.topic, [r for n in numbers for r in pair(n, prefix)])
        phones += len(numbers)
        run.wait_all_committed()
    metrics = finish(run, replicas, dead_letters=0)

    delivered = run.delivered()
    assert set(delivered) == {phone_for(n) for n in range(phones)}
    assert max(delivered.values()) == 1, [p for p, n in delivered.items() if n > 1][:3]
    assert metrics["pisano_sms_events_filtered_total{reason=cooldown}"] >= phones
    # Each phone's two records: one receipt `accepted`, the other `cooldown` with the policy as reason.
    first = first_receipts(receipts_of(run, receipts)).values()
    by_phone: dict[str, list[tuple[str, str | None]]] = {}
    for receipt in first:
        by_phone.setdefault(receipt.phone_hash or "", []).append((receipt.outcome, receipt.reason))
    assert len(first) == 2 * phones and len(by_phone) == phones
    assert all(sorted(found) == [("accepted", None), ("cooldown", "contact_cooldown")] for found in by_phone.values())
    # The race was run: some phones were found reserved by the other attempt (their events held
    # back, then ended as cooldown once it was accepted).
    assert metrics["pisano_sms_events_held_total"] > 0
    print(f"{phones} phones, 2 campaigns each: {sum(delivered.values())} accepted, "
          f"{metrics['pisano_sms_events_filtered_total{reason=cooldown}']:.0f} cooldown, "
          f"{metrics['pisano_sms_events_held_total']:.0f} held back while the other attempt had the phone")


def test_the_cooldown_starts_only_when_accepted_and_ends(run: Run, new_topic: Callable[..., str]) -> None:
    prefix = unique("cool-ends")
    refused = "00000000-0000-4000-8000-000000013002"  # "campaign not found" at the simulator
    run.faults(campaign_codes={refused: 13002})
    replicas = two_replicas(run, new_topic, CONTACT_COOLDOWN="4s", SUPPRESSION_KEY=OPT_OUT_KEY,
                            BATCH_MAX_WAIT_MS=20)

    def send(tag: str, campaign: str, numbers: range) -> None:
        produce_at_once(run.stack.bootstrap, run.topic,
                        [(n % 4, transaction(f"{prefix}-{tag}-{n}", phone_for(n), campaign, n=n)) for n in numbers])
        run.wait_all_committed()

    send("refused", refused, range(0, 10))  # Pisano refused them: dead-lettered, the phones stay free
    send("first", CAMPAIGNS[0], range(0, 20))  # accepted: the cooldown of phones 0-19 starts
    started = time.monotonic()
    send("inside", CAMPAIGNS[1], range(0, 10))  # within 4 s: cooldown
    assert time.monotonic() - started < 4, "too slow to test inside the cooldown"
    time.sleep(max(0.0, 4.5 - (time.monotonic() - started)))
    send("after", CAMPAIGNS[1], range(10, 20))  # past it: sent again
    finish(run, replicas, dead_letters=10)

    delivered = run.delivered()
    assert delivered == {**{phone_for(n): 1 for n in range(10)}, **{phone_for(n): 2 for n in range(10, 20)}}
    assert {h["dlq.reason"] for h in run.dead_headers()} == {"pisano_error"}


def cooldown_keys_per_master(url: str, prefix: str) -> dict[str, int]:
    """How many phone keys (`{<prefix>:p:<bucket>:<n>}:cd:<hash>`) each master holds."""
    client = redis.RedisCluster.from_url(url)
    try:
        return {node.name: sum(1 for _ in client.get_redis_connection(node).scan_iter(
            match=f"{{{prefix}:p:*}}:cd:*", count=1000)) for node in client.get_primaries()}
    finally:
        close_redis(client)


def test_on_a_redis_cluster_the_phones_spread_over_the_masters_and_each_is_accepted_once(
        run: Run, new_topic: Callable[..., str], redis_cluster: ClusterStack, cluster_client) -> None:  # type: ignore[no-untyped-def]
    prefix, phones = unique("psms"), 3 * PHONES_PER_TRIAL
    replicas = two_replicas(run, new_topic, CONTACT_COOLDOWN="30d", SUPPRESSION_KEY=OPT_OUT_KEY,
                            BATCH_MAX_WAIT_MS=20, MAX_IN_FLIGHT_REQUESTS=4, REDIS_URL=redis_cluster.url,
                            REDIS_CLUSTER="true", REDIS_KEY_PREFIX=prefix)
    produce_at_once(run.stack.bootstrap, run.topic, [r for n in range(phones) for r in pair(n, prefix)])
    metrics = finish(run, replicas, dead_letters=0)

    delivered = run.delivered()
    assert set(delivered) == {phone_for(n) for n in range(phones)} and max(delivered.values()) == 1
    assert metrics["pisano_sms_events_filtered_total{reason=cooldown}"] >= phones
    per_master = cooldown_keys_per_master(redis_cluster.url, prefix)
    assert sum(per_master.values()) == phones and len(per_master) == 3
    assert max(per_master.values()) <= 0.5 * phones, per_master  # 64 buckets evenly over the slots

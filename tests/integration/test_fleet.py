"""A fleet of replicas on one topic: a replica joins mid-run, another is killed with SIGKILL.

Afterwards nobody got a second SMS, every invalid event is dead-lettered with its reason, every
duplicate was skipped, and the group's offsets are at the end of every partition. A SIGKILL can
land while a request is in flight: its events then have an unknown fate and are dead-lettered as
`ambiguous` (ARCHITECTURE.md invariant 2). The test then does what an SRE does: replays the ambiguous
events that the Pisano side shows as not delivered, and checks that every valid event was
delivered exactly once in the end.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from consumer.ingest.avro import SchemalessDecoder
from consumer.ingest.samples import default_schema
from consumer.simulator import SimulatorConfig, SimulatorServer
from consumer.simulator.config import FaultSettings
from consumer.sre.replay_signature import sign
from tests.conftest import Stack, unique
from tests.support.consumers import REPLAY_KEY, ConsumerProcess, consumer_env, wait_until
from tests.support.kafka import all_committed, end_offsets, headers_of, produce, produce_each, read_all
from tests.support.scenario import delivered_phones, mixed_traffic

TOKEN = "fleet-token-31c"


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_three_replicas_a_join_and_a_sigkill(stack: Stack, new_topic: Callable[..., str], tmp_path: Path,
                                            redis_client, processes) -> None:  # type: ignore[no-untyped-def]
    topic, dlq, group = new_topic(partitions=6), new_topic("dlq"), unique("g")
    traffic = mixed_traffic(18_700, duplicate_every=20, invalid_every=40)
    assert len(traffic.records) >= 20_000
    produce(stack.bootstrap, topic, traffic.records)
    log = tmp_path / "deliveries.jsonl"
    # Small requests with a slow Pisano stretch the run over several seconds, so the join and the
    # kill happen mid-stream with requests in flight.
    config = SimulatorConfig(tokens=frozenset({TOKEN}), any_campaign=True, rate_limits=(),
                             delivery_log_path=log, faults=FaultSettings(latency_ms=400))
    with SimulatorServer(config) as simulator:
        env = consumer_env(bootstrap=stack.bootstrap, redis_url=stack.redis_url, topic=topic, dlq=dlq,
                           group=group, pisano_url=simulator.url, token=TOKEN, BATCH_MAX_RECIPIENTS=250,
                           MAX_IN_FLIGHT_REQUESTS=2, PISANO_TIMEOUT_MS=2000, PISANO_CONNECT_TIMEOUT_MS=1000,
                           # the shortest lease these timeouts allow (settings: timeouts + 10 s)
                           DEDUP_CLAIM_LEASE_MS=13000)
        replicas = [ConsumerProcess(env, tmp_path / f"replica-{i}.log").start() for i in range(3)]
        processes.extend(replicas)
        valid = len(traffic.valid_phones)
        wait_until(lambda: sum(delivered_phones(log).values()) > valid * 0.25, 90, "a quarter delivered")
        joiner = ConsumerProcess(env, tmp_path / "replica-3.log").start()
        processes.append(joiner)
        wait_until(lambda: sum(delivered_phones(log).values()) > valid * 0.45, 90, "45% delivered")
        victim = replicas[0]
        victim_skipped = victim.metric("pisano_sms_duplicates_skipped_total")
        victim.kill()
        survivors = [*replicas[1:], joiner]

        ends = end_offsets(stack.bootstrap, topic)
        wait_until(lambda: all_committed(stack.bootstrap, group, topic, ends), 180,
                   "the survivors committed every partition to its end")
        skipped = victim_skipped + sum(r.metric("pisano_sms_duplicates_skipped_total") for r in survivors)

        phones = delivered_phones(log)
        assert max(phones.values()) == 1, "someone got a second SMS"
        dead = read_all(stack.bootstrap, dlq)
        reasons = Counter(headers_of(m)["dlq.reason"] for m in dead)
        # Dead-lettering is at-least-once: a record dead-lettered before a rebalance or the kill
        # but not yet committed is dead-lettered again by its next owner. Each invalid record is
        # there, under its own origin, with its reason.
        origins = {(headers_of(m)["dlq.original.partition"], headers_of(m)["dlq.original.offset"]):
                   headers_of(m)["dlq.reason"] for m in dead if headers_of(m)["dlq.reason"] != "ambiguous"}
        assert Counter(origins.values()) == traffic.invalid
        for message in dead:
            headers = headers_of(message)
            assert headers["dlq.original.topic"] == topic
            assert {"dlq.original.partition", "dlq.original.offset", "dlq.failed.at", "dlq.attempts"} <= set(headers)

        # Every valid event was delivered, or its fate is unknown and it is in the DLQ as ambiguous.
        decoder = SchemalessDecoder(default_schema())
        ambiguous = [m for m in dead if headers_of(m)["dlq.reason"] == "ambiguous"]
        ambiguous_phones = {decoder.decode(m.value())["customer"]["phone"] for m in ambiguous}
        assert traffic.valid_phones == set(phones) | ambiguous_phones
        # Every duplicate copy was skipped, unless its original's fate became unknown.
        assert skipped >= traffic.duplicates - len(ambiguous)

        # The SRE step: replay what Pisano's side shows as not delivered.
        to_replay = [m for m in ambiguous if decoder.decode(m.value())["customer"]["phone"] not in phones]
        if to_replay:
            # As `pisano-sms replay` does: each record signed with the fleet's key, or it is no replay.
            now_ms = int(time.time() * 1000)
            # A replay of an ambiguous dead-letter names its attempt, or it overrides no mark.
            replays = []
            for m in to_replay:
                attempt = headers_of(m)["dlq.attempt.id"]
                signature = sign(REPLAY_KEY.encode(), topic, 1, now_ms, m.key(), m.value(), attempt)
                replays.append((m.key(), m.value(), [("dlq.replays", b"1"), ("dlq.replay.signature", signature),
                                                     ("dlq.replay.attempt", attempt.encode())]))
            # All through one producer: one per record cost 0.5 s each (its producer id), and a kill
            # between a claim and its POST leaves a whole batch to replay (250 records: 2 minutes).
            produce_each(stack.bootstrap, topic, replays)
            ends = end_offsets(stack.bootstrap, topic)
            wait_until(lambda: all_committed(stack.bootstrap, group, topic, ends), 60, "replay consumed")
        for replica in survivors:
            assert replica.terminate() == 0, replica.log_tail()

    final = delivered_phones(log)
    assert set(final) == traffic.valid_phones
    assert max(final.values()) == 1
    print(json.dumps({"records": len(traffic.records), "ambiguous": len(ambiguous), "replayed": len(to_replay),
                      "skipped": skipped, "duplicates": traffic.duplicates, "dead": dict(reasons)}))

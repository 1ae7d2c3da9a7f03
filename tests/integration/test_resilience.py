"""Dependencies going away: the dead-letter topic refusing writes, Kafka restarted, Redis stopped.
Nothing is lost, nothing is committed early, nothing is sent twice, and the consumer recovers by
itself; readiness says so meanwhile."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections import Counter

import httpx
import pytest
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
)

from tests.conftest import Stack, localstack, unique
from tests.support.consumers import ConsumerProcess, consumer_env, wait_until
from tests.support.kafka import all_committed, committed, headers_of, produce
from tests.support.runs import RUN_TOKEN, Run
from tests.support.scenario import CAMPAIGNS, mixed_traffic

TOKEN = RUN_TOKEN


def test_dead_letter_topic_refusing_writes_holds_commits_and_loses_nothing(run: Run, new_topic) -> None:  # type: ignore[no-untyped-def]
    stack = run.stack
    admin = AdminClient({"bootstrap.servers": stack.bootstrap})
    dlq = unique("dlq")
    # A topic that refuses every record (a misconfigured limit), until someone fixes it.
    admin.create_topics([NewTopic(dlq, 1, 1, config={"max.message.bytes": "64"})])[dlq].result(30)
    traffic = mixed_traffic(400, duplicate_every=0, invalid_every=50)
    topic = new_topic(partitions=1)
    run.topic, run.dlq, run.group = topic, dlq, unique("g")
    from tests.support.kafka import produce

    produce(stack.bootstrap, topic, traffic.records)
    from tests.support.consumers import ConsumerProcess, consumer_env

    env = consumer_env(bootstrap=stack.bootstrap, redis_url=stack.redis_url, topic=topic, dlq=dlq, group=run.group,
                       pisano_url=run.simulator.url, token=TOKEN)
    replica = ConsumerProcess(env, run.tmp_path / "consumer.log").start()
    run.replica = replica
    run.processes.append(replica)
    wait_until(lambda: len(run.delivered()) == len(traffic.valid_phones), 60, "valid events delivered")
    wait_until(lambda: "dead-letter to" in replica.log_text(), 30, "dead-letter failures seen")
    # The first invalid record is at offset 1: nothing at or past it may be committed yet.
    assert committed(stack.bootstrap, run.group, topic).get(0, -1001) <= 1
    assert replica.alive()

    for future in admin.incremental_alter_configs([ConfigResource(
            ConfigResource.Type.TOPIC, dlq, incremental_configs=[ConfigEntry(
                "max.message.bytes", "1048576", incremental_operation=AlterConfigOpType.SET)])]).values():
        future.result(30)
    run.finish()
    assert all_committed(stack.bootstrap, run.group, topic)
    origins = {h["dlq.original.offset"]: h["dlq.reason"] for h in run.dead_headers()}
    assert Counter(origins.values()) == traffic.invalid
    assert all("dlq.value.omitted" not in h for h in run.dead_headers())  # values kept once fixed
    assert max(run.delivered().values()) == 1


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_kafka_restart_mid_run(local_stack: Stack, run: Run, new_topic) -> None:  # type: ignore[no-untyped-def]
    run.faults(latency_ms=150)  # keep the run going long enough to restart the broker under it
    traffic = mixed_traffic(6000, duplicate_every=25, invalid_every=100)
    # The client once never rejoined after this restart (README, "Kafka consumer outside its
    # group"): its group protocol is logged (debug cgrp), and with a rebalance bounded at 15 s the
    # replica replaces a client still outside its group after 35 s, within this test's wait.
    replica = run.start(traffic.records, partitions=3, new_topics=new_topic, BATCH_MAX_RECIPIENTS=200,
                        MAX_IN_FLIGHT_REQUESTS=2, KAFKA_CONFIG_MAX_POLL_INTERVAL_MS=15000,
                        KAFKA_CONFIG_DEBUG="cgrp", LOG_LEVEL="DEBUG")
    wait_until(lambda: len(run.delivered()) > 1500, 60, "a quarter delivered")
    localstack.stop_kafka()
    wait_until(lambda: httpx.get(f"{replica.url}/readyz").status_code == 503, 30, "not ready without Kafka")
    assert httpx.get(f"{replica.url}/readyz").json()["kafka"] is False
    localstack.start_kafka()
    run.finish()
    assert set(run.delivered()) == traffic.valid_phones and max(run.delivered().values()) == 1
    origins = {(h["dlq.original.partition"], h["dlq.original.offset"]): h["dlq.reason"] for h in run.dead_headers()}
    assert Counter(origins.values()) == traffic.invalid


@pytest.mark.parametrize("redis", ["single", "cluster"])
def test_readiness_follows_redis(redis: str, local_stack: Stack, run: Run, new_topic,  # type: ignore[no-untyped-def]
                                 request: pytest.FixtureRequest) -> None:
    settings, stop, start = {}, localstack.stop_redis, localstack.start_redis
    if redis == "cluster":  # every node of the Redis Cluster away, then back with its data
        request.getfixturevalue("cluster_client")
        settings = {"REDIS_URL": request.getfixturevalue("redis_cluster").url, "REDIS_CLUSTER": "true"}
        stop, start = localstack.stop_redis_cluster, localstack.start_redis_cluster
    replica = run.start(run.events(10, CAMPAIGNS[0]), new_topics=new_topic, **settings)
    replica.wait_ready()
    stop()
    try:
        wait_until(lambda: httpx.get(f"{replica.url}/readyz").status_code == 503, 20, "not ready without Redis")
        assert httpx.get(f"{replica.url}/readyz").json()["redis"] is False
        assert httpx.get(f"{replica.url}/healthz").status_code == 200  # alive: no restart wanted
        run.produce_more(run.events(10, CAMPAIGNS[1]))  # arrives while Redis is away: waits, fail closed
    finally:
        start()
    wait_until(lambda: httpx.get(f"{replica.url}/readyz").status_code == 200, 30, "ready again")
    run.finish(dead_letters=0)
    assert len(run.delivered()) == 20
    assert [headers_of(m) for m in run.dead] == []


# A member of the group that stops answering without leaving (a process frozen by SIGSTOP): it
# joins first and owns every partition, so a newcomer's join waits for its session to expire.
FROZEN_MEMBER = """
import sys
from confluent_kafka import Consumer
bootstrap, group, topic, session_ms = sys.argv[1:5]
consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "session.timeout.ms": int(session_ms),
                     "heartbeat.interval.ms": 1000, "enable.auto.commit": False,
                     "partition.assignment.strategy": "cooperative-sticky"})
assigned = []
consumer.subscribe([topic], on_assign=lambda c, partitions: assigned.extend(partitions))
while not assigned:
    consumer.poll(0.2)
print("joined", flush=True)
sys.stdin.read()  # frozen here until killed
"""


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_replica_kept_outside_its_group_replaces_its_client_and_loses_nothing(run: Run, new_topic) -> None:  # type: ignore[no-untyped-def]
    """The replacement path with a real client and broker (README, "Kafka consumer outside its
    group"). The replica's join waits on a frozen member for 40 s, past its own limit (18 s: a
    rebalance bounded at 6 s, sessions of 6 s), so it replaces its client in the middle of a
    join: the old client leaves while closing, the new one gets every partition once the frozen
    member expires, and every record ends once, nothing sent twice. (A client that hangs, as in
    CI, cannot be made to order; this shows the replacement itself is safe and completes.)"""
    stack = run.stack
    traffic = mixed_traffic(300, duplicate_every=25, invalid_every=50)
    run.topic, run.dlq, run.group = new_topic(partitions=3), new_topic("dlq"), unique("g")
    produce(stack.bootstrap, run.topic, traffic.records)
    frozen = subprocess.Popen([sys.executable, "-c", FROZEN_MEMBER, stack.bootstrap, run.group, run.topic, "40000"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert frozen.stdout is not None and frozen.stdout.readline().strip() == b"joined"
        frozen.send_signal(signal.SIGSTOP)
        env = consumer_env(bootstrap=stack.bootstrap, redis_url=stack.redis_url, topic=run.topic, dlq=run.dlq,
                           group=run.group, pisano_url=run.simulator.url, token=TOKEN,
                           KAFKA_CONFIG_SESSION_TIMEOUT_MS=6000, KAFKA_CONFIG_MAX_POLL_INTERVAL_MS=6000,
                           REVOKE_GRACE_MS=1000)
        replica = run.replica = ConsumerProcess(env, run.tmp_path / "consumer.log").start()
        run.processes.append(replica)
        wait_until(lambda: "replacing the Kafka consumer" in replica.log_text(), 60, "the client replaced")
        assert httpx.get(f"{replica.url}/readyz").json()["joined_group"] is False
        assert replica.metric("pisano_sms_kafka_consumer_replaced_total") == 1
        run.finish()
    finally:
        frozen.kill()
        frozen.communicate(timeout=10)  # reaps it and closes its pipes
    assert set(run.delivered()) == traffic.valid_phones and max(run.delivered().values()) == 1
    origins = {(h["dlq.original.partition"], h["dlq.original.offset"]): h["dlq.reason"] for h in run.dead_headers()}
    assert Counter(origins.values()) == traffic.invalid
    assert "replacing the Kafka consumer" in replica.log_text()

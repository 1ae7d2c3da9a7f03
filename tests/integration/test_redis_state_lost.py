"""Redis losing the dedup and the contact state under a running replica is said and counted
(consumer/state/origins.py; README, "When Redis loses its data"); Redis back with its data is not
a loss. Real Redis restarts and a real cluster master's keys flushed, not a fake."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from consumer.errors import StateStoreError
from consumer.state.cooldown import bucket_tags
from consumer.state.dedup import RedisDedup
from consumer.state.origins import CONTACTS, ORIGIN_CHECK_INTERVAL_S, Buckets, OriginWatch, RedisOrigins, origin_key
from consumer.state.redis import Keys, connect
from consumer.state.replication import ReplicationWait
from tests.conftest import ClusterStack, Stack, close_redis, localstack, unique
from tests.integration.test_check_durability import kafka_and_redis_lines
from tests.integration.test_cli_commands import base_env
from tests.integration.test_contact_policy import OPT_OUT_KEY
from tests.support.consumers import wait_until
from tests.support.runs import Run
from tests.support.scenario import CAMPAIGNS

BUCKETS = 64  # of each state
CONTACT_POLICY = {"CONTACT_COOLDOWN": "30d", "SUPPRESSION_KEY": OPT_OUT_KEY}
LOST = "pisano_sms_redis_state_lost_total"


def origins(node: Any, prefix: str, state: str = "*") -> int:
    """The origin keys of the prefix's buckets on this node (`d`: dedup, `p`: contacts, `*`: both)."""
    return sum(1 for _ in node.scan_iter(match=f"{{{prefix}:{state}:*}}:origin", count=1000))


def checks_of(client: Any, prefix: str) -> int:
    """The checks counted in one of the prefix's dedup origins (every check adds one)."""
    key = next(iter(client.scan_iter(match=f"{{{prefix}:d:*}}:origin", count=1000)))
    return int(client.hget(key, "checks"))


def test_a_redis_restarted_without_its_data_is_said_and_counted_and_one_with_its_data_is_not(
        local_stack: Stack, run: Run, new_topic: Callable[..., str], redis_client: Any) -> None:
    prefix = unique("lost")
    replica = run.start(run.events(20, CAMPAIGNS[0]), new_topics=new_topic, REDIS_KEY_PREFIX=prefix,
                        **CONTACT_POLICY)
    replica.wait_ready()
    run.wait_all_committed()
    wait_until(lambda: origins(redis_client, prefix) == 2 * BUCKETS, 30, "every bucket's origin written")
    # Every write so far on disk (everysec would have it within a second): fsynced with the next one.
    redis_client.config_set("appendfsync", "always")
    redis_client.set(f"{prefix}-fsync", "1")

    localstack.stop_redis(kill=True)
    localstack.start_redis()  # its data back from the AOF (its config rewritten: everysec again)
    counted = checks_of(redis_client, prefix)
    # A third check begun: two ended since the restart, the second comparing with the check before its last.
    wait_until(lambda: checks_of(redis_client, prefix) >= counted + 3, 3 * ORIGIN_CHECK_INTERVAL_S + 10,
               "three checks since the restart")
    assert replica.metric(LOST) == 0, replica.log_tail()

    localstack.restart_redis_without_data()
    wait_until(lambda: replica.metric(LOST) == 2 * BUCKETS, ORIGIN_CHECK_INTERVAL_S + 30, "the loss counted")
    metrics = replica.metrics()
    assert metrics[f"{LOST}{{state=dedup}}"] == BUCKETS and metrics[f"{LOST}{{state=contacts}}"] == BUCKETS
    log = replica.log_path.read_text(encoding="utf-8")
    assert log.count("Redis lost the dedup state of 64 of 64 buckets since") == 1
    assert log.count("Redis lost the contacts state of 64 of 64 buckets since") == 1
    assert origins(redis_client, prefix) == 2 * BUCKETS  # written anew: the next loss is noticed too

    run.produce_more(run.events(10, CAMPAIGNS[1]))  # the replica goes on
    run.finish(dead_letters=0)
    delivered = run.delivered()
    assert len(delivered) == 30 and max(delivered.values()) == 1


def test_on_a_redis_cluster_a_master_that_lost_its_keys_is_counted_by_its_share_of_the_buckets(
        run: Run, new_topic: Callable[..., str], redis_cluster: ClusterStack, cluster_client: Any) -> None:
    prefix = unique("lost")
    replica = run.start(run.events(20, CAMPAIGNS[0]), new_topics=new_topic, REDIS_URL=redis_cluster.url,
                        REDIS_CLUSTER="true", REDIS_KEY_PREFIX=prefix, **CONTACT_POLICY)
    replica.wait_ready()
    run.wait_all_committed()
    client = redis.RedisCluster.from_url(redis_cluster.url)
    try:
        masters = [client.get_redis_connection(node) for node in client.get_primaries()]
        wait_until(lambda: sum(origins(m, prefix) for m in masters) == 2 * BUCKETS, 30,
                   "every bucket's origin written")
        master = masters[0]
        dedup, contacts = origins(master, prefix, "d"), origins(master, prefix, "p")
        assert 0 < dedup < BUCKETS and 0 < contacts < BUCKETS  # its share of each
        master.flushall()  # keys deleted on one master: its buckets' marks, and their origins
        wait_until(lambda: replica.metric(LOST) == dedup + contacts, ORIGIN_CHECK_INTERVAL_S + 30,
                   "the loss counted")
    finally:
        close_redis(client)
    metrics = replica.metrics()
    assert metrics[f"{LOST}{{state=dedup}}"] == dedup and metrics[f"{LOST}{{state=contacts}}"] == contacts
    log = replica.log_path.read_text(encoding="utf-8")
    assert f"Redis lost the dedup state of {dedup} of 64 buckets since" in log
    run.finish(dead_letters=0)


def test_check_says_since_when_the_state_is_kept_and_which_buckets_began_later(
        local_stack: Stack, redis_client: Any) -> None:
    """A loss while no replica ran is seen afterwards: its buckets' origins are younger."""
    prefix = unique("lost")
    env = base_env(local_stack, REDIS_KEY_PREFIX=prefix, KAFKA_TOPICS="t", DLQ_TOPIC="t-dlq")
    assert kafka_and_redis_lines(env)[1].endswith("; dedup state: none yet")
    tags, _ = RedisDedup(redis_client, Keys(prefix), lease_ms=60_000, horizon_s=3600).buckets()
    began = 1_800_000_000_000
    for n, tag in enumerate(tags):  # as a first check writes them, and 21 written anew two hours later
        redis_client.hset(origin_key(tag), "since", f"{began + (7_200_000 if n < 21 else n)}-{n:016x}")
    redis = kafka_and_redis_lines(env)[1]
    assert redis.split()[1] == "ok", redis
    assert "; dedup state since 2027-01-15T08:00:00Z; WARNING (state lost): 21 of 64 dedup buckets began at " \
           "2027-01-15T10:00:00Z, after the others: their keys were lost" in redis, redis
def test_with_dedup_wait_replicas_a_failover_to_a_replica_cut_off_is_no_rollback(
        redis_cluster: ClusterStack, cluster_client: Any) -> None:
    """DEDUP_WAIT_REPLICAS keeps every mark relied on on a replica: the checks counted on a master
    whose replica was cut off, lost in the failover, are not the state going back."""
    if not redis_cluster.local:
        pytest.skip("kills a node of the local stack's cluster")
    prefix = unique("lost")
    client = connect(redis_cluster.url, cluster=True)
    tags = bucket_tags(prefix)
    wait = ReplicationWait(client, prefix, replicas=1, timeout_ms=300)
    replica = OriginWatch(RedisOrigins(client), [lambda: Buckets(CONTACTS, tags)], replicated=wait)
    try:
        assert replica.check() == [] and replica.check() == []
        victim = sorted(localstack.cluster_topology())[0]
        (lagging,) = localstack.cluster_topology()[victim]
        localstack.cut_replication(lagging)
        try:
            for _ in range(3):  # the senders' claims fail closed meanwhile: nothing is relied on
                assert replica.check() == []
            localstack.kill_cluster_node(victim)
            assert localstack.wait_failover(victim) == lagging
        finally:
            localstack.restore_replication(lagging)
        losses = None
        deadline = time.monotonic() + 30
        while losses is None or replica.unread:
            assert time.monotonic() < deadline, replica.unread
            with contextlib.suppress(StateStoreError):
                losses = replica.check()
            time.sleep(0.5)
        assert losses == []
    finally:
        close_redis(client)
        localstack.restart_cluster_node(victim)

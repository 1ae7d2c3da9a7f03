"""A Redis Cluster master lost in the middle of claims (README, "Known limitations"): no event may
be left waiting on a claim whose reply was lost.

A batch's claim is one script per dedup bucket, pipelined to every master at once. When one
master stops answering while a claim is out, the scripts on the other masters have run: their ids
are claimed under the lost attempt's tag, and the release that follows fails too (the pipeline
needs every master). Before the fix the events were requeued, and every later attempt found them
held by that tag and requeued them again, silently, for the whole claim lease (about 245 s with
the default settings then), after which they were dead-lettered as `ambiguous`, never sent.

The master is frozen (SIGSTOP: it takes the commands in but never answers, so the reply is lost,
not refused), then killed while frozen and failed over to its replica. The claim lease is set to
245 s (the default before the heartbeat made it 95 s), far above the bound the test waits: an
event waiting out a claim cannot pass by lapsing within it.

Run against an older checkout with PISANO_TEST_CONSUMER_ROOT=/path/to/checkout: the replica then
runs that code, the harness stays this one.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from confluent_kafka import Producer

from consumer.ingest.kafka import produce_waiting
from consumer.ingest.samples import encode, phone_for, transaction
from consumer.state.redis import Keys
from tests.conftest import ClusterStack, localstack, unique
from tests.integration.test_contact_policy import OPT_OUT_KEY
from tests.support.consumers import ConsumerProcess, wait_until
from tests.support.kafka import all_committed, end_offsets, read_all
from tests.support.runs import Run
from tests.support.scenario import CAMPAIGNS

RATE = 4  # events a second while the master is lost: claims keep going out
# Produced at the moment of the freeze, in one flush: a batch this large has buckets on every
# master, and it is claimed well within the cluster node timeout (2 s), so its scripts run on the
# masters that answer (later claims get CLUSTERDOWN from them until the failover).
BURST = 30
# Longer than a claim's tries take against a master that never answers (3 tries, each up to the
# consumer's 2 s socket timeout, REDIS_TIMEOUT_MS's default; 0.6 s of backoff), and the release after them.
FROZEN_S = 8.0
BOUND_S = 90  # after the failover
LEASE_MS = 245_000  # far above BOUND_S (the default, 95 s, is too close to it)
PREFIX = "pisano-sms"  # the default: its slots and the run token's lie on one master (`master_to_lose`)


class Trickle:
    """Events produced a few a second, each with an event id and a phone of its own."""

    def __init__(self, run: Run) -> None:
        self.topic = run.topic
        self.producer = Producer({"bootstrap.servers": run.stack.bootstrap, "linger.ms": 5,
                                  "enable.idempotence": True})
        self.prefix = unique("e")
        self.phones: list[str] = []

    def burst(self, count: int) -> None:
        for n in range(len(self.phones), len(self.phones) + count):
            event_id, phone = f"{self.prefix}-{n}", phone_for(n)
            produce_waiting(self.producer, self.topic, key=event_id.encode(),
                            value=encode(transaction(event_id, phone, CAMPAIGNS[0], n=n)))
            self.phones.append(phone)
        assert self.producer.flush(30) == 0

    def steady(self, seconds: float) -> None:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            self.burst(1)
            time.sleep(1 / RATE)


def wait_for_outcomes(run: Run, replica: ConsumerProcess, trickle: Trickle, failed_over: float) -> None:
    """Every record committed within BOUND_S of the failover; else how many events still wait,
    and how often the replica found an event held by another attempt (events_held_total)."""
    ends = end_offsets(run.stack.bootstrap, run.topic)
    while time.monotonic() < failed_over + BOUND_S:
        if all_committed(run.stack.bootstrap, run.group, run.topic, ends):
            return
        time.sleep(0.5)
    delivered = run.delivered()
    waiting = set(trickle.phones) - set(delivered)
    held = replica.metric("pisano_sms_events_held_total")
    dead = read_all(run.stack.bootstrap, run.dlq, timeout=10)
    raise AssertionError(f"{len(waiting)} of {len(trickle.phones)} events still without an outcome {BOUND_S} s "
                         f"after the failover: {len(delivered)} delivered, {len(dead)} dead-lettered; "
                         f"events found held by another attempt {held:.0f} times")


def master_to_lose(token: str) -> int:
    """A master that serves some dedup buckets (any does) but none of the keys a sender reads
    before its claim: the token's circuit and throttle, and the keys under the bare prefix. Lost,
    such a master would stop the senders before their claims (a circuit read failing is waited
    out, and a claim is then tried only by chance within the freeze: the suite failed so once,
    after earlier tests' failovers had moved those keys' slots to the master picked). Not the seed
    node of REDIS_URL either, so what is tested is the claim, not how the client finds the
    cluster again."""
    keys = Keys(PREFIX)
    read_before_claims = {localstack.cluster_master_of(key) for key in
                          (*keys.limiter(token), *keys.circuit(token), keys.dedup_layout())}
    masters = sorted(m for m in localstack.cluster_topology()
                     if m != localstack.CLUSTER_PORTS[0] and m not in read_before_claims)
    assert masters, f"every master but the seed serves keys read before a claim: {sorted(read_before_claims)}"
    return masters[0]


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.usefixtures("local_stack", "cluster_client")
@pytest.mark.parametrize("cooldown", [False, True], ids=["cooldown-off", "cooldown-on"])
def test_a_master_lost_in_the_middle_of_claims_leaves_no_event_waiting(
        cooldown: bool, run: Run, new_topic: Callable[..., str], redis_cluster: ClusterStack) -> None:
    if not redis_cluster.local:
        pytest.skip("freezing a master needs the suite's own local cluster")
    settings = {"REDIS_URL": redis_cluster.url, "REDIS_CLUSTER": "true", "DEDUP_CLAIM_LEASE_MS": LEASE_MS,
                "REDIS_KEY_PREFIX": PREFIX}
    if cooldown:  # each phone's reservation is one more script per master in the claim's trip
        settings |= {"CONTACT_COOLDOWN": "30d", "SUPPRESSION_KEY": OPT_OUT_KEY}
    replica = run.start([], partitions=1, new_topics=new_topic, **settings)
    replica.wait_ready()
    trickle = Trickle(run)
    trickle.burst(5)
    wait_until(lambda: len(run.delivered()) == 5, 30, "the first deliveries")
    trickle.steady(2)
    lost = master_to_lose(run.token)
    (successor,) = localstack.cluster_topology()[lost]
    killed = False
    # No failover while the master is frozen, as with a production cluster-node-timeout (15 s):
    # the claim's tries under its tag and the release after them all go unanswered. With the
    # local stack's 2 s the replica could take over within the tries, and a try would find the
    # ids its own: the outcome would depend on the timing.
    localstack.node_command(successor, "CONFIG SET", "cluster-replica-no-failover", "yes")
    try:
        localstack.freeze_cluster_node(lost)
        trickle.burst(BURST)
        trickle.steady(FROZEN_S)
        localstack.kill_cluster_node(lost)  # as it is, frozen: nothing sent to it runs
        killed = True
        localstack.node_command(successor, "CONFIG SET", "cluster-replica-no-failover", "no")
        localstack.wait_failover(lost)
        failed_over = time.monotonic()
        trickle.steady(3)
        wait_for_outcomes(run, replica, trickle, failed_over)
        lost_replies = replica.metric("pisano_sms_redis_errors_total{operation=claim}")
    finally:
        localstack.node_command(successor, "CONFIG SET", "cluster-replica-no-failover", "no")
        localstack.thaw_cluster_node(lost)  # nothing if killed
        if killed:
            localstack.restart_cluster_node(lost)
        else:
            localstack.wait_cluster()
    run.finish()

    assert lost_replies > 0, \
        f"no claim went unanswered: the master was not lost in the middle of claims\n{replica.log_tail()}"
    reasons = [h.get("dlq.reason") for h in run.dead_headers()]
    assert reasons == [], f"dead-lettered: {reasons}"
    delivered = run.delivered()
    assert set(delivered) == set(trickle.phones), f"never sent: {len(set(trickle.phones) - set(delivered))}"
    assert max(delivered.values()) == 1, f"sent twice: {sum(1 for n in delivered.values() if n > 1)}"


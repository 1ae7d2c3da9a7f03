"""Redis losing the dedup and the contact state while no replica ran is said by the next replica
that starts, once, through the stamps its group's commits carry (consumer/state/witness.py;
README, "When Redis loses its data"). A real Kafka group and a real Redis restarted without its
data between two runs of `pisano-sms run`."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from consumer.state.redis import Keys
from consumer.state.witness import parse_stamp
from tests.conftest import Stack, localstack, unique
from tests.integration.test_check_durability import kafka_and_redis_lines
from tests.integration.test_redis_state_lost import BUCKETS, CONTACT_POLICY, LOST, origins
from tests.support.consumers import ConsumerProcess, wait_until
from tests.support.kafka import committed, committed_metadata
from tests.support.raw_kafka import commit_raw
from tests.support.runs import Run
from tests.support.scenario import CAMPAIGNS

BOTH = {"dedup", "contacts"}
# Every bucket: the stamp keeps two bytes of each origin, so a new one matches a lost one's once in
# 65,536 (counted one short); the metric counts the same.
ALL = "6[34]"


def stamped(run: Run) -> dict[int, set[str]]:
    """The states each partition's last commit stamps."""
    return {partition: set(parse_stamp(metadata)) for partition, metadata in
            committed_metadata(run.stack.bootstrap, run.group, run.topic).items()}


def test_a_loss_while_no_replica_ran_is_said_by_the_next_start_once_and_deliveries_go_on(
        local_stack: Stack, run: Run, new_topic: Callable[..., str], redis_client: Any, tmp_path: Path) -> None:
    """Before: the replica starting after the loss saw the new origins for the first time and said
    nothing, though the marks that stop a second SMS were gone."""
    prefix = unique("wit")
    first = run.start(run.events(20, CAMPAIGNS[0]), new_topics=new_topic, REDIS_KEY_PREFIX=prefix,
                      **CONTACT_POLICY)
    first.wait_ready()
    run.wait_all_committed()
    # Every partition's commit stamps both states: after the first check, by the recommit (15 s).
    wait_until(lambda: all(states == BOTH for states in stamped(run).values()), 60, "every commit stamped")
    assert first.terminate() == 0, first.log_tail()

    localstack.restart_redis_without_data()  # while the fleet is stopped
    # `check` says it before any replica starts (read only: it writes no origin)
    redis = kafka_and_redis_lines(first.env)[1]
    assert "; dedup state: none yet" in redis, redis
    for state in ("dedup", "contacts"):
        assert f"WARNING (state lost): consumer group {run.group} committed under {state} origins, seen at " in redis
    assert re.search(rf"that Redis no longer holds \({ALL} of 64 buckets\): lost while no replica ran", redis), redis
    assert origins(redis_client, prefix) == 0 and redis_client.get(Keys(prefix).witnessed()) is None
    second = ConsumerProcess(first.env, tmp_path / "second.log").start()
    run.processes.append(second)
    second.wait_ready()
    wait_until(lambda: second.metric(LOST) >= 2 * BUCKETS - 2, 60, "the loss counted")
    metrics = second.metrics()
    assert metrics[f"{LOST}{{state=dedup}}"] in (BUCKETS - 1, BUCKETS)
    assert metrics[f"{LOST}{{state=contacts}}"] in (BUCKETS - 1, BUCKETS)
    log = second.log_text()
    for state in ("dedup", "contacts"):
        said = re.findall(rf"Redis lost the {state} state of {ALL} of 64 buckets while no replica watched", log)
        assert len(said) == 1, log
    kept = redis_client.get(Keys(prefix).witnessed())
    assert kept is not None and set(parse_stamp(kept.decode())) == BOTH
    assert second.terminate() == 0, second.log_tail()
    assert "WARNING (state lost)" not in kafka_and_redis_lines(first.env)[1]  # said once: the kept stamp

    # The topic stayed idle: its commits still stamp the state that was lost. The third start
    # compares with them and with the stamp the second kept, newer: the loss was said already.
    third = ConsumerProcess(first.env, tmp_path / "third.log").start()
    run.processes.append(third)
    third.wait_ready()
    wait_until(lambda: redis_client.get(Keys(prefix).witnessed()) != kept, 60, "the third compared")
    assert third.metric(LOST) == 0, third.log_tail()
    run.replica = third
    run.produce_more(run.events(10, CAMPAIGNS[1]))  # and it delivers
    run.finish(dead_letters=0)
    delivered = run.delivered()
    assert len(delivered) == 30 and max(delivered.values()) == 1


def test_a_commit_with_metadata_the_client_cannot_decode_does_not_stop_the_next_start(
        local_stack: Stack, run: Run, new_topic: Callable[..., str], tmp_path: Path) -> None:
    """Another tool committed the group's offsets with metadata confluent-kafka cannot decode (it
    raised UnicodeDecodeError in about seven reads of ten for b"\\xff"): before, every start of
    every replica died reading the group's stamps, before it subscribed."""
    first = run.start(run.events(10, CAMPAIGNS[0]), new_topics=new_topic, REDIS_KEY_PREFIX=unique("wit"))
    first.wait_ready()
    run.wait_all_committed()
    assert first.terminate() == 0, first.log_tail()
    for partition, offset in committed(run.stack.bootstrap, run.group, run.topic).items():
        commit_raw(run.stack.bootstrap, run.group, run.topic, partition, offset, b"\xff")
    run.produce_more(run.events(10, CAMPAIGNS[1]))
    second = ConsumerProcess(first.env, tmp_path / "second.log").start()
    run.processes.append(second)
    run.replica = second
    second.wait_ready()
    run.finish(dead_letters=0)
    assert "Traceback" not in second.log_text()
    delivered = run.delivered()
    assert len(delivered) == 20 and max(delivered.values()) == 1


def test_a_redis_restarted_with_its_aof_while_no_replica_ran_is_no_loss(
        local_stack: Stack, run: Run, new_topic: Callable[..., str], redis_client: Any, tmp_path: Path) -> None:
    """SIGKILLed with appendfsync everysec, Redis comes back without its last second: the stamps'
    counts are those of the check before the last, which that second cannot take back."""
    prefix = unique("wit")
    first = run.start(run.events(20, CAMPAIGNS[0]), new_topics=new_topic, REDIS_KEY_PREFIX=prefix,
                      **CONTACT_POLICY)
    first.wait_ready()
    run.wait_all_committed()

    def counted() -> bool:  # every commit stamps both states with the counts Redis surely held
        stamps = [parse_stamp(metadata) for metadata in
                  committed_metadata(run.stack.bootstrap, run.group, run.topic).values()]
        return all(set(s) == BOTH and all(stamp.checks is not None for stamp in s.values()) for s in stamps)

    wait_until(counted, 90, "every commit stamped with counts")
    assert first.terminate() == 0, first.log_tail()
    localstack.stop_redis(kill=True)
    localstack.start_redis()  # its data back from the AOF, but for its last second at most
    kept = redis_client.get(Keys(prefix).witnessed())
    second = ConsumerProcess(first.env, tmp_path / "second.log").start()
    run.processes.append(second)
    run.replica = second
    second.wait_ready()
    wait_until(lambda: redis_client.get(Keys(prefix).witnessed()) != kept, 60, "the second compared")
    assert second.metric(LOST) == 0, second.log_tail()
    run.produce_more(run.events(10, CAMPAIGNS[1]))
    run.finish(dead_letters=0)
    assert "redis_state_lost" not in second.log_text()

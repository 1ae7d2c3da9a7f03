"""A partition whose marks key is a huge but well-typed sorted set (hostile or corrupted content)
is still consumed, to the end, by the replica assigned it. Before, the marks' load read the whole
set in one reply (ZRANGE 0 -1): past what Redis sends within REDIS_TIMEOUT_MS it timed out, was
taken for an outage, and the partition was not fetched, asked again every MARKS_PAUSE_S for ever.
Now a load reads a partition's marks in bounded pages, never more than a partition of this consumer
can hold (`MAX_PARTITION_MARKS`, consumer/state/dead_letters.py); a key over it is left out as a
foreign key is (tests/integration/test_foreign_marks.py): the partition goes without its marks, one
warning naming the key, its count and what to do, counted once."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from consumer.operations.logs import redact_text
from consumer.state.dead_letters import dead_letter_key, mark_score
from consumer.state.redis import Keys, connect
from tests.conftest import flushed_client
from tests.support.kafka import end_offsets, headers_of, read_all
from tests.support.runs import Run
from tests.support.scenario import CAMPAIGNS

PREFIX = "pisano-sms"  # REDIS_KEY_PREFIX's default, as the replicas run here
SALT = "huge-marks-salt-0123456789abcdef"
# More members than ZRANGE 0 -1 returns within REDIS_TIMEOUT_MS=500 on the local stack (measured:
# 1,000,000 such members timed out after 0.84 s, 2,000,000 after 0.5 s; with the default 2,000 ms,
# about 4,000,000 do), and more than a partition's marks ever are (MAX_PARTITION_MARKS, 1,000,000).
HUGE = 2_000_000
TIMEOUT_MS = 500


def fill(client: Any, key: str, count: int = HUGE, first: int = 1_000_000_000) -> None:
    """`count` well-typed marks under `key` (member `offset:fingerprint`, score the offset with a
    reason), pipelined: a few seconds a million."""
    pipe = client.pipeline(transaction=False)
    for start in range(first, first + count, 10_000):
        pipe.zadd(key, {f"{o}:1800000000000:{o:024x}": mark_score(o, "throttled")
                        for o in range(start, min(first + count, start + 10_000))})
        if len(pipe) >= 20:
            pipe.execute()
    pipe.execute()


def _url(request: pytest.FixtureRequest, variant: str) -> str:
    return request.getfixturevalue("redis_cluster").url if variant == "cluster" \
        else str(request.getfixturevalue("stack").redis_url)


@pytest.mark.parametrize("variant", ["redis", "cluster"])
def test_a_partition_whose_marks_key_is_huge_is_fetched_without_its_marks(
        request: pytest.FixtureRequest, variant: str, caplog: pytest.LogCaptureFixture) -> None:
    """On the real Redis and a Redis Cluster, the consumer's client with REDIS_TIMEOUT_MS=500: t[0]'s
    dead-letter marks key and its receipt marks key hold 2,000,000 marks each. Before: the load of
    t[0]'s dead-letter marks timed out ("unreachable"), t[0] and every partition after it stayed
    unloaded (not fetched), again after each pause. Now t[0] goes without its marks at once, t[1]'s
    load, and each side counts t[0] once."""
    from consumer.outcomes.deadletter import MARKS_PAUSE_S, DeadLetterQueue
    from consumer.outcomes.receipts import PhoneHasher, ReceiptCodec, ReceiptWriter
    from consumer.state.dead_letters import Origin, RedisDeadLetterMarks
    from consumer.state.receipt_marks import RedisReceiptMarks
    from tests.support.fake_kafka import FakeProducer

    setup = flushed_client(request, variant)
    client = connect(_url(request, variant), cluster=variant == "cluster", timeout_s=TIMEOUT_MS / 1000)
    request.addfinalizer(client.close)
    keys, t0, t1 = Keys(PREFIX), ("t", 0), ("t", 1)
    huge_dead, huge_receipts = dead_letter_key(PREFIX, "g:dlq", *t0), keys.receipts("g", *t0)
    started = time.monotonic()
    fill(setup, huge_dead)
    fill(setup, huge_receipts)
    filled_s = time.monotonic() - started
    known = Origin("t", 1, 7, "1800000000000:aa")  # t[1]'s marks are fine: loaded
    setup.zadd(dead_letter_key(PREFIX, "g:dlq", *t1), {known.member: mark_score(7, "throttled")})
    setup.zadd(keys.receipts("g", *t1), {known.member: 7})

    now, errors = [1_000.0], []  # type: ignore[var-annotated]
    dlq = DeadLetterQueue(FakeProducer(), "dlq", clock=lambda: now[0], on_marks_error=lambda: errors.append("dl"),
                          marks=RedisDeadLetterMarks(client, keys, horizon_s=600, group="g", dlq_topic="dlq",
                                                     previous_release=lambda: False))
    writer = ReceiptWriter(FakeProducer(), "receipts", group="g", hasher=PhoneHasher("s" * 20), codec=ReceiptCodec(),
                           marks=RedisReceiptMarks(client, keys, horizon_s=600),
                           on_marks_error=lambda: errors.append("rc"))
    with caplog.at_level(logging.WARNING):
        started = time.monotonic()
        dlq.assigned([t0, t1])
        writer.assigned([t0, t1])
        loaded_s = time.monotonic() - started
        for _ in range(2):  # a pause, had there been one, is over: asked again
            now[0] += MARKS_PAUSE_S
            writer._marks_paused_until = 0.0
            dlq.poll()
            writer.poll()
    print(f"{variant}: filled 2 x {HUGE} marks in {filled_s:.1f}s; both sides assigned in {loaded_s:.2f}s")
    assert dlq.unloaded() == set(), dlq.unloaded()  # before: {t[0], t[1]}, never fetched
    assert writer._receipted.unloaded == set(), writer._receipted.unloaded  # before: read again every 30 s
    assert dlq._before.without == {t0} and writer._receipted.without == {t0}
    assert dlq.marked(t1) == {7: dlq.marked(t1)[7]} and writer._receipted.of(t1) == {7: known.fingerprint}  # type: ignore[index]
    assert errors == ["dl", "rc"]  # one each, for t[0]'s keys
    assert loaded_s < 2 * TIMEOUT_MS / 1000  # bounded: not a read of the whole set
    lines = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    for what, key in (("dead-letter marks", huge_dead), ("receipt marks", huge_receipts)):
        [line] = [line for line in lines if f"the {what} of t[0] cannot be used" in line]
        assert key in line and f"{HUGE:,}" in line and "delete" in line, line  # which key, how big, what to do
    assert setup.zcard(huge_dead) == HUGE  # left as it was (someone else's data, maybe)


def test_a_partition_whose_dead_letter_marks_key_is_huge_is_consumed_to_the_end(
        run: Run, new_topic: Callable[..., str]) -> None:
    """End to end: a replica (REDIS_TIMEOUT_MS=500) assigned a partition whose dead-letter marks key
    holds 2,000,000 marks consumes it to the end (before: its load timed out every 30 s and the
    partition was never fetched), says so once, and counts it once."""
    receipts = new_topic("receipts", partitions=1)
    first = run.start(run.events(10, CAMPAIGNS[0]), partitions=2, new_topics=new_topic,
                      OUTCOME_TOPIC=receipts, OUTCOME_PHONE_SALT=SALT, REDIS_TIMEOUT_MS=str(TIMEOUT_MS))
    run.wait_all_committed(60)
    assert first.terminate() == 0

    client = redis.Redis.from_url(run.stack.redis_url)
    huge = dead_letter_key(PREFIX, f"{run.group}:{run.dlq}", run.topic, 0)
    fill(client, huge)
    try:
        second = run.second_replica_after_new_records(first)  # before: partition 0 was never fetched

        text = second.log_text()
        assert text.count(redact_text(f"the dead-letter marks of {run.topic}[0] cannot be used")) == 1
        assert redact_text(huge) in text and f"{HUGE:,}" in text
        assert second.metrics().get("pisano_sms_redis_errors_total{operation=marks}") == 1
        dead = [headers_of(m) for m in read_all(run.stack.bootstrap, run.dlq, expected=2)]
        assert sorted(h["dlq.original.partition"] for h in dead) == ["0", "1"]
        ends = end_offsets(run.stack.bootstrap, run.topic)
        assert len(read_all(run.stack.bootstrap, receipts, expected=sum(ends.values()))) == sum(ends.values())
        assert max(run.delivered().values()) == 1 and len(run.delivered()) == 12
        assert client.zcard(huge) == HUGE  # left as it was
        assert second.terminate() == 0
    finally:
        client.delete(huge)

"""A partition whose dead-letter marks key (or receipt marks key) in Redis holds what this
consumer did not write is still consumed, to the end, by the replica assigned it (found in the
review of the Kafka side: the marks' load failed with WRONGTYPE every 30 s for ever and the
partition was never fetched, its records never ended). The replica says which key and what to
do; it leaves the foreign keys as they are (someone else's data, maybe)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from consumer.operations.logs import redact_text
from consumer.state.dead_letters import dead_letter_key
from consumer.state.redis import Keys
from tests.conftest import flushed_client
from tests.support.kafka import end_offsets, headers_of, read_all
from tests.support.runs import Run
from tests.support.scenario import CAMPAIGNS

SALT = "foreign-marks-salt-0123456789abcdef"
PREFIX = "pisano-sms"  # REDIS_KEY_PREFIX's default, as the replicas run here


def test_partitions_whose_marks_keys_are_foreign_are_consumed_to_the_end(
        run: Run, new_topic: Callable[..., str]) -> None:
    receipts = new_topic("receipts", partitions=1)
    first = run.start(run.events(10, CAMPAIGNS[0]), partitions=2, new_topics=new_topic,
                      OUTCOME_TOPIC=receipts, OUTCOME_PHONE_SALT=SALT)
    run.wait_all_committed(60)
    assert first.terminate() == 0

    client = redis.Redis.from_url(run.stack.redis_url)
    dead_letter_marks = dead_letter_key(PREFIX, f"{run.group}:{run.dlq}", run.topic, 0)
    receipt_marks = Keys(PREFIX).receipts(run.group, run.topic, 1)
    client.set(dead_letter_marks, "written by someone else")
    client.set(receipt_marks, "written by someone else")
    try:
        second = run.second_replica_after_new_records(first)  # before: partition 0 was never fetched

        text = second.log_text()
        assert redact_text(f"the dead-letter marks of {run.topic}[0] cannot be used") in text
        assert redact_text(f"the receipt marks of {run.topic}[1] cannot be used") in text
        # As the log line shows them: 7 digits in a row of a random name are masked as a phone could be
        assert redact_text(dead_letter_marks) in text and redact_text(receipt_marks) in text
        assert "delete that key" in text
        dead = [headers_of(m) for m in read_all(run.stack.bootstrap, run.dlq, expected=2)]
        assert sorted(h["dlq.original.partition"] for h in dead) == ["0", "1"]
        assert {h["dlq.reason"] for h in dead} == {"decode_error"}
        ends = end_offsets(run.stack.bootstrap, run.topic)
        assert len(read_all(run.stack.bootstrap, receipts, expected=sum(ends.values()))) == sum(ends.values())
        assert max(run.delivered().values()) == 1 and len(run.delivered()) == 12
        assert client.get(dead_letter_marks) == client.get(receipt_marks) == b"written by someone else"
        assert second.terminate() == 0
    finally:
        client.delete(dead_letter_marks, receipt_marks)


def test_a_revoked_partition_whose_marks_keys_are_foreign_pauses_no_other_partitions_marks(
        redis_client: redis.Redis) -> None:
    """On the real Redis (its own WRONGTYPE): the revoke's last commit of a partition consumed
    without its marks comes due MARKS_KEEP_S after the revoke; its removal must not touch the
    foreign key, or the replica's whole marks call fails and every other partition's marks pause
    (review h-rev; tests/unit/outcomes/test_foreign_marks.py has the mechanism)."""
    from consumer.outcomes.deadletter import DeadLetterQueue
    from consumer.outcomes.receipts import PhoneHasher, ReceiptCodec, ReceiptWriter
    from consumer.state.dead_letters import RedisDeadLetterMarks
    from consumer.state.receipt_marks import RedisReceiptMarks
    from consumer.state.redis import connect
    from tests.support.fake_kafka import FakeProducer

    client = connect(_url(redis_client))  # the consumer's kind of client
    keys, t0, t1 = Keys(PREFIX), ("t", 0), ("t", 1)
    foreign = dead_letter_key(PREFIX, "g:dlq", *t0)
    redis_client.set(foreign, "written by someone else")
    redis_client.set(keys.receipts("g", *t0), "written by someone else")
    kept = dead_letter_key(PREFIX, "g:dlq", *t1)
    redis_client.zadd(kept, {"3:f": 1})  # a mark of t[1] below its commit: removed once it is due
    redis_client.zadd(keys.receipts("g", *t1), {"3:f": 1})
    now = [1_000.0]
    dlq = DeadLetterQueue(FakeProducer(), "dlq", clock=lambda: now[0],
                          marks=RedisDeadLetterMarks(client, keys, horizon_s=600, group="g", dlq_topic="dlq",
                                                     previous_release=lambda: False))
    writer = ReceiptWriter(FakeProducer(), "receipts", group="g", hasher=PhoneHasher("s" * 20), codec=ReceiptCodec(),
                           marks=RedisReceiptMarks(client, keys, horizon_s=600))
    writer._commits.clock = lambda: now[0]
    for side in (dlq, writer):
        side.assigned([t0, t1])
        side.committed({t0: 8, t1: 8})  # the revoke's last commit of t[0], and t[1]'s
        side.forget({t0})  # revoked
    now[0] += 3600  # past MARKS_KEEP_S
    dlq.poll()
    writer.poll()
    assert dlq._marks_paused_until == 0 and not writer._marks_paused()
    assert redis_client.zcard(kept) == 0 and redis_client.zcard(keys.receipts("g", *t1)) == 0  # t[1]'s went
    assert redis_client.get(foreign) == b"written by someone else"  # left as it was


@pytest.mark.parametrize("variant", ["redis", "cluster"])
def test_a_marks_key_turned_foreign_after_its_load_pauses_no_other_partitions_marks(
        request: pytest.FixtureRequest, variant: str) -> None:
    """On the real Redis and a Redis Cluster (their own WRONGTYPE, their own pipelines): t[0]'s
    marks keys are written by someone else after t[0]'s marks loaded. Before, the one pipelined
    lookup, note and mark of every poll turn failed whole, and the marks of t[1] and t[2] paused
    30 s at a time, again after each pause (a record dead-lettered on them then was produced
    unnoted and never marked: its next owner judged it again). Now t[0] alone goes without its
    marks; the others' are written every turn (review of the marks; the mechanism's unit tests
    are in tests/unit/outcomes/test_foreign_marks.py)."""
    from consumer.ingest.records import InboundRecord
    from consumer.outcomes.deadletter import MARKS_PAUSE_S, DeadLetterQueue, Failure
    from consumer.outcomes.receipts import PhoneHasher, ReceiptCodec, ReceiptWriter
    from consumer.state.dead_letters import RedisDeadLetterMarks
    from consumer.state.receipt_marks import RedisReceiptMarks
    from tests.support.fake_kafka import FakeProducer

    client = flushed_client(request, variant)
    keys, tps = Keys(PREFIX), [("t", 0), ("t", 1), ("t", 2)]
    dead_letter_keys = [dead_letter_key(PREFIX, "g:dlq", *tp) for tp in tps]
    receipt_keys = [keys.receipts("g", *tp) for tp in tps]
    now, errors = [1_000.0], []  # type: ignore[var-annotated]
    dead, receipted = FakeProducer(), FakeProducer()
    dlq = DeadLetterQueue(dead, "dlq", clock=lambda: now[0], on_marks_error=lambda: errors.append("dl"),
                          marks=RedisDeadLetterMarks(client, keys, horizon_s=600, group="g", dlq_topic="dlq",
                                                     previous_release=lambda: False))
    writer = ReceiptWriter(receipted, "receipts", group="g", hasher=PhoneHasher("s" * 20), codec=ReceiptCodec(),
                           marks=RedisReceiptMarks(client, keys, horizon_s=600),
                           on_marks_error=lambda: errors.append("rc"))
    dlq.assigned(tps)
    writer.assigned(tps)
    assert not dlq._before.without and not writer._receipted.without  # loaded: the keys were ours
    for key in (dead_letter_keys[0], dead_letter_keys[0] + ":sending", receipt_keys[0]):
        client.set(key, "written by someone else")
    done: list[tuple[str, int]] = []
    try:
        for turn in range(3):
            for tp in tps:
                record = InboundRecord(tp[0], tp[1], 10 + turn, b"k", f"v{turn}".encode(), [],
                                       (1, 1_800_000_000_000))
                dlq.send(record, Failure("throttled", "429"), lambda tp=tp: done.append(tp))  # type: ignore[misc]
                writer.record(record, "expired", lambda tp=tp: done.append(tp))  # type: ignore[misc]
            dlq.poll()  # looked up and noted, then produced
            dead.poll()
            receipted.poll()
            dlq.poll()  # marked
            writer.poll()
            assert dlq._marks_paused_until == 0 and not writer._marks_paused(), turn  # before: paused
            for n in (1, 2):  # every other partition's marks written, every turn
                assert client.zcard(dead_letter_keys[n] + ":sending") == turn + 1, (turn, n)
                assert client.zcard(dead_letter_keys[n]) == turn + 1, (turn, n)
                assert client.zcard(receipt_keys[n]) == turn + 1, (turn, n)
            now[0] += MARKS_PAUSE_S  # a pause, had there been one, would be over
        assert len(done) == 18 and len(dead.produced) == 9 and len(receipted.produced) == 9  # each once
        assert errors == ["dl", "rc"]  # one each, for t[0]'s keys
        assert dlq._before.without == {tps[0]} and writer._receipted.without == {tps[0]}
        assert client.get(dead_letter_keys[0]) == client.get(receipt_keys[0]) == b"written by someone else"
    finally:
        client.delete(dead_letter_keys[0], dead_letter_keys[0] + ":sending", receipt_keys[0])


def _url(client: redis.Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/{kwargs.get('db', 0)}"

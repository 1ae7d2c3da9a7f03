"""A partition whose dead-letter marks key (or receipt marks key) in Redis holds what this
consumer did not write is still consumed, to the end, by the replica assigned it (found in the
review of the Kafka side: the marks' load failed with WRONGTYPE every 30 s for ever and the
partition was never fetched, its records never ended). The replica says which key and what to
do; it leaves the foreign keys as they are (someone else's data, maybe)."""

from __future__ import annotations

from collections.abc import Callable

import redis

from consumer.operations.logs import redact_text
from consumer.state.dead_letters import dead_letter_key
from consumer.state.redis import Keys
from tests.conftest import unique
from tests.support.consumers import ConsumerProcess
from tests.support.kafka import end_offsets, headers_of, produce, read_all
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
        for partition in (0, 1):  # on each partition: a valid event and a record that is not Avro
            produce(run.stack.bootstrap, run.topic, run.events(1, CAMPAIGNS[0]), partition=partition)
            produce(run.stack.bootstrap, run.topic, [(unique("bad").encode(), b"\x00not avro\xff")],
                    partition=partition)
        second = ConsumerProcess(first.env, run.tmp_path / "second.log").start()
        run.processes.append(second)
        run.replica = second
        run.wait_all_committed(60)  # before: partition 0 was never fetched

        text = second.log_text()
        assert redact_text(f"the dead-letter marks of {run.topic}[0] cannot be read") in text
        assert redact_text(f"the receipt marks of {run.topic}[1] cannot be read") in text
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

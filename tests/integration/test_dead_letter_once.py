"""Issue 11, finding 9: a replica SIGKILLed after dead-lettering but before committing; the next
owner reads those records again and does not dead-letter them a second time (the origin marks of
consumer/state/dead_letters.py). Before, every one of them sat in the DLQ twice.

The marks' removal below a confirmed commit is not waited for here (MARKS_KEEP_S, a minute, is not
injectable into a replica process). Each link of it is proved elsewhere:
- a replica's real commit confirmation (librdkafka's callback, `Pipeline._on_commit`) is seen here,
  and the marks are still there after it (kept while the coordinator may lose the commit);
- `_on_commit` hands the points to the dead-letter queue, whose marks go MARKS_KEEP_S later and not
  before: tests/unit/test_pipeline_review.py (a_confirmed_commit_removes_the_dead_letter_marks_below_it);
- the keep's timing (MARKS_KEEP_S - 1 kept, MARKS_KEEP_S gone; marks past the commit still count):
  tests/unit/outcomes/test_deadletter_once.py;
- Redis removes the marks below a point and only those, one key per group, topic and partition:
  tests/contract/test_dead_letter_marks_contract.py."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import redis

from consumer.operations.logs import redact_text
from consumer.outcomes.confirmed_commits import MARKS_KEEP_S
from tests.conftest import Stack, localstack, unique
from tests.support.consumers import ConsumerProcess, wait_until
from tests.support.kafka import committed, end_offsets, headers_of, read_all
from tests.support.runs import Run
from tests.support.scenario import CAMPAIGNS, mixed_traffic


def acknowledged_marks(client: redis.Redis, run: Run) -> int:
    """The group's dead-letter marks: one sorted set per partition, `{...}` (the notes of
    dead-letters about to be produced are beside them, `{...}:sending`)."""
    return sum(client.zcard(key) for key in client.scan_iter(f"{{*:dl:{run.group}:{run.dlq}:*}}"))


def test_a_replica_killed_before_committing_its_dead_letters_leaves_one_copy_per_origin(
        run: Run, new_topic: Callable[..., str]) -> None:
    bad_campaign = CAMPAIGNS[2]
    run.faults(campaign_codes={bad_campaign: 13034})  # dead-lettered by the senders, after a request
    traffic = mixed_traffic(900, duplicate_every=0, invalid_every=5, prefix=unique("once"))  # and at intake
    refused = [r for r in traffic.records if bad_campaign.encode() in (r[1] or b"")]
    expected = len(refused) + sum(traffic.invalid.values())
    # Nothing is committed for a minute: everything dead-lettered is read again by the next owner.
    first = run.start(traffic.records, partitions=2, new_topics=new_topic, COMMIT_INTERVAL_MS=60_000,
                      BATCH_MAX_RECIPIENTS=100)
    wait_until(lambda: len(read_all(run.stack.bootstrap, run.dlq, timeout=5)) >= expected, 60, "all dead-lettered")
    client = redis.Redis.from_url(run.stack.redis_url)

    # the last acknowledgements' marks are written in the same poll turn: one per dead-lettered origin
    wait_until(lambda: acknowledged_marks(client, run) == expected, 10, f"{expected} dead-letter marks")
    assert all(offset <= 0 for offset in committed(run.stack.bootstrap, run.group, run.topic).values())
    first.kill()

    # DEBUG: the replica logs each commit the broker confirmed (`Pipeline._on_commit`)
    second = ConsumerProcess({**first.env, "COMMIT_INTERVAL_MS": "1000", "LOG_LEVEL": "DEBUG"},
                             run.tmp_path / "second.log").start()
    started = time.monotonic()
    run.processes.append(second)
    run.replica = second
    run.wait_all_committed(120)
    # As the log line shows them: a topic name with 7 digits in a row is masked as a phone could be
    points = [redact_text(f"{run.topic}[{p}]@{end}")
              for p, end in end_offsets(run.stack.bootstrap, run.topic).items() if end]
    wait_until(lambda: all(p in second.log_text() for p in points), 30,
               f"the replica saw its commits confirmed: {points}")
    if time.monotonic() - started < MARKS_KEEP_S:  # no confirmation is MARKS_KEEP_S old yet
        # not removed at the confirmation: a coordinator's failover may lose it
        assert acknowledged_marks(client, run) == expected
    dead = read_all(run.stack.bootstrap, run.dlq)
    copies = Counter((headers_of(m)["dlq.original.partition"], headers_of(m)["dlq.original.offset"]) for m in dead)
    assert len(copies) == expected  # nothing lost
    assert max(copies.values()) == 1, f"{sum(n - 1 for n in copies.values())} second copies"
    assert "were dead-lettered before" in second.log_text()
    delivered = run.delivered()
    assert max(delivered.values()) == 1
    assert second.terminate() == 0


def test_a_record_dead_lettered_before_a_kill_is_not_sent_by_the_next_owner_once_pisano_accepts(
        run: Run, new_topic: Callable[..., str]) -> None:
    """The scaled chaos run's CI failure, made deterministic: a replica dead-letters the records
    Pisano failed (503 to the last attempt) and is SIGKILLed before their commit; by the time the
    next owner reads them again, Pisano answers. Before 0.3.0 the next owner sent them: a
    dead-letter, a `dead_lettered` outcome and an SMS for one record. Now each ends dead-lettered
    again, unsent, and is not dead-lettered twice."""
    run.faults(error_rates={"503": 1.0})
    events = 120
    traffic = mixed_traffic(events, duplicate_every=0, invalid_every=0, prefix=unique("again"))
    first = run.start(traffic.records, partitions=2, new_topics=new_topic, COMMIT_INTERVAL_MS=60_000,
                      BATCH_MAX_RECIPIENTS=20, PISANO_MAX_ATTEMPTS=1)
    wait_until(lambda: len(read_all(run.stack.bootstrap, run.dlq, timeout=5)) >= events, 60,
               "every record dead-lettered")
    client = redis.Redis.from_url(run.stack.redis_url)
    wait_until(lambda: acknowledged_marks(client, run) == events, 10, f"{events} dead-letter marks")
    assert all(offset <= 0 for offset in committed(run.stack.bootstrap, run.group, run.topic).values())
    first.kill()
    run.faults(error_rates={})  # the outage is over: Pisano would accept them now

    second = ConsumerProcess({**first.env, "COMMIT_INTERVAL_MS": "1000"}, run.tmp_path / "second.log").start()
    run.processes.append(second)
    run.replica = second
    run.wait_all_committed(120)
    assert run.delivered() == {}, "dead-lettered records sent after all"
    dead = read_all(run.stack.bootstrap, run.dlq)
    assert {headers_of(m)["dlq.reason"] for m in dead} == {"retries_exhausted"}
    copies = Counter((headers_of(m)["dlq.original.partition"], headers_of(m)["dlq.original.offset"]) for m in dead)
    assert len(copies) == events and max(copies.values()) == 1
    assert "ended as dead-lettered again, not sent" in second.log_text()
    assert second.terminate() == 0


def test_records_failing_while_redis_is_away_wait_uncommitted_and_end_once_after_a_kill(
        local_stack: Stack, run: Run, new_topic: Callable[..., str]) -> None:
    """Before: while Redis was unreachable, dead-letters were produced without their note and
    committed; one acknowledged but not committed when its replica died was judged again by the
    next owner and, what failed it being over, sent: a dead-letter and an SMS for one record. Now
    they wait, uncommitted, until Redis answers; the replica is SIGKILLed while they wait, Redis
    comes back, and the next owner ends each record once."""
    first = run.start(run.events(20, CAMPAIGNS[0]), partitions=1, new_topics=new_topic)
    run.wait_all_committed(60)
    localstack.stop_redis()
    try:
        run.produce_more([(f"bad-{n}".encode(), b"\x00not avro at all\xff" + n.to_bytes(4, "big")) for n in range(10)])
        wait_until(lambda: "could not read dead-letter marks" in first.log_text(), 30, "the marks failing")
        time.sleep(2)  # two commit intervals: a record ended would have been committed by now
        assert read_all(run.stack.bootstrap, run.dlq, timeout=2) == []
        assert committed(run.stack.bootstrap, run.group, run.topic) == {0: 20}
        assert "dead-letters wait for Redis" in first.log_text()
        first.kill()
    finally:
        localstack.start_redis()
        localstack.wait_redis()
    second = ConsumerProcess(first.env, run.tmp_path / "second.log").start()
    run.processes.append(second)
    run.replica = second
    run.finish()
    copies = Counter(headers_of(m)["dlq.original.offset"] for m in run.dead)
    assert sorted(copies) == sorted(str(n) for n in range(20, 30)) and max(copies.values()) == 1
    assert max(run.delivered().values()) == 1 and len(run.delivered()) == 20

"""Issue 11, finding 9: a replica SIGKILLed after dead-lettering but before committing; the next
owner reads those records again and does not dead-letter them a second time (the origin marks of
consumer/state/dead_letters.py). Before, every one of them sat in the DLQ twice."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import redis

from consumer.outcomes.confirmed_commits import MARKS_KEEP_S
from tests.conftest import unique
from tests.support.consumers import ConsumerProcess, wait_until
from tests.support.kafka import committed, headers_of, read_all
from tests.support.runs import Run
from tests.support.scenario import CAMPAIGNS, mixed_traffic


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
    time.sleep(1)  # the last acknowledgements' marks are written in the same poll turn
    assert all(offset <= 0 for offset in committed(run.stack.bootstrap, run.group, run.topic).values())
    client = redis.Redis.from_url(run.stack.redis_url)

    def marks() -> int:  # the group's dead-letter marks: one sorted set per partition
        return sum(client.zcard(key) for key in client.scan_iter(f"*:dl:{run.group}:{run.dlq}:*"))

    assert marks() == expected
    first.kill()

    second = ConsumerProcess({**first.env, "COMMIT_INTERVAL_MS": "1000"}, run.tmp_path / "second.log").start()
    run.processes.append(second)
    run.replica = second
    run.wait_all_committed(120)
    # not kept a week: a minute after the commit's confirmation (a coordinator's failover may lose it)
    wait_until(lambda: marks() == 0, MARKS_KEEP_S + 15, "the marks below the commits removed")
    dead = read_all(run.stack.bootstrap, run.dlq)
    copies = Counter((headers_of(m)["dlq.original.partition"], headers_of(m)["dlq.original.offset"]) for m in dead)
    assert len(copies) == expected  # nothing lost
    assert max(copies.values()) == 1, f"{sum(n - 1 for n in copies.values())} second copies"
    assert "were dead-lettered before" in second.log_text()
    delivered = run.delivered()
    assert max(delivered.values()) == 1
    assert second.terminate() == 0

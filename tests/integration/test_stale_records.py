"""Issue 11, finding 2: a group that re-reads a retained topic (its offsets expired after
`offsets.retention.minutes`, `auto.offset.reset=earliest`, a renamed group) must not send again the
events whose delivered marks have expired. Records older than DEDUP_HORIZON_S minus STALE_MARGIN_S
are dead-lettered as `stale`, never sent. Scaled down: a 60 s horizon, a 10 s margin."""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.support.runs import Run
from tests.support.scenario import CAMPAIGNS


def test_records_older_than_the_horizon_are_dead_lettered_as_stale_never_sent(
        run: Run, new_topic: Callable[..., str]) -> None:
    # The same topic, read by a group that lost its offsets: last "week's" events (2 minutes old here,
    # their delivered marks long gone from Redis) and today's.
    old, fresh = run.events(40, CAMPAIGNS[0]), run.events(30, CAMPAIGNS[1])
    run.start([], new_topics=new_topic, DEDUP_HORIZON_S=60, STALE_MARGIN_S=10)
    run.produce_more(old, timestamp_ms=int(time.time() * 1000) - 120_000)
    run.produce_more(fresh)
    run.finish(dead_letters=40)

    headers = run.dead_headers()
    assert {h["dlq.reason"] for h in headers} == {"stale"}
    assert len({(h["dlq.original.partition"], h["dlq.original.offset"]) for h in headers}) == 40
    assert "replay it only if Pisano shows it was never delivered" in headers[0]["pisano.error.message"]
    delivered = run.delivered()
    assert len(delivered) == 30 and max(delivered.values()) == 1  # only today's, each once

"""A 429 whose request is not retried still pauses the fleet (review h-sside; README, "The shared
throttle"). Pisano's throttle here is stricter than the consumer's windows and answers a
Retry-After longer than PISANO_RETRY_BUDGET_MS, so no 429 is retried: each is dead-lettered
`throttled`. Before, only a retried 429 paused the fleet: the replica went on at its own pace,
every request in Pisano's window refused and its events dead-lettered. Paused for the
Retry-After, it sends again only when Pisano's window has room: about one refusal per accepted
request (the one that finds the window full again), not a window's worth."""

from __future__ import annotations

from collections.abc import Callable

from tests.integration.test_failures import requests_by_status
from tests.support.runs import Run
from tests.support.scenario import CAMPAIGNS


def test_a_429_beyond_the_retry_budget_pauses_the_fleet(run: Run, new_topic: Callable[..., str]) -> None:
    run.sim_config(rate_limits="1/3s")  # Retry-After up to 3 s
    records = run.events(30, CAMPAIGNS[0]) + run.events(30, CAMPAIGNS[1]) + run.events(30, CAMPAIGNS[2])
    replica = run.start(records, new_topics=new_topic, PISANO_RATE_LIMITS="10/1s", PISANO_RATE_MARGIN_MS=0,
                        PISANO_RETRY_BUDGET_MS=1000, BATCH_MAX_RECIPIENTS=5, BATCH_MAX_WAIT_MS=50,
                        # one request at a time: none reserved before a pause goes out in it
                        MAX_IN_FLIGHT_REQUESTS=1)
    run.finish()
    by_status = requests_by_status(run)
    accepted, refused = by_status[200], by_status[429]
    assert refused >= 1 and accepted >= 1
    # Unpaused, 10 requests a second met a window of one per 3 s: measured 2 accepted, 16 refused.
    # Paused, each refusal is followed by an accepted request (measured 9 and 9).
    assert refused <= accepted + 2, (accepted, refused)
    assert {h["dlq.reason"] for h in run.dead_headers()} <= {"throttled"}
    assert len(run.delivered()) + len(run.dead) == 90 and max(run.delivered().values()) == 1
    assert "Pisano throttled us: fleet paused" in replica.log_text()

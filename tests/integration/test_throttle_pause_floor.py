"""A 429 without Retry-After pauses the fleet for the shortest window at least (h-sender; README,
"The shared throttle"). The simulator answers every request 429 with no Retry-After, as a gateway
or a Pisano that does not say may. The pause was the jittered backoff (PISANO_BACKOFF_BASE_MS 50
here: 0 to 50 ms), so the next request went straight back into the throttle; now each 429 holds
the fleet for the shortest window's period plus the margin (2 s here)."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from tests.support.runs import Run
from tests.support.scenario import CAMPAIGNS


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_each_429_without_retry_after_holds_the_fleet_for_the_shortest_window(
        run: Run, new_topic: Callable[..., str]) -> None:
    run.faults(error_rates={"429": 1.0})
    records = run.events(20, CAMPAIGNS[0])
    run.start(records, new_topics=new_topic, PISANO_RATE_LIMITS="20/2s,100/60s", PISANO_RATE_MARGIN_MS=0,
              PISANO_MAX_ATTEMPTS=1, BATCH_MAX_RECIPIENTS=5, BATCH_MAX_WAIT_MS=50,
              MAX_IN_FLIGHT_REQUESTS=1)  # one at a time: no two requests leave before either hears 429
    run.finish()
    times = sorted(r["clock_ns"] for r in run.requests())
    assert len(times) >= 4 and all(r["http_status"] == 429 for r in run.requests())
    gaps = [(b - a) / 1e9 for a, b in itertools.pairwise(times)]
    print(f"requests {len(times)}, gaps between them (s): {[round(g, 2) for g in gaps]}")
    # each request follows the previous one's 429 by the pause at least (less the answer's way back)
    assert min(gaps) >= 1.9, gaps
    assert {h["dlq.reason"] for h in run.dead_headers()} == {"throttled"} and len(run.dead) == 20

"""Slots reserved before a 429 paused the fleet are not sent into the pause (h-sender; README, "The
shared throttle", *Slots reserved before a pause*). Pisano's throttle here is stricter than the
consumer's windows (as in test_throttle_not_retried.py), and no 429 is retried (its Retry-After is
past PISANO_RETRY_BUDGET_MS). Two replicas with four sender threads each hold slots reserved ahead:
before, each of them still left in its slot after the pause began, heard 429 and paused the fleet
again, its events dead-lettered `throttled`. Now such a request gives its slot up and takes one
after the pause (the other replica's learns the pause in its claims' trip before the POST, h-pause;
before, at its next heartbeat: within a second)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support.consumers import ConsumerProcess
from tests.support.runs import Run
from tests.support.scenario import CAMPAIGNS


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_requests_holding_slots_wait_out_a_pause_instead_of_hearing_429(run: Run,
                                                                         new_topic: Callable[..., str]) -> None:
    run.sim_config(rate_limits="1/3s")  # Retry-After up to 3 s
    records = run.events(40, CAMPAIGNS[0]) + run.events(40, CAMPAIGNS[1]) + run.events(40, CAMPAIGNS[2])
    first = run.start(records, partitions=4, new_topics=new_topic, PISANO_RATE_LIMITS="10/1s",
                      PISANO_RATE_MARGIN_MS=0, PISANO_RETRY_BUDGET_MS=1000, BATCH_MAX_RECIPIENTS=5,
                      BATCH_MAX_WAIT_MS=50, MAX_IN_FLIGHT_REQUESTS=4)
    second = ConsumerProcess({k: v for k, v in first.env.items() if k != "HTTP_PORT"},
                             run.tmp_path / "second.log").start()
    run.processes.append(second)
    run.wait_all_committed(timeout=240)
    assert second.terminate() == 0, second.log_tail()
    run.finish()
    requests = sorted(run.requests(), key=lambda r: r["clock_ns"])
    assert any(r["http_status"] == 200 for r in requests)
    # Each 429 pauses the fleet for its Retry-After from when its answer came back (a few ms after
    # the simulator stamped it). A request the simulator saw inside such a pause was sent into it:
    # after more than a heartbeat (1 s) into the pause, by any replica (every one knows it by then).
    pauses = [(r["clock_ns"], r["clock_ns"] + r["retry_after_s"] * 1_000_000_000)
              for r in requests if r["http_status"] == 429 and r["retry_after_s"]]

    def inside(after_s: float) -> int:
        return sum(1 for r in requests
                   if any(begun + after_s * 1e9 < r["clock_ns"] < ended - 50_000_000 for begun, ended in pauses))

    early, later, late = inside(0.1), inside(0.5), inside(1.2)
    print(f"requests {len(requests)}, 429s {len(pauses)}, sent into a pause: {early} (after 0.5 s: {later}, "
          f"after 1.2 s: {late})")
    assert late == 0, (early, later, late, len(requests))
    # h-pause: the other replica's requests learn the pause in their claims' trip, at most the
    # preparation's lead (200 ms) before their POST, not at its next heartbeat (up to a second)
    assert later == 0, (early, later, late, len(requests))
    assert early <= len(pauses), (early, later, late, len(requests))
    assert {h["dlq.reason"] for h in run.dead_headers()} <= {"throttled"}
    # (a record dead-lettered before the second replica's rebalance may be dead-lettered again: by origin)
    origins = {(h["dlq.original.partition"], h["dlq.original.offset"]) for h in run.dead_headers()}
    assert len(run.delivered()) + len(origins) == 120 and max(run.delivered().values()) == 1

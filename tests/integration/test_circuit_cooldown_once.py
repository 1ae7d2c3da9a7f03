"""The requests in flight when the token's circuit opens do not double its cool-down (review
h-sside; README, "Circuit breaker": only a failed probe reopens it with twice the cool-down).
Several sender threads send at once with a wrong token: each hears 401 13001. Each of those
refusals used to double CIRCUIT_COOLDOWN_MS in Redis (toward CIRCUIT_MAX_COOLDOWN_MS), so the
fleet dead-lettered long after a token fixed at once (before b596e9b: 4 refusals, 480000 ms)."""

from __future__ import annotations

from collections.abc import Callable

from tests.support.runs import Run
from tests.support.scenario import CAMPAIGNS


def test_refusals_in_flight_leave_the_cooldown_as_it_was(run: Run, new_topic: Callable[..., str],
                                                         redis_client) -> None:  # type: ignore[no-untyped-def]
    run.sim_config(tokens=["the-right-token"])  # the consumer's token is wrong
    # Answers spread out: the refusals of the requests in flight together come one after another
    # (answers that came at the same moment could read the circuit closed together and open it
    # once each, hiding the doubling).
    run.faults(latency_ms=100, latency_jitter_ms=900)
    records = run.events(40, CAMPAIGNS[0]) + run.events(40, CAMPAIGNS[1]) + run.events(40, CAMPAIGNS[2])
    run.start(records, new_topics=new_topic, BATCH_MAX_RECIPIENTS=10, BATCH_MAX_WAIT_MS=50,
              CIRCUIT_COOLDOWN_MS=60_000, CIRCUIT_MAX_COOLDOWN_MS=600_000, PISANO_RATE_LIMITS="off")
    run.finish(dead_letters=120)
    refused = [r for r in run.requests() if r["http_status"] == 401]
    assert len(refused) >= 2, "the test needs refusals in flight together"
    (circuit,) = [k for k in redis_client.scan_iter("*:circuit") if redis_client.type(k) in (b"hash", "hash")]
    assert int(redis_client.hget(circuit, "cooldown_ms")) == 60_000, (len(refused), redis_client.hgetall(circuit))
    assert {h["pisano.error.code"] for h in run.dead_headers()} == {"13001"}

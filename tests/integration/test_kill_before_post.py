"""A replica SIGKILLed while its claims wait, with no request of theirs in flight, leaves no
`ambiguous` dead-letter: every valid event is delivered exactly once, by the next replica.

A batch's first claims are taken armed, for their slot; an attempt that certainly failed (a 503
Pisano itself wrote, retried later) makes them pending, and the renewal right before the next POST
arms them again. A pending
claim that lapses with its lease (DEDUP_CLAIM_LEASE_MS) is free again: its replica has not sent
those events since the last attempt that certainly failed, so the next owner simply sends them.
Only an armed claim that lapses (a kill between the POST and recording its answer) leaves an
unknown fate, `ambiguous` (ARCHITECTURE.md invariant 2). Before pending claims, every lapsed claim
was taken as an unknown fate: these events were all dead-lettered as `ambiguous` although Pisano
had accepted none of them (the simulator's delivery log is empty at the kill).

Two waits, each holding the claims of requests Pisano answered 503:
- a retry backoff (long: PISANO_BACKOFF_BASE_MS), and
- a far throttle slot (PISANO_RATE_LIMITS one request per 12 s: the retry's slot is 12.5 s after
  the first attempt's, the backoff before it a few milliseconds).
With the contact cooldown on, each phone is reserved with its event's claim, and a reservation that
lapses with a pending claim is free too: no event ends as `cooldown` either.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from consumer.ingest.samples import phone_for
from tests.conftest import unique
from tests.integration.test_contact_policy import OPT_OUT_KEY
from tests.support.consumers import ConsumerProcess, consumer_env, wait_until
from tests.support.kafka import headers_of, produce, read_all
from tests.support.runs import Run
from tests.support.scenario import CAMPAIGNS

# The shortest lease these timeouts allow (settings: request timeouts + 10 s margin): the killed
# replica's claims lapse at most 13 s after the kill (its heartbeat renewed them every 3.25 s).
LEASE = {"PISANO_TIMEOUT_MS": 2000, "PISANO_CONNECT_TIMEOUT_MS": 1000, "DEDUP_CLAIM_LEASE_MS": 13000}
COOLDOWN = {"CONTACT_COOLDOWN": "30d", "SUPPRESSION_KEY": OPT_OUT_KEY}
# A backoff drawn from 0 to 30 s (full jitter) after each 503: the replica is killed a fraction of
# a second after the first answers, almost surely inside it (a retry that came first failed too
# and waits again; only a kill within the few milliseconds of a retry's POST would arm a claim).
LONG_BACKOFF = {"PISANO_BACKOFF_BASE_MS": 30_000, "PISANO_BACKOFF_MAX_MS": 30_000, "PISANO_MAX_ATTEMPTS": 10,
                "PISANO_RETRY_BUDGET_MS": 600_000}
# One request per 12 s (12.5 s with the default margin), unpaced so the slots are exactly that far
# apart; the retry's backoff is a few milliseconds, its slot 12.5 s after the first attempt's.
THROTTLE = "1/12s"
FAR_SLOT = {"PISANO_RATE_LIMITS": THROTTLE, "PISANO_PACE_SHARE": 0, "PISANO_BACKOFF_BASE_MS": 50,
            "PISANO_BACKOFF_MAX_MS": 50, "PISANO_MAX_ATTEMPTS": 10, "PISANO_RETRY_BUDGET_MS": 600_000}


def first_attempts_answered_503(replica: ConsumerProcess) -> int:
    """Requests whose first attempt the replica logged answered with a 503."""
    return sum(1 for line in replica.log_text().splitlines()
               if '"request answered' in line and '"attempt": 1,' in line and '"status": 503' in line)


def total(metrics: dict[str, float], name: str) -> float:
    """Every sample of `name`, whatever its labels."""
    return sum(v for k, v in metrics.items() if k == name or k.startswith(name + "{"))


def waiting_in_backoff(replica: ConsumerProcess, events: int) -> bool:
    """Every event is in a batch whose ids the replica claimed (`batch_size`: once per batch, its
    claimed events), each of those batches has had its first attempt answered 503 (the simulator
    fails them all), and no request is under way: every claim waits in a retry backoff."""
    metrics = replica.metrics()
    batches = metrics.get("pisano_sms_batch_size_count", 0.0)
    return (metrics.get("pisano_sms_batch_size_sum", 0.0) >= events and batches > 0
            and first_attempts_answered_503(replica) >= batches
            and total(metrics, "pisano_sms_in_flight_requests") == 0)


def waiting_for_a_far_slot(replica: ConsumerProcess, events: int) -> bool:
    """Every event is in the one batch (all of one campaign), its first attempt was answered 503,
    and its retry holds a second throttle slot, 12.5 s after the first: the claims wait for it."""
    metrics = replica.metrics()
    return (metrics.get("pisano_sms_batch_size_sum", 0.0) >= events
            and metrics.get("pisano_sms_batch_size_count", 0.0) == 1
            and first_attempts_answered_503(replica) == 1
            and total(metrics, "pisano_sms_throttle_slots_granted_total") >= 2
            and total(metrics, "pisano_sms_in_flight_requests") == 0)


def kill_while_waiting_then_take_over(run: Run, new_topic: Callable[..., str], records: list[tuple[bytes, bytes]],
                                      waiting: Callable[[ConsumerProcess, int], bool], what: str,
                                      **settings: Any) -> None:
    """Pisano (the simulator) answers every request 503; a replica claims every event, sends,
    and is SIGKILLed once `waiting` says its claims wait with no request under way. Pisano then
    accepts everything, and a second replica of the group (the same settings) takes over until
    every record is committed. Every event must then be delivered once, nothing dead-lettered."""
    phones = {phone_for(n) for n in range(len(records))}  # run.events numbers its phones from 0
    run.faults(error_rates={"503": 1.0})
    run.topic, run.dlq, run.group = new_topic(partitions=2), new_topic("dlq"), unique("g")
    produce(run.stack.bootstrap, run.topic, records)
    env = consumer_env(bootstrap=run.stack.bootstrap, redis_url=run.stack.redis_url, topic=run.topic,
                       dlq=run.dlq, group=run.group, pisano_url=run.simulator.url, token=run.token,
                       **{**LEASE, **settings})
    first = ConsumerProcess(env, run.tmp_path / "first.log").start()
    run.processes.append(first)
    first.wait_ready()
    wait_until(lambda: waiting(first, len(records)), 60,
               f"all {len(records)} events claimed, answered 503 and waiting ({what})")
    first.kill()
    killed_at = time.monotonic()
    tried = len(run.requests())
    assert run.delivered() == {}, "the killed replica had events delivered: Pisano answered it 503 only"
    run.faults(error_rates={})  # the outage is over: Pisano accepts everything

    second = ConsumerProcess(env, run.tmp_path / "second.log").start()
    run.processes.append(second)
    run.replica = second
    run.wait_all_committed(90)
    took = time.monotonic() - killed_at
    metrics = second.metrics()
    assert second.terminate() == 0, second.log_tail()

    reasons = Counter(headers_of(m).get("dlq.reason", "?") for m in read_all(run.stack.bootstrap, run.dlq))
    delivered = run.delivered()
    missing, twice = len(phones - set(delivered)), sum(1 for n in delivered.values() if n > 1)
    cooldown = metrics.get("pisano_sms_events_filtered_total{reason=cooldown}", 0.0)
    print(f"killed while the claims waited ({what}) after {tried} requests answered 503, none delivered; "
          f"the next replica ended every record {took:.1f} s after the kill: dead-letters {dict(reasons)}, "
          f"{len(phones) - missing} of {len(phones)} delivered, {missing} never, {twice} twice, "
          f"{cooldown:.0f} ended as cooldown")
    assert not reasons, (
        f"{sum(reasons.values())} dead-letters {dict(reasons)}: the killed replica's claims waited ({what}) "
        f"after Pisano answered 503, no request of theirs under way, yet the next replica took their "
        f"lapsed claims as a fate unknown")
    assert cooldown == 0, f"{cooldown:.0f} events ended as cooldown: the lapsed reservations of unsent requests"
    assert missing == 0, f"{missing} of {len(phones)} valid events never delivered"
    assert twice == 0, f"{twice} phones got a second SMS"


@pytest.mark.slow
@pytest.mark.timeout(150)
@pytest.mark.parametrize("cooldown", [False, True], ids=["plain", "cooldown"])
def test_a_replica_killed_in_its_retry_backoff_leaves_no_ambiguous_dead_letter(
        run: Run, new_topic: Callable[..., str], cooldown: bool) -> None:
    records = [r for campaign in CAMPAIGNS for r in run.events(100, campaign)]  # a batch per campaign
    kill_while_waiting_then_take_over(run, new_topic, records, waiting_in_backoff, "a retry backoff",
                                      **LONG_BACKOFF, **(COOLDOWN if cooldown else {}))


@pytest.mark.slow
@pytest.mark.timeout(150)
@pytest.mark.parametrize("cooldown", [False, True], ids=["plain", "cooldown"])
def test_a_replica_killed_while_its_retry_waits_for_a_far_throttle_slot_leaves_no_ambiguous_dead_letter(
        run: Run, new_topic: Callable[..., str], cooldown: bool) -> None:
    run.sim_config(rate_limits=THROTTLE)  # Pisano's own throttle, as the consumer's
    records = run.events(300, CAMPAIGNS[0])  # one campaign: one batch, one request per slot
    kill_while_waiting_then_take_over(run, new_topic, records, waiting_for_a_far_slot, "a far throttle slot",
                                      **FAR_SLOT, **(COOLDOWN if cooldown else {}))

"""Claims on the wire (issue 11, findings 5 and 6): a replica behind a real TCP proxy to Redis
(tests/support/redis_proxy.py) that loses a claim's reply or slows claims down.

Run against an older checkout with PISANO_TEST_CONSUMER_ROOT=/path/to/checkout: the replicas then
run that code, the harness (simulator, Kafka, proxy) stays this one.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections import Counter
from collections.abc import Callable, Iterator
from urllib.parse import urlparse

import pytest

from consumer.ingest.samples import phone_for
from consumer.state.dedup import RedisDedup
from consumer.state.redis import Keys
from tests.conftest import Stack, unique
from tests.support.consumers import CONSUMER_ROOT, ConsumerProcess, consumer_env, wait_until
from tests.support.kafka import all_committed, end_offsets
from tests.support.redis_proxy import RedisProxy
from tests.support.runs import Run
from tests.support.scenario import CAMPAIGNS

LEASE_MS = 12_000  # the shortest lease the start check allows with these timeouts (1 s + 1 s + 10 s)
SHORT_TIMEOUTS = {"PISANO_TIMEOUT_MS": 1000, "PISANO_CONNECT_TIMEOUT_MS": 1000, "DEDUP_CLAIM_LEASE_MS": LEASE_MS}


def claim_script() -> str:
    """The claim script of the code the replicas run (its place moved between versions)."""
    paths = sorted(CONSUMER_ROOT.glob("consumer/**/lua/claim.lua"))
    assert len(paths) == 1, paths
    return paths[0].read_text(encoding="utf-8")


def copy_holder(run: Run, timeout: float, **settings: object) -> ConsumerProcess:
    """Replica B: it reads the run's topic in a group of its own, so it holds a copy of every event
    and asks for its claim; returned once it has ended its copy (committed the topic's end)."""
    group = unique("g")
    env = consumer_env(bootstrap=run.stack.bootstrap, redis_url=run.stack.redis_url, topic=run.topic, dlq=run.dlq,
                       group=group, pisano_url=run.simulator.url, token=run.token, **settings)
    b = ConsumerProcess(env, run.tmp_path / "b.log").start()
    run.processes.append(b)
    ends = end_offsets(run.stack.bootstrap, run.topic)
    wait_until(lambda: all_committed(run.stack.bootstrap, group, run.topic, ends), timeout, "B ended its copy")
    return b


@pytest.fixture
def proxy(stack: Stack, redis_client) -> Iterator[RedisProxy]:  # type: ignore[no-untyped-def]
    # Loaded beforehand, so the replica's first EVALSHA runs the script (no NOSCRIPT round).
    redis_client.script_load(claim_script())
    url = urlparse(stack.redis_url)
    proxy = RedisProxy(url.hostname or "127.0.0.1", url.port or 6379).start()
    yield proxy
    proxy.close()


def test_a_lost_claim_reply_is_claimed_again_and_sent_once_not_parked_until_ambiguous(
        run: Run, proxy: RedisProxy, new_topic: Callable[..., str]) -> None:
    # Finding 5. The first claim runs in Redis but its reply is lost and Redis is away for 0.4 s,
    # so a release sent at once fails as well: the ids stay claimed under that request's tag.
    # Claimed again under the same tag once Redis is back (0.2 s, then 0.4 s later), they are
    # found ours and sent. Before the fix they were released (in vain) and put back: every new
    # attempt found them held by the lost claim until its lease ran out, then dead-lettered them
    # as `ambiguous`, although no request had carried them.
    sha = hashlib.sha1(claim_script().encode()).hexdigest().encode()
    proxy.lose_reply(sha, down_s=0.4)
    records = run.events(40, CAMPAIGNS[0])
    started = time.monotonic()
    run.start(records, new_topics=new_topic, REDIS_URL=proxy.url, **SHORT_TIMEOUTS)
    run.wait_all_committed(timeout=40)
    took = time.monotonic() - started
    run.finish()

    assert len(proxy.lost) == 1 and not proxy.lost[0].startswith(b"-"), proxy.lost  # the script ran
    assert b"C" in proxy.lost[0]  # and claimed ids under the lost tag
    reasons = [h.get("dlq.reason") for h in run.dead_headers()]
    assert reasons == [], f"dead-lettered: {reasons}"
    delivered = run.delivered()
    assert len(delivered) == 40 and max(delivered.values()) == 1
    assert took < LEASE_MS / 1000, f"took {took:.1f}s: the events waited out the lease"


def test_a_retry_renews_its_claims_before_its_slot_so_a_slow_redis_never_breaks_a_window(
        run: Run, proxy: RedisProxy, new_topic: Callable[..., str]) -> None:
    # Finding 6. Every claim and renewal takes 0.15 s (a busy Redis), less than the 0.2 s lead
    # time a request is prepared in. Pisano allows 1 request a second, and so does the replica,
    # with a 0.1 s margin: slots 1.1 s apart. The first request gets a 503 and is retried in a
    # later slot. Renewed inside that slot's lead time, the retry leaves at its slot. Before the
    # fix the renewal sat between the slot and the POST: the retry left 0.15 s late, 0.95 s before
    # the next slot's request, which Pisano counted in the same window and answered 429.
    sha = hashlib.sha1(claim_script().encode()).hexdigest().encode()
    proxy.delay(sha, 0.15)
    run.sim_config(rate_limits="1/1s")
    run.faults(error_rates={"503": 1.0})
    run.start(run.events(8, CAMPAIGNS[0]), new_topics=new_topic, REDIS_URL=proxy.url, BATCH_MAX_RECIPIENTS=1,
              PISANO_RATE_LIMITS="1/1s", PISANO_RATE_MARGIN_MS=100, THROTTLE_GRACE_MS=2000)
    wait_until(lambda: any(r["http_status"] == 503 for r in run.requests()), 20, "a first request got a 503")
    run.faults(error_rates={})
    run.wait_all_committed(timeout=40)
    run.finish()

    requests = sorted(run.requests(), key=lambda r: r["clock_ns"])
    statuses = Counter(r["http_status"] for r in requests)
    gaps = [(b["clock_ns"] - a["clock_ns"]) / 1e9 for a, b in itertools.pairwise(requests)]
    assert statuses[503] >= 1 and proxy.delayed > 8, (statuses, proxy.delayed)  # retried, renewals slowed
    assert statuses[429] == 0, f"Pisano's window broken: {statuses}, gaps {[round(g, 2) for g in gaps]}"
    assert min(gaps) >= 1.0, [round(g, 2) for g in gaps]
    assert run.dead == []
    delivered = run.delivered()
    assert len(delivered) == 8 and max(delivered.values()) == 1


def test_a_request_moved_to_a_later_slot_renews_its_claims_so_no_other_replica_finds_them_lapsed(
        run: Run, proxy: RedisProxy, redis_client, new_topic: Callable[..., str]) -> None:  # type: ignore[no-untyped-def]
    # Finding 6, the lease. Replica A may send 1 request per 14.5 s. Its first claim takes 0.5 s
    # (a Redis stall), more than the 0.2 s lead time plus half the margin: the request is late for
    # its slot and moves to the next one, 15 s later. Pisano then takes 5.5 s to answer. The
    # lease, 16.1 s, is the shortest the start check allows for a 6 s request. Renewed in the
    # new slot's lead time, the claim outlives the request. Before the fix the first POST in a
    # re-reserved slot skipped the renewal: the claim, 15 s old when the request left, lapsed
    # while Pisano was answering, and replica B, holding a duplicate of the event, found it of
    # unknown fate and dead-lettered it `ambiguous` although A delivered it. Now B waits (held)
    # and skips it once A marked it delivered. (B reads the same topic in a group of its own, so
    # no rebalance moves A's partition, and without a throttle, so it asks every 2 s.)
    sha = hashlib.sha1(claim_script().encode()).hexdigest().encode()
    proxy.delay(sha, 0.5, times=1)
    records = run.events(1, CAMPAIGNS[0])
    marks = RedisDedup(redis_client, Keys("pisano-sms"), lease_ms=16_100, horizon_s=7 * 86_400)
    lease = {"PISANO_TIMEOUT_MS": 6000, "PISANO_CONNECT_TIMEOUT_MS": 100, "DEDUP_CLAIM_LEASE_MS": 16_100}
    run.faults(latency_ms=5500)
    a = run.start(records, partitions=1, new_topics=new_topic, REDIS_URL=proxy.url, PISANO_RATE_LIMITS="1/14500ms",
                  PISANO_RATE_MARGIN_MS=500, THROTTLE_GRACE_MS=2000, **lease)
    wait_until(lambda: (marks.state(records[0][0].decode()) or "").startswith("c|"), 20, "A claimed the event")
    b = copy_holder(run, 40, **lease)
    run.wait_all_committed(timeout=40)
    wasted = a.metric("pisano_sms_throttle_slots_wasted_total")
    skipped = b.metric("pisano_sms_duplicates_skipped_total")
    run.finish()
    assert b.terminate() == 0

    assert proxy.delayed == 1 and wasted >= 1, "A's first slot was not missed"
    reasons = [h.get("dlq.reason") for h in run.dead_headers()]
    assert reasons == [], f"dead-lettered: {reasons}"
    assert run.delivered() == Counter({phone_for(0): 1})
    assert skipped == 1


def test_a_request_waiting_longer_than_the_lease_for_its_retry_slot_keeps_its_claims(
        run: Run, redis_client, new_topic: Callable[..., str]) -> None:  # type: ignore[no-untyped-def]
    # The heartbeat (consumer/delivery/heartbeat.py). Replica A may send 1 request per 20 s; its
    # first request gets a 503, so its retry waits about 20 s for the next slot, longer than the
    # lease (12 s, the shortest the start check allows for these timeouts). Replica B holds a
    # duplicate of the event and asks for it every few seconds. A's heartbeat renews the claim
    # every 3 s while it waits: B finds it held until A delivers, then skips it. Before the
    # heartbeat the claim lapsed 12 s into the wait: B found it of unknown fate and dead-lettered
    # it `ambiguous`, and A's renewal before the retry failed, so A dead-lettered it too, though
    # no request had been accepted. (B reads the same topic in a group of its own, as above.)
    records = run.events(1, CAMPAIGNS[0])
    marks = RedisDedup(redis_client, Keys("pisano-sms"), lease_ms=LEASE_MS, horizon_s=7 * 86_400)
    run.faults(error_rates={"503": 1.0})
    run.start(records, partitions=1, new_topics=new_topic, PISANO_RATE_LIMITS="1/20s",
              PISANO_RATE_MARGIN_MS=500, THROTTLE_GRACE_MS=2000, **SHORT_TIMEOUTS)
    wait_until(lambda: any(r["http_status"] == 503 for r in run.requests()), 20, "A's first request got a 503")
    run.faults(error_rates={})
    assert (marks.state(records[0][0].decode()) or "").startswith("c|"), "A does not hold the claim"
    b = copy_holder(run, 45, **SHORT_TIMEOUTS)
    run.wait_all_committed(timeout=45)
    held = b.metric("pisano_sms_events_held_total")
    skipped = b.metric("pisano_sms_duplicates_skipped_total")
    run.finish()
    assert b.terminate() == 0

    statuses = [r["http_status"] for r in sorted(run.requests(), key=lambda r: r["clock_ns"])]
    assert statuses == [503, 200], statuses
    reasons = [h.get("dlq.reason") for h in run.dead_headers()]
    assert reasons == [], f"dead-lettered: {reasons}"
    assert run.delivered() == Counter({phone_for(0): 1})
    assert held >= 1 and skipped == 1, (held, skipped)

"""The SRE's day, end to end: a wrong token, dead-letters with 13001, the token fixed, a replay
that delivers each event exactly once, and a second replay that sends nothing. And a consumer
killed with SIGKILL while dead-lettering, requests in flight: nothing lost, what was in flight
`ambiguous` once its lease lapses, duplicates only as at-least-once allows, and replaying those
duplicates still sends nobody a second SMS."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from consumer.ingest.samples import phone_for
from consumer.simulator import SimulatorConfig, SimulatorServer
from tests.conftest import Stack, unique
from tests.support.consumers import REPLAY_KEY, ROOT, ConsumerProcess, consumer_env, wait_until
from tests.support.kafka import all_committed, end_offsets, headers_of, produce, read_all
from tests.support.scenario import CAMPAIGNS, delivered_phones, mixed_traffic

RIGHT_TOKEN, WRONG_TOKEN = "sre-right-token-51", "sre-wrong-token-19"


def replay(stack: Stack, topic: str, dlq: str, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "DLQ_", "REDIS_", "PISANO_"))}
    env.update(KAFKA_BOOTSTRAP_SERVERS=stack.bootstrap, DLQ_TOPIC=dlq, KAFKA_TOPICS=topic,
               REPLAY_SIGNING_KEY=REPLAY_KEY)
    result = subprocess.run([sys.executable, "-m", "consumer", "replay", *args], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def set_faults(simulator: SimulatorServer, **faults: object) -> None:
    httpx.post(f"{simulator.url}/_sim/faults?mode=replace", json=faults, timeout=5).raise_for_status()


def number(text: str, label: str) -> int:
    match = re.search(rf"{label}\s+([\d,]+)", text)
    assert match, (label, text)
    return int(match.group(1).replace(",", ""))


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_wrong_token_dead_letters_then_fix_and_replay_exactly_once(
        stack: Stack, new_topic: Callable[..., str], tmp_path: Path, redis_client, processes) -> None:  # type: ignore[no-untyped-def]
    topic, dlq, group = new_topic(partitions=3), new_topic("dlq"), unique("g")
    traffic = mixed_traffic(1200, duplicate_every=15, invalid_every=0, prefix=unique("sre"))
    produce(stack.bootstrap, topic, traffic.records)
    log = tmp_path / "deliveries.jsonl"
    with SimulatorServer(SimulatorConfig(tokens=frozenset({RIGHT_TOKEN}), campaigns=frozenset(CAMPAIGNS),
                                         rate_limits=(), delivery_log_path=log)) as simulator:
        env = consumer_env(bootstrap=stack.bootstrap, redis_url=stack.redis_url, topic=topic, dlq=dlq, group=group,
                           pisano_url=simulator.url, token=WRONG_TOKEN, BATCH_MAX_RECIPIENTS=500)
        wrong = ConsumerProcess(env, tmp_path / "wrong.log").start()
        processes.append(wrong)
        ends = end_offsets(stack.bootstrap, topic)
        wait_until(lambda: all_committed(stack.bootstrap, group, topic, ends), 90, "all dead-lettered")
        assert wrong.terminate() == 0
        dead = read_all(stack.bootstrap, dlq)
        assert {headers_of(m)["pisano.error.code"] for m in dead} == {"13001"}
        assert len(dead) == len(traffic.records)  # duplicates too: nothing was delivered, nothing skipped
        assert delivered_phones(log) == Counter()

        # The token is fixed (a new Secret, the pods restart), then the SRE replays 13001.
        fixed = ConsumerProcess({**env, "PISANO_API_TOKEN": RIGHT_TOKEN}, tmp_path / "fixed.log").start()
        processes.append(fixed)
        dry = replay(stack, topic, dlq, "--error-code", "13001", "--dry-run")
        assert number(dry, "would replay") == len(traffic.records)
        first = replay(stack, topic, dlq, "--error-code", "13001")
        assert number(first, "replayed") == number(dry, "would replay")
        ends = end_offsets(stack.bootstrap, topic)
        wait_until(lambda: all_committed(stack.bootstrap, group, topic, ends), 90, "replayed records processed")
        phones = delivered_phones(log)
        assert set(phones) == traffic.valid_phones and max(phones.values()) == 1
        assert fixed.metric("pisano_sms_duplicates_skipped_total") == traffic.duplicates

        # The same replay again: the group resumed past everything, so nothing is read.
        second = replay(stack, topic, dlq, "--error-code", "13001")
        assert number(second, "replayed") == 0
        # Even from the beginning: everything goes round again and dedup stops every send.
        requests_before = len(simulator.state.requests.records())
        again = replay(stack, topic, dlq, "--error-code", "13001", "--from-beginning")
        assert number(again, "replayed") == len(traffic.records)
        ends = end_offsets(stack.bootstrap, topic)
        wait_until(lambda: all_committed(stack.bootstrap, group, topic, ends), 90, "second replay processed")
        assert len(simulator.state.requests.records()) == requests_before
        assert delivered_phones(log) == phones
        assert fixed.terminate() == 0
    replayed = [m for m in read_all(stack.bootstrap, topic) if headers_of(m).get("dlq.replays")]
    assert {headers_of(m)["dlq.replays"] for m in replayed} == {"1"}


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_sigkill_while_dead_lettering_loses_nothing_and_replays_send_nothing_twice(
        stack: Stack, new_topic: Callable[..., str], tmp_path: Path, redis_client, processes) -> None:  # type: ignore[no-untyped-def]
    topic, dlq, group = new_topic(partitions=2), new_topic("dlq"), unique("g")
    bad_campaign = CAMPAIGNS[2]
    traffic = mixed_traffic(3000, duplicate_every=0, invalid_every=0, prefix=unique("kill"))
    produce(stack.bootstrap, topic, traffic.records)
    bad_ids = {key for key, value in traffic.records if bad_campaign.encode() in (value or b"")}
    log = tmp_path / "deliveries.jsonl"
    config = SimulatorConfig(tokens=frozenset({RIGHT_TOKEN}), campaigns=frozenset(CAMPAIGNS), rate_limits=(),
                             delivery_log_path=log)
    with SimulatorServer(config) as simulator:
        # One campaign's flow is broken on Pisano's side: its events are dead-lettered with 13034.
        # Every answer takes 2 s, so the kill lands with requests in flight (as it did, by chance,
        # in a CI run): their claims stay until their lease lapses, then their events end
        # `ambiguous`, whether Pisano got them or not. Short timeouts keep that lease within the
        # wait below (by default it is minutes), a short circuit cooldown the probe after the fix.
        set_faults(simulator, campaign_codes={bad_campaign: 13034}, latency_ms=2000)
        env = consumer_env(bootstrap=stack.bootstrap, redis_url=stack.redis_url, topic=topic, dlq=dlq, group=group,
                           pisano_url=simulator.url, token=RIGHT_TOKEN, BATCH_MAX_RECIPIENTS=100,
                           MAX_IN_FLIGHT_REQUESTS=4, COMMIT_INTERVAL_MS=2000, PISANO_TIMEOUT_MS=4000,
                           PISANO_CONNECT_TIMEOUT_MS=500, DEDUP_CLAIM_LEASE_MS=15_000,
                           CIRCUIT_COOLDOWN_MS=3000, CIRCUIT_MAX_COOLDOWN_MS=6000)
        first = ConsumerProcess(env, tmp_path / "first.log").start()
        processes.append(first)
        wait_until(lambda: len(read_all(stack.bootstrap, dlq, timeout=5)) >= 300, 60, "dead-lettering under way")
        first.kill()  # SIGKILL mid-stream: some dead-letters acknowledged but not committed
        second = ConsumerProcess(env, tmp_path / "second.log").start()
        processes.append(second)
        ends = end_offsets(stack.bootstrap, topic)
        wait_until(lambda: all_committed(stack.bootstrap, group, topic, ends), 120, "everything has an outcome")

        dead = read_all(stack.bootstrap, dlq)
        by_reason: dict[str, list[Any]] = {}
        for message in dead:
            by_reason.setdefault(headers_of(message)["dlq.reason"], []).append(message)
        assert set(by_reason) <= {"pisano_error", "ambiguous"}, Counter({r: len(m) for r, m in by_reason.items()})
        refused = {m.key() for m in by_reason.get("pisano_error", [])}
        ambiguous = {m.key() for m in by_reason.get("ambiguous", [])}
        assert refused <= bad_ids and bad_ids <= refused | ambiguous  # every one there: nothing lost
        # Only what was in flight at the kill is ambiguous: at most 4 requests of 100.
        assert 0 < len(ambiguous) <= 400, len(ambiguous)
        origins = Counter(origin_of(m) for m in dead)
        duplicated = sum(n - 1 for n in origins.values())
        assert max(origins.values()) <= 2  # at-least-once: a second copy after the kill, no more
        delivered = delivered_phones(log)
        assert max(delivered.values()) == 1  # once
        # Everything else was delivered (an ambiguous event may have been, or not).
        assert {phone_of(key) for key, _ in traffic.records if key not in bad_ids | ambiguous} <= set(delivered)

        set_faults(simulator)  # the flow is fixed
        refused_origins = {origin_of(m) for m in by_reason.get("pisano_error", [])}
        output = replay(stack, topic, dlq, "--error-code", "13034")
        assert number(output, "replayed") == len(refused_origins)  # duplicate origins published once
        ends = end_offsets(stack.bootstrap, topic)
        wait_until(lambda: all_committed(stack.bootstrap, group, topic, ends), 90, "replay processed")
        # Even the duplicate dead-letters, replayed on purpose, send nothing twice.
        again = replay(stack, topic, dlq, "--error-code", "13034", "--from-beginning")
        assert number(again, "replayed") == len(refused_origins)
        ends = end_offsets(stack.bootstrap, topic)
        wait_until(lambda: all_committed(stack.bootstrap, group, topic, ends), 90, "second replay processed")
        assert second.terminate() == 0
    phones = delivered_phones(log)
    assert max(phones.values()) == 1
    # Every refused event is delivered now; an ambiguous one waits for the SRE, who checks Pisano first.
    assert traffic.valid_phones - {phone_of(key) for key in ambiguous} <= set(phones)
    print({"dead_letters": len(dead), "duplicated_origins": duplicated, "ambiguous": len(ambiguous)})


def origin_of(message: Any) -> tuple[str, str]:
    headers = headers_of(message)
    return headers["dlq.original.partition"], headers["dlq.original.offset"]


def phone_of(event_id: bytes | None) -> str:
    """The phone mixed_traffic gave the event: its id ends in the event's number."""
    assert event_id is not None
    return phone_for(int(event_id.rsplit(b"-", 1)[1]))

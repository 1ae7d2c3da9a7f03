"""Two Pisano accounts in one fleet: each campaign reaches its own destination exactly once,
inside that destination's throttle, and a wrong token on one opens only that one's circuit."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from consumer.config.windows import parse_rate_limits
from consumer.ingest.samples import encode, phone_for, transaction
from consumer.simulator import SimulatorConfig, SimulatorServer
from tests.conftest import Stack, unique
from tests.support.consumers import ConsumerProcess, consumer_env, wait_until
from tests.support.kafka import all_committed, end_offsets, headers_of, produce, read_all
from tests.support.scenario import CAMPAIGNS, delivered_phones, mixed_traffic

TOKEN_A, TOKEN_B = "dest-a-token-71f", "dest-b-token-0c2"
# A margin of 250 ms: requests of two replicas on a busy 2-core machine can reach Pisano tens of
# milliseconds apart from their slots; 50 ms was seen to let one through early.
WINDOWS_A, WINDOWS_B = "6/1s,12/4s", "4/1s,10/5s"


def campaigns_in(log: Path) -> Counter[str]:
    campaigns: Counter[str] = Counter()
    if log.exists():
        for line in log.read_text().split("\n")[:-1]:
            campaigns[json.loads(line)["campaign_id"]] += 1
    return campaigns


def throttled(simulator: SimulatorServer) -> int:
    return int(simulator.state.stats_dict()["throttled"]["total"])


@pytest.mark.timeout(300)
def test_two_destinations_each_exactly_once_and_a_circuit_of_its_own(
        stack: Stack, new_topic: Callable[..., str], tmp_path: Path, redis_client, processes) -> None:  # type: ignore[no-untyped-def]
    a_log, b_log = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    owned_by_b = CAMPAIGNS[2]
    config_a = SimulatorConfig(tokens=frozenset({TOKEN_A}), campaigns=frozenset(CAMPAIGNS[:2]),
                               rate_limits=parse_rate_limits(WINDOWS_A), delivery_log_path=a_log)
    config_b = SimulatorConfig(tokens=frozenset({TOKEN_B}), campaigns=frozenset({owned_by_b}),
                               rate_limits=parse_rate_limits(WINDOWS_B), delivery_log_path=b_log)
    with SimulatorServer(config_a) as sim_a, SimulatorServer(config_b) as sim_b:
        topic, dlq, group = new_topic(partitions=4), new_topic("dlq"), unique("g")
        traffic = mixed_traffic(3_000, duplicate_every=10, invalid_every=0)
        produce(stack.bootstrap, topic, traffic.records)
        destinations = {"second": {"url": sim_b.url, "api_token": TOKEN_B, "rate_limits": WINDOWS_B,
                                   "rate_margin_ms": 250, "campaigns": [owned_by_b]}}
        env = consumer_env(bootstrap=stack.bootstrap, redis_url=stack.redis_url, topic=topic, dlq=dlq, group=group,
                           pisano_url=sim_a.url, token=TOKEN_A, PISANO_RATE_LIMITS=WINDOWS_A,
                           PISANO_RATE_MARGIN_MS=250, BATCH_MAX_RECIPIENTS=100, DESTINATIONS=json.dumps(destinations),
                           CIRCUIT_COOLDOWN_MS=60_000)
        replicas = [ConsumerProcess(env, tmp_path / f"replica-{i}.log").start() for i in range(2)]
        processes.extend(replicas)

        ends = end_offsets(stack.bootstrap, topic)
        wait_until(lambda: all_committed(stack.bootstrap, group, topic, ends), 180, "every record has an outcome")
        phones = delivered_phones(a_log) + delivered_phones(b_log)
        assert set(phones) == traffic.valid_phones and max(phones.values()) == 1, "lost or sent twice"
        assert set(campaigns_in(a_log)) == set(CAMPAIGNS[:2]), "a campaign reached the wrong account"
        assert set(campaigns_in(b_log)) == {owned_by_b}, "a campaign reached the wrong account"
        assert throttled(sim_a) == 0 and throttled(sim_b) == 0

        # B's token is revoked: B's circuit opens; A keeps delivering.
        httpx.post(f"{sim_b.url}/_sim/config", json={"tokens": ["another-token"]}, timeout=5).raise_for_status()
        prefix = unique("late")
        late = [(f"{prefix}-{n}".encode(), encode(transaction(f"{prefix}-{n}", phone_for(50_000 + n),
                                                              CAMPAIGNS[n % 3], n=n))) for n in range(600)]
        produce(stack.bootstrap, topic, late)
        ends = end_offsets(stack.bootstrap, topic)
        wait_until(lambda: all_committed(stack.bootstrap, group, topic, ends), 120, "late records have outcomes")
        late_a = {phone_for(50_000 + n) for n in range(600) if n % 3 != 2}
        late_b = {phone_for(50_000 + n) for n in range(600) if n % 3 == 2}
        delivered_a = delivered_phones(a_log)
        assert late_a <= set(delivered_a) and max(delivered_a.values()) == 1
        assert not late_b & set(delivered_phones(b_log))
        dead = [headers_of(m) for m in read_all(stack.bootstrap, dlq, expected=len(late_b))]
        assert len(dead) == len(late_b)
        assert {h["pisano.error.code"] for h in dead} == {"13001"}
        assert {h["dlq.original.topic"] for h in dead} == {topic}
        by_status = sim_b.state.stats_dict()["requests"]["by_status"]
        refused_requests = int(by_status.get(401, by_status.get("401", 0)))
        # The circuit stopped the calls: each replica hears the refusal about once, not per batch.
        assert 1 <= refused_requests <= 4, refused_requests
        assert any("circuit OPEN for destination second" in r.log_text() for r in replicas)
        for replica in replicas:
            assert replica.alive(), replica.log_tail()
            assert "circuit OPEN for destination default" not in replica.log_text()
            assert replica.terminate() == 0, replica.log_tail()

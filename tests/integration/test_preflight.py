"""`pisano-sms check --campaigns` against simulators (README, "Preflight: check --campaigns"):
every routed campaign is asked of its destination with a request that sends no SMS, in a slot
of the shared throttle, and each failure says what it is and what to do."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from consumer.config.windows import parse_rate_limits
from consumer.simulator import SimulatorConfig, SimulatorServer
from consumer.simulator.config import FaultSettings
from consumer.state.redis import token_fingerprint
from tests.conftest import Stack
from tests.integration.test_cli_commands import base_env, pisano_sms

GOOD, B_TOKEN = "preflight-good-5a1c", "preflight-b-77d2"
C_OK = "0b6f6e2c-1111-4c4c-8a8a-000000000001"
C_UNKNOWN = "0b6f6e2c-1111-4c4c-8a8a-000000000002"
C_NOFLOW = "0b6f6e2c-1111-4c4c-8a8a-000000000003"
C_ROUTED = "0b6f6e2c-1111-4c4c-8a8a-000000000004"  # from the mapping's campaign_routes, to `default`
C_B = "0b6f6e2c-1111-4c4c-8a8a-000000000005"


def lines_of(output: str) -> dict[str, str]:
    """Campaign id -> its report line."""
    return {c: line for line in output.splitlines() if line.startswith("campaign")
            for c in (C_OK, C_UNKNOWN, C_NOFLOW, C_ROUTED, C_B) if c in line}


def test_check_campaigns_reports_each_routed_campaign(stack: Stack, new_topic: Callable[..., str], tmp_path: Path,
                                                      redis_client) -> None:  # type: ignore[no-untyped-def]
    log_a, log_b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    config_a = SimulatorConfig(tokens=frozenset({GOOD}), campaigns=frozenset({C_OK, C_ROUTED}),
                               faults=FaultSettings(campaign_codes={C_NOFLOW: 13005}),
                               rate_limits=parse_rate_limits("20/5s"), delivery_log_path=log_a)
    config_b = SimulatorConfig(tokens=frozenset({B_TOKEN}), campaigns=frozenset({C_B}), rate_limits=(),
                               delivery_log_path=log_b)
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text("event_id: event_id\nphone: customer.phone\nphone_region: TR\n"
                       f"campaign_routes:\n  field: channel\n  routes:\n    branch: {C_ROUTED}\n")
    with SimulatorServer(config_a) as sim_a, SimulatorServer(config_b) as sim_b:
        destinations = {
            "retail": {"url": sim_a.url, "api_token": GOOD, "rate_limits": "20/5s",
                       "campaigns": [C_OK, C_UNKNOWN, C_NOFLOW]},
            "second": {"url": sim_b.url, "api_token": "revoked-token-0000", "rate_limits": "off",
                       "campaigns": [C_B]},
        }
        env = base_env(stack, KAFKA_TOPICS=new_topic(), DLQ_TOPIC=new_topic("dlq"), PISANO_URL=sim_a.url,
                       PISANO_API_TOKEN=GOOD, PISANO_RATE_LIMITS="20/5s", DESTINATIONS=json.dumps(destinations),
                       MAPPING_FILE=str(mapping))
        result = pisano_sms("check", "--campaigns", env=env)
        assert result.returncode == 1, result.stdout + result.stderr
        lines = lines_of(result.stdout)
        assert "ok" in lines[C_OK] and lines[C_OK].split()[2] == "retail" and "exists and has a flow" in lines[C_OK]
        assert "ok" in lines[C_ROUTED] and lines[C_ROUTED].split()[2] == "default"
        assert "failed" in lines[C_UNKNOWN] and "unknown campaign" in lines[C_UNKNOWN]
        assert "copy the campaign's API ID" in lines[C_UNKNOWN]
        assert "failed" in lines[C_NOFLOW] and "no flow" in lines[C_NOFLOW]
        assert "bind its SMS channel" in lines[C_NOFLOW]
        assert "failed" in lines[C_B] and "wrong token" in lines[C_B] and "revoked-token" not in result.stdout
        assert "Pisano refused the token" in result.stdout  # the other checks still ran

        # No SMS was sent: nothing reached either delivery log.
        assert not log_a.exists() or log_a.read_text() == ""
        assert not log_b.exists() or log_b.read_text() == ""
        # Every request took a slot of the shared limiter (default and retail share the token, so
        # one budget): two token probes, two controls (the nil campaign, once per destination)
        # and four campaigns.
        meta = redis_client.hgetall(f"{{pisano-sms:rl:{token_fingerprint(GOOD)}}}:meta")
        assert int(meta[b"seq"]) == 8, meta

        # Only the campaigns that are ready: exit 0.
        destinations["retail"]["campaigns"] = [C_OK]
        del destinations["second"]
        fixed = pisano_sms("check", "--campaigns", env={**env, "DESTINATIONS": json.dumps(destinations)})
        assert fixed.returncode == 0, fixed.stdout + fixed.stderr
        assert set(lines_of(fixed.stdout)) == {C_OK, C_ROUTED}
        assert "cannot be listed" not in fixed.stdout  # this mapping takes campaigns from its routes only


def test_a_destination_that_validates_the_body_first_proves_no_campaign(
        stack: Stack, new_topic: Callable[..., str], tmp_path: Path) -> None:
    """A Pisano that answers the empty request with a validation code whatever the campaign (here
    a simulator that takes every campaign id, the nil one too) cannot prove a campaign exists:
    the preflight says so instead of passing it."""
    log = tmp_path / "deliveries.jsonl"
    config = SimulatorConfig(tokens=frozenset({GOOD}), any_campaign=True, rate_limits=(), delivery_log_path=log)
    with SimulatorServer(config) as sim:
        env = base_env(stack, KAFKA_TOPICS=new_topic(), DLQ_TOPIC=new_topic("dlq"), PISANO_URL=sim.url,
                       PISANO_API_TOKEN=GOOD, PISANO_RATE_LIMITS="off")
        result = pisano_sms("check", "--campaigns", "--campaign", C_OK, env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    line = lines_of(result.stdout)[C_OK]
    assert "failed" in line and "unproven" in line and "nil campaign id" in line, line
    assert not log.exists() or log.read_text() == ""

"""The documented commands against the real stack: demo, check, simulate."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from consumer.simulator import SimulatorConfig, SimulatorServer
from tests.conftest import Stack
from tests.support.consumers import ROOT, free_port, wait_until

CAMPAIGN = "ae51458c-9e82-417f-8f1d-e074891ea5c1"


def pisano_sms(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "consumer", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, check=False)


def base_env(stack: Stack, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "PISANO_", "REDIS_"))}
    env.update(KAFKA_BOOTSTRAP_SERVERS=stack.bootstrap, REDIS_URL=stack.redis_url, PISANO_ALLOW_INSECURE="true",
               **extra)
    return env


def test_demo_runs_end_to_end(stack: Stack) -> None:
    result = pisano_sms("demo", "--events", "1500", env=base_env(stack))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Every transaction was delivered exactly once" in result.stdout
    # 1,500 transactions, of which 8 customers opted out and 8 records are three days old.
    assert "recipients delivered     1,484" in result.stdout
    assert re.search(r"suppressed +(8|9|1[0-6]) ", result.stdout)  # 8 customers, and any duplicates of theirs
    assert "expired                      8" in result.stdout
    receipts = next(line for line in result.stdout.splitlines() if line.strip().startswith("receipts"))
    assert "accepted 1,484" in receipts and "expired 8" in receipts and "suppressed" in receipts
    assert "cooldown 8" in receipts
    assert "Every record has exactly one receipt" in result.stdout
    # 8 customers made a second transaction for another campaign: one survey each, the other cooled.
    assert "cooldown                     8   a second survey within CONTACT_COOLDOWN=30d" in result.stdout
    assert "of 8 customers with two transactions, 8 surveyed once, 0 not once" in result.stdout


@pytest.fixture
def simulator():  # type: ignore[no-untyped-def]
    with SimulatorServer(SimulatorConfig(tokens=frozenset({"good-token"}), campaigns=frozenset({CAMPAIGN}),
                                         rate_limits=())) as server:
        yield server


def test_check_reports_each_dependency(stack: Stack, new_topic: Callable[..., str],
                                       simulator: SimulatorServer, tmp_path: Path) -> None:
    topic, dlq = new_topic(), new_topic("dlq")
    env = base_env(stack, KAFKA_TOPICS=topic, DLQ_TOPIC=dlq, PISANO_URL=simulator.url,
                   PISANO_API_TOKEN="good-token", PISANO_RATE_LIMITS="20/5s")
    good = pisano_sms("check", env=env)
    assert good.returncode == 0, good.stdout + good.stderr
    lines = {line.split()[0]: line for line in good.stdout.splitlines()}
    assert "ok" in lines["kafka"] and "ok" in lines["redis"] and "ok" in lines["pisano"]
    assert "skipped" in lines["registry"]
    # The nil campaign's 404 13002 proves no token: Pisano says the same for any path it does not serve.
    assert "token accepted" not in lines["pisano"] and "the token is not proven" in lines["pisano"]
    proven = pisano_sms("check", "--campaign", CAMPAIGN, env=env)
    assert "token accepted" in {line.split()[0]: line for line in proven.stdout.splitlines()}["pisano"]
    wrong_path = pisano_sms("check", "--campaign", CAMPAIGN, env={**env, "PISANO_URL": simulator.url + "/api"})
    assert wrong_path.returncode == 1 and "token accepted" not in wrong_path.stdout
    assert "PISANO_URL's path '/api'" in wrong_path.stdout
    assert "no opt-out list (SUPPRESSION_KEY not set)" in lines["config"]

    no_external_id = tmp_path / "mapping.yaml"
    no_external_id.write_text("event_id: event_id\nphone: customer.phone\ncampaign_id: campaign_id\n")
    warned = pisano_sms("check", env={**env, "MAPPING_FILE": str(no_external_id)})
    assert "WARNING (mapping): the mapping sends no `external_id`" in warned.stdout

    wrong = pisano_sms("check", env={**env, "PISANO_API_TOKEN": "wrong-token"})
    assert wrong.returncode == 1
    assert "refused the token" in wrong.stdout and "wrong-token" not in wrong.stdout

    missing = pisano_sms("check", env={**env, "KAFKA_TOPICS": "no-such-topic-xyz"})
    assert missing.returncode == 1 and "no-such-topic-xyz do not exist" in missing.stdout

    no_receipts = pisano_sms("check", env={**env, "OUTCOME_TOPIC": "no-receipts-xyz",
                                           "OUTCOME_PHONE_SALT": "a-salt-of-sixteen-characters"})
    assert no_receipts.returncode == 1 and "no-receipts-xyz do not exist" in no_receipts.stdout

    no_redis = pisano_sms("check", env={**env, "REDIS_URL": "redis://127.0.0.1:1/0"}, timeout=60)
    assert no_redis.returncode == 1
    assert any(line.startswith("redis") and "failed" in line for line in no_redis.stdout.splitlines())


def test_simulate_serves_over_http_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "deliveries.jsonl"
    env = {**os.environ, "PISANO_API_TOKEN": "sim-token", "PISANO_RATE_LIMITS": "2/1s"}
    process = subprocess.Popen([sys.executable, "-m", "consumer", "simulate", "--port", str(port),
                                "--campaign", CAMPAIGN, "--delivery-log", str(log)], env=env, cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _answers(f"{url}/_sim/healthz"), 20, "simulator up")
        post = lambda token: httpx.post(  # noqa: E731
            f"{url}/v1/sms_campaigns/{CAMPAIGN}/sms_sharings", json={"phone_numbers": ["+905321234567"]},
            headers={"Authorization": f"Token token={token}"})
        assert post("sim-token").status_code == 200
        assert post("nope").json()["code"] == 13001
        statuses = [post("sim-token").status_code for _ in range(3)]
        assert statuses.count(429) >= 2  # 2/1s from PISANO_RATE_LIMITS, one already used
        assert log.read_text().count("+905321234567") == 2
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)
    assert "sim-token" not in output


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_run_refuses_a_claim_lease_shorter_than_a_request(stack: Stack) -> None:
    # A lease of 1 s would expire while a 30 s request is under way: another replica could then
    # take the event (a replay would send it a second time). Refused at start, naming the setting.
    env = base_env(stack, KAFKA_TOPICS="t", PISANO_URL="http://127.0.0.1:9", PISANO_API_TOKEN="x",
                   DEDUP_CLAIM_LEASE_MS="1000")
    result = pisano_sms("run", env=env, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "DEDUP_CLAIM_LEASE_MS=1000" in result.stderr and "at least 45000" in result.stderr

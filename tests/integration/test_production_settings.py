"""A run with the settings of a secured production deployment: Kafka over SASL_SSL with SCRAM,
Redis over TLS with an ACL user and password, Pisano over HTTPS with a private CA, the token from
a mounted file. While it runs, /metrics is scraped and its counters are checked against the
simulator's delivery log and the dead-letter topic; afterwards the logs are searched for every
secret and every phone number (ARCHITECTURE.md invariant 6)."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
import pytest

from consumer.simulator import SimulatorConfig, SimulatorServer, Tls
from tests.conftest import Stack, localstack, unique
from tests.support.consumers import ROOT, ConsumerProcess, consumer_env, wait_until
from tests.support.kafka import all_committed, end_offsets, headers_of, produce, read_all
from tests.support.scenario import delivered_phones, mixed_traffic

TOKEN = "prod-token-7f3a9c2e51d04b8a"


def secured_env(stack: Stack, tmp_path: Path, **base: str) -> dict[str, str]:
    values = localstack.settings()
    ca = str(Path(values["PISANO_STACK_TLS_DIR"]) / "ca.pem")
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    redis_tls = values["PISANO_STACK_REDIS_TLS_URL"].replace(
        "rediss://", f"rediss://{values['PISANO_STACK_REDIS_ACL_USER']}:{values['PISANO_STACK_REDIS_ACL_PASSWORD']}@")
    env = {**base}
    env.pop("PISANO_API_TOKEN", None)
    env.pop("PISANO_ALLOW_INSECURE", None)  # production: HTTPS with verification, nothing allowed
    env.update({
        "KAFKA_BOOTSTRAP_SERVERS": values["PISANO_STACK_KAFKA_SASL_BOOTSTRAP"],
        "KAFKA_CONFIG_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_CONFIG_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_CONFIG_SASL_USERNAME": values["PISANO_STACK_KAFKA_SASL_USER"],
        "KAFKA_CONFIG_SASL_PASSWORD": values["PISANO_STACK_KAFKA_SASL_PASSWORD"],
        "KAFKA_CONFIG_SSL_CA_LOCATION": ca,
        "REDIS_URL": f"{redis_tls}?ssl_ca_certs={ca}",
        "PISANO_API_TOKEN_FILE": str(token_file),
        "PISANO_CA_FILE": ca,
        "LOG_LEVEL": "DEBUG",
    })
    return env


def metrics_by_label(replica: ConsumerProcess, name: str, label: str) -> Counter[str]:
    out: Counter[str] = Counter()
    for key, value in replica.metrics().items():
        if key.startswith(name + "{"):
            labels = dict(part.split("=", 1) for part in key[len(name) + 1:-1].split(","))
            out[labels[label]] += int(value)
    return out


@pytest.mark.slow
def test_secured_run_metrics_match_and_logs_keep_secrets(local_stack: Stack, new_topic, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                          redis_client, processes) -> None:  # type: ignore[no-untyped-def]
    stack = local_stack
    tls_dir = Path(localstack.settings()["PISANO_STACK_TLS_DIR"])
    topic, dlq, group = new_topic(partitions=3), new_topic("dlq"), unique("g")
    traffic = mixed_traffic(3000, duplicate_every=10, invalid_every=30, prefix=unique("p"))
    produce(stack.bootstrap, topic, traffic.records)
    log = tmp_path / "deliveries.jsonl"
    config = SimulatorConfig(tokens=frozenset({TOKEN}), any_campaign=True, rate_limits=(), delivery_log_path=log)
    with SimulatorServer(config, tls=Tls(tls_dir / "server.crt", tls_dir / "server.key")) as simulator:
        assert simulator.url.startswith("https://")
        env = secured_env(stack, tmp_path, **consumer_env(
            bootstrap=stack.bootstrap, redis_url=stack.redis_url, topic=topic, dlq=dlq, group=group,
            pisano_url=simulator.url, token=TOKEN, BATCH_MAX_RECIPIENTS=400))
        replica = ConsumerProcess(env, tmp_path / "consumer.log").start()
        processes.append(replica)
        replica.wait_ready()
        mid_run = replica.metric("pisano_sms_events_consumed_total")
        ends = end_offsets(stack.bootstrap, topic)
        wait_until(lambda: all_committed(stack.bootstrap, group, topic, ends), 120, "every record has an outcome")
        wait_until(lambda: replica.metric("pisano_sms_dead_letters_total") == sum(traffic.invalid.values()), 10,
                   "dead-letter acknowledgements counted")

        # The counters agree with what Pisano (the simulator) and the dead-letter topic hold.
        trust = ssl.create_default_context(cafile=str(tls_dir / "ca.pem"))
        requests = httpx.get(f"{simulator.url}/_sim/requests", verify=trust).json()
        delivered = delivered_phones(log)
        dead = read_all(stack.bootstrap, dlq, expected=sum(traffic.invalid.values()))
        assert replica.metric("pisano_sms_events_consumed_total") == len(traffic.records) >= mid_run
        # The valid records of this traffic are E.164: the native core decodes and maps them (README,
        # "Decoding and mapping natively"); the rest went through Python.
        assert 0 < replica.metric("pisano_sms_events_mapped_natively_total") \
            <= replica.metric("pisano_sms_events_decoded_total")
        assert replica.metric("pisano_sms_recipients_delivered_total") == sum(delivered.values()) == \
            len(traffic.valid_phones)
        assert replica.metric("pisano_sms_duplicates_skipped_total") == traffic.duplicates
        assert metrics_by_label(replica, "pisano_sms_dead_letters_total", "reason") == \
            Counter(headers_of(m)["dlq.reason"] for m in dead) == traffic.invalid
        assert metrics_by_label(replica, "pisano_sms_requests_total", "status") == \
            Counter(str(r["http_status"]) for r in requests)
        assert replica.metric("pisano_sms_batch_size_count") == len(requests)
        assert replica.metric("pisano_sms_end_to_end_latency_seconds_count") == len(traffic.valid_phones)

        check = subprocess.run([sys.executable, "-m", "consumer", "check"], env=env, cwd=ROOT, capture_output=True,
                               text=True, timeout=120, check=False)
        assert check.returncode == 0, check.stdout + check.stderr
        assert replica.terminate() == 0

    # Nothing secret and no phone number in any log line, in any form.
    secrets = [TOKEN, env["KAFKA_CONFIG_SASL_PASSWORD"], localstack.settings()["PISANO_STACK_REDIS_ACL_PASSWORD"]]
    logs = replica.log_text() + check.stdout + check.stderr
    assert "DEBUG" in logs  # the most talkative level was on
    for secret in secrets:
        assert secret not in logs
    phones = traffic.valid_phones | {p for p in delivered}
    digits = {p.lstrip("+") for p in phones} | {"0" + p[3:] for p in phones}  # 905321234567, 05321234567
    leaked = [p for p in phones | digits if p in logs]
    assert leaked == []
    assert os.path.getsize(tmp_path / "consumer.log") > 1000

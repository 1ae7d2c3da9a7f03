"""Kafka settings librdkafka refuses stop `run` with one line naming them, exit 2, as any other
setting that cannot work (found in the eleventh session's note: `max.poll.interval.ms` below
`session.timeout.ms` ended `run` with a traceback, or with "Kafka failed fatally ... its restart
begins with new Kafka clients", advice that only restarts it into the same refusal)."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from consumer.app import build_pipeline
from consumer.cli import main
from consumer.config.settings import Settings
from consumer.errors import ConfigError
from consumer.operations.check import run_checks
from consumer.operations.health import Health
from consumer.operations.metrics import Metrics
from tests.support.offline_build import stand_in_state


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """`build_pipeline` on a stand-in Redis and registry; the Kafka clients are librdkafka's own
    (none connects before it is created: the refusals below come first)."""
    stand_in_state(monkeypatch)


def build(**kafka: Any) -> None:
    settings = Settings(kafka_topics=["t"], kafka_bootstrap_servers="127.0.0.1:1", pisano_url="https://pisano.invalid",
                        pisano_api_token="tok-123456789", kafka=kafka)
    build_pipeline(settings, Metrics(), Health())


def test_a_consumer_setting_librdkafka_refuses_is_a_config_error_naming_it(offline: None) -> None:
    with pytest.raises(ConfigError) as refused:
        build(**{"max.poll.interval.ms": 1000, "session.timeout.ms": 10_000})
    message = str(refused.value)
    assert "max.poll.interval.ms" in message and "session.timeout.ms" in message, message
    assert "KAFKA_CONFIG_<PROPERTY>" in message and "kafka:" in message, message


def test_a_producer_setting_librdkafka_refuses_is_a_config_error_naming_it(offline: None) -> None:
    with pytest.raises(ConfigError) as refused:
        build(**{"security.protocol": "bogus"})
    assert "security.protocol" in str(refused.value), refused.value


def test_a_tls_file_librdkafka_cannot_read_is_a_config_error(offline: None, tmp_path: Any) -> None:
    with pytest.raises(ConfigError) as refused:
        build(**{"security.protocol": "ssl", "ssl.ca.location": str(tmp_path / "missing-ca.pem")})
    assert "ssl.ca.location" in str(refused.value), refused.value


def test_run_refused_by_librdkafka_exits_2_with_one_line(offline: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_TOPICS", "t")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("PISANO_URL", "https://pisano.invalid")
    monkeypatch.setenv("PISANO_API_TOKEN", "tok-123456789")
    monkeypatch.setenv("KAFKA_CONFIG_MAX_POLL_INTERVAL_MS", "1000")
    monkeypatch.setenv("KAFKA_CONFIG_SESSION_TIMEOUT_MS", "10000")
    monkeypatch.setenv("HTTP_PORT", "0")
    result = CliRunner().invoke(main, ["run"])
    assert result.exit_code == 2, (result.output, result.exc_info)
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    assert "max.poll.interval.ms" in result.output, result.output


def test_check_says_run_would_refuse_the_settings() -> None:
    settings = Settings(kafka_topics=["t"], kafka_bootstrap_servers="127.0.0.1:1", pisano_url="https://pisano.invalid",
                        pisano_api_token="tok-123456789", kafka={"security.protocol": "bogus"})
    kafka = next(result for result in run_checks(settings) if result.name == "kafka")  # the checks after it not run
    assert kafka.status == "failed" and kafka.refuses_start, kafka
    assert "security.protocol" in kafka.detail, kafka

from pathlib import Path

import pytest
from click.testing import CliRunner

from consumer.cli import main


def test_help_lists_the_commands() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in ("run", "check"):
        assert command in result.output


def test_malformed_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("PISANO_RATE_LIMITS: 20 per 5\n")
    result = CliRunner().invoke(main, ["run", "--config", str(config)])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1
    assert "PISANO_RATE_LIMITS='20 per 5'" in result.output and "Traceback" not in result.output


def test_group_level_config_applies(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("batch_max_recipients: 0\n")
    result = CliRunner().invoke(main, ["--config", str(config), "check"])
    assert result.exit_code == 2 and "BATCH_MAX_RECIPIENTS=0" in result.output


def test_run_without_required_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KAFKA_TOPICS", "PISANO_URL", "PISANO_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(main, ["run"])
    assert result.exit_code == 2
    assert "missing setting(s): KAFKA_TOPICS, PISANO_URL" in result.output


def _run_with(monkeypatch: pytest.MonkeyPatch, pipeline: object, **env: str):  # type: ignore[no-untyped-def]
    """`pisano-sms run` with `pipeline` for the poll loop, nothing started beside it."""
    import consumer.app

    class Probe:
        def start(self) -> None: ...

        def stop(self) -> None: ...

    monkeypatch.setattr(consumer.app, "build_pipeline", lambda settings, metrics, health: (pipeline, Probe()))
    for name, value in {"KAFKA_TOPICS": "t", "PISANO_URL": "https://pisano.invalid",
                        "PISANO_API_TOKEN": "a-token-of-some-length", "HTTP_PORT": "0", **env}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr("signal.signal", lambda *args: None)
    monkeypatch.setattr("consumer.operations.gil.hand_over_less_often", lambda: None)
    monkeypatch.setattr("consumer.operations.collector.tune_for_throughput", lambda: None)
    return CliRunner().invoke(main, ["run"])


def test_run_ends_on_a_fatal_kafka_error_with_one_line_and_exit_1(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fatal producer error ends the poll loop (consumer/outcomes/producer_fatal.py): the
    process exits 1 with one line saying what happened and what follows, not a traceback."""
    from confluent_kafka import KafkaError, KafkaException

    class Failing:
        def run(self) -> None:
            raise KafkaException(KafkaError(KafkaError._FATAL, "Fatal error: old epoch"))

    result = _run_with(monkeypatch, Failing())
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert "Kafka failed fatally (Fatal error: old epoch)" in result.output
    assert "restart" in result.output


def test_run_warns_at_start_of_a_send_window_closed_longer_than_max_event_age(monkeypatch: pytest.MonkeyPatch) -> None:
    """`check` said it; `run`, what the operator's log shows, said nothing: the night's events
    expired unsent with no word at start."""

    class Done:
        def run(self) -> None: ...

    result = _run_with(monkeypatch, Done(), SEND_WINDOW="09:00-21:00 Europe/Istanbul", MAX_EVENT_AGE="2h",
                       LOG_FORMAT="text")
    assert result.exit_code == 0, result.output
    assert "longer than MAX_EVENT_AGE" in result.output

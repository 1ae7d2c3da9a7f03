"""`check`'s reading of the settings outside the project that decide whether an event survives
(consumer/operations/durability.py): topic retention and compaction, the brokers' offsets
retention, Redis's AOF. The Kafka side against a real broker: tests/integration/test_check_durability.py."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from confluent_kafka import KafkaException

from consumer.operations.durability import offsets_warning, persistence_warning, topic_warnings

MINUTE, HOUR, DAY = 60_000, 3_600_000, 86_400_000
KAFKA_DEFAULTS = {"cleanup.policy": "delete", "retention.ms": str(7 * DAY), "retention.bytes": "-1"}


def warnings(configs: dict[str, dict[str, str]], held_ms: int = 15 * MINUTE, stale_ms: int = 6 * DAY) -> list[str]:
    return topic_warnings(configs, ["events"], "dlq", held_ms=held_ms, stale_ms=stale_ms)


def test_kafkas_defaults_raise_no_warning_with_the_projects_defaults() -> None:
    # Seven days' retention against 15 minutes uncommitted (STUCK_RECORD_MS) and a 6-day stale limit.
    assert warnings({"events": KAFKA_DEFAULTS, "dlq": KAFKA_DEFAULTS}) == []
    assert warnings({"events": {**KAFKA_DEFAULTS, "retention.ms": "-1"}, "dlq": {"retention.ms": "-1"}}) == []
    assert warnings({}) == []  # a topic Kafka did not describe: nothing claimed about it


def test_a_compacted_input_topic_may_delete_an_event_before_it_is_read() -> None:
    found = warnings({"events": {**KAFKA_DEFAULTS, "cleanup.policy": "compact,delete"}})
    assert len(found) == 1
    assert "topic events is compacted (cleanup.policy=compact,delete)" in found[0]
    assert "set cleanup.policy=delete" in found[0]


def test_an_input_topic_kept_less_than_a_record_may_wait_uncommitted() -> None:
    # A window closed 12 h plus STUCK_RECORD_MS: a topic kept 6 h deletes what waits for the morning.
    found = warnings({"events": {**KAFKA_DEFAULTS, "retention.ms": str(6 * HOUR)}}, held_ms=12 * HOUR + 15 * MINUTE)
    assert len(found) == 1
    assert "keeps records 6h (retention.ms), less than a record may wait uncommitted (12h 15m" in found[0]
    assert warnings({"events": {**KAFKA_DEFAULTS, "retention.ms": str(13 * HOUR)}}, held_ms=12 * HOUR) == []


def test_a_size_limit_is_said_since_no_duration_compares_with_it() -> None:
    found = warnings({"events": {**KAFKA_DEFAULTS, "retention.bytes": "1073741824"}})
    assert len(found) == 1 and "retention.bytes=1073741824" in found[0]


def test_the_dlq_compacted_or_kept_less_than_the_stale_limit() -> None:
    found = warnings({"dlq": {**KAFKA_DEFAULTS, "cleanup.policy": "compact"}})
    assert len(found) == 1 and "DLQ dlq is compacted" in found[0]
    found = warnings({"dlq": {**KAFKA_DEFAULTS, "retention.ms": str(DAY)}})
    assert len(found) == 1
    assert "DLQ dlq keeps dead letters 1d (retention.ms), less than the stale limit (6d" in found[0]
    # The DLQ's size limit is its own business: a dead letter is written once, never held back.
    assert warnings({"dlq": {**KAFKA_DEFAULTS, "retention.bytes": "1000"}}) == []


def test_a_config_value_kafka_gives_as_something_else_is_not_a_number_claimed() -> None:
    assert warnings({"events": {"retention.ms": "soon"}, "dlq": {"retention.ms": ""}}) == []


def test_offsets_kept_less_than_the_dedup_horizon() -> None:
    horizon_s = 7 * 86_400
    assert offsets_warning("10080", horizon_s) is None  # Kafka's default, 7 days: exactly the horizon
    assert offsets_warning("-1", horizon_s) is None
    assert offsets_warning(None, horizon_s) is None
    found = offsets_warning("1440", horizon_s)
    assert found is not None
    assert "1d after it empties (offsets.retention.minutes), less than DEDUP_HORIZON_S (7d)" in found


class Info:
    def __init__(self, answer: Any) -> None:
        self.answer = answer

    def info(self, section: str) -> Any:
        assert section == "persistence"
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def test_redis_without_aof_forgets_delivered_marks_on_restart() -> None:
    assert persistence_warning(Info({"aof_enabled": 1, "loading": 0})) is None
    found = persistence_warning(Info({"aof_enabled": 0}))
    assert found is not None and "without AOF (appendonly no)" in found and "appendonly yes" in found
    # A cluster client answers per node: one node without AOF is enough to lose marks.
    assert persistence_warning(Info({"10.0.0.1:6379": {"aof_enabled": 1}, "10.0.0.2:6379": {"aof_enabled": 0}}))
    assert persistence_warning(Info({"10.0.0.1:6379": {"aof_enabled": 1}})) is None
    # A server that does not say (a proxy, a managed service's own INFO) is unchecked, never silence.
    for silent in ({"loading": 0}, {}, {"10.0.0.1:6379": {"aof_enabled": 1}, "10.0.0.2:6379": {"loading": 0}}):
        found = persistence_warning(Info(silent))
        assert found is not None and "unchecked (INFO persistence does not say aof_enabled)" in found


def test_a_user_denied_info_is_told_to_check_it_and_an_outage_is_raised() -> None:
    refusal = redis.ResponseError("NOPERM this user has no permissions to run the 'info' command")
    denied = persistence_warning(Info(refusal))
    assert denied is not None and "unchecked (INFO denied)" in denied
    with pytest.raises(redis.ConnectionError):
        persistence_warning(Info(redis.ConnectionError("refused")))


def test_longest_uncommitted_is_the_longest_closed_window_plus_stuck_record_ms(monkeypatch: pytest.MonkeyPatch) -> None:
    from consumer.config.settings import Settings

    for key in ("SEND_WINDOW", "CAMPAIGN_SEND_WINDOWS", "STUCK_RECORD_MS", "DESTINATIONS"):
        monkeypatch.delenv(key, raising=False)
    plain = Settings(pisano_url="https://api.pisano.co", pisano_api_token="t" * 20)
    assert plain.longest_uncommitted_ms() == 15 * MINUTE
    windowed = Settings(pisano_url="https://api.pisano.co", pisano_api_token="t" * 20,
                        send_window="09:00-21:00 UTC", campaign_send_windows={"c-1": "09:00-10:00 UTC"})
    assert windowed.longest_uncommitted_ms() == 23 * HOUR + 15 * MINUTE


class _Future:
    def __init__(self, failure: BaseException) -> None:
        self.failure = failure

    def result(self, timeout: float | None = None) -> Any:
        raise self.failure


class _Admin:
    """An AdminClient whose describe_configs futures fail with `failure`."""

    def __init__(self, failure: BaseException) -> None:
        self.failure = failure

    def describe_configs(self, resources: list[Any], request_timeout: float | None = None) -> dict[Any, _Future]:
        return {resource: _Future(self.failure) for resource in resources}


@pytest.mark.parametrize("failure", [
    TimeoutError(),  # concurrent.futures' own: the future's result(timeout) ran out before librdkafka's
    ValueError("a config entry the client could not read"),
    RuntimeError("KafkaError{code=_TRANSPORT} without a KafkaError in its args"),
    KafkaException("a KafkaException whose argument is no KafkaError"),  # `.str()` on it: AttributeError
])
def test_a_describe_configs_that_fails_otherwise_than_kafka_leaves_retention_unchecked_not_check_crashed(
        monkeypatch: pytest.MonkeyPatch, failure: BaseException) -> None:
    """Review: `_retention` caught KafkaException alone, and `check`'s guard only PisanoSmsError: a
    describe that timed out on the Python side (the future's 10 s against librdkafka's own 10 s), or
    failed any other way, ended `pisano-sms check` with a traceback instead of its report. Retention
    is a warning: unchecked, said so, and the other checks run."""
    from consumer.config.settings import Settings
    from consumer.operations import check

    monkeypatch.setattr(check, "make_admin", lambda settings: _Admin(failure))
    settings = Settings(pisano_url="https://api.pisano.co", pisano_api_token="t" * 20, kafka_topics=["events"])
    said = check._retention(settings, 1)
    assert said.startswith("; retention unchecked (") and "DescribeConfigs" in said
    assert type(failure).__name__ in said

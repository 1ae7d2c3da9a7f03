"""`extra` values the formatters redact by their key (review of the sixth): a phone passed as a
plain int, and a time under a key named for one (`created_at`), which the redaction of a text reads
by the name before it, and an `extra` value has no name in its text."""

from __future__ import annotations

import json
import logging

import pytest

from consumer.operations.logs import JsonFormatter, TextFormatter


def _fields(**extra: object) -> dict[str, object]:
    record = logging.LogRecord("t", logging.WARNING, "", 0, "sent", None, None)
    record.__dict__.update(extra)
    return dict(json.loads(JsonFormatter().format(record)))


@pytest.mark.parametrize(("key", "value"), [("phone", 905321234567), ("to", 5321234567), ("msisdn", -905321234567),
                                            ("recipient", 3125550123)])
def test_a_phone_passed_as_an_int_is_redacted(key: str, value: int) -> None:
    shown = _fields(**{key: value})[key]
    assert isinstance(shown, str) and str(abs(value))[2:-2] not in shown, shown


@pytest.mark.parametrize(("key", "value"), [
    ("offset", 88123412345), ("partition", 3), ("count", 12000000), ("wait_ms", 86400000), ("batch_bytes", 104857600),
    ("consumer_lag", 9000000), ("retries", 3), ("campaign", 4711), ("code", 13028)])
def test_a_count_or_a_position_stays_a_number(key: str, value: int) -> None:
    assert _fields(**{key: value})[key] == value


@pytest.mark.parametrize(("key", "value"), [("created_at", 1764902400000), ("created_at", "1764902400000"),
                                            ("sentAt", 1764902400000), ("ts_ms", 1764902400000),
                                            ("event_date", "2026-12-05"), ("expires_at", "2026-12-05")])
def test_a_time_under_a_key_named_for_one_stays_readable(key: str, value: object) -> None:
    assert _fields(**{key: value})[key] == value


@pytest.mark.parametrize(("key", "value"), [("created_at", "0532 123 45 67"), ("created_at", 905321234567),
                                            ("created_at", "1764902400000 to +905321234567"), ("format", 1764902400000),
                                            ("sent_at", "redis://u:pw-1@h")])
def test_what_is_no_time_under_a_time_key_is_redacted(key: str, value: object) -> None:
    shown = str(_fields(**{key: value})[key])
    assert "5321234567" not in shown.replace(" ", "") and "pw-1" not in shown and shown != str(value), shown


def test_the_text_formatter_redacts_an_int_phone_in_a_context_field() -> None:
    record = logging.LogRecord("t", logging.WARNING, "", 0, "sent", None, None)
    record.__dict__.update({"reason": 905321234567, "offset": 88123412345})
    line = TextFormatter().format(record)
    assert "5321234567" not in line and "offset=88123412345" in line, line


@pytest.mark.parametrize(("key", "value"), [("phone", 905321234567.0), ("to", 5321234567.0),
                                            ("msisdn", -9.05321234567e11), ("created_at", 905321234567.0)])
def test_a_phone_passed_as_a_float_is_redacted(key: str, value: float) -> None:
    """Review of the seventh: an int as long as a phone was redacted, a float of it passed as it came
    (a number parsed as a double: `905321234567.0`)."""
    shown = _fields(**{key: value})[key]
    assert isinstance(shown, str) and "53212345" not in shown, shown


@pytest.mark.parametrize(("key", "value"), [("offset", 88123412345.0), ("wait_ms", 86400000.0), ("ratio", 0.25),
                                            ("elapsed", 12.5), ("x", float("inf"))])
def test_a_float_under_a_number_key_or_short_stays_a_number(key: str, value: float) -> None:
    assert _fields(**{key: value})[key] == value

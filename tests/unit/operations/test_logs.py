import logging

from consumer.operations.logs import LogBudget, RepeatFilter, mask_phone, redact_phones


def test_mask_phone_keeps_country_code_and_two_digits() -> None:
    assert mask_phone("+905321234567") == "+90********67"
    assert mask_phone("05321234567") == "0********67"


def test_redact_phones_in_text_from_outside() -> None:
    text = redact_phones("phone_numbers[3] +905321234567 invalid; '0532 123 45 67' too; code 13028")
    assert "5321234567" not in text and "123 45" not in text
    assert "phone_numbers[3]" in text and "13028" in text


def test_log_budget_counts_what_it_holds_back(caplog) -> None:  # type: ignore[no-untyped-def]
    budget = LogBudget(per_window=2, window_s=0.0)
    assert [budget.allow("decode_error") for _ in range(4)] == [True, True, False, False]
    with caplog.at_level(logging.WARNING):
        budget.roll(logging.getLogger("t"))
    assert "2 more like that (decode_error)" in caplog.text
    assert budget.allow("decode_error")


def test_repeat_filter_treats_numbers_as_the_same_message() -> None:
    repeat = RepeatFilter(per_window=1, window_s=60)
    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord("librdkafka", logging.ERROR, "", 0, msg, None, None)
    assert repeat.filter(record("FAIL [rdkafka#consumer-2] Connect to 127.0.0.1:19092 failed (after 3ms)"))
    assert not repeat.filter(record("FAIL [rdkafka#consumer-7] Connect to 127.0.0.1:19092 failed (after 90ms)"))
    assert repeat.filter(record("something else"))


def test_formatters_redact_phones_and_url_credentials_whatever_the_call_site() -> None:
    from consumer.operations.logs import JsonFormatter, TextFormatter

    try:
        raise ValueError("mapper choked on 0532.123.45.67 at https://u:pw-77@host/x")
    except ValueError:
        import sys
        record = logging.LogRecord("t", logging.ERROR, "", 0, "failed for %s via %s", ("905321234567x",
                                   "redis://h/0?password=pw-88"), sys.exc_info())
    for formatter in (JsonFormatter(), TextFormatter()):
        line = formatter.format(record)
        for leaked in ("5321234567", "123.45.67", "pw-77", "pw-88"):
            assert leaked not in line, line


class _Echo:
    """A value whose text quotes a record (a Pisano message object, a record's value)."""

    def __str__(self) -> str:
        return "to=0532 123 45 67 via https://u:pw-99@host/x"


def test_formatters_redact_the_extra_fields_whatever_the_call_site() -> None:
    """Found in review: the JSON formatter wrote every `extra` field as given and the text one its
    context fields, so a call site passing Pisano's message, an exception or a record value in
    `extra` put phones and URL passwords in clear. Numbers stay JSON numbers (offsets, counts)."""
    import json

    from consumer.operations.logs import JsonFormatter, TextFormatter

    record = logging.LogRecord("t", logging.WARNING, "", 0, "dead-lettering", None, None)
    record.__dict__.update({"reason": "Invalid phone +905321234567", "campaign": _Echo(),
                            "detail": ["0532.123.45.67"], "topic": "redis://h/0?password=pw-88",
                            "offset": 12345678, "partition": 3, "wait_ms": 1.5, "attempt": None, "sampled": True})
    for formatter in (JsonFormatter(), TextFormatter()):
        line = formatter.format(record)
        for leaked in ("5321234567", "532 123 45 67", "123.45.67", "pw-99", "pw-88"):
            assert leaked not in line, line
        assert "12345678" in line, line  # an offset is no phone: SREs look records up by it
    fields = json.loads(JsonFormatter().format(record))
    assert (fields["offset"], fields["partition"], fields["wait_ms"], fields["attempt"], fields["sampled"]) == (
        12345678, 3, 1.5, None, True)
    assert fields["reason"] == "Invalid phone +90********67"
    assert "offset=12345678" in TextFormatter().format(record)


def test_our_request_id_stays_readable_in_the_extra_fields() -> None:
    """Found while auditing the call sites: the request id (`uuid.uuid4().hex`, passed in `extra`
    so the message's redaction would not touch it) holds 7 digits in a row about a third of the
    time, and redacting the fields masked it: no request could be traced by its id then. Only the
    key it is logged under, and only in the form we make it, is kept whole."""
    from consumer.operations.logs import JsonFormatter, TextFormatter

    ours = "0123456789ab4def8123456789abcdef"  # uuid4().hex: version 4, variant 8-b
    record = logging.LogRecord("t", logging.INFO, "", 0, "request answered", None, None)
    record.__dict__.update({"request_id": ours, "reason": ours, "pisano_request_id": "05321234567"})
    for formatter in (JsonFormatter(), TextFormatter()):
        line = formatter.format(record)
        assert line.count(ours) == 1 and "5321234567" not in line, line
    record.__dict__["request_id"] = "0532 123 45 67"
    for formatter in (JsonFormatter(), TextFormatter()):
        assert "123 45 67" not in formatter.format(record)
    # Found in review: any 32 hex digits were kept, also ones built from a number (a call site or a
    # library logging someone else's id under the key); a uuid4 holds its version and variant.
    record.__dict__["request_id"] = "00000000000000000000905321234567"
    for formatter in (JsonFormatter(), TextFormatter()):
        assert "5321234567" not in formatter.format(record)


def test_a_kafka_topic_name_stays_readable_in_the_extra_fields() -> None:
    """Found in review: the `topic` field (the broker's name for where a record came from, not the
    record's text) was redacted like a text from outside, so a dated topic (`sms.events-20261204`,
    `sms.v1.2026.12.04`) read as `sms.events******04` in every line about it. A topic name (Kafka's
    characters) with a letter in it stays; anything else is redacted as before."""
    from consumer.operations.logs import JsonFormatter, TextFormatter

    for topic in ("sms.events-20261204", "sms.v1.2026.12.04"):
        record = logging.LogRecord("t", logging.WARNING, "", 0, "dead-lettering", None, None)
        record.__dict__.update({"topic": topic, "offset": 7})
        for formatter in (JsonFormatter(), TextFormatter()):
            assert topic in formatter.format(record)
    for topic in ("905321234567", "0532-123-45-67", "sms 05321234567", "redis://h/0?password=pw-88"):
        record = logging.LogRecord("t", logging.WARNING, "", 0, "dead-lettering", None, None)
        record.__dict__["topic"] = topic
        for formatter in (JsonFormatter(), TextFormatter()):
            line = formatter.format(record)
            assert "5321234567" not in line and "123-45-67" not in line and "pw-88" not in line, line


def test_an_extra_named_as_a_formatter_field_does_not_replace_it() -> None:
    """Found in review (fifth): `extra={"level": ...}` (or `ts`, `logger`, `exc`) overwrote the JSON
    formatter's own field, so a line could claim another time, level or logger, or lose its
    traceback. The formatter's stay; the extra is kept as `extra_<key>`, redacted like any. (`msg`
    cannot come in through `extra`: logging refuses it, a LogRecord attribute of its own.) The text
    format shows only its context fields: the line's time, level and message stay its own."""
    import json
    import sys

    from consumer.operations.logs import JsonFormatter, TextFormatter

    try:
        raise ValueError("real failure")
    except ValueError:
        record = logging.LogRecord("consumer.real", logging.ERROR, "", 0, "dead-lettering", None, sys.exc_info())
    record.__dict__.update({"ts": "1999-01-01T00:00:00Z", "level": "DEBUG", "logger": "forged",
                            "exc": "call +905321234567", "reason": "kept"})
    fields = json.loads(JsonFormatter().format(record))
    assert fields["level"] == "ERROR" and fields["logger"] == "consumer.real"
    assert fields["ts"].startswith(("19", "20")) and fields["ts"] != "1999-01-01T00:00:00Z"
    assert "real failure" in fields["exc"] and fields["msg"] == "dead-lettering"
    assert (fields["extra_ts"], fields["extra_level"], fields["extra_logger"]) == (
        "1999-01-01T00:00:00Z", "DEBUG", "forged")
    assert fields["extra_exc"] == "call +90********67" and fields["reason"] == "kept"
    line = TextFormatter().format(record)
    assert " ERROR   dead-lettering  [reason=kept]" in line and "real failure" in line
    assert "forged" not in line and "DEBUG" not in line
    with_no_exc = logging.LogRecord("t", logging.INFO, "", 0, "m", None, None)
    with_no_exc.__dict__["exc"] = "x"
    assert json.loads(JsonFormatter().format(with_no_exc))["extra_exc"] == "x"  # not only when it would collide


def test_repeat_filter_summary_goes_through_its_own_logger_without_recursing(caplog) -> None:  # type: ignore[no-untyped-def]
    """The filter sits on the logger its window's summary is written to: the summary passed the
    filter, which rolled the window again before it had been reset, without end. Seen as a
    RecursionError out of consume() 30 s after `run` started with Kafka unreachable."""
    logger = logging.getLogger("test.repeat.filter.own.logger")
    repeat = RepeatFilter(per_window=1, window_s=30.0)
    logger.filters[:] = [repeat]
    try:
        with caplog.at_level(logging.WARNING, logger=logger.name):
            for _ in range(3):
                logger.error("FAIL Connect to 127.0.0.1:38099 failed")
            repeat.budget._window_start -= 31  # the window is over
            logger.error("FAIL Connect to 127.0.0.1:38099 failed")
        assert "2 more like that" in caplog.text
        # the first line, then the first of the new window
        assert [r.levelname for r in caplog.records] == ["ERROR", "WARNING", "ERROR"]
    finally:
        logger.filters[:] = []

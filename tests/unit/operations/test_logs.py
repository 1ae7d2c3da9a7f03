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

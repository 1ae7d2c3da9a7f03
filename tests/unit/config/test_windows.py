import pytest

from consumer.config.windows import RateWindow, format_rate_limits, parse_rate_limits


def test_parses_and_sorts_by_period() -> None:
    assert parse_rate_limits("40/25s, 20/5s,3/500ms,2/1m") == (
        RateWindow(3, 500), RateWindow(20, 5000), RateWindow(40, 25000), RateWindow(2, 60000))


def test_round_trip() -> None:
    assert format_rate_limits(parse_rate_limits("20/5s,40/25s")) == "20/5s,40/25s"
    assert format_rate_limits(parse_rate_limits("off")) == "off"


@pytest.mark.parametrize("text", ["20 per 5", "20/5", "0/5s", "20/0s", "20/5s,30/5s", ""])
def test_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rate_limits(text)

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


@pytest.mark.parametrize("text", ["9223372036854775807/5s", "1000001/5s", "20/1441m", "20/90000000s"])
def test_a_window_beyond_what_the_shared_limiter_can_count_is_refused_at_start(text: str) -> None:
    """Before, 99999999999999999999/5s passed the settings and failed in the limiter's Redis script,
    which `check` and every replica reported as 'Redis unreachable for the throttle'."""
    with pytest.raises(ValueError, match="at most"):
        parse_rate_limits(text)


def test_the_largest_window_still_parses() -> None:
    assert [str(w) for w in parse_rate_limits("1000000/1440m")] == ["1000000/86400s"]

"""A send window's longest closed gap, against the stale limit and MAX_EVENT_AGE (contact-policy review).

Found in review: a window open one day a week (`Sat 10:00-14:00`) held every event that arrived
after its closing for 6 days 20 hours, longer than DEDUP_HORIZON_S minus STALE_MARGIN_S (6 days by
default): each ended as a `stale` dead letter, unsent, and was accepted at start without a word.
"""

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from consumer.config.send_window import parse_send_window

HOUR = 3_600_000
DAY = 24 * HOUR
TOKEN = "t" * 32


def at(zone: str, *fields: int) -> int:
    return int(datetime(*fields, tzinfo=ZoneInfo(zone)).timestamp() * 1000)  # type: ignore[misc]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith(("KAFKA_", "PISANO_", "REDIS_", "DEDUP_", "STALE_", "STUCK_", "MAX_EVENT", "SEND_WINDOW",
                           "CAMPAIGN_")):
            monkeypatch.delenv(key)


def test_a_window_open_one_day_a_week_is_refused_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    from consumer.config.loading import load_settings
    from consumer.errors import ConfigError

    monkeypatch.setenv("SEND_WINDOW", "Sat 10:00-14:00 Europe/Istanbul")
    with pytest.raises(ConfigError) as refused:
        load_settings()
    message = str(refused.value)
    for says in ("SEND_WINDOW='Sat 10:00-14:00 Europe/Istanbul'", "closed for up to 6d 20h",
                 "from Sat 14:00 Europe/Istanbul", "stale", "DEDUP_HORIZON_S minus STALE_MARGIN_S (6d)",
                 "STUCK_RECORD_MS (15m)", "at most 5d 23h 45m", "open the window more often"):
        assert says in message, (says, message)


def test_every_window_in_force_is_weighed_campaigns_and_destinations_too() -> None:
    from consumer.config.settings import Settings

    with pytest.raises(ValueError, match=r"CAMPAIGN_SEND_WINDOWS\.c-1='Mon 09:00-21:00 UTC': closed for up to "
                                         r"6d 12h \(from Mon 21:00 UTC\)"):
        Settings(campaign_send_windows={"c-1": "Mon 09:00-21:00 UTC"})
    with pytest.raises(ValueError, match=r"DESTINATIONS\.retail\.send_window='Fri 22:00-02:00 UTC': closed for "
                                         r"up to 6d 20h \(from Sat 02:00 UTC\)"):
        Settings(destinations={"retail": {"url": "https://eu.pisano.co", "api_token": TOKEN,
                                          "send_window": "Fri 22:00-02:00 UTC"}})
    # A destination's window that does not parse is left to consumer/config/destinations.py to name.
    Settings(destinations={"retail": {"url": "https://eu.pisano.co", "api_token": TOKEN, "send_window": "Mon-Fry"}})
    # The weekly gaps of ordinary windows are far inside six days.
    Settings(send_window="Mon-Fri 09:00-21:00; Sat 10:00-14:00 Europe/Istanbul",
             campaign_send_windows={"c-1": "always", "c-2": "Mon,Thu 10:00-11:00 UTC"})


def test_the_limit_is_the_stale_limit_less_stuck_record_ms_to_drain_at_the_opening() -> None:
    from consumer.config.settings import Settings

    # `Mon 09:00-21:00 UTC` is closed 6d 12h at a stretch: 561,600 s.
    week, gap, stuck = 7 * 86_400, 561_600, 900
    accepted = Settings(send_window="Mon 09:00-21:00 UTC", dedup_horizon_s=week,
                        stale_margin_s=week - gap - stuck, stuck_record_ms=stuck * 1000)
    assert accepted.send_window == "Mon 09:00-21:00 UTC"
    with pytest.raises(ValueError, match="closed for up to 6d 12h"):
        Settings(send_window="Mon 09:00-21:00 UTC", dedup_horizon_s=week, stale_margin_s=week - gap - stuck + 1,
                 stuck_record_ms=stuck * 1000)
    # A longer dedup horizon (and the topics' retention with it) lets the weekly window through.
    Settings(send_window="Sat 10:00-14:00 Europe/Istanbul", dedup_horizon_s=8 * 86_400)


@pytest.mark.parametrize(("text", "longest", "starts"), [
    ("always", 0, None),
    ("00:00-24:00 UTC", 0, None),
    ("09:00-21:00 UTC", 12 * HOUR, "21:00 UTC"),  # the same every day: no weekday named
    ("Mon-Fri 09:00-21:00; Sat 10:00-14:00 Europe/Istanbul", 43 * HOUR, "Sat 14:00 Europe/Istanbul"),
    ("Fri 22:00-02:00 UTC", 6 * DAY + 20 * HOUR, "Sat 02:00 UTC"),
    ("Mon 00:00-24:00; Tue 00:00-24:00 UTC", 5 * DAY, "Wed 00:00 UTC"),  # Monday and Tuesday are one opening
    ("Mon-Sun 00:00-00:01 Pacific/Kiritimati", DAY - 60_000, "00:01 Pacific/Kiritimati"),
])
def test_the_longest_closed_gap_over_a_week(text: str, longest: int, starts: str | None) -> None:
    window = parse_send_window(text)
    gap, start = window.longest_closed(at("UTC", 2026, 6, 1))
    assert gap == longest
    assert (None if start is None else window.local_time(start)) == starts


def test_daylight_saving_time_lengthens_a_gap_by_its_hour_in_real_time() -> None:
    # Berlin goes back an hour on the last Sunday of October at 03:00: the gap from Sunday 10:00 to
    # the next Sunday 09:00 that spans it lasts 7 days of real time, not 6 days 23 hours.
    assert parse_send_window("Sun 09:00-10:00 UTC").longest_closed(at("UTC", 2026, 6, 1))[0] == 6 * DAY + 23 * HOUR
    gap, start = parse_send_window("Sun 09:00-10:00 Europe/Berlin").longest_closed(at("UTC", 2026, 6, 1))
    assert gap == 7 * DAY
    assert start == at("Europe/Berlin", 2026, 10, 18, 10, 0)
    # A window inside the hour skipped in spring never opens that week: the gap is two weeks, less
    # the skipped hour. A flat hour of margin would not see it; the year's transitions do.
    gap, start = parse_send_window("Sun 02:00-03:00 Europe/Berlin").longest_closed(at("UTC", 2026, 12, 1))
    assert gap == 14 * DAY - 2 * HOUR
    assert start == at("UTC", 2027, 3, 21, 2, 0)


def test_a_gap_longer_than_max_event_age_is_a_warning_not_a_refusal() -> None:
    # Surveys older than MAX_EVENT_AGE are unwanted by the business's own rule: a night's events
    # expiring before the morning is a policy that may be meant, so it is said, not refused.
    from consumer.config.destinations import destination_configs
    from consumer.config.settings import Settings
    from consumer.operations.check import _send_windows

    settings = Settings(pisano_url="https://api.pisano.co", pisano_api_token=TOKEN,
                        send_window="09:00-21:00 Europe/Istanbul", max_event_age="2h",
                        campaign_send_windows={"c-1": "09:00-10:00 UTC", "c-2": "always"})
    warnings = settings.send_window_warnings()
    assert warnings == [
        "SEND_WINDOW='09:00-21:00 Europe/Istanbul' is closed for up to 12h (from 21:00 Europe/Istanbul), longer "
        "than MAX_EVENT_AGE=2h: events that arrive as it closes end as expired, unsent, before it opens",
        "CAMPAIGN_SEND_WINDOWS.c-1='09:00-10:00 UTC' is closed for up to 23h (from 10:00 UTC), longer "
        "than MAX_EVENT_AGE=2h: events that arrive as it closes end as expired, unsent, before it opens"]
    report = _send_windows(settings, destination_configs(settings))
    assert report.endswith("; WARNING (send window): " + "; WARNING (send window): ".join(warnings)), report
    assert Settings(send_window="09:00-21:00 Europe/Istanbul", max_event_age="12h").send_window_warnings() == []
    assert Settings(send_window="09:00-21:00 Europe/Istanbul").send_window_warnings() == []

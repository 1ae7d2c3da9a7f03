"""Campaign ids compared in lower case on both sides (consumer/config/campaign_ids.py). Found in
review: a record naming a campaign in upper case found no send window (an SMS at 03:00), no
destination (the default account instead of the one owning it) and no cooldown override."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from consumer.app import cooldown_windows, router
from consumer.config.settings import Settings
from consumer.delivery.quiet_hours import QuietHours
from consumer.errors import ConfigError
from consumer.ingest.intake import check_recipient
from consumer.ingest.mapping import DeclarativeMapper, Recipient

CAMPAIGN = "ae51458c-9e82-417f-8f1d-e074891ea5c1"
OTHER = "9a1e0000-0000-4000-8000-00000000abcd"
TOKEN = "t" * 32


class Night:
    def now_ms(self) -> int:
        return int(datetime(2026, 12, 3, 3, 0, tzinfo=UTC).timestamp() * 1000)


def configured(**values: Any) -> Settings:
    base: dict[str, Any] = {"pisano_url": "https://api.pisano.co", "pisano_api_token": TOKEN,
                            "suppression_key": "k" * 32}
    return Settings(**{**base, **values})


def test_a_campaign_written_in_either_case_on_either_side_keeps_its_window_account_and_cooldown() -> None:
    settings = configured(campaign_send_windows={CAMPAIGN.upper(): "09:00-21:00 UTC"},
                          contact_cooldown_campaigns={CAMPAIGN.upper(): "7d"},
                          destinations={"cards": {"url": "https://eu.pisano.co", "api_token": TOKEN,
                                                  "campaigns": [CAMPAIGN.upper()]}})
    gate = QuietHours("cards", None, settings.send_windows[1], Night())
    route = router({"default": object(), "cards": object()}, settings)  # type: ignore[dict-item]
    windows = cooldown_windows(settings)
    mapper = DeclarativeMapper({"event_id": "event_id", "phone": "phone", "campaign_id": "campaign_id"})
    for n, written in enumerate((CAMPAIGN, CAMPAIGN.upper(), CAMPAIGN[:9] + CAMPAIGN[9:].upper())):
        campaign = mapper.map({"event_id": f"e{n}", "phone": "+905321234567", "campaign_id": written}).campaign_id
        assert campaign == CAMPAIGN, written
        assert gate.holds(campaign), f"{written}: sent during its quiet hours"
        assert route(campaign) == "cards", f"{written}: sent through another Pisano account"
        assert windows.window_ms("cards", campaign) == 7 * 86_400_000


def test_route_tables_and_any_mappers_recipient_name_campaigns_in_lower_case() -> None:
    mapper = DeclarativeMapper({"event_id": "event_id", "phone": "phone", "campaign_routes": {
        "field": "kind", "routes": {"LOAN": CAMPAIGN.upper()}, "default": OTHER.upper()}})
    assert mapper.map({"event_id": "e", "phone": "+905321234567", "kind": "LOAN"}).campaign_id == CAMPAIGN
    assert mapper.map({"event_id": "e", "phone": "+905321234567", "kind": "CARD"}).campaign_id == OTHER
    custom = check_recipient(Recipient("e", CAMPAIGN.upper(), "+905321234567"))  # a plug-in mapper's
    assert custom.campaign_id == CAMPAIGN


@pytest.mark.parametrize("setting", ["campaign_send_windows", "contact_cooldown_campaigns"])
def test_one_campaign_keyed_twice_in_different_cases_is_refused(setting: str) -> None:
    value = "always" if setting == "campaign_send_windows" else "7d"
    with pytest.raises(ValueError, match="appears twice"):
        configured(**{setting: {CAMPAIGN: value, CAMPAIGN.upper(): value}})


def test_one_campaign_listed_by_two_destinations_in_different_cases_is_refused() -> None:
    from consumer.config.destinations import destination_configs

    settings = configured(destinations={
        "cards": {"url": "https://eu.pisano.co", "api_token": TOKEN, "campaigns": [CAMPAIGN]},
        "loans": {"url": "https://eu.pisano.co", "api_token": TOKEN, "campaigns": [CAMPAIGN.upper()]}})
    with pytest.raises(ConfigError, match="already routed to cards"):
        destination_configs(settings)

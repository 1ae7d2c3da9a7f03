"""A plug-in mapper's campaign id is routed in the form the settings are keyed by (found by review:
with only named destinations, an upper-case id was dead-lettered as unroutable before the
recipient check lower-cased it)."""

from __future__ import annotations

from typing import Any

import pytest

from consumer.app import RoutedMapper, router
from consumer.config.settings import Settings
from consumer.errors import UnroutableError
from consumer.ingest.mapping import Recipient

CAMPAIGN = "ae51458c-9e82-417f-8f1d-e074891ea5c1"
OTHER = "0f5b1c2e-1111-4222-8333-944455556666"
TOKEN = "t" * 32


class PluginMapper:
    """A company's own mapper, writing the id as its systems do."""

    def __init__(self, campaign: Any) -> None:
        self.campaign = campaign

    def map(self, record: Any) -> Recipient:
        return Recipient("e1", self.campaign, "+905321234567")


def routed(campaign: Any) -> RoutedMapper:
    settings = Settings(suppression_key="k" * 32, destinations={
        "cards": {"url": "https://eu.pisano.co", "api_token": TOKEN, "campaigns": [CAMPAIGN]}})
    return RoutedMapper(PluginMapper(campaign), router({"cards": object()}, settings))  # type: ignore[arg-type, dict-item]


def test_an_upper_case_campaign_of_a_plug_in_goes_to_its_destination() -> None:
    assert routed(CAMPAIGN.upper()).map({}).campaign_id.lower() == CAMPAIGN


def test_a_campaign_of_no_destination_is_unroutable_and_quoted_checked() -> None:
    with pytest.raises(UnroutableError, match=f"campaign {OTHER} belongs to no configured destination"):
        routed(OTHER.upper()).map({})


@pytest.mark.parametrize("campaign", ["not a campaign " * 100, None, 7])
def test_what_is_not_a_campaign_id_is_left_to_the_recipient_check(campaign: Any) -> None:
    assert routed(campaign).map({}).campaign_id == campaign  # check_recipient refuses it, bounded

"""Issue 14: `run`'s start-up does each piece of its work once. Found while measuring it: the
destinations were read from the settings four times (the Pisano clients, the router, the send
windows, the contact cooldown), so a PISANO_TOKEN_PROVIDER was asked for each destination's
token four times at every start, each a call to a secret store, and each DESTINATIONS entry
validated four times."""

from __future__ import annotations

from collections import Counter
from unittest import mock

import pytest

import consumer.app
from consumer.app import build_pipeline
from consumer.config.settings import Settings
from consumer.operations.health import Health
from consumer.operations.metrics import Metrics
from tests.support.offline_build import stand_in_state

PROVIDER = f"{__name__}:provider"
ASKED: Counter[str] = Counter()


def provider(destination: str) -> str:
    ASKED[destination] += 1
    return f"tok-{destination}-0123456789"


def test_the_token_provider_is_asked_once_per_destination_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    stand_in_state(monkeypatch)
    monkeypatch.setattr(consumer.app, "make_producer", lambda *args: mock.MagicMock(name="producer"))
    ASKED.clear()
    settings = Settings(
        kafka_topics=["t"], pisano_url="https://pisano.invalid", pisano_token_provider=PROVIDER,
        # Long enough that no refresh asks during the test: only the start-up's own asking counts.
        pisano_token_refresh_ms=3_600_000,
        destinations={"cards": {"url": "https://eu.pisano.invalid",
                                "campaigns": ["ae51458c-9e82-417f-8f1d-e074891ea5c1"]}})
    _, probe = build_pipeline(settings, Metrics(), Health(joined=True))
    try:
        assert ASKED == {"default": 1, "cards": 1}
    finally:
        probe.stop()

"""CONTACT_COOLDOWN and its overrides (issue 13, point 1): durations checked at start, the key the
phones are hashed with required, the override order campaign > destination > global."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from consumer.app import cooldown_windows
from consumer.config.destinations import destination_configs
from consumer.config.loading import load_settings
from consumer.errors import ConfigError

CAMPAIGN = "0b6f6e2c-3c4e-4f7b-9a55-8f7d0b5a1c21"
KEY = "k" * 32
DAY = 86_400_000


@pytest.fixture(autouse=True)
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith(("KAFKA_", "PISANO_", "REDIS_", "SUPPRESSION_", "CONTACT_", "DESTINATIONS")):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def settings(**values: Any) -> Any:
    """The settings from a YAML config file (mappings written as YAML, as an operator would)."""
    base: dict[str, Any] = {"KAFKA_TOPICS": "t", "PISANO_URL": "https://api.pisano.co",
                            "PISANO_API_TOKEN": "tok-123", "SUPPRESSION_KEY": KEY}
    base.update(values)
    path = Path("config.yaml")
    path.write_text(yaml.safe_dump({k: v for k, v in base.items() if v is not None}))
    return load_settings(path)


def test_durations_and_the_override_order() -> None:
    s = settings(CONTACT_COOLDOWN="30d", CONTACT_COOLDOWN_CAMPAIGNS={CAMPAIGN: "12h"})
    windows = cooldown_windows(s)
    assert windows.window_ms("default", CAMPAIGN) == 12 * 3_600_000
    assert windows.window_ms("default", "another") == 30 * DAY
    assert windows.longest_ms == 30 * DAY
    assert not cooldown_windows(settings())  # off by default


@pytest.mark.parametrize("value", ["30", "1w", "-1d", "30 days", "367d"])
def test_a_bad_duration_is_refused_naming_the_setting(value: str) -> None:
    with pytest.raises(ConfigError, match="CONTACT_COOLDOWN"):
        settings(CONTACT_COOLDOWN=value)


def test_a_cooldown_without_the_key_is_refused_saying_what_to_do() -> None:
    with pytest.raises(ConfigError, match=r"needs SUPPRESSION_KEY.*openssl rand"):
        settings(CONTACT_COOLDOWN="7d", SUPPRESSION_KEY=None)
    with pytest.raises(ConfigError, match="needs SUPPRESSION_KEY"):
        settings(CONTACT_COOLDOWN_CAMPAIGNS={CAMPAIGN: "1d"}, SUPPRESSION_KEY=None)
    with pytest.raises(ConfigError, match="needs SUPPRESSION_KEY"):
        settings(DESTINATIONS={"cards": {"url": "https://p.example", "api_token": "t-1", "contact_cooldown": "1d"}},
                 SUPPRESSION_KEY=None)
    settings(CONTACT_COOLDOWN="0", SUPPRESSION_KEY=None)  # off: no key needed


def test_a_destination_overrides_the_global_cooldown() -> None:
    s = settings(CONTACT_COOLDOWN="30d", DESTINATIONS={"cards": {
        "url": "https://p.example", "api_token": "t-1", "campaigns": [CAMPAIGN], "contact_cooldown": "7d"}})
    assert destination_configs(s)["cards"].contact_cooldown_ms == 7 * DAY
    assert cooldown_windows(s).window_ms("cards", CAMPAIGN) == 7 * DAY
    with pytest.raises(ConfigError, match="contact_cooldown"):
        destination_configs(settings(DESTINATIONS={"cards": {
            "url": "https://p.example", "api_token": "t-1", "contact_cooldown": "7 weeks"}}))

"""`check` with a token Pisano refuses names the settings to fix, readable after the report's
masking (it read `check its token ***)`: the masking took `(PISANO_API_TOKEN)` for a credential)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from consumer.config.settings import Settings
from consumer.errors import PisanoApiError
from consumer.operations import check


def _run(monkeypatch: pytest.MonkeyPatch, name: str) -> check.Result:
    class Client:
        def probe_token(self, campaign: str) -> Any:
            return PisanoApiError(http_status=401, code=13001, message="Wrong authentication token")

        def close(self) -> None:
            pass

    grant = SimpleNamespace(held=False, granted=True, wait_s=0.0)
    destination = SimpleNamespace(limiter=SimpleNamespace(acquire=lambda: grant), client=Client())
    monkeypatch.setattr(check, "build_state", lambda settings: None)
    monkeypatch.setattr(check, "destination_configs",
                        lambda settings: {name: SimpleNamespace(name=name, url="https://api.pisano.co")})
    monkeypatch.setattr(check, "build_destination", lambda *args, **kwargs: destination)
    settings = Settings(kafka_topics=["t"], pisano_url="https://api.pisano.co")
    return check._guard("pisano", lambda: check._pisano(settings, "00000000-0000-0000-0000-000000000000"))


def test_the_default_destination_names_its_token_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    result = _run(monkeypatch, "default")
    assert result.status == "failed"
    assert "PISANO_API_TOKEN or PISANO_API_TOKEN_FILE" in result.detail, result.detail


def test_a_named_destination_names_its_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    result = _run(monkeypatch, "retail")
    assert "api_token_file of destination retail in DESTINATIONS" in result.detail, result.detail

"""What `check` says of Pisano's answer to its probe.

It claims "token accepted" only on an answer that proves it. Pisano's 404 13002 ("Requested
resource not found!") is its answer to any unknown resource: an unknown campaign once the token
passed, and also any unknown path, whatever the token (PISANO_URL with a path that does not
belong there). Found by review: a PISANO_URL with a wrong path was reported "token accepted".

A refused token names the settings to fix, readable after the report's masking (it read `check
its token ***)`: the masking took `(PISANO_API_TOKEN)` for a credential)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from consumer.config.settings import Settings
from consumer.delivery.pisano import PROBE_CAMPAIGN
from consumer.errors import PisanoApiError
from consumer.operations import check
from consumer.state.limiter import NoLimiter

CAMPAIGN = "ae51458c-9e82-417f-8f1d-e074891ea5c1"
NOT_FOUND = PisanoApiError(http_status=404, code=13002, message="Requested resource not found!")


REFUSED = PisanoApiError(http_status=401, code=13001, message="Wrong authentication token")


def _run(monkeypatch: pytest.MonkeyPatch, answer: PisanoApiError | None, url: str, campaign: str,
         name: str = "default") -> check.Result:
    class Client:
        def probe_token(self, campaign: str, leave_by: float | None = None) -> Any:
            return answer

        def warm(self, within_s: float) -> None:
            pass

        def close(self) -> None:
            pass

    destination = SimpleNamespace(limiter=NoLimiter(), client=Client())
    monkeypatch.setattr(check, "build_state", lambda settings: None)
    monkeypatch.setattr(check, "destination_configs",
                        lambda settings: {name: SimpleNamespace(name=name, url=url)})
    monkeypatch.setattr(check, "build_destination", lambda *args, **kwargs: destination)
    settings = Settings(kafka_topics=["t"], pisano_url=url)
    return check._guard("pisano", lambda: check._pisano(settings, campaign))


def test_not_found_for_the_nil_campaign_does_not_claim_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    result = _run(monkeypatch, NOT_FOUND, "https://api.pisano.co/api/v2", PROBE_CAMPAIGN)
    assert "token accepted" not in result.detail, result.detail
    assert "not proven" in result.detail and "PISANO_URL" in result.detail
    assert "/api/v2" in result.detail  # the path to verify
    assert "--campaign" in result.detail  # how to prove it


def test_not_found_for_a_campaign_asked_about_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    result = _run(monkeypatch, NOT_FOUND, "https://api.pisano.co", CAMPAIGN)
    assert result.status == "failed"
    assert "token accepted" not in result.detail
    assert CAMPAIGN in result.detail and "PISANO_URL" in result.detail


@pytest.mark.parametrize("answer", [None, PisanoApiError(http_status=400, code=13028, message="Invalid parameters"),
                                    PisanoApiError(http_status=400, code=13015, message="phone_numbers missing")])
def test_a_validation_answer_proves_the_token(monkeypatch: pytest.MonkeyPatch, answer: PisanoApiError | None) -> None:
    result = _run(monkeypatch, answer, "https://api.pisano.co", CAMPAIGN)
    assert result.status == "ok" and "token accepted" in result.detail


def test_a_refused_token_of_the_default_destination_names_its_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    result = _run(monkeypatch, REFUSED, "https://api.pisano.co", PROBE_CAMPAIGN)
    assert result.status == "failed"
    assert "PISANO_API_TOKEN or PISANO_API_TOKEN_FILE" in result.detail, result.detail


def test_a_refused_token_of_a_named_destination_names_its_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    result = _run(monkeypatch, REFUSED, "https://api.pisano.co", PROBE_CAMPAIGN, name="retail")
    assert "api_token_file of destination retail in DESTINATIONS" in result.detail, result.detail

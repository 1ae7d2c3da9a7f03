"""A token that cannot go in an HTTP header is a configuration error, never `ambiguous` (h-sender).

Settings and every rotation check the token (consumer/config/secrets.py `check_token`), but a token
source is any object with `current()` (a provider's own, a test's): a token holding a line break
or a non-ASCII character reached `PisanoClient.send`, where the HTTP library refused to build the
header, and that exception was read as "the request may have left": `ambiguous`, its events left
for an SRE although nothing was sent. Now it is refused before any byte, with a message that says
what to fix and never shows the token.
"""

from __future__ import annotations

import httpx
import pytest

from consumer.config.tokens import StaticToken
from consumer.delivery.failures import classify
from consumer.delivery.pisano import PisanoClient
from consumer.errors import PisanoTransportError
from tests.support.fakes import FakePisano, event, rig

CAMPAIGN = "ae51458c-9e82-417f-8f1d-e074891ea5c1"
BAD_TOKENS = ["tok\nsecret-part", "tok\rsecret-part", "t\u00f6ken-secret-part", "tok secret-part", "tok\x00secret-part"]


def _client(token: str, seen: list[httpx.Request]) -> PisanoClient:
    client = PisanoClient("https://pisano.test", StaticToken(token), timeout_s=1, connect_timeout_s=1,
                          max_connections=2)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"status": "ok"})

    client.http = httpx.Client(base_url="https://pisano.test", headers=client.http.headers,
                               transport=httpx.MockTransport(handler))
    return client


@pytest.mark.parametrize("token", BAD_TOKENS)
def test_a_token_unfit_for_a_header_is_refused_before_sending_and_is_not_ambiguous(token: str) -> None:
    seen: list[httpx.Request] = []
    with pytest.raises(PisanoTransportError) as refused:
        _client(token, seen).send(CAMPAIGN, b'{"phone_numbers":[]}')
    assert not seen, "a request left"
    error = refused.value
    assert not error.ambiguous
    verdict = classify(error)
    assert verdict.action == "dead_letter" and verdict.reason != "ambiguous"  # not retried: it would fail again
    assert "PISANO_API_TOKEN" in error.message and "secret-part" not in error.message


@pytest.mark.parametrize("token", BAD_TOKENS[:2])
def test_its_events_are_dead_lettered_once_and_free_for_a_replay(token: str) -> None:
    with pytest.raises(PisanoTransportError) as refused:
        _client(token, []).send(CAMPAIGN, b"{}")
    r = rig(FakePisano([refused.value, refused.value, refused.value]), max_attempts=3)
    r.process([event(1), event(2)])
    assert r.kinds() == {"e1": {"dead_letter"}, "e2": {"dead_letter"}}
    assert set(r.reasons().values()) == {"transport_error"}
    assert len(r.pisano.requests) == 1, "retried a request that cannot be built"
    assert r.dedup.state("e1") is None and r.dedup.state("e2") is None  # nothing sent: free to replay
    messages = {o.failure.message for o in r.outcomes if o.failure}
    assert all("PISANO_API_TOKEN" in m and "secret-part" not in m for m in messages)


@pytest.mark.parametrize("token", ["t\u00f6ken-secret-part", "tok secret-part", "tok\x7fsecret-part"])
def test_settings_refuse_it_at_start_up_without_showing_it(token: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # `run` and `pisano-sms check` load the settings first: the replica never starts with it.
    from consumer.config.loading import load_settings

    monkeypatch.setenv("PISANO_API_TOKEN", token)
    with pytest.raises(Exception) as refused:  # pydantic's error or ConfigError: refused at load
        load_settings().api_token()
    assert "secret-part" not in str(refused.value) and "PISANO_API_TOKEN" in str(refused.value)

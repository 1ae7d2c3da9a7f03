"""The ASGI app over httpx's ASGI transport: routes, body limits, latency and admin endpoints."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from consumer.simulator import ManualClock, SimulatorConfig, create_app
from consumer.simulator.redact import token_fingerprint
from consumer.simulator.state import simulator_state

TOKEN = "tok-1"
AUTH = {"Authorization": f"Token token={TOKEN}"}
SHARING = "/v1/sms_campaigns/c1/sms_sharings"
PHONE = "+905321234567"


class AppClient:
    """Blocking calls into the app; each runs on its own short event loop."""

    def __init__(self, app: Starlette) -> None:
        self.app = app

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
                return await client.request(method, path, **kwargs)

        return asyncio.run(call())

    def share(self, phones: list[str] | None = None, **kwargs: Any) -> httpx.Response:
        kwargs.setdefault("headers", AUTH)
        kwargs.setdefault("json", {"phone_numbers": phones or [PHONE]})
        return self.request("POST", SHARING, **kwargs)


def make_client(clock: ManualClock | None = None, **options: Any) -> AppClient:
    options = {"tokens": [TOKEN], "campaigns": ["c1"], "rate_limits": "off", **options}
    return AppClient(create_app(SimulatorConfig.from_options(**options), clock))


def test_the_endpoint_takes_an_optional_trailing_slash() -> None:
    client = make_client()
    assert client.share().status_code == 200
    response = client.request("POST", SHARING + "/", headers=AUTH, json={"phone_numbers": [PHONE]})
    assert response.status_code == 200
    assert response.json()["accepted"] == 1
    assert response.headers["content-type"] == "application/json"


def test_unknown_paths_and_methods_answer_in_the_error_shape() -> None:
    client = make_client()
    missing = client.request("POST", "/v1/sms_campaigns/c1/other", headers=AUTH)
    assert (missing.status_code, missing.json()) == (
        404,
        {"status": "NOT_FOUND", "code": 13002, "message": "Requested resource not found!"},
    )
    wrong_method = client.request("GET", SHARING, headers=AUTH)
    assert (wrong_method.status_code, wrong_method.json()) == (
        405,
        {"status": "method_not_allowed", "code": None, "message": "Method Not Allowed"},
    )
    assert wrong_method.headers["allow"] == "POST"


def test_a_declared_oversized_body_is_413() -> None:
    client = make_client(max_body_bytes=100)
    response = client.share([f"+90532{i:07d}" for i in range(10)])
    assert (response.status_code, response.json()) == (
        413,
        {
            "status": "request_entity_too_large",
            "code": None,
            "message": "Request body larger than 100 bytes",
        },
    )
    assert client.share().status_code == 200


def test_a_streamed_oversized_body_is_413() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"phone_numbers": ["+905321234567"'
        for _ in range(20):
            yield b', "+905321234567"'
        yield b"]}"

    client = make_client(max_body_bytes=200)
    response = client.request("POST", SHARING, headers=AUTH, content=chunks())
    assert response.status_code == 413


def test_throttle_boundary_over_http_with_an_injected_clock() -> None:
    clock = ManualClock()
    client = make_client(clock, rate_limits="2/1s,3/5s")
    assert [client.share().status_code for _ in range(2)] == [200, 200]
    clock.advance(ms=999)

    throttled = client.share()

    assert throttled.status_code == 429
    assert throttled.headers["retry-after"] == "1"
    assert throttled.json() == {
        "status": "too_many_requests",
        "code": None,
        "message": "Rate limit exceeded",
    }
    clock.advance(ms=1)
    assert client.share().status_code == 200  # exactly 1 s after the first two
    assert client.share().status_code == 429  # now 3/5s: free again at 5 s
    clock.advance(ms=3999)
    assert client.share().headers["retry-after"] == "1"
    clock.advance(ms=1)
    assert client.share().status_code == 200
    by_window = client.request("GET", "/_sim/stats").json()["throttled"]["by_token"]
    assert by_window == {
        token_fingerprint(TOKEN): {"total": 3, "by_window": {"2/1s": 1, "3/5s": 2}}
    }


def test_latency_delays_the_answer() -> None:
    client = make_client(latency_ms=150)
    started = time.monotonic()
    assert client.share().status_code == 200
    assert time.monotonic() - started >= 0.15


# Admin endpoints.


def test_healthz() -> None:
    response = make_client().request("GET", "/_sim/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_deliveries_as_json_and_jsonl_filtered_by_campaign() -> None:
    client = make_client(campaigns=["c1", "c2"])
    first = client.share(
        [PHONE, "+905329876543"],
        json={
            "phone_numbers": [PHONE, "+905329876543"],
            "custom_attributes": {PHONE: {"name": "Ayşe"}},
        },
    ).json()
    second = client.request(
        "POST", "/v1/sms_campaigns/c2/sms_sharings", headers=AUTH, json={"phone_numbers": [PHONE]}
    ).json()

    everything = client.request("GET", "/_sim/deliveries").json()
    only_c2 = client.request("GET", "/_sim/deliveries", params={"campaign": "c2"}).json()
    jsonl = client.request("GET", "/_sim/deliveries", params={"format": "jsonl"})

    assert [(d["campaign_id"], d["phone"], d["request_id"]) for d in everything] == [
        ("c1", PHONE, first["request_id"]),
        ("c1", "+905329876543", first["request_id"]),
        ("c2", PHONE, second["request_id"]),
    ]
    assert everything[0]["custom_attributes"] == {"name": "Ayşe"}
    assert everything[1]["custom_attributes"] is None
    assert only_c2 == everything[2:]
    assert jsonl.headers["content-type"] == "application/x-ndjson"
    assert [json.loads(line) for line in jsonl.text.splitlines()] == everything


def test_requests_list_every_request_including_rejected_ones() -> None:
    client = make_client()
    client.share()
    client.share(headers={})
    client.share(json={"phone_numbers": ["x"]})
    records = client.request("GET", "/_sim/requests").json()
    assert [(r["http_status"], r["code"], r["recipients"]) for r in records] == [
        (200, None, 1),
        (401, 13001, None),
        (400, 13028, 1),
    ]
    assert records[0]["token"] == token_fingerprint(TOKEN)
    assert records[1]["token"] is None
    assert client.request("GET", "/_sim/requests", params={"campaign": "zz"}).json() == []


def test_stats_count_requests_recipients_and_show_the_config() -> None:
    clock = ManualClock()
    client = make_client(clock, rate_limits="1/1s")
    client.share([PHONE, "+905329876543"])
    client.share()
    client.share(headers={})
    stats = client.request("GET", "/_sim/stats").json()
    assert stats["requests"] == {
        "total": 3,
        "by_status": {"200": 1, "401": 1, "429": 1},
        "by_code": {"13001": 1},
    }
    assert stats["recipients_delivered"] == 2
    assert stats["throttled"]["total"] == 1
    assert stats["config"]["tokens"] == [token_fingerprint(TOKEN)]
    assert stats["config"]["rate_limits"] == "1/1s"
    assert TOKEN not in json.dumps(stats)


def test_faults_merge_by_default_and_replace_on_request() -> None:
    client = make_client()
    merged = client.request("POST", "/_sim/faults", json={"error_rates": {"503": 1.0}})
    assert merged.status_code == 200
    assert merged.json()["error_rates"] == {"503": 1.0}
    assert client.share().status_code == 503

    merged = client.request("POST", "/_sim/faults", json={"latency_ms": 1}).json()
    assert (merged["error_rates"], merged["latency_ms"]) == ({"503": 1.0}, 1.0)

    replaced = client.request(
        "POST", "/_sim/faults", params={"mode": "replace"}, json={"poison_phones": [PHONE]}
    ).json()
    assert (replaced["error_rates"], replaced["latency_ms"]) == ({}, 0.0)
    assert client.share().json()["code"] == 13028
    assert client.share(["+905329876543"]).status_code == 200


def test_token_codes_over_admin_are_shown_as_fingerprints() -> None:
    client = make_client()
    answer = client.request("POST", "/_sim/faults", json={"token_codes": {TOKEN: 13036}}).json()
    assert answer["token_codes"] == {token_fingerprint(TOKEN): 13036}
    assert client.share().json() == {
        "status": "forbidden",
        "code": 13036,
        "message": "Account locked",
    }


@pytest.mark.parametrize(
    ("path", "params", "content", "message"),
    [
        ("/_sim/faults", {}, b"nope", "the body is not JSON"),
        ("/_sim/faults", {}, b"[]", "the body must be a JSON object"),
        (
            "/_sim/faults",
            {},
            b'{"hang_rate": 3}',
            "hang_rate: 3.0 is not a probability from 0 to 1",
        ),
        ("/_sim/faults", {"mode": "swap"}, b"{}", "mode must be merge or replace"),
        ("/_sim/config", {}, b'{"tokens": "a"}', "tokens must be a list of strings"),
    ],
)
def test_bad_admin_input_is_400_in_the_error_shape(
    path: str, params: dict[str, str], content: bytes, message: str
) -> None:
    client = make_client()
    response = client.request("POST", path, params=params, content=content)
    assert (response.status_code, response.json()) == (
        400,
        {"status": "bad_request", "code": None, "message": message},
    )
    assert client.share().status_code == 200  # nothing changed


def test_config_changes_tokens_campaigns_and_windows_at_runtime() -> None:
    clock = ManualClock()
    client = make_client(clock, rate_limits="1/1s")
    client.share()
    assert client.share().status_code == 429

    answer = client.request(
        "POST",
        "/_sim/config",
        json={"tokens": ["tok-2"], "campaigns": ["c9"], "rate_limits": "2/1s"},
    ).json()

    assert answer["tokens"] == [token_fingerprint("tok-2")]
    assert answer["rate_limits"] == "2/1s"
    assert client.share().status_code == 401
    auth2 = {"Authorization": "Token token=tok-2"}
    assert client.share(headers=auth2).json()["code"] == 13002
    client.request("POST", "/_sim/config", json={"any_campaign": True})
    assert [client.share(headers=auth2).status_code for _ in range(3)] == [200, 200, 429]


def test_reset_clears_logs_counters_and_throttle() -> None:
    clock = ManualClock()
    client = make_client(clock, rate_limits="1/1s")
    client.share()
    assert client.share().status_code == 429

    assert client.request("POST", "/_sim/reset").json() == {"status": "ok"}

    assert client.request("GET", "/_sim/deliveries").json() == []
    assert client.request("GET", "/_sim/requests").json() == []
    stats = client.request("GET", "/_sim/stats").json()
    assert stats["requests"]["total"] == 0
    assert stats["recipients_delivered"] == 0
    assert stats["throttled"] == {"total": 0, "by_token": {}}
    assert client.share().status_code == 200


def test_the_state_is_reachable_from_the_app() -> None:
    client = make_client()
    client.share()
    assert simulator_state(client.app).deliveries.recipients == 1


def test_a_client_gone_mid_body_is_not_decided() -> None:
    app = make_client().app
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": b'{"phone_numbers": ["+9053', "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": SHARING,
        "raw_path": SHARING.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"authorization", AUTH["Authorization"].encode())],
        "server": ("sim", 80),
        "client": ("client", 1234),
    }
    asyncio.run(app(scope, receive, send))  # type: ignore[arg-type]

    assert simulator_state(app).requests.records() == []
    assert simulator_state(app).stats_dict()["requests"]["total"] == 0

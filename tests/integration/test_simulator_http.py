"""The simulator over real HTTP: a SimulatorServer on a free port, httpx as the client.

Throttle windows here are small (3/1s, 5/3s) and run on real time; exactness to the nanosecond
is proven with an injected clock in the unit tests, and here every decision the server took is
checked against the definition using the monotonic times it logged.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from consumer.config.windows import parse_rate_limits
from consumer.simulator import SimulatorConfig, SimulatorServer

TOKEN = "integration-token"
CAMPAIGN = "ae51458c-9e82-417f-8f1d-e074891ea5c1"
AUTH = {"Authorization": f"Token token={TOKEN}"}
PHONE = "+905321234567"


def phones(count: int, prefix: str = "+90532") -> list[str]:
    return [f"{prefix}{i:07d}" for i in range(count)]


@pytest.fixture
def simulator() -> Iterator[Callable[..., SimulatorServer]]:
    """Starts simulators with `from_options` values; stops them after the test."""
    started: list[SimulatorServer] = []

    def start(**options: Any) -> SimulatorServer:
        options = {"tokens": [TOKEN], "campaigns": [CAMPAIGN], "rate_limits": "off", **options}
        server = SimulatorServer(SimulatorConfig.from_options(**options))
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def share(
    sim: SimulatorServer,
    body: Any = None,
    *,
    campaign: str = CAMPAIGN,
    headers: dict[str, str] | None = None,
    timeout: float = 10,
) -> httpx.Response:
    return httpx.post(
        f"{sim.url}/v1/sms_campaigns/{campaign}/sms_sharings",
        json={"phone_numbers": [PHONE]} if body is None else body,
        headers=AUTH if headers is None else headers,
        timeout=timeout,
    )


def admin(sim: SimulatorServer, path: str, **params: str) -> Any:
    response = httpx.get(f"{sim.url}/_sim/{path}", params=params)
    assert response.status_code == 200
    return response.json() if params.get("format") != "jsonl" else response.text


def error(response: httpx.Response) -> tuple[int, int | None, str]:
    body = response.json()
    assert set(body) == {"status", "code", "message"}
    return response.status_code, body["code"], body["status"]


def test_the_token_is_checked(simulator: Callable[..., SimulatorServer]) -> None:
    sim = simulator(tokens=[TOKEN, "second-token"])
    assert error(share(sim, headers={})) == (401, 13001, "unauthorized")
    assert error(share(sim, headers={"Authorization": "Token token=nope"})) == (
        401,
        13001,
        "unauthorized",
    )
    assert share(sim, headers={"Authorization": 'Token token="second-token"'}).status_code == 200
    assert share(sim).json()["accepted"] == 1


def test_an_unknown_campaign_is_404(simulator: Callable[..., SimulatorServer]) -> None:
    response = share(simulator(), campaign="11111111-2222-3333-4444-555555555555")
    assert response.json() == {
        "status": "NOT_FOUND",
        "code": 13002,
        "message": "Requested resource not found!",
    }
    assert response.status_code == 404


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({}, 13015),
        ({"phone_numbers": []}, 13028),
        ({"phone_numbers": [5321234567]}, 13028),
        ({"phone_numbers": phones(5001)}, 13028),
        ({"phone_numbers": [PHONE, PHONE]}, 13017),
        ({"phone_numbers": ["+90 532 abc"]}, 13028),
        ({"phone_numbers": [PHONE], "custom_attributes": {"+905329999999": {}}}, 13028),
        ({"phone_numbers": [PHONE], "built_in_responses": {PHONE: "x"}}, 13028),
        ([PHONE], 13028),
    ],
)
def test_every_validation_code(
    simulator: Callable[..., SimulatorServer], body: Any, code: int
) -> None:
    assert error(share(simulator(), body)) == (400, code, "bad_request")


def test_a_body_that_is_not_json_is_13028(simulator: Callable[..., SimulatorServer]) -> None:
    sim = simulator()
    response = httpx.post(
        f"{sim.url}/v1/sms_campaigns/{CAMPAIGN}/sms_sharings", content=b"{nope", headers=AUTH
    )
    assert error(response) == (400, 13028, "bad_request")


def test_an_oversized_body_is_refused_before_it_is_sent(
    simulator: Callable[..., SimulatorServer],
) -> None:
    sim = simulator(max_body_bytes=1024)
    host, port = sim.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as conn:
        conn.sendall(
            f"POST /v1/sms_campaigns/{CAMPAIGN}/sms_sharings HTTP/1.1\r\nHost: sim\r\n"
            f"Authorization: Token token={TOKEN}\r\nContent-Type: application/json\r\n"
            "Content-Length: 50000000\r\n\r\n".encode()
            + b'{"phone_numbers": ['
        )
        head, body = read_response(conn)
    assert head.startswith("HTTP/1.1 413 ")
    assert json.loads(body) == {
        "status": "request_entity_too_large",
        "code": None,
        "message": "Request body larger than 1024 bytes",
    }


def read_response(conn: socket.socket) -> tuple[str, bytes]:
    """The head and body of one HTTP response with a Content-Length."""
    received = b""
    while b"\r\n\r\n" not in received:
        received += conn.recv(65536)
    head, body = received.split(b"\r\n\r\n", 1)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += conn.recv(65536)
    return head.decode(), body


def test_a_5000_recipient_request_is_delivered_and_logged(
    simulator: Callable[..., SimulatorServer], tmp_path: Path
) -> None:
    log_path = tmp_path / "deliveries.jsonl"
    sim = simulator(delivery_log=log_path)
    recipients = phones(5000)
    body = {
        "phone_numbers": recipients,
        "custom_attributes": {p: {"name": f"Customer {i}"} for i, p in enumerate(recipients)},
        "built_in_responses": {recipients[-1]: {"customerDetailedInformation1": "IST-3"}},
    }

    response = share(sim, body)

    assert response.status_code == 200
    request_id = response.json()["request_id"]
    assert response.json() == {"status": "ok", "request_id": request_id, "accepted": 5000}
    # The file is complete when the answer arrives: no waiting.
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert [line["phone"] for line in lines] == recipients
    assert {line["request_id"] for line in lines} == {request_id}
    assert lines[7]["custom_attributes"] == {"name": "Customer 7"}
    assert lines[-1]["built_in_responses"] == {"customerDetailedInformation1": "IST-3"}
    assert lines[0]["time"].endswith("Z")
    assert lines == admin(sim, "deliveries")
    assert [json.loads(x) for x in admin(sim, "deliveries", format="jsonl").splitlines()] == lines
    assert admin(sim, "requests")[0]["recipients"] == 5000
    assert admin(sim, "stats")["recipients_delivered"] == 5000


def test_throttle_decisions_follow_the_windows_in_real_time(
    simulator: Callable[..., SimulatorServer],
) -> None:
    windows = parse_rate_limits("3/1s,5/3s")
    sim = simulator(rate_limits="3/1s,5/3s")
    with httpx.Client(base_url=sim.url, headers=AUTH) as client:
        deadline = time.monotonic() + 3.5
        while time.monotonic() < deadline:
            response = client.post(
                f"/v1/sms_campaigns/{CAMPAIGN}/sms_sharings", json={"phone_numbers": [PHONE]}
            )
            if response.status_code == 429:
                assert response.json() == {
                    "status": "too_many_requests",
                    "code": None,
                    "message": "Rate limit exceeded",
                }
                assert response.headers["retry-after"] in {"1", "2", "3"}
            else:
                assert response.status_code == 200
            time.sleep(0.05)

    accepted: list[int] = []
    records = admin(sim, "requests")
    for record in records:
        now = record["clock_ns"]
        counts = [
            sum(1 for a in accepted if now - w.period_ms * 1_000_000 < a <= now) for w in windows
        ]
        fits = all(c < w.limit for c, w in zip(counts, windows, strict=True))
        assert (record["http_status"] == 200) == fits, record
        if fits:
            accepted.append(now)
        else:
            waits = [
                sorted(a for a in accepted if a > now - w.period_ms * 1_000_000)[c - w.limit]
                + w.period_ms * 1_000_000
                - now
                for c, w in zip(counts, windows, strict=True)
                if c >= w.limit
            ]
            assert record["retry_after_s"] == max(1, math.ceil(max(waits) / 1e9)), record
    by_window = admin(sim, "stats")["throttled"]["by_token"]
    assert set(next(iter(by_window.values()))["by_window"]) == {"3/1s", "5/3s"}
    assert len(accepted) > 5  # 5/3s filled, then reopened as the oldest left


def test_a_request_after_retry_after_at_the_window_boundary_is_accepted(
    simulator: Callable[..., SimulatorServer],
) -> None:
    sim = simulator(rate_limits="3/1s")
    assert [share(sim).status_code for _ in range(3)] == [200, 200, 200]
    throttled = share(sim)
    assert throttled.status_code == 429
    assert throttled.headers["retry-after"] == "1"
    first_accepted_ns = admin(sim, "requests")[0]["clock_ns"]
    # The simulator runs in this process: its monotonic clock is ours.
    time.sleep(max(0.0, (first_accepted_ns + 1_000_000_000 - time.monotonic_ns()) / 1e9))
    assert share(sim).status_code == 200


def test_injected_errors_and_garbage_bodies(simulator: Callable[..., SimulatorServer]) -> None:
    sim = simulator(error_rates=["503=1"])
    assert share(sim).json() == {
        "status": "service_unavailable",
        "code": None,
        "message": "Service Unavailable",
    }
    configured = httpx.post(
        f"{sim.url}/_sim/faults", json={"error_rates": {"502": 1}, "garbage_body_rate": 1}
    )
    assert configured.status_code == 200
    garbage = share(sim)
    assert garbage.status_code == 502
    assert garbage.headers["content-type"].startswith("text/html")
    with pytest.raises(json.JSONDecodeError):
        garbage.json()
    assert admin(sim, "stats")["recipients_delivered"] == 0


def test_latency_can_outlast_the_client_after_delivering(
    simulator: Callable[..., SimulatorServer],
) -> None:
    sim = simulator(latency_ms=400)
    with pytest.raises(httpx.ReadTimeout):
        share(sim, timeout=0.1)
    assert [d["phone"] for d in admin(sim, "deliveries")] == [PHONE]
    started = time.monotonic()
    assert share(sim, {"phone_numbers": ["+905329876543"]}).status_code == 200
    assert time.monotonic() - started >= 0.4


def test_a_hang_never_answers_and_delivers_nothing(
    simulator: Callable[..., SimulatorServer],
) -> None:
    sim = simulator(hang_rate=1.0)
    with pytest.raises(httpx.ReadTimeout):
        share(sim, timeout=0.3)
    assert admin(sim, "deliveries") == []
    (record,) = admin(sim, "requests")
    assert (record["http_status"], record["fault"]) == (None, "hang")
    # The server is not stuck: other requests are answered while the hang lasts.
    assert httpx.get(f"{sim.url}/_sim/healthz").status_code == 200
    assert admin(sim, "stats")["requests"]["by_status"] == {"no_answer": 1}


def test_a_hang_after_accept_delivers_without_answering(
    simulator: Callable[..., SimulatorServer],
) -> None:
    sim = simulator(hang_after_accept_rate=1.0)
    with pytest.raises(httpx.ReadTimeout):
        share(sim, {"phone_numbers": [PHONE, "+905329876543"]}, timeout=0.3)
    deliveries = admin(sim, "deliveries")
    assert [d["phone"] for d in deliveries] == [PHONE, "+905329876543"]
    (record,) = admin(sim, "requests")
    assert (record["http_status"], record["fault"]) == (None, "hang_after_accept")
    assert deliveries[0]["request_id"] == record["request_id"]


def test_a_server_with_abandoned_hangs_stops_promptly() -> None:
    config = SimulatorConfig.from_options(tokens=[TOKEN], any_campaign=True, hang_rate=1.0)
    sim = SimulatorServer(config)
    sim.start()
    for _ in range(3):
        with pytest.raises(httpx.ReadTimeout):
            share(sim, timeout=0.2)
    started = time.monotonic()
    sim.stop()
    assert time.monotonic() - started < 2


def test_campaign_token_and_poison_faults(simulator: Callable[..., SimulatorServer]) -> None:
    other = "99999999-2222-3333-4444-555555555555"
    sim = simulator(
        tokens=[TOKEN, "locked-token"],
        campaigns=[CAMPAIGN, other],
        campaign_codes=[f"{other}=13034"],
        token_codes=["locked-token=13036"],
        poison_phones=["+905550000000"],
    )
    assert error(share(sim, campaign=other)) == (400, 13034, "bad_request")
    assert share(sim, campaign=other).json()["message"] == "Invalid Flow"
    assert error(share(sim, headers={"Authorization": "Token token=locked-token"})) == (
        403,
        13036,
        "forbidden",
    )
    assert error(share(sim, {"phone_numbers": [PHONE, "+905550000000"]})) == (
        400,
        13028,
        "bad_request",
    )
    assert share(sim).status_code == 200
    httpx.post(f"{sim.url}/_sim/faults", json={"token_codes": {TOKEN: 13011}})
    assert error(share(sim)) == (401, 13011, "unauthorized")
    faults = [r["fault"] for r in admin(sim, "requests")]
    assert faults == [
        "campaign_code",
        "campaign_code",
        "token_code",
        "poison_phone",
        None,
        "token_code",
    ]


def test_admin_endpoints_over_http(simulator: Callable[..., SimulatorServer]) -> None:
    sim = simulator()
    assert admin(sim, "healthz") == {"status": "ok"}
    share(sim)
    changed = httpx.post(f"{sim.url}/_sim/config", json={"rate_limits": "1/1s"}).json()
    assert changed["rate_limits"] == "1/1s"
    assert [share(sim).status_code for _ in range(2)] == [200, 429]
    stats = admin(sim, "stats")
    assert stats["requests"]["by_status"] == {"200": 2, "429": 1}
    assert httpx.post(f"{sim.url}/_sim/reset").json() == {"status": "ok"}
    assert admin(sim, "requests") == []
    assert share(sim).status_code == 200


def test_serve_prints_its_url_and_stops_on_sigterm(tmp_path: Path) -> None:
    script = (
        "from consumer.simulator import SimulatorConfig, serve\n"
        f"serve(SimulatorConfig.from_options(tokens=['{TOKEN}'], any_campaign=True), "
        "'127.0.0.1', 0)\n"
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    process = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=root, env=env
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("Pisano simulator listening on http://127.0.0.1:")
        url = line.rsplit(" ", 1)[1].strip()
        assert httpx.get(f"{url}/_sim/healthz").json() == {"status": "ok"}
        assert share_url(url).status_code == 200
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(10)
    finally:
        process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()
    # uvicorn finishes gracefully, then lets the signal end the process as it would have.
    assert returncode == -signal.SIGTERM


def share_url(url: str) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/sms_campaigns/{CAMPAIGN}/sms_sharings",
        json={"phone_numbers": [PHONE]},
        headers=AUTH,
    )

"""The delivery log in memory and as JSONL, the request log, and what logs may show."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from consumer.simulator.clock import ManualClock
from consumer.simulator.config import FaultSettings, SimulatorConfig
from consumer.simulator.deliveries import DeliveredRequest, DeliveryLog, iso_utc
from consumer.simulator.redact import mask_phone, token_fingerprint
from consumer.simulator.sharing import handle_sharing
from consumer.simulator.state import SimulatorState


def delivered(request_id: str, campaign: str, phones: list[str]) -> DeliveredRequest:
    return DeliveredRequest(
        request_id,
        campaign,
        "2023-11-14T22:13:20.000Z",
        1_700_000_000_000,
        phones,
        {phones[0]: {"name": 'Ayşe "A" Ünal\n', "n": 1.5, "tags": ["x", None], "ok": True}},
        {phones[-1]: {"customerDetailedInformation1": "b1"}},
    )


def test_jsonl_lines_are_exactly_json_dumps_of_the_records() -> None:
    request = delivered("r1", 'camp"1', ["+905321234567", "+90 532 987 65 43", "905551112233"])
    lines = request.jsonl().splitlines(keepends=True)
    assert lines == [json.dumps(record) + "\n" for record in request.records()]
    assert json.loads(lines[0]) == {
        "campaign_id": 'camp"1',
        "request_id": "r1",
        "time": "2023-11-14T22:13:20.000Z",
        "time_ms": 1_700_000_000_000,
        "phone": "+905321234567",
        "custom_attributes": {"name": 'Ayşe "A" Ünal\n', "n": 1.5, "tags": ["x", None], "ok": True},
        "built_in_responses": None,
    }
    assert json.loads(lines[2])["built_in_responses"] == {"customerDetailedInformation1": "b1"}


def test_the_file_is_appended_per_request_and_never_truncated(tmp_path: Path) -> None:
    path = tmp_path / "deliveries.jsonl"
    log = DeliveryLog(path, memory_recipients=100)
    log.append(delivered("r1", "c", ["+905321234567"]))
    assert [json.loads(line)["request_id"] for line in path.read_text().splitlines()] == ["r1"]
    log.append(delivered("r2", "c", ["+905321234567", "+905329876543"]))
    log.clear()
    log.append(delivered("r3", "c", ["+905321234567"]))
    ids = [json.loads(line)["request_id"] for line in path.read_text().splitlines()]
    assert ids == ["r1", "r2", "r2", "r3"]
    assert [r["request_id"] for r in log.records()] == ["r3"]


def test_records_filter_by_campaign_in_order() -> None:
    log = DeliveryLog(None, memory_recipients=100)
    log.append(delivered("r1", "a", ["+905321234567"]))
    log.append(delivered("r2", "b", ["+905321234568"]))
    log.append(delivered("r3", "a", ["+905321234569", "+905321234570"]))
    assert [r["phone"] for r in log.records("a")] == [
        "+905321234567",
        "+905321234569",
        "+905321234570",
    ]
    assert [json.loads(line)["request_id"] for line in log.jsonl("b").splitlines()] == ["r2"]
    assert len(log.records()) == 4
    assert log.records("none") == []


def test_memory_keeps_the_newest_requests_within_the_limit() -> None:
    log = DeliveryLog(None, memory_recipients=3)
    log.append(delivered("r1", "c", ["+905321234561", "+905321234562"]))
    log.append(delivered("r2", "c", ["+905321234563"]))
    log.append(delivered("r3", "c", ["+905321234564", "+905321234565"]))
    assert [r["request_id"] for r in log.records()] == ["r2", "r3", "r3"]
    assert log.recipients == 5
    assert log.dropped_from_memory == 2
    log.append(delivered("r4", "c", ["+905321234566"] * 1))
    assert [r["request_id"] for r in log.records()] == ["r3", "r3", "r4"]


def test_iso_utc() -> None:
    assert iso_utc(1_700_000_000_123_456_789) == "2023-11-14T22:13:20.123Z"


def test_request_records_hold_what_tests_check() -> None:
    clock = ManualClock(start_wall_ns=1_700_000_000_000_000_000)
    config = SimulatorConfig.from_options(tokens=["tok"], campaigns=["c"], rate_limits="1/1s")
    state = SimulatorState(config, clock)
    body = json.dumps({"phone_numbers": ["+905321234567", "+905329876543"]}).encode()
    handle_sharing(state, "Token token=tok", "c", body)
    clock.advance(ms=250)
    handle_sharing(state, "Token token=tok", "c", body)
    first, second = state.requests.records()
    assert first == {
        "request_id": first["request_id"],
        "token": token_fingerprint("tok"),
        "campaign_id": "c",
        "recipients": 2,
        "time": "2023-11-14T22:13:20.000Z",
        "time_ms": 1_700_000_000_000,
        "clock_ns": 0,
        "http_status": 200,
        "code": None,
        "fault": None,
        "retry_after_s": None,
    }
    assert (second["clock_ns"], second["time_ms"]) == (250_000_000, 1_700_000_000_250)
    assert (second["http_status"], second["retry_after_s"]) == (429, 1)
    deliveries = state.deliveries.records()
    assert {d["request_id"] for d in deliveries} == {first["request_id"]}
    assert {d["time_ms"] for d in deliveries} == {1_700_000_000_000}
    assert state.requests.records("other") == []


@pytest.mark.parametrize(
    ("phone", "masked"),
    [("+905321234567", "+90******4567"), ("905321234567", "905*****4567"), ("1234567", "*******")],
)
def test_phones_are_masked(phone: str, masked: str) -> None:
    assert mask_phone(phone) == masked


def test_logs_never_show_tokens_or_phone_numbers(caplog: pytest.LogCaptureFixture) -> None:
    token, phone = "very-secret-token", "+905321234567"
    config = SimulatorConfig.from_options(tokens=[token], any_campaign=True, rate_limits="off")
    state = SimulatorState(config, ManualClock())
    body = json.dumps({"phone_numbers": [phone]}).encode()
    with caplog.at_level(logging.DEBUG, logger="consumer.simulator"):
        handle_sharing(state, f"Token token={token}", "c", body)
        state.set_faults(
            FaultSettings(poison_phones=frozenset({phone}), token_codes={token: 13011})
        )
        state.set_faults(FaultSettings(poison_phones=frozenset({phone})))
        handle_sharing(state, f"Token token={token}", "c", body)
        handle_sharing(state, "Token token=wrong-secret", "c", body)
    text = caplog.text
    assert len(caplog.records) == 5  # a line per request, a line per fault change
    assert token_fingerprint(token) in text
    assert "+90******4567" in text
    for secret in (token, "wrong-secret", phone, "5321234567"):
        assert secret not in text

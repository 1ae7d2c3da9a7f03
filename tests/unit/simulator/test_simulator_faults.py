"""Fault injection decided per request: which answer, what is recorded, what budget is used."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from consumer.simulator.clock import ManualClock
from consumer.simulator.config import FaultSettings, SimulatorConfig
from consumer.simulator.sharing import Handling, handle_sharing
from consumer.simulator.state import SimulatorState

TOKEN = "tok-1"
PHONES = ["+905321234567", "+905329876543", "+905551112233"]
BODY = json.dumps({"phone_numbers": PHONES}).encode()


def make_state(faults: FaultSettings, rate_limits: str = "off", seed: int = 7) -> SimulatorState:
    config = SimulatorConfig.from_options(
        tokens=[TOKEN, "tok-2"],
        campaigns=["c1", "c2"],
        rate_limits=rate_limits,
        seed=seed,
    )
    state = SimulatorState(config, ManualClock())
    state.set_faults(faults)
    return state


def send(
    state: SimulatorState, token: str = TOKEN, campaign: str = "c1", body: bytes = BODY
) -> Handling:
    return handle_sharing(state, f"Token token={token}", campaign, body)


def answer_of(handling: Handling) -> tuple[int, dict[str, Any]]:
    assert handling.answer is not None
    return handling.answer.http_status, json.loads(handling.answer.body)


@pytest.mark.parametrize(
    ("status", "word", "message"),
    [
        (500, "internal_server_error", "Internal Server Error"),
        (502, "bad_gateway", "Bad Gateway"),
        (503, "service_unavailable", "Service Unavailable"),
        (504, "gateway_timeout", "Gateway Timeout"),
        (400, "bad_request", "Bad Request"),
    ],
)
def test_an_injected_status_answers_in_the_error_shape_without_delivering(
    status: int, word: str, message: str
) -> None:
    state = make_state(FaultSettings(error_rates={status: 1.0}))
    handling = send(state)
    assert answer_of(handling) == (status, {"status": word, "code": None, "message": message})
    assert handling.record.fault == "error_rate"
    assert state.deliveries.recipients == 0


def test_garbage_bodies_are_html_with_the_injected_status() -> None:
    state = make_state(FaultSettings(error_rates={502: 1.0}, garbage_body_rate=1.0))
    handling = send(state)
    assert handling.answer is not None
    assert handling.answer.http_status == 502
    assert handling.answer.media_type == "text/html"
    assert handling.answer.body.startswith(b"<html>")
    assert b"502 Bad Gateway" in handling.answer.body
    assert handling.record.fault == "garbage_body"
    assert state.deliveries.recipients == 0


def test_error_rates_are_drawn_in_proportion_and_repeat_with_the_seed() -> None:
    faults = FaultSettings(error_rates={503: 0.2, 500: 0.1}, garbage_body_rate=0.5)

    def statuses(state: SimulatorState) -> list[tuple[int, str]]:
        out = []
        for _ in range(2000):
            handling = send(state)
            assert handling.answer is not None
            out.append((handling.answer.http_status, handling.answer.media_type))
        return out

    first = statuses(make_state(faults, seed=1))
    assert statuses(make_state(faults, seed=1)) == first
    assert statuses(make_state(faults, seed=2)) != first
    counts = Counter(status for status, _ in first)
    assert 340 < counts[503] < 460  # 400 expected
    assert 150 < counts[500] < 250  # 200 expected
    assert counts[200] + counts[503] + counts[500] == 2000
    html = sum(1 for status, media in first if media == "text/html")
    assert 0.4 < html / (counts[503] + counts[500]) < 0.6


def test_reset_reseeds_the_fault_dice() -> None:
    state = make_state(FaultSettings(error_rates={503: 0.5}), seed=3)
    first = [answer_of(send(state))[0] for _ in range(50)]
    state.reset()
    assert [answer_of(send(state))[0] for _ in range(50)] == first


def test_an_injected_error_after_the_throttle_consumes_budget() -> None:
    state = make_state(FaultSettings(error_rates={503: 1.0}), rate_limits="1/1s")
    assert answer_of(send(state))[0] == 503
    assert answer_of(send(state))[0] == 429


@pytest.mark.parametrize(
    ("code", "http_status", "word", "message"),
    [
        (13034, 400, "bad_request", "Invalid Flow"),
        (13005, 404, "not_found", "This node, nor any of their parent has any flow"),
        (13013, 403, "forbidden", "Permission denied"),
    ],
)
def test_a_campaign_code_answers_with_the_reference_entry(
    code: int, http_status: int, word: str, message: str
) -> None:
    state = make_state(FaultSettings(campaign_codes={"c2": code}))
    handling = send(state, campaign="c2")
    assert answer_of(handling) == (http_status, {"status": word, "code": code, "message": message})
    assert handling.record.fault == "campaign_code"
    assert answer_of(send(state, campaign="c1"))[0] == 200


def test_a_campaign_with_a_code_counts_as_known() -> None:
    state = make_state(FaultSettings(campaign_codes={"not-listed": 13034}))
    assert answer_of(send(state, campaign="not-listed"))[1]["code"] == 13034


@pytest.mark.parametrize(
    ("code", "http_status", "word", "message"),
    [(13011, 401, "unauthorized", "User is inactive"), (13036, 403, "forbidden", "Account locked")],
)
def test_a_token_code_answers_for_that_token_only(
    code: int, http_status: int, word: str, message: str
) -> None:
    state = make_state(FaultSettings(token_codes={"tok-2": code}))
    handling = send(state, token="tok-2")
    assert answer_of(handling) == (http_status, {"status": word, "code": code, "message": message})
    assert handling.record.fault == "token_code"
    assert answer_of(send(state))[0] == 200


def test_token_and_campaign_codes_consume_no_budget() -> None:
    faults = FaultSettings(token_codes={"tok-2": 13036}, campaign_codes={"c2": 13034})
    state = make_state(faults, rate_limits="1/1s")
    send(state, token="tok-2")
    send(state, campaign="c2")
    assert answer_of(send(state))[0] == 200


def test_a_poison_phone_fails_the_whole_request_with_the_default_code() -> None:
    state = make_state(FaultSettings(poison_phones=frozenset({PHONES[1]})))
    handling = send(state)
    assert answer_of(handling) == (
        400,
        {"status": "bad_request", "code": 13028, "message": "Invalid parameters"},
    )
    assert handling.record.fault == "poison_phone"
    assert state.deliveries.recipients == 0
    clean = json.dumps({"phone_numbers": [PHONES[0], PHONES[2]]}).encode()
    assert answer_of(send(state, body=clean))[0] == 200


def test_poison_phones_answer_with_the_configured_code() -> None:
    state = make_state(FaultSettings(poison_phones=frozenset({PHONES[0]}), poison_code=13038))
    assert answer_of(send(state))[1]["code"] == 13038


def test_poison_phones_can_be_isolated_by_bisection() -> None:
    """What the consumer will do: split failing batches until single bad recipients remain."""
    phones = [f"+90532{i:07d}" for i in range(64)]
    poison = {phones[5], phones[40]}
    state = make_state(FaultSettings(poison_phones=frozenset(poison)))

    def isolate(batch: list[str]) -> list[str]:
        body = json.dumps({"phone_numbers": batch}).encode()
        if answer_of(send(state, body=body))[0] == 200:
            return []
        if len(batch) == 1:
            return batch
        return isolate(batch[: len(batch) // 2]) + isolate(batch[len(batch) // 2 :])

    assert set(isolate(phones)) == poison
    assert state.deliveries.recipients == 62


def test_a_hang_answers_nothing_and_delivers_nothing() -> None:
    state = make_state(FaultSettings(hang_rate=1.0))
    handling = send(state)
    assert handling.answer is None
    assert handling.record.http_status is None
    assert handling.record.fault == "hang"
    assert state.deliveries.recipients == 0
    assert state.stats_dict()["requests"]["by_status"] == {"no_answer": 1}


def test_a_hang_after_accept_delivers_but_answers_nothing() -> None:
    state = make_state(FaultSettings(hang_after_accept_rate=1.0))
    handling = send(state)
    assert handling.answer is None
    assert handling.record.fault == "hang_after_accept"
    assert [r["phone"] for r in state.deliveries.records()] == PHONES
    assert state.deliveries.records()[0]["request_id"] == handling.record.request_id


def test_a_hang_consumes_budget() -> None:
    state = make_state(FaultSettings(hang_rate=1.0), rate_limits="1/1s")
    send(state)
    assert answer_of(send(state))[0] == 429


def test_latency_is_fixed_plus_uniform_jitter() -> None:
    state = make_state(FaultSettings(latency_ms=100, latency_jitter_ms=50))
    delays = [send(state).delay_s for _ in range(200)]
    assert all(0.1 <= d <= 0.15 for d in delays)
    assert max(delays) - min(delays) > 0.04
    assert send(make_state(FaultSettings(latency_ms=20))).delay_s == 0.02
    assert send(make_state(FaultSettings())).delay_s == 0.0


def test_latency_applies_to_error_answers_too() -> None:
    state = make_state(FaultSettings(latency_ms=30))
    assert handle_sharing(state, None, "c1", BODY).delay_s == 0.03


def test_a_bad_gateway_after_accept_delivers_then_answers_a_bare_502() -> None:
    # What a load balancer answers when Pisano's connection breaks while it answers: the
    # recipients were delivered, the client sees a 502 without Pisano's error body.
    state = make_state(FaultSettings(bad_gateway_after_accept_rate=1.0))
    handling = send(state)
    assert handling.answer is not None and handling.answer.http_status == 502
    assert handling.answer.media_type == "text/html" and b"502 Bad Gateway" in handling.answer.body
    assert handling.record.fault == "bad_gateway_after_accept"
    assert [r["phone"] for r in state.deliveries.records()] == PHONES

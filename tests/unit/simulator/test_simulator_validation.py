"""Body checks with the reference's codes, the token and campaign checks, and their order."""

from __future__ import annotations

import json
from typing import Any

import pytest

from consumer.simulator.answers import ErrorAnswer
from consumer.simulator.clock import ManualClock
from consumer.simulator.config import SimulatorConfig
from consumer.simulator.sharing import Handling, handle_sharing
from consumer.simulator.state import SimulatorState
from consumer.simulator.validation import SharingRequest, decode_body, validate_sharing

PHONE = "+905321234567"
OTHER = "+905329876543"


def rejection(body: bytes, max_recipients: int = 5000) -> tuple[int, str, int | None, str]:
    with pytest.raises(ErrorAnswer) as caught:
        validate_sharing(decode_body(body), max_recipients)
    error = caught.value
    return error.http_status, error.status, error.code, error.message


def encoded(data: Any) -> bytes:
    return json.dumps(data).encode()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "Invalid parameters: the body is not JSON"),
        (b'{"phone_numbers": ["+905321234567"]', "Invalid parameters: the body is not JSON"),
        (b"\xff\xfe", "Invalid parameters: the body is not JSON"),
        (b"", "Invalid parameters: the body is not JSON"),
        (b'["+905321234567"]', "Invalid parameters: the body is not a JSON object"),
        (b'"text"', "Invalid parameters: the body is not a JSON object"),
    ],
)
def test_a_body_that_is_not_a_json_object_is_13028(body: bytes, message: str) -> None:
    assert rejection(body) == (400, "bad_request", 13028, message)


@pytest.mark.parametrize("body", [{}, {"phone_numbers": None}, {"phones": [PHONE]}])
def test_missing_phone_numbers_is_13015(body: dict[str, Any]) -> None:
    assert rejection(encoded(body)) == (
        400,
        "bad_request",
        13015,
        "Required field not present in params!: phone_numbers",
    )


@pytest.mark.parametrize(
    "phones", [[], PHONE, {"a": PHONE}, [PHONE, 905321234567], [PHONE, None], [[PHONE]], 7]
)
def test_phone_numbers_not_a_non_empty_list_of_strings_is_13028(phones: Any) -> None:
    assert rejection(encoded({"phone_numbers": phones})) == (
        400,
        "bad_request",
        13028,
        "Invalid parameters: phone_numbers must be a non-empty list of strings",
    )


def test_more_phone_numbers_than_the_limit_is_13028_naming_the_limit() -> None:
    phones = [f"+90532{i:07d}" for i in range(5001)]
    assert rejection(encoded({"phone_numbers": phones})) == (
        400,
        "bad_request",
        13028,
        "Invalid parameters: at most 5000 phone numbers per request, got 5001",
    )
    assert rejection(encoded({"phone_numbers": phones[:3]}), max_recipients=2)[3] == (
        "Invalid parameters: at most 2 phone numbers per request, got 3"
    )


def test_exactly_the_limit_is_accepted() -> None:
    phones = [f"+90532{i:07d}" for i in range(5000)]
    assert len(validate_sharing({"phone_numbers": phones}, 5000).phone_numbers) == 5000


def test_a_repeated_phone_is_13017_naming_positions_not_the_number() -> None:
    status, word, code, message = rejection(encoded({"phone_numbers": [PHONE, OTHER, PHONE]}))
    assert (status, word, code) == (400, "bad_request", 13017)
    assert message == "Duplicate value: phone_numbers[2] repeats phone_numbers[0]"


def test_duplicates_are_found_before_implausible_phones() -> None:
    assert rejection(encoded({"phone_numbers": ["abc", "abc"]}))[2] == 13017


@pytest.mark.parametrize(
    "phone",
    ["12345", "+1234567890123456", "++905321234567", "+90-532-123", "90532abc", "", " ", "+"],
)
def test_an_implausible_phone_is_13028_naming_its_position(phone: str) -> None:
    assert rejection(encoded({"phone_numbers": [PHONE, phone]})) == (
        400,
        "bad_request",
        13028,
        "Invalid parameters: phone_numbers[1] is not a phone number",
    )


@pytest.mark.parametrize(
    "phone", ["123456", "+123456789012345", "905321234567", "+90 532 123 45 67", " +905321234567 "]
)
def test_plausible_phones_pass(phone: str) -> None:
    assert validate_sharing({"phone_numbers": [phone]}, 5000).phone_numbers == [phone]


@pytest.mark.parametrize("field", ["custom_attributes", "built_in_responses"])
@pytest.mark.parametrize(
    ("value", "detail"),
    [
        ([{"name": "x"}], "must be an object of objects keyed by phone number"),
        ("x", "must be an object of objects keyed by phone number"),
        ({PHONE: "x"}, "must be an object of objects keyed by phone number"),
        ({PHONE: ["x"]}, "must be an object of objects keyed by phone number"),
        ({OTHER: {"name": "x"}}, "has a key that is not in phone_numbers"),
    ],
)
def test_attribute_maps_must_be_objects_keyed_by_listed_phones(
    field: str, value: Any, detail: str
) -> None:
    assert rejection(encoded({"phone_numbers": [PHONE], field: value})) == (
        400,
        "bad_request",
        13028,
        f"Invalid parameters: {field} {detail}",
    )


def test_a_valid_body_gives_its_lists_and_maps() -> None:
    data = {
        "phone_numbers": [PHONE, OTHER],
        "custom_attributes": {PHONE: {"name": "Ayşe", "external_id": "42"}},
        "built_in_responses": {OTHER: {"customerDetailedInformation1": "b1"}},
        "ignored": True,
    }
    assert validate_sharing(data, 5000) == SharingRequest(
        [PHONE, OTHER],
        {PHONE: {"name": "Ayşe", "external_id": "42"}},
        {OTHER: {"customerDetailedInformation1": "b1"}},
    )
    assert validate_sharing({"phone_numbers": [PHONE], "custom_attributes": None}, 5000) == (
        SharingRequest([PHONE], {}, {})
    )


# The checks before the body, and their order (sharing.py).

TOKEN = "tok-1"


def make_state(**options: Any) -> SimulatorState:
    options = {"tokens": [TOKEN, "tok-2"], "campaigns": ["known"], **options}
    return SimulatorState(SimulatorConfig.from_options(**options), ManualClock())


def send(
    state: SimulatorState,
    authorization: str | None = f"Token token={TOKEN}",
    campaign: str = "known",
    body: bytes | None = b'{"phone_numbers": ["+905321234567"]}',
) -> Handling:
    return handle_sharing(state, authorization, campaign, body)


def answer_of(handling: Handling) -> tuple[int, dict[str, Any]]:
    assert handling.answer is not None
    return handling.answer.http_status, json.loads(handling.answer.body)


WRONG_TOKEN = (
    401,
    {"status": "unauthorized", "code": 13001, "message": "Wrong authentication token"},
)


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Token token=nope",
        "Token tok-1",
        "Bearer tok-1",
        "token token=tok-1",
        "Token token=tok-1x",
        'Token token="tok-1',
        "Token token=tok-1 extra",
    ],
)
def test_a_missing_or_wrong_token_is_401_13001(authorization: str | None) -> None:
    handling = send(make_state(), authorization)
    assert answer_of(handling) == WRONG_TOKEN


@pytest.mark.parametrize(
    "authorization",
    ["Token token=tok-1", 'Token token="tok-1"', "Token  token=tok-2", "Token token=tok-1 "],
)
def test_each_configured_token_is_accepted_quoted_or_not(authorization: str) -> None:
    assert answer_of(send(make_state(), authorization))[0] == 200


def test_an_unknown_campaign_is_404_13002() -> None:
    assert answer_of(send(make_state(), campaign="unknown")) == (
        404,
        {"status": "NOT_FOUND", "code": 13002, "message": "Requested resource not found!"},
    )


def test_any_campaign_accepts_every_campaign_id() -> None:
    assert answer_of(send(make_state(any_campaign=True), campaign="whatever"))[0] == 200


def test_an_oversized_body_is_413_before_anything_else() -> None:
    handling = send(make_state(max_body_bytes=1024), authorization=None, body=None)
    assert answer_of(handling) == (
        413,
        {
            "status": "request_entity_too_large",
            "code": None,
            "message": "Request body larger than 1024 bytes",
        },
    )


def test_the_token_is_checked_before_the_campaign_and_the_body() -> None:
    handling = send(make_state(), "Token token=nope", campaign="unknown", body=b"junk")
    assert answer_of(handling) == WRONG_TOKEN
    assert handling.record.token is not None  # a fingerprint of what was presented


def test_failed_token_and_campaign_checks_consume_no_throttle_budget() -> None:
    state = make_state(rate_limits="1/1s")
    send(state, "Token token=nope")
    send(state, campaign="unknown")
    assert answer_of(send(state))[0] == 200
    assert answer_of(send(state))[0] == 429


def test_the_campaign_is_checked_before_the_throttle() -> None:
    state = make_state(rate_limits="1/1s")
    send(state)
    assert answer_of(send(state, campaign="unknown"))[0] == 404


def test_an_invalid_body_consumes_throttle_budget() -> None:
    state = make_state(rate_limits="1/1s")
    assert answer_of(send(state, body=b"junk"))[0] == 400
    assert answer_of(send(state))[0] == 429


def test_the_throttle_answers_before_validation() -> None:
    state = make_state(rate_limits="1/1s")
    send(state)
    assert answer_of(send(state, body=b"junk"))[0] == 429


def test_a_rejected_body_is_recorded_with_its_recipient_count() -> None:
    state = make_state()
    phones = [f"+90532{i:07d}" for i in range(4)] + ["bad"]
    handling = send(state, body=encoded({"phone_numbers": phones}))
    assert answer_of(handling)[1]["code"] == 13028
    assert handling.record.recipients == 5
    assert handling.record.code == 13028
    assert state.deliveries.recipients == 0


def test_a_valid_request_is_200_with_its_request_id_and_count() -> None:
    state = make_state()
    handling = send(state, body=encoded({"phone_numbers": [PHONE, OTHER]}))
    status, body = answer_of(handling)
    assert status == 200
    assert body == {"status": "ok", "request_id": handling.record.request_id, "accepted": 2}
    assert [r["phone"] for r in state.deliveries.records()] == [PHONE, OTHER]

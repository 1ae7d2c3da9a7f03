"""The checks Pisano makes on an `sms_sharings` body, with the reference's codes.

In order, the first failure answers (HTTP 400):

| problem                                                            | code  |
|--------------------------------------------------------------------|-------|
| body not JSON, or not a JSON object                                | 13028 |
| `phone_numbers` missing (or null)                                  | 13015 |
| `phone_numbers` not a non-empty list of strings                    | 13028 |
| more than `max_recipients` (5000) phone numbers                    | 13028 |
| the same phone number string twice                                 | 13017 |
| a phone number not `^\\+?[0-9]{6,15}$` once spaces are removed      | 13028 |
| `custom_attributes` / `built_in_responses` not an object of objects | 13028 |
| ... or keyed by a phone number that is not in `phone_numbers`       | 13028 |

Other top-level fields are ignored. The message names positions (`phone_numbers[3]`), never a
phone number, so a client may log it. The work per phone is one regular expression and one set
insertion: this runs for every recipient of every request.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from consumer.delivery.pisano_codes import DUPLICATE_VALUE, INVALID_PARAMETERS, REQUIRED_FIELD_MISSING
from consumer.simulator.answers import ErrorAnswer

_PLAUSIBLE_PHONE = re.compile(r"\+?[0-9]{6,15}")

AttributeMap = dict[str, dict[str, Any]]


@dataclass(frozen=True)
class SharingRequest:
    phone_numbers: list[str]
    custom_attributes: AttributeMap
    built_in_responses: AttributeMap


def decode_body(body: bytes) -> dict[str, Any]:
    """The JSON object in `body`, or ErrorAnswer 13028."""
    try:
        data = json.loads(body)
    except ValueError:  # also UnicodeDecodeError
        raise _invalid("the body is not JSON") from None
    if not isinstance(data, dict):
        raise _invalid("the body is not a JSON object")
    return data


def validate_sharing(data: dict[str, Any], max_recipients: int) -> SharingRequest:
    """The request in a decoded body, or ErrorAnswer with the code Pisano would answer."""
    phones = data.get("phone_numbers")
    if phones is None:
        raise ErrorAnswer.for_code(REQUIRED_FIELD_MISSING, "phone_numbers")
    if not isinstance(phones, list) or not phones or set(map(type, phones)) != {str}:
        raise _invalid("phone_numbers must be a non-empty list of strings")
    if len(phones) > max_recipients:
        raise _invalid(f"at most {max_recipients} phone numbers per request, got {len(phones)}")
    phone_set = set(phones)
    if len(phone_set) != len(phones):
        raise ErrorAnswer.for_code(DUPLICATE_VALUE, _first_repeat(phones))
    plausible = _PLAUSIBLE_PHONE.fullmatch
    for index, phone in enumerate(phones):
        if plausible(phone.replace(" ", "")) is None:
            raise _invalid(f"phone_numbers[{index}] is not a phone number")
    return SharingRequest(
        phones,
        _attribute_map(data, "custom_attributes", phone_set),
        _attribute_map(data, "built_in_responses", phone_set),
    )


def _attribute_map(data: dict[str, Any], name: str, phones: set[str]) -> AttributeMap:
    value = data.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict) or not set(map(type, value.values())) <= {dict}:
        raise _invalid(f"{name} must be an object of objects keyed by phone number")
    if not value.keys() <= phones:
        raise _invalid(f"{name} has a key that is not in phone_numbers")
    return value


def _first_repeat(phones: list[str]) -> str:
    first_seen: dict[str, int] = {}
    for index, phone in enumerate(phones):
        if phone in first_seen:
            return f"phone_numbers[{index}] repeats phone_numbers[{first_seen[phone]}]"
        first_seen[phone] = index
    raise AssertionError("called without a repeated phone number")


def _invalid(detail: str) -> ErrorAnswer:
    return ErrorAnswer.for_code(INVALID_PARAMETERS, detail)

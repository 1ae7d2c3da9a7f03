"""Pisano's error codes as data: code -> (HTTP status, status word, message).

Copied from the vendor's response code table (tests/data/pisano_codes.md), spelling included
("occured", "identitiy", the upper-case `NOT_FOUND` of 13002): the simulator answers with these
exact words and the consumer reads them back, so both sides share this one table.
"""

from __future__ import annotations

from typing import NamedTuple


class PisanoCode(NamedTuple):
    """How Pisano answers with one error code."""

    http_status: int
    status: str
    message: str


GENERIC_ERROR = 13000
WRONG_AUTHENTICATION_TOKEN = 13001
RESOURCE_NOT_FOUND = 13002
USER_INACTIVE = 13011
REQUIRED_FIELD_MISSING = 13015
DUPLICATE_VALUE = 13017
INVALID_PARAMETERS = 13028
INVALID_FLOW = 13034
ACCOUNT_LOCKED = 13036

CODES: dict[int, PisanoCode] = {
    13000: PisanoCode(400, "bad_request", "An error occured"),
    13001: PisanoCode(401, "unauthorized", "Wrong authentication token"),
    13002: PisanoCode(404, "NOT_FOUND", "Requested resource not found!"),
    13003: PisanoCode(404, "not_found", "Reset Token not found"),
    13005: PisanoCode(404, "not_found", "This node, nor any of their parent has any flow"),
    13007: PisanoCode(403, "forbidden", "It's not allowed to update Pisano node"),
    13008: PisanoCode(400, "bad_request", "Record could not be deleted"),
    13009: PisanoCode(400, "bad_request", "Updated question already has responses"),
    13010: PisanoCode(404, "not_found", "User not found"),
    13011: PisanoCode(401, "unauthorized", "User is inactive"),
    13012: PisanoCode(409, "conflict", "Password does not match the old password"),
    13013: PisanoCode(403, "forbidden", "Permission denied"),
    13014: PisanoCode(400, "bad_request", "Wrong activation code"),
    13015: PisanoCode(400, "bad_request", "Required field not present in params!"),
    13016: PisanoCode(404, "not_found", "Token not found"),
    13017: PisanoCode(400, "bad_request", "Duplicate value"),
    13018: PisanoCode(404, "not_found", "Response not found"),
    13019: PisanoCode(404, "not_found", "Activation token not found"),
    13020: PisanoCode(
        400, "bad_request", "You selected a reserved node type. Please choose another one."
    ),
    13024: PisanoCode(
        400, "bad_request", "Multiple responses given for a non-multiple choice question"
    ),
    13026: PisanoCode(400, "bad_request", "Captcha is invalid"),
    13028: PisanoCode(400, "bad_request", "Invalid parameters"),
    13029: PisanoCode(400, "bad_request", "Invalid security hash"),
    13030: PisanoCode(400, "bad_request", "Invalid authentication token"),
    13031: PisanoCode(400, "bad_request", "Invalid proxy server parameters"),
    13032: PisanoCode(409, "conflict", "Wrong credentials"),
    13033: PisanoCode(400, "bad_request", "Invalid SDK credentials"),
    13034: PisanoCode(400, "bad_request", "Invalid Flow"),
    13035: PisanoCode(404, "not_found", "Node not found"),
    13036: PisanoCode(403, "forbidden", "Account locked"),
    13037: PisanoCode(400, "bad_request", "Malformatted CSV"),
    13038: PisanoCode(
        400, "bad_request", "Required customer identitiy keys not present in params!"
    ),
}


OTHER_CODE_LABEL = "other"


def code_label(code: int | None) -> str:
    """The `code` label of a metric: a code of the table above, "" for none, and "other" for any
    other value. Pisano's answer (or a proxy's) may carry any number there; a label value taken
    from it unchecked would grow the metric without bound."""
    if code is None:
        return ""
    return str(code) if code in CODES else OTHER_CODE_LABEL

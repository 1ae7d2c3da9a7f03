"""What a failed Pisano call means: retry it, split it, or dead-letter it, and for whom.

One table for every Pisano code of the reference and for the HTTP statuses and transport errors
that come without one (README, "Failure classification"). Scopes:

- `account`: the token or the account is wrong (13001 wrong token, 13011 user inactive, 13036
  account locked, ...). Nothing will work for this token: the circuit breaker opens, the batch
  is dead-lettered with the code, and no throttle slots are burned until a probe succeeds.
- `request`: the request as a whole is refused (13002 unknown campaign, 13034 invalid flow, ...).
  Every recipient would fail the same way: dead-letter the whole batch, no splitting.
- `recipient`: the request may have been refused because of one recipient (13028 invalid
  parameters, 13017 duplicate value, 13038 identity keys missing, ...): split the batch to find
  the bad ones, deliver the rest.

Retriable failures (408, 429, 500/503, connection errors) are retried with backoff. A 504 is
not retried: a gateway that timed out waiting for Pisano cannot say whether Pisano acted, so it
follows the ambiguous policy like a read timeout. So does every other 5xx (501, 505, a CDN's 520
or 524, a proxy's 598/599): a server failed on a request that reached it; nothing says Pisano
refused it, so its ids are never released to be sent again. A 502 depends on who wrote it:
- with Pisano's own JSON error body (`PisanoApiError.pisano_body`), Pisano answered and refused
  the request: retried like a 503;
- without (an HTML page, plain text, an empty body, a gateway's own JSON): a proxy or load
  balancer answered because its upstream failed, which may have happened after Pisano received
  the request (a reset while Pisano was answering, a response the proxy could not read). Its
  fate is unknown: the ambiguous policy, never a blind resend.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from consumer.errors import PisanoApiError, PisanoError, PisanoTransportError, UnusableToken

Scope = Literal["account", "request", "recipient"]
Action = Literal["retry", "ambiguous", "dead_letter"]


@dataclass(frozen=True)
class Verdict:
    action: Action
    scope: Scope
    reason: str  # the dead-letter reason when it ends there


RETRIABLE_STATUSES = frozenset({408, 429, 500, 502, 503})
AMBIGUOUS_STATUSES = frozenset({504})
# Retriable only when Pisano itself wrote the answer; from a gateway, ambiguous.
RETRIABLE_FROM_PISANO_ONLY = frozenset({502})

# Pisano code -> scope, for every code of the vendor's table (tests/data/pisano_codes.md).
CODE_SCOPES: dict[int, Scope] = {
    13000: "recipient",  # "An error occured": generic 400, may come from one recipient's data
    13001: "account",    # Wrong authentication token
    13002: "request",    # Requested resource not found (unknown campaign)
    13003: "request",    # Reset Token not found
    13005: "request",    # node has no flow
    13007: "request",    # not allowed to update Pisano node
    13008: "request",    # record could not be deleted
    13009: "request",    # updated question already has responses
    13010: "account",    # User not found
    13011: "account",    # User is inactive
    13012: "request",    # password does not match
    13013: "request",    # Permission denied (may be one campaign)
    13014: "request",    # wrong activation code
    13015: "recipient",  # Required field not present in params
    13016: "account",    # Token not found
    13017: "recipient",  # Duplicate value
    13018: "request",    # Response not found
    13019: "request",    # Activation token not found
    13020: "request",    # reserved node type
    13024: "recipient",  # multiple responses for a non-multiple question (built_in_responses)
    13026: "request",    # Captcha is invalid
    13028: "recipient",  # Invalid parameters
    13029: "request",    # Invalid security hash
    13030: "account",    # Invalid authentication token
    13031: "request",    # Invalid proxy server parameters
    13032: "account",    # Wrong credentials
    13033: "account",    # Invalid SDK credentials
    13034: "request",    # Invalid Flow
    13035: "request",    # Node not found
    13036: "account",    # Account locked
    13037: "request",    # Malformatted CSV
    13038: "recipient",  # Required customer identity keys not present
}

# Request-scope codes that mean the campaign itself is broken, whatever the batch holds: its
# circuit opens for the fleet (consumer.state.campaigns) instead of every batch spending a slot.
CAMPAIGN_CODES = frozenset({
    13002,  # Requested resource not found: no such campaign at this account
    13005,  # This node, nor any of their parent has any flow
    13034,  # Invalid Flow
})

# When an error answer carries no (known) code, its HTTP status decides.
STATUS_SCOPES: dict[int, Scope] = {
    400: "recipient", 413: "recipient", 422: "recipient",
    401: "account", 403: "account",
}


def classify(error: PisanoError) -> Verdict:
    if isinstance(error, UnusableToken):
        # Nothing was sent (the header could not be built), and a retry would carry the same token.
        return Verdict("dead_letter", "request", "transport_error")
    if isinstance(error, PisanoTransportError):
        if error.ambiguous:
            return Verdict("ambiguous", "request", "ambiguous")
        return Verdict("retry", "request", "transport_error")
    assert isinstance(error, PisanoApiError)
    status = error.http_status
    if status in RETRIABLE_FROM_PISANO_ONLY and not error.pisano_body:
        return Verdict("ambiguous", "request", "ambiguous")
    if status in RETRIABLE_STATUSES:
        return Verdict("retry", "request", "throttled" if status == 429 else "pisano_error")
    if status in AMBIGUOUS_STATUSES or status >= 500:
        # Any other 5xx (501, 505, a CDN's 520 or 524 "origin timed out", a proxy's 598/599) says a
        # server failed on a request that reached it, not that Pisano refused it: like a 504, its
        # fate is unknown. Read as a refusal, its ids were released and free to be sent again.
        return Verdict("ambiguous", "request", "ambiguous")
    scope = CODE_SCOPES.get(error.code) if error.code is not None else None
    if scope is None:
        scope = STATUS_SCOPES.get(status, "request")
    return Verdict("dead_letter", scope, "pisano_error")

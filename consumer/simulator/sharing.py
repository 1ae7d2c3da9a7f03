"""How one `sms_sharings` request is decided: the order of checks and where faults strike.

In this order; the first that applies gives the answer:

 1. body larger than max_body_bytes  -> 413 (not read; like a proxy in front of Pisano)
 2. token missing or unknown         -> 401 13001
 3. fault token_codes[token]         -> that code (an account state: 13011 inactive, 13036 locked)
 4. fault campaign_codes[campaign]   -> that code (a campaign listed here counts as known)
 5. campaign unknown                 -> 404 13002 (unless any_campaign)
 6. throttle, per token              -> 429 + Retry-After; counted per token and window
    -- from here on the request has consumed throttle budget, as anything Pisano processed --
 7. fault hang_rate                  -> no answer, no delivery
 8. fault error_rates                -> that HTTP status, code null (garbage_body_rate: HTML body)
 9. validation (validation.py)       -> 400 13015 / 13017 / 13028
10. fault poison_phones              -> poison_code (default 400 13028), the whole request fails
11. accepted: recipients appended to the delivery log, then
    fault hang_after_accept_rate     -> no answer (the client cannot know it was delivered)
    fault bad_gateway_after_accept_rate -> a bare 502 with a gateway's HTML page (likewise)
    otherwise                        -> 200 {"status": "ok", "request_id", "accepted"}

Steps 1-5 consume no throttle budget, nor does a 429. Added latency (latency_ms plus a uniform
jitter) delays every answer, after the decision and the delivery record: a client that gives up
during it has still been delivered to. Random faults draw from one seeded generator in the order
above, so a seeded run repeats itself request for request.

Everything here is synchronous and runs on the state's one worker thread (state.py), request
after request in the order they arrived: the throttle counts each at its arrival stamp, so the
throttle log stays in time order and exact.
"""

from __future__ import annotations

import logging
import random
import re
import uuid
from dataclasses import dataclass

from consumer.delivery.pisano_codes import RESOURCE_NOT_FOUND, WRONG_AUTHENTICATION_TOKEN
from consumer.simulator.answers import (
    THROTTLED_MESSAGE,
    Answer,
    ErrorAnswer,
    garbage_answer,
    success_answer,
)
from consumer.simulator.deliveries import DeliveredRequest, RequestRecord, iso_utc
from consumer.simulator.redact import mask_phone, token_fingerprint
from consumer.simulator.state import SimulatorState
from consumer.simulator.validation import decode_body, validate_sharing

logger = logging.getLogger(__name__)

# `Token token=abc` or `Token token="abc"`, as Rails' token authentication reads it.
_AUTHORIZATION = re.compile(r'Token\s+token=(?:"([^"]*)"|([^\s"]+))\s*')


@dataclass(frozen=True)
class Arrival:
    """When a request's body had fully arrived, on the simulator's clock."""

    monotonic_ns: int
    wall_ns: int


@dataclass(frozen=True)
class Handling:
    answer: Answer | None  # None: never answer
    delay_s: float  # added latency before answering
    record: RequestRecord


def handle_sharing(
    state: SimulatorState, authorization: str | None, campaign_id: str, body: bytes | None,
    arrived: Arrival | None = None,
) -> Handling:
    """Decide and record one request; `body` is None when it was too large to read. `arrived`:
    its arrival stamp (None: now)."""
    now_ns = arrived.monotonic_ns if arrived else state.clock.monotonic_ns()
    wall_ns = arrived.wall_ns if arrived else state.clock.wall_ns()
    request_id = str(uuid.uuid4())
    config = state.config
    faults = config.faults
    token = _presented_token(authorization)
    fingerprint = token_fingerprint(token) if token is not None else None
    recipients: int | None = None
    fault: str | None = None
    fault_detail = ""
    retry_after_s: int | None = None
    answer: Answer | None
    try:
        if body is None:
            raise ErrorAnswer.for_status(
                413, f"Request body larger than {config.max_body_bytes} bytes"
            )
        if token is None or token not in config.tokens:
            raise ErrorAnswer.for_code(WRONG_AUTHENTICATION_TOKEN)
        fingerprint = token_fingerprint(token)  # as before, but now known not to be None
        if token in faults.token_codes:
            fault = "token_code"
            raise ErrorAnswer.for_code(faults.token_codes[token])
        # A campaign id is a UUID: either case names the same campaign (the consumer sends lower
        # case; a campaign configured here in upper case is still that campaign).
        campaign = campaign_id.lower()
        codes = {c.lower(): code for c, code in faults.campaign_codes.items()} if faults.campaign_codes else {}
        if campaign in codes:
            fault = "campaign_code"
            raise ErrorAnswer.for_code(codes[campaign])
        if not (config.any_campaign or campaign in {c.lower() for c in config.campaigns}):
            raise ErrorAnswer.for_code(RESOURCE_NOT_FOUND)
        decision = state.throttle.try_acquire(fingerprint, now_ns)
        if not decision.accepted:
            state.stats.count_throttled(fingerprint, decision.exceeded)
            retry_after_s = decision.retry_after_s
            raise ErrorAnswer.for_status(
                429, THROTTLED_MESSAGE, {"Retry-After": str(retry_after_s)}
            )
        rng = state.rng
        if faults.hang_rate and rng.random() < faults.hang_rate:
            fault = "hang"
            answer = None
        elif (status := _draw_error_status(rng, faults.error_rates)) is not None:
            if faults.garbage_body_rate and rng.random() < faults.garbage_body_rate:
                fault = "garbage_body"
                answer = garbage_answer(status)
            else:
                fault = "error_rate"
                answer = ErrorAnswer.for_status(status).to_answer()
        else:
            data = decode_body(body)
            phones = data.get("phone_numbers")
            recipients = len(phones) if isinstance(phones, list) else None
            sharing = validate_sharing(data, config.max_recipients)
            if faults.poison_phones and not faults.poison_phones.isdisjoint(sharing.phone_numbers):
                fault = "poison_phone"
                poisoned = faults.poison_phones.intersection(sharing.phone_numbers)
                fault_detail = " poison=" + ",".join(sorted(mask_phone(p) for p in poisoned))
                raise ErrorAnswer.for_code(faults.poison_code)
            state.deliveries.append(
                DeliveredRequest(
                    request_id,
                    campaign_id,
                    iso_utc(wall_ns),
                    wall_ns // 1_000_000,
                    sharing.phone_numbers,
                    sharing.custom_attributes,
                    sharing.built_in_responses,
                )
            )
            after = rng.random() if faults.hang_after_accept_rate or faults.bad_gateway_after_accept_rate else 1.0
            if after < faults.hang_after_accept_rate:
                fault = "hang_after_accept"
                answer = None
            elif after < faults.hang_after_accept_rate + faults.bad_gateway_after_accept_rate:
                fault = "bad_gateway_after_accept"
                answer = garbage_answer(502)
            else:
                answer = success_answer(request_id, len(sharing.phone_numbers))
    except ErrorAnswer as error:
        answer = error.to_answer()

    record = RequestRecord(
        request_id=request_id,
        token=fingerprint,
        campaign_id=campaign_id,
        recipients=recipients,
        time=iso_utc(wall_ns),
        time_ms=wall_ns // 1_000_000,
        clock_ns=now_ns,
        http_status=answer.http_status if answer else None,
        code=answer.code if answer else None,
        fault=fault,
        retry_after_s=retry_after_s,
    )
    state.requests.append(record)
    state.stats.count_answer(record.http_status, record.code)
    logger.debug(
        "request %s campaign=%s token=%s recipients=%s -> %s code=%s fault=%s%s",
        request_id,
        campaign_id,
        fingerprint,
        recipients,
        record.http_status or "no answer",
        record.code,
        fault,
        fault_detail,
    )
    return Handling(answer, _latency_s(state) if answer else 0.0, record)


def _presented_token(authorization: str | None) -> str | None:
    match = _AUTHORIZATION.fullmatch(authorization) if authorization else None
    if match is None:
        return None
    return match[1] if match[1] is not None else match[2]


def _draw_error_status(rng: random.Random, error_rates: dict[int, float]) -> int | None:
    """One draw for all statuses: each gets exactly its rate, and they never overlap."""
    if not error_rates:
        return None
    point = rng.random()
    cumulative = 0.0
    for status, rate in error_rates.items():
        cumulative += rate
        if point < cumulative:
            return status
    return None


def _latency_s(state: SimulatorState) -> float:
    faults = state.config.faults
    latency_ms = faults.latency_ms
    if faults.latency_jitter_ms:
        latency_ms += state.rng.uniform(0, faults.latency_jitter_ms)
    return latency_ms / 1000

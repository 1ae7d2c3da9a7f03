"""The Pisano SMS sharing API client: one pooled httpx client, explicit timeouts.

    POST {PISANO_URL}/v1/sms_campaigns/{campaign_id}/sms_sharings
    Authorization: Token token=<API TOKEN>

Errors are parsed defensively: Pisano's error body shape is not documented (reference, last
paragraph), so the code is looked for in the usual places and an unreadable body still has its
HTTP status. Transport failures say whether the request may have reached Pisano (`ambiguous`),
because resending an ambiguous request could send someone a second SMS.
"""

from __future__ import annotations

import email.utils
import json
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from consumer import __version__
from consumer.errors import PisanoApiError, PisanoTransportError
from consumer.ingest.mapping import Recipient

MAX_ERROR_BODY_CHARS = 500
PROBE_CAMPAIGN = "00000000-0000-0000-0000-000000000000"
# Answers to the token probe that Pisano gives only after accepting the token.
TOKEN_ACCEPTED_CODES = frozenset({13015, 13028, 13002})
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout,
             # A failed or stalled write means the body never arrived whole: Pisano cannot have
             # acted on a request it could not read to its end.
             httpx.WriteError, httpx.WriteTimeout, httpx.UnsupportedProtocol)


@dataclass(frozen=True)
class Accepted:
    http_status: int
    request_id: str | None
    elapsed_s: float


def sharing_path(campaign_id: str) -> str:
    return f"/v1/sms_campaigns/{campaign_id}/sms_sharings"


def build_body(recipients: Sequence[Recipient]) -> bytes:
    """The reference's JSON body; the attribute maps are keyed by phone and omitted when empty."""
    body: dict[str, Any] = {"phone_numbers": [r.phone for r in recipients]}
    custom = {r.phone: r.custom_attributes for r in recipients if r.custom_attributes}
    built_in = {r.phone: r.built_in_responses for r in recipients if r.built_in_responses}
    if custom:
        body["custom_attributes"] = custom
    if built_in:
        body["built_in_responses"] = built_in
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def _verify(tls_verify: bool, ca_file: Path | None) -> ssl.SSLContext | bool:
    if not tls_verify:
        return False
    if ca_file is not None:
        return ssl.create_default_context(cafile=str(ca_file))
    return True


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def parse_error(response: httpx.Response) -> PisanoApiError:
    code: int | None = None
    pisano_body = False
    message = response.reason_phrase or f"HTTP {response.status_code}"
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
        text = response.text.strip()
        if text:
            message = text[:MAX_ERROR_BODY_CHARS]
    if isinstance(body, dict):
        nested = body.get("error")
        fields = nested if isinstance(nested, dict) else body
        # Pisano's error carries a code (maybe null) and a status word; a gateway's own JSON
        # (Kong, AWS API Gateway) only a message. Who answered decides what a 502 means.
        pisano_body = "code" in fields or "status" in fields
        raw_code = fields.get("code", fields.get("status_code"))
        if isinstance(raw_code, (int, str)) and str(raw_code).isdigit():
            code = int(raw_code)
        found = fields.get("message") or (nested if isinstance(nested, str) else None)
        if isinstance(found, str) and found:
            message = found[:MAX_ERROR_BODY_CHARS]
    return PisanoApiError(response.status_code, code, message, pisano_body=pisano_body,
                          retry_after_s=parse_retry_after(response.headers.get("Retry-After")))


class PisanoClient:
    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout_s: float,
        connect_timeout_s: float,
        max_connections: int,
        tls_verify: bool = True,
        ca_file: Path | None = None,
    ) -> None:
        self.http = httpx.Client(
            base_url=base_url,
            headers={
                "Authorization": f"Token token={token}",
                "Content-Type": "application/json",
                "User-Agent": f"pisano-sms-consumer/{__version__}",
            },
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s, pool=timeout_s),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            verify=_verify(tls_verify, ca_file),
        )

    def send(self, campaign_id: str, body: bytes) -> Accepted:
        """POST one request. Raises PisanoApiError for an error answer, PisanoTransportError when
        none came back (with `ambiguous` set when the request may have reached Pisano)."""
        started = time.monotonic()
        try:
            response = self.http.post(sharing_path(campaign_id), content=body)
        except _NOT_SENT as exc:
            raise PisanoTransportError(f"{type(exc).__name__}: request not sent ({exc})", ambiguous=False) from exc
        except httpx.HTTPError as exc:
            raise PisanoTransportError(
                f"{type(exc).__name__}: no answer after sending ({exc})", ambiguous=True
            ) from exc
        if response.status_code != 200:
            raise parse_error(response)
        request_id = None
        try:
            answer = response.json()
            if isinstance(answer, dict) and answer.get("request_id") is not None:
                request_id = str(answer["request_id"])
        except (json.JSONDecodeError, UnicodeDecodeError):
            pass  # a 200 is a success whatever its body says
        return Accepted(response.status_code, request_id, time.monotonic() - started)

    def probe_token(self, campaign_id: str = PROBE_CAMPAIGN) -> PisanoApiError | None:
        """Ask Pisano whether it accepts the token, without sending anyone an SMS.

        An empty recipient list to the nil campaign is refused by validation (13015, 13028) or as
        an unknown campaign (13002) only once the token passed; a wrong token is refused first.
        Returns Pisano's answer as an error (None for a 200, which would also mean "accepted");
        raises PisanoTransportError when no answer came."""
        try:
            self.send(campaign_id, b'{"phone_numbers":[]}')
        except PisanoApiError as answer:
            return answer
        return None

    def close(self) -> None:
        self.http.close()

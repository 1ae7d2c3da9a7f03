"""The Pisano SMS sharing API client: one pooled httpx client, explicit timeouts.

    POST {PISANO_URL}/v1/sms_campaigns/{campaign_id}/sms_sharings
    Authorization: Token token=<API TOKEN>

Errors are parsed defensively: Pisano's error body shape is not documented (reference, last
paragraph), so the code is looked for in the usual places and an unreadable body still has its
HTTP status. Transport failures say whether the request may have reached Pisano (`ambiguous`),
because resending an ambiguous request could send someone a second SMS.

An answer is read within bounds, whatever Pisano (or a proxy in front of it) sends:
* at most MAX_RESPONSE_BYTES of body are read; the rest is dropped unread;
* the whole request has one deadline (connect timeout + timeout), armed when `send` starts:
  resolving the host's name, connecting, TLS, writing the body, reading the status line, headers
  and body all end by it.
  httpx's timeouts are per operation, and a peer that sends (or takes) a byte every second never
  trips them, so every operation gets at most the time left, and a timer thread shuts the
  connection at the deadline whatever the request is doing (consumer/delivery/request_deadline.py). A request cut before
  its body was written whole was not sent (a WriteTimeout); one cut after may have reached
  Pisano (a ReadTimeout: ambiguous). No byte of it leaves after the deadline, so the claims
  sized from it (README, "DEDUP_CLAIM_LEASE_MS") outlive it. Through a proxy named by the
  environment (HTTPS_PROXY...) too;
* a body that does not parse (not JSON, nested deeper than the parser's recursion limit, a number
  of thousands of digits) is an unreadable body: the status still decides the outcome.
An error's text is built only from safe parts (the error's type, the OS reason, our own words):
an HTTP library's message may quote request headers, and with them the token.
"""

from __future__ import annotations

import email.utils
import json
import math
import re
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import httpx
import orjson

from consumer import __version__
from consumer.config.secret_names import MASK
from consumer.config.secrets import check_token, mask_urls_in_text
from consumer.config.tokens import StaticToken, TokenSource
from consumer.delivery.request_deadline import (
    Deadline,
    DeadlineTransport,
    DeadlineWatch,
    arm,
    environment_proxy,
    mark_head,
)
from consumer.delivery.resolution import ResolutionFailed, ResolutionTimeout
from consumer.errors import PisanoApiError, PisanoTransportError, SlotMissed, UnusableToken
from consumer.ingest.mapping import Recipient
from consumer.operations.logs import cut

MAX_ERROR_BODY_CHARS = 500
# Pisano's answers are a few hundred bytes; anything past this is not an answer worth reading.
MAX_RESPONSE_BYTES = 64 * 1024
MAX_CODE_DIGITS = 9
MIN_SCRUBBED_SECRET = 8  # shorter "tokens" (tests) would mangle ordinary words
PROBE_CAMPAIGN = "00000000-0000-0000-0000-000000000000"
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout,
             # A failed or stalled write means the body never arrived whole: Pisano cannot have
             # acted on a request it could not read to its end.
             httpx.WriteError, httpx.WriteTimeout, httpx.UnsupportedProtocol,
             # The environment's proxy refused the tunnel (CONNECT answered 403, 407, 502...): the
             # request never went further than asking for it.
             httpx.ProxyError)


@dataclass(frozen=True)
class Accepted:
    http_status: int
    request_id: str | None
    elapsed_s: float


def sharing_path(campaign_id: str) -> str:
    return f"/v1/sms_campaigns/{campaign_id}/sms_sharings"


def build_body(recipients: Sequence[Recipient]) -> bytes:
    """The reference's JSON body; the attribute maps are keyed by phone and omitted when empty."""
    # One pass over the recipients, not one per field: a request's 5,000 recipients were read
    # long ago (their memory is cold), and each pass would fetch every one of them again.
    phones: list[str] = []
    custom: dict[str, dict[str, str]] = {}
    built_in: dict[str, dict[str, str]] = {}
    add_phone = phones.append
    for r in recipients:
        phone = r.phone
        add_phone(phone)
        if r.custom_attributes:
            custom[phone] = r.custom_attributes
        if r.built_in_responses:
            built_in[phone] = r.built_in_responses
    body: dict[str, Any] = {"phone_numbers": phones}
    if custom:
        body["custom_attributes"] = custom
    if built_in:
        body["built_in_responses"] = built_in
    # orjson writes the same compact UTF-8 JSON as json.dumps(separators=(",", ":"),
    # ensure_ascii=False).encode(), several times faster: a body carries up to 5000 recipients.
    # Like json.dumps it refuses dates and dataclasses (orjson would write them): only the JSON
    # scalars that the recipient check allows reach a body.
    try:
        return orjson.dumps(body, option=_STRICT)
    except TypeError:
        # The recipient check (consumer/ingest/intake.py) admits any Mapping of str to JSON scalars,
        # subclasses included (a plug-in mapper's numpy.float64 is a float, a MappingProxyType a
        # Mapping), which orjson refuses: one such recipient would fail its whole request, every
        # event of it dead-lettered unsent. They are written as the plain values they are.
        return orjson.dumps(_plain_body(recipients), option=_STRICT)


_STRICT = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def _plain_body(recipients: Sequence[Recipient]) -> dict[str, Any]:
    """`build_body`'s body with every name and value as its plain built-in type (the slow path,
    for a request holding a subclass or a Mapping that is not a dict). What is no JSON scalar at
    all (a date) stays, and is refused as before."""
    phones: list[str] = []
    custom: dict[str, dict[str, Any]] = {}
    built_in: dict[str, dict[str, Any]] = {}
    for r in recipients:
        phone = _plain(r.phone)
        phones.append(phone)
        if r.custom_attributes:
            custom[phone] = _plain_map(r.custom_attributes)
        if r.built_in_responses:
            built_in[phone] = _plain_map(r.built_in_responses)
    body: dict[str, Any] = {"phone_numbers": phones}
    if custom:
        body["custom_attributes"] = custom
    if built_in:
        body["built_in_responses"] = built_in
    return body


def _plain_map(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {_plain(name): _plain(value) for name, value in attributes.items()}


def _plain(value: Any) -> Any:
    """A str, int or float subclass (bool has none) as the built-in value it holds, read without
    calling any method the subclass may override (`__str__`, `__float__`); anything else as it is."""
    kind = type(value)
    if kind is str or kind is int or kind is float or kind is bool or value is None:
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    return value


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
        seconds = float(value)
    except ValueError:
        pass
    else:  # "inf", "nan", "1e400": no wait anyone can keep to (and inf overflows every conversion)
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def parse_json(body: bytes) -> Any:
    """The body as JSON, or None when it is not: invalid, not UTF-8, nested too deep (RecursionError),
    or holding an integer longer than Python converts (ValueError)."""
    if not body:
        return None
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None


def parse_error(status: int, reason_phrase: str, body: bytes, retry_after: str | None = None,
                secret: str | None = None) -> PisanoApiError:
    """The error answer as a PisanoApiError; never raises, whatever the body holds. `secret` (the
    token) is cut out of the message: a proxy's error page may echo the request's headers. Also
    as a JSON encoder or a URL writes it (`\\/`, `\\u002f`, `%2F`), looked for in the text as
    decoded, before it is cut to its length (no piece of it is left at the cut)."""
    scrubbed: Callable[[str], str] = _unchanged
    if secret and len(secret) >= MIN_SCRUBBED_SECRET:
        body = body.replace(secret.encode(), MASK.encode())
        scrubbed = _token_scrubber(secret)
    reason_phrase = scrubbed(reason_phrase)
    code: int | None = None
    pisano_body = False
    message = reason_phrase or f"HTTP {status}"
    parsed = parse_json(body)
    if parsed is None:
        # Room for the token written at its longest (`\\u002f`: 6 characters for 1) past the cut.
        room = MAX_ERROR_BODY_CHARS * 4 + 6 * len(secret or "")
        text = scrubbed(body[:room].decode("utf-8", "replace")).strip()
        if text:
            message = cut(text, MAX_ERROR_BODY_CHARS)
    if isinstance(parsed, dict):
        nested = parsed.get("error")
        fields = nested if isinstance(nested, dict) else parsed
        # Pisano's error carries a code (maybe null) and a status word; a gateway's own JSON
        # (Kong, AWS API Gateway) only a message. Who answered decides what a 502 means.
        pisano_body = "code" in fields or "status" in fields
        raw_code = fields.get("code", fields.get("status_code"))
        if isinstance(raw_code, bool):
            raw_code = None
        text_code = str(raw_code) if isinstance(raw_code, int) and abs(raw_code) < 10**MAX_CODE_DIGITS \
            else raw_code if isinstance(raw_code, str) else ""
        if text_code.isascii() and text_code.isdigit() and len(text_code) <= MAX_CODE_DIGITS:
            code = int(text_code)
        found = fields.get("message") or (nested if isinstance(nested, str) else None)
        if isinstance(found, str) and found:
            message = cut(scrubbed(found), MAX_ERROR_BODY_CHARS)
    return PisanoApiError(status, code, message, pisano_body=pisano_body,
                          retry_after_s=parse_retry_after(retry_after))


def _unchanged(text: str) -> str:
    return text


@lru_cache(maxsize=8)  # the tokens in use: one per destination, two while one rotates
def _token_scrubber(secret: str) -> Callable[[str], str]:
    """What masks `secret` in a text however it is written there: each character as itself,
    percent-encoded (`%2F`, `%2f`), or escaped as JSON or a repr writes it (`\\/`, `\\u002f`,
    `\\x2f`). Found by review: an error body's JSON escapes a token's `/` (PHP writes `\\/`), so the
    bytes as sent were not in it, and parse_error decoded the token back into the message."""
    pieces = []
    for char in secret:
        code = ord(char)
        if code < 0x80:
            pieces.append(rf"(?:{re.escape(char)}|%{code:02x}|\\(?:u00{code:02x}|x{code:02x}|{re.escape(char)}))")
        else:  # a token is printable ASCII (check_token): anything else only as itself
            pieces.append(re.escape(char))
    pattern = re.compile("".join(pieces), re.IGNORECASE)
    return lambda text: pattern.sub(MASK, text)


def _safe_reason(exc: BaseException) -> str:
    """The OS's or TLS's own reason behind an httpx error ("Connection refused"), never the httpx
    message itself, which may quote the request."""
    seen = exc
    for _ in range(5):
        cause = seen.__cause__ or seen.__context__
        if cause is None:
            break
        seen = cause
        if isinstance(seen, (ResolutionTimeout, ResolutionFailed)):  # our own words: which host, to check DNS
            return str(seen)
        if isinstance(seen, ssl.SSLError):
            return str(seen.reason or "TLS error")
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror
    return ""


def _describe(exc: httpx.HTTPError, what: str) -> str:
    reason = _safe_reason(exc)
    return f"{type(exc).__name__}: {what}" + (f" ({reason})" if reason else "")


def read_bounded(response: httpx.Response, deadline: float) -> bytes:
    """At most MAX_RESPONSE_BYTES of the body, read until `deadline` (time.monotonic()); what came
    by then, if the body is larger, slower, or breaks off. (The connection itself is cut at the
    deadline by the request's `Deadline`.)"""
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in response.iter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size >= MAX_RESPONSE_BYTES or time.monotonic() >= deadline:
                break
    except (httpx.HTTPError, OSError):
        pass  # broken off (or cut at the deadline): the status already decides
    return b"".join(chunks)[:MAX_RESPONSE_BYTES]


class PisanoClient:
    def __init__(
        self,
        base_url: str,
        token: str | TokenSource,
        *,
        timeout_s: float,
        connect_timeout_s: float,
        max_connections: int,
        tls_verify: bool = True,
        ca_file: Path | None = None,
        destination: str = "default",
    ) -> None:
        self.deadline_s = connect_timeout_s + timeout_s
        # The token is read per request (a rotated token takes effect on the next one), and this
        # client closes its source (the thread watching a token file or provider).
        self.tokens: TokenSource = StaticToken(token) if isinstance(token, str) else token
        self.http = httpx.Client(
            base_url=base_url,
            headers={
                "Content-Type": "application/json",
                "User-Agent": f"pisano-sms-consumer/{__version__}",
                # Uncompressed answers: a compressed one could inflate far past MAX_RESPONSE_BYTES
                # within a single chunk before the cap is checked.
                "Accept-Encoding": "identity",
            },
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s, pool=timeout_s),
            transport=(transport := DeadlineTransport(
                httpx.create_ssl_context(verify=_verify(tls_verify, ca_file)),
                httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
                environment_proxy(base_url))),
        )
        self._transport = transport
        # Last: a client that could not be built (a CA file that is no certificate) leaves no thread.
        self._deadlines = DeadlineWatch(destination)

    def send(self, campaign_id: str, body: bytes, leave_by: float | None = None) -> Accepted:
        """POST one request. Raises PisanoApiError for an error answer, PisanoTransportError when
        none came back (with `ambiguous` set when the request may have reached Pisano); nothing else.
        `leave_by` (monotonic): the latest its first byte may leave, its throttle slot's; SlotMissed
        (nothing sent) when it would leave later, however long the connection took to set up."""
        started = time.monotonic()
        token = self.tokens.current()  # this request keeps it, whatever rotates meanwhile
        _check_header_token(token)
        # Armed before the connection is asked for: connect, TLS, the body, the answer's status
        # line, headers and body all keep to it (module docstring).
        try:
            deadline = Deadline(started + self.deadline_s, self._deadlines, leave_by)
        except RuntimeError as exc:  # the client was closed (a shutdown): nothing left
            raise PisanoTransportError(f"{type(exc).__name__}: no watch for the request's deadline; request "
                                       "not sent", ambiguous=False) from exc
        arm(deadline)
        try:
            with self.http.stream("POST", sharing_path(campaign_id), content=body,
                                  headers={"Authorization": f"Token token={token}"},
                                  extensions={"trace": mark_head}) as response:
                try:
                    status = response.status_code
                    answer = read_bounded(response, deadline.at)
                    reason_phrase, retry_after = response.reason_phrase, response.headers.get("Retry-After")
                finally:
                    # Before the connection goes back to the pool (done already if the body was read
                    # to its end, when httpx gives it back: request_deadline._FinishingStream).
                    deadline.finish()
        except Exception as exc:
            if deadline.missed_s is not None:  # none of its bytes left, whatever failed after
                raise SlotMissed(deadline.missed_s) from exc
            if isinstance(exc, _NOT_SENT):
                raise PisanoTransportError(_describe(exc, "request not sent"), ambiguous=False) from exc
            if isinstance(exc, httpx.HTTPError):
                raise PisanoTransportError(_describe(exc, "no answer after sending"), ambiguous=True) from exc
            # Whatever broke, the request may have left.
            raise PisanoTransportError(f"{type(exc).__name__}: the request failed unexpectedly; it may have "
                                       "reached Pisano", ambiguous=True) from exc
        finally:
            deadline.finish()
            arm(None)
        if deadline.missed_s is not None:  # not sent: the stream answered it (request_deadline.MISSED_REPLY)
            raise SlotMissed(deadline.missed_s)
        if not 200 <= status < 300:
            raise parse_error(status, mask_urls_in_text(reason_phrase), answer, retry_after, secret=token)
        request_id = None
        # A 200 is a success whatever its body says, and so is any 2xx (201, 202 Accepted, 204): Pisano
        # or a gateway in front of it took the request. Read as a refusal, its ids would be released
        # and dead-lettered as `pisano_error`, free to be sent again: a second survey.
        parsed = parse_json(answer)
        if isinstance(parsed, dict) and isinstance(parsed.get("request_id"), (str, int)) \
                and not isinstance(parsed["request_id"], bool):
            request_id = str(parsed["request_id"])[:100]
        return Accepted(status, request_id, time.monotonic() - started)

    def warm(self, within_s: float) -> None:
        """A connection to Pisano ready for the next request, set up now (within about
        `within_s`) unless the pool holds an idle one: a sender asks a little before its throttle
        slot, so that at the slot only the POST remains (consumer/delivery/spare_connections.py)."""
        self._transport.warm(self.http.base_url, within_s)

    def probe_token(self, campaign_id: str = PROBE_CAMPAIGN, leave_by: float | None = None) -> PisanoApiError | None:
        """Ask Pisano whether it accepts the token, without sending anyone an SMS.

        An empty recipient list to the nil campaign is refused by validation (13015, 13028) or as
        an unknown campaign (13002) only once the token passed; a wrong token is refused first
        (consumer/state/circuit.py `token_verdict` reads the answer).
        Returns Pisano's answer as an error (None for a 200, which would also mean "accepted");
        raises PisanoTransportError when no answer came, SlotMissed (nothing sent) when it would
        leave after `leave_by`, its throttle slot's latest moment (`send`)."""
        try:
            self.send(campaign_id, b'{"phone_numbers":[]}', leave_by)
        except PisanoApiError as answer:
            return answer
        return None

    def close(self) -> None:
        self.tokens.close()
        self.http.close()
        self._deadlines.close()


def _check_header_token(token: str) -> None:
    """UnusableToken, before anything is sent, for a token the Authorization header cannot carry
    as it is. Settings and every rotation check it (`check_token`), but a token source is any
    object with `current()`: the HTTP library's refusal to build the header (UnicodeEncodeError,
    an invalid header value) came out of the request as "it may have reached Pisano", so its
    events ended `ambiguous` although nothing had left. The message is check_token's, which never
    shows the token, with what to fix."""
    try:
        fit = check_token(token) == token  # surrounding whitespace would be sent as it is
    except ValueError as exc:
        problem = str(exc)
    else:
        if fit:
            return
        problem = "the token has a space or a line break around it"
    raise UnusableToken(f"not sent: the Pisano token cannot go in an HTTP header ({problem}); fix "
                        "PISANO_API_TOKEN (or PISANO_API_TOKEN_FILE, the destination's api_token or api_token_file, "
                        "or the token provider's secret), then replay these events")

"""Signed replays: only `pisano-sms replay` can make a record count as a replay.

A replay is allowed what a fresh record is not: the dedup lets it through for an event whose fate
was unknown (`ambiguous`), so an SRE who checked with Pisano can have it sent. If `dlq.replays`
alone said "replay", any producer of a source topic could write `dlq.replays: 1` on a record and
have an event of unknown fate sent a second time.

So the replay tool signs what it publishes, with REPLAY_SIGNING_KEY, a key the fleet and the SREs
hold (a Kubernetes Secret) and source producers do not:

    dlq.replay.signature: v2:<replays>:<signed at, ms since epoch>:<hex HMAC-SHA256>
    dlq.replay.attempt:   <attempt id>   (a replay of an `ambiguous` dead-letter only)

over the target topic, the replay count, the signing time, the attempt id and SHA-256 digests of
the record's key and value. The value is the Avro event itself, so the signature binds the event id
and every other field without having to decode it: a signed header copied onto another record,
another topic, or with another count or attempt does not verify. A consumer treats a record as a
replay only when `verified_replay` returns a count above 0: the signature verifies with its key,
the count matches `dlq.replays`, and it was signed less than `max_age_ms` ago (the dedup horizon:
after it, the delivered marks that make a replay safe are gone). Anything else (no key configured,
no header, two headers, a bad one) counts as a fresh record, which the dedup never sends twice.

The attempt id is the `dlq.attempt.id` of the ambiguous dead-letter replayed: the one attempt an
SRE checked with Pisano. The dedup lets the replay override that attempt's unknown mark and no
other (consumer/state/dedup.py). Since it is signed, neither a source producer nor a copy of a
replay can name another attempt. Version 1 signatures (before attempts were named) no longer
verify: such a record counts as fresh.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from consumer.config.settings import Settings

SIGNATURE_HEADER = "dlq.replay.signature"
REPLAYS_HEADER = "dlq.replays"  # the same name as consumer.outcomes.deadletter.REPLAYS_HEADER
ATTEMPT_HEADER = "dlq.replay.attempt"
VERSION = "v2"
# A claim tag (consumer/state/dedup.py: "<owner>|<nonce>", hex) or "-" (a mark from before
# attempts were named). Checked before the MAC is computed: it is joined into the signed text.
ATTEMPT_ID = re.compile(r"[0-9a-f]{1,32}\|[0-9a-f]{1,32}|-")
MAX_HEADER_BYTES = 200  # a real signature is about 90 bytes
# The replay count a signature carries: at most 6 digits (`replay --max-replays` stays below it).
MAX_SIGNED_REPLAYS = 999_999
# A replay is signed just before it is published; a little clock skew between hosts is allowed.
CLOCK_SKEW_MS = 5 * 60_000

Headers = Sequence[tuple[str, bytes | None]]


def _digest(data: bytes | None) -> str:
    # None (no key, a tombstone) and b"" are different records.
    return "-" if data is None else hashlib.sha256(data).hexdigest()


def _mac(key: bytes, topic: str, replays: int, signed_at_ms: int, attempt: str | None, record_key: bytes | None,
         value: bytes | None) -> str:
    message = "\n".join((VERSION, topic, str(replays), str(signed_at_ms), attempt or "", _digest(record_key),
                         _digest(value)))
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def sign(key: bytes, topic: str, replays: int, signed_at_ms: int, record_key: bytes | None,
         value: bytes | None, attempt: str | None = None) -> bytes:
    """The signature header's value for a record published to `topic` as replay number `replays`,
    allowed to override the unknown mark of `attempt` (None: of no attempt)."""
    if replays < 1:
        raise ValueError("only a replay (replays >= 1) is signed")
    if attempt is not None and not ATTEMPT_ID.fullmatch(attempt):
        raise ValueError(f"{attempt!r} is not an attempt id")
    mac = _mac(key, topic, replays, signed_at_ms, attempt, record_key, value)
    return f"{VERSION}:{replays}:{signed_at_ms}:{mac}".encode()


@dataclass(frozen=True)
class VerifiedReplay:
    """What a record's signature proves: its replay count (0: not a replay) and the attempt whose
    unknown mark it may override (None: none)."""

    count: int = 0
    attempt: str | None = None


NOT_A_REPLAY = VerifiedReplay()


def _one(headers: Headers, name: str) -> bytes | bool | None:
    """The header's value; False when it is absent; None when it is there twice or empty."""
    values = [v for k, v in headers if k == name]
    if not values:
        return False
    return values[0] if len(values) == 1 else None


def verified_replay(key: bytes | None, topic: str, record_key: bytes | None, value: bytes | None,
                    headers: Headers | None, now_ms: int, max_age_ms: int) -> VerifiedReplay:
    """The record's replay count and attempt if the replay tool signed them for this topic, else
    NOT_A_REPLAY.

    Never raises on what the record carries: headers come from any producer."""
    if key is None or not headers:
        return NOT_A_REPLAY
    raw, count, attempt_raw = _one(headers, SIGNATURE_HEADER), _one(headers, REPLAYS_HEADER), \
        _one(headers, ATTEMPT_HEADER)
    if not isinstance(raw, bytes) or not isinstance(count, bytes) or attempt_raw is None:
        return NOT_A_REPLAY
    attempt = None
    if isinstance(attempt_raw, bytes):
        if len(attempt_raw) > MAX_HEADER_BYTES or not attempt_raw.isascii() \
                or not ATTEMPT_ID.fullmatch(attempt_raw.decode("ascii")):
            return NOT_A_REPLAY
        attempt = attempt_raw.decode("ascii")
    if len(raw) > MAX_HEADER_BYTES or not raw.isascii():
        return NOT_A_REPLAY
    parts = raw.decode("ascii").split(":")
    if len(parts) != 4 or parts[0] != VERSION:
        return NOT_A_REPLAY
    _, replays_text, signed_text, mac = parts
    if not (replays_text.isdigit() and len(replays_text) <= len(str(MAX_SIGNED_REPLAYS))
            and signed_text.isdigit() and len(signed_text) <= 15):
        return NOT_A_REPLAY
    if count != replays_text.encode():
        return NOT_A_REPLAY  # dlq.replays must say what was signed
    replays, signed_at_ms = int(replays_text), int(signed_text)
    if replays < 1 or not (now_ms - max_age_ms <= signed_at_ms <= now_ms + CLOCK_SKEW_MS):
        return NOT_A_REPLAY
    expected = _mac(key, topic, replays, signed_at_ms, attempt, record_key, value)
    return VerifiedReplay(replays, attempt) if hmac.compare_digest(mac, expected) else NOT_A_REPLAY


@dataclass(frozen=True)
class ReplayVerifier:
    """What a consumer holds to tell real replays from forged ones: the fleet's key (None when
    REPLAY_SIGNING_KEY is not set: then nothing counts as a replay) and the dedup horizon."""

    key: bytes | None = field(repr=False)
    max_age_ms: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ReplayVerifier:
        """ConfigError (at start) when the key file cannot be read or the key is too short."""
        return cls(settings.replay_key(), settings.dedup_horizon_s * 1000)

    def replay(self, topic: str, record_key: bytes | None, value: bytes | None,
               headers: Headers | None) -> VerifiedReplay:
        """The record's verified replay count and attempt; NOT_A_REPLAY for a fresh or forged one."""
        return verified_replay(self.key, topic, record_key, value, headers, int(time.time() * 1000),
                               self.max_age_ms)

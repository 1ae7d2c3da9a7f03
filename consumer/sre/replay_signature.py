"""Signed replays: only `pisano-sms replay` can make a record count as a replay.

A replay is allowed what a fresh record is not: the dedup lets it through for an event whose fate
was unknown (`ambiguous`), so an SRE who checked with Pisano can have it sent. If `dlq.replays`
alone said "replay", any producer of a source topic could write `dlq.replays: 1` on a record and
have an event of unknown fate sent a second time.

So the replay tool signs what it publishes, with REPLAY_SIGNING_KEY, a key the fleet and the SREs
hold (a Kubernetes Secret) and source producers do not:

    dlq.replay.signature: v1:<replays>:<signed at, ms since epoch>:<hex HMAC-SHA256>

over the target topic, the replay count, the signing time and SHA-256 digests of the record's key
and value. The value is the Avro event itself, so the signature binds the event id and every
other field without having to decode it: a signed header copied onto another record, another
topic, or with another count does not verify. A consumer treats a record as a replay only when
`verified_replays` returns more than 0: the signature verifies with its key, the count matches
`dlq.replays`, and it was signed less than `max_age_ms` ago (the dedup horizon: after it, the
delivered marks that make a replay safe are gone). Anything else (no key configured, no header,
two headers, a bad one) counts as a fresh record, which the dedup never sends twice.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from consumer.config.settings import Settings

SIGNATURE_HEADER = "dlq.replay.signature"
REPLAYS_HEADER = "dlq.replays"  # the same name as consumer.outcomes.deadletter.REPLAYS_HEADER
VERSION = "v1"
MAX_HEADER_BYTES = 200  # a real signature is about 90 bytes
# A replay is signed just before it is published; a little clock skew between hosts is allowed.
CLOCK_SKEW_MS = 5 * 60_000

Headers = Sequence[tuple[str, bytes | None]]


def _digest(data: bytes | None) -> str:
    # None (no key, a tombstone) and b"" are different records.
    return "-" if data is None else hashlib.sha256(data).hexdigest()


def _mac(key: bytes, topic: str, replays: int, signed_at_ms: int, record_key: bytes | None,
         value: bytes | None) -> str:
    message = "\n".join((VERSION, topic, str(replays), str(signed_at_ms), _digest(record_key), _digest(value)))
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def sign(key: bytes, topic: str, replays: int, signed_at_ms: int, record_key: bytes | None,
         value: bytes | None) -> bytes:
    """The signature header's value for a record published to `topic` as replay number `replays`."""
    if replays < 1:
        raise ValueError("only a replay (replays >= 1) is signed")
    mac = _mac(key, topic, replays, signed_at_ms, record_key, value)
    return f"{VERSION}:{replays}:{signed_at_ms}:{mac}".encode()


def verified_replays(key: bytes | None, topic: str, record_key: bytes | None, value: bytes | None,
                     headers: Headers | None, now_ms: int, max_age_ms: int) -> int:
    """The record's replay count if the replay tool signed it for this topic, else 0.

    Never raises on what the record carries: headers come from any producer."""
    if key is None or not headers:
        return 0
    signatures = [v for k, v in headers if k == SIGNATURE_HEADER]
    counts = [v for k, v in headers if k == REPLAYS_HEADER]
    if len(signatures) != 1 or len(counts) != 1 or signatures[0] is None or counts[0] is None:
        return 0
    raw = signatures[0]
    if len(raw) > MAX_HEADER_BYTES or not raw.isascii():
        return 0
    parts = raw.decode("ascii").split(":")
    if len(parts) != 4 or parts[0] != VERSION:
        return 0
    _, replays_text, signed_text, mac = parts
    if not (replays_text.isdigit() and len(replays_text) <= 6 and signed_text.isdigit() and len(signed_text) <= 15):
        return 0
    if counts[0] != replays_text.encode():
        return 0  # dlq.replays must say what was signed
    replays, signed_at_ms = int(replays_text), int(signed_text)
    if replays < 1 or not (now_ms - max_age_ms <= signed_at_ms <= now_ms + CLOCK_SKEW_MS):
        return 0
    expected = _mac(key, topic, replays, signed_at_ms, record_key, value)
    return replays if hmac.compare_digest(mac, expected) else 0


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

    def replays(self, topic: str, record_key: bytes | None, value: bytes | None, headers: Headers | None) -> int:
        """The record's verified replay count; 0 for a fresh or forged one."""
        return verified_replays(self.key, topic, record_key, value, headers, int(time.time() * 1000),
                                self.max_age_ms)

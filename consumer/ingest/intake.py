"""From a consumed record to a recipient, or to the reason it cannot be one.

    InboundRecord -> age, size and header checks -> decode -> map -> check the Recipient -> Recipient
                                                     any failure -> RecordError (its dead-letter reason)

`decode_and_map` is the one guard every record goes through in the poll loop: whatever the bytes,
the schema or the mapper, it returns a Recipient or raises a RecordError (RegistryError when the
record may be fine and the registry is not). The fuzz test holds it to that.

The Recipient is checked here, at the pipeline's boundary, whatever mapper made it (custom mappers
too): what leaves this point is serialised into a Pisano request after its event id is claimed in
Redis, so a value that cannot be serialised would fail after the claim and lose the batch. What
is checked, and why:
- the event id: a non-empty string of at most MAX_EVENT_ID_CHARS (it becomes a Redis key);
- the campaign: a UUID in its canonical 8-4-4-4-12 form (it goes into the request's URL path, so
  `../`, `urn:uuid:` or braces must never reach it) -> unroutable, as the README says for campaigns;
  written in lower case whatever the mapper wrote (settings look campaigns up so: campaign_ids.py);
- the phone: canonical, exactly what a phone format of consumer/ingest/phones.py produces
  (`CANONICAL_PHONE`: E.164 with its `+`, or digits only), never a separator or a stray sign;
- the event time, when the mapper gives one: epoch milliseconds, an int within 64 bits;
- attributes: at most MAX_ATTRIBUTES names of at most MAX_ATTRIBUTE_NAME_CHARS characters, each
  value a JSON scalar: a string of at most MAX_ATTRIBUTE_CHARS, a bool, None, an integer within 64
  bits or a finite float. A datetime, a nested structure, NaN or a huge integer is a violation.
A violation dead-letters that event alone as `invalid_event` (campaign: `unroutable`).

The age comes first: a record whose Kafka timestamp is older than DEDUP_HORIZON_S minus
STALE_MARGIN_S is `stale`. Its delivered mark may have expired, so sending it could send a second
SMS; this happens when a group re-reads a retained topic (offsets lost after
`offsets.retention.minutes`, `auto.offset.reset=earliest`, a renamed group, a new topic with history).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from consumer.errors import (
    DecodeError,
    InvalidEventError,
    OversizeError,
    RecordError,
    RegistryError,
    StaleRecordError,
    UnroutableError,
)
from consumer.ingest.avro import Decoder
from consumer.ingest.mapping import MAX_ATTRIBUTE_CHARS, MAX_EVENT_ID_CHARS, Mapper, Recipient, known_campaign
from consumer.ingest.phones import is_canonical_phone
from consumer.ingest.records import InboundRecord
from consumer.operations.logs import cut, cut_short

MAX_ATTRIBUTES = 256
MAX_ATTRIBUTE_NAME_CHARS = 256
_INT_LIMIT = 2**63  # Pisano's JSON numbers; past 4,300 digits Python cannot even print an int


def decode_and_map(record: InboundRecord, decoder: Decoder, mapper: Mapper, max_bytes: int, *,
                   stale_after_ms: int | None = None, now_ms: int = 0,
                   fused: Callable[[bytes], Recipient | None] | None = None) -> Recipient:
    """The record's recipient; RecordError (with its reason) when it cannot have one. `fused`:
    the decoder's `recipient` (`native_recipient`), which decodes and maps in one native pass the
    records it takes whole; the others are decoded and mapped here."""
    if stale_after_ms is not None:
        check_age(record, stale_after_ms, now_ms)
    if record.header_error is not None:
        raise DecodeError(f"{record.header_error}; the key and value are kept untouched")
    value = record.value()
    if value is None:
        raise DecodeError("the record has no value (tombstone)")
    if len(value) > max_bytes:
        raise OversizeError(f"value of {len(value)} bytes exceeds MAX_MESSAGE_BYTES={max_bytes}")
    if fused is not None:
        try:
            recipient = fused(value)
        except Exception:  # a fault of the native core on one record: Python decides it below
            recipient = None
        if recipient is not None:
            return check_recipient(recipient)
    try:
        decoded = decoder.decode(value)
    except (RecordError, RegistryError):
        raise
    except Exception as exc:  # a decoder bug on one record is that record's problem, never the fleet's
        raise DecodeError(f"the decoder failed: {type(exc).__name__}: {_short(exc)}") from exc
    try:
        # The Kafka record goes beside the value for `$kafka.*` paths; a mapper without
        # `map_kafka` (one not derived from Mapper) is called as it always was. Asked this way, the
        # common case costs no lookup beyond the call itself.
        try:
            recipient = mapper.map_kafka(decoded, record)
        except AttributeError:
            if hasattr(mapper, "map_kafka"):
                raise
            recipient = mapper.map(decoded)
    except RecordError:
        raise
    except Exception as exc:  # a company's own mapper failing on one event is that event's problem
        raise RecordError(f"the mapper failed: {type(exc).__name__}: {_short(exc)}") from exc
    return check_recipient(recipient)


def native_recipient(decoder: Decoder, mapper: Any) -> Callable[[bytes], Recipient | None] | None:
    """The decoder's native `recipient` (consumer/ingest/fused.py), if it was planned for this
    very mapper; None: every record is decoded and mapped in Python. A mapper wrapping another
    (consumer/app.py's RoutedMapper) gives its own (`native`), with the checks it adds."""
    wrapped = getattr(mapper, "native", None)
    if wrapped is not None:
        found: Callable[[bytes], Recipient | None] | None = wrapped(decoder)
        return found
    if getattr(decoder, "mapper", None) is not mapper:
        return None
    found = getattr(decoder, "recipient", None)
    return found


def check_age(record: InboundRecord, stale_after_ms: int, now_ms: int) -> None:
    """StaleRecordError when the record's Kafka timestamp is more than `stale_after_ms` old; a
    record without a timestamp passes (Kafka has written one on every record since 0.10)."""
    _, timestamp = record.timestamp()
    if timestamp > 0 and now_ms - timestamp > stale_after_ms:
        raise StaleRecordError(
            f"the record is {(now_ms - timestamp) / 3_600_000:.1f} h old, past DEDUP_HORIZON_S minus STALE_MARGIN_S "
            f"({stale_after_ms / 3_600_000:.1f} h): whether it was delivered may be forgotten, so it was not sent; "
            "replay it only if Pisano shows it was never delivered")


def _short(exc: Exception) -> str:
    try:
        # Cut so that no first part of a URL's password or of a number is left to pass the
        # redaction unseen (`cut`): the text may quote the record or the mapper's own connection.
        return cut(str(exc), 400)
    except Exception:  # a hostile __str__ (or a huge int in it) must not escape the guard
        return "(no message)"


def check_recipient(recipient: Any) -> Recipient:
    """The recipient, if every field is what Pisano and Redis can take; see the module docstring."""
    if not isinstance(recipient, Recipient):
        raise InvalidEventError(f"the mapper returned a {type(recipient).__name__}, not a Recipient")
    event_id = recipient.event_id
    if not isinstance(event_id, str) or not event_id or len(event_id) > MAX_EVENT_ID_CHARS \
            or not _encodable(event_id):
        raise InvalidEventError(f"the event id must be a string of 1 to {MAX_EVENT_ID_CHARS} characters")
    campaign = recipient.campaign_id
    known = known_campaign(campaign) if isinstance(campaign, str) else None
    if known is None:
        raise UnroutableError("the campaign id is not a campaign API id (a UUID such as "
                              "ae51458c-9e82-417f-8f1d-e074891ea5c1)")
    if known is not campaign:  # any mapper's: in the one form the settings look campaigns up by
        recipient.campaign_id = known
    phone = recipient.phone
    if not isinstance(phone, str) or not is_canonical_phone(phone):
        raise InvalidEventError("the phone is not canonical (E.164 such as +905321234567, or digits only "
                                "such as 905321234567, 05321234567 or 5321234567); normalise it with "
                                "consumer.ingest.phones.PhoneNormaliser")
    _check_attributes("custom_attributes", recipient.custom_attributes)
    _check_attributes("built_in_responses", recipient.built_in_responses)
    # Outside this guard it is subtracted from the clock (MAX_EVENT_AGE, at intake and admission)
    # and written as an Avro long (the receipt): anything but epoch milliseconds in 64 bits (a
    # custom mapper passing on an Avro timestamp, which decodes to a datetime, or a float) would
    # raise in the poll loop, a crash loop on this record, instead of dead-lettering it.
    event_time = recipient.event_time_ms
    if event_time is not None and (type(event_time) is not int or not -_INT_LIMIT <= event_time < _INT_LIMIT):
        raise InvalidEventError(f"event_time_ms must be epoch milliseconds (an int), not a "
                                f"{type(event_time).__name__}; convert it in the mapper")
    return recipient


def _check_attributes(field: str, attributes: Any) -> None:
    # The common case (a dict of short ASCII strings, as the declarative mapper writes) is decided
    # in one pass of cheap checks: this runs for every event.
    if type(attributes) is dict and len(attributes) <= MAX_ATTRIBUTES:
        if not attributes:  # built-in responses, mostly
            return
        for name, value in attributes.items():
            if not (type(name) is str and type(value) is str and 0 < len(name) <= MAX_ATTRIBUTE_NAME_CHARS
                    and len(value) <= MAX_ATTRIBUTE_CHARS and name.isascii() and value.isascii()):
                break
        else:
            return
    if not isinstance(attributes, Mapping):
        raise InvalidEventError(f"{field} must be a mapping of name to value")
    if len(attributes) > MAX_ATTRIBUTES:
        raise InvalidEventError(f"{field} has {len(attributes)} names; at most {MAX_ATTRIBUTES} are sent")
    for name, value in attributes.items():
        if not isinstance(name, str) or not name or len(name) > MAX_ATTRIBUTE_NAME_CHARS or not _encodable(name):
            raise InvalidEventError(f"{field}: a name is not a string of 1 to {MAX_ATTRIBUTE_NAME_CHARS} characters")
        if not _scalar(value):
            raise InvalidEventError(f"{field}[{cut_short(name, 64)!r}]: a {type(value).__name__} is not a JSON scalar "
                                    f"(string of at most {MAX_ATTRIBUTE_CHARS} characters, bool, null, "
                                    "64-bit integer or finite number); convert it in the mapper")


def _scalar(value: Any) -> bool:
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, str):
        return len(value) <= MAX_ATTRIBUTE_CHARS and _encodable(value)
    if isinstance(value, int):
        return -_INT_LIMIT <= value < _INT_LIMIT
    if isinstance(value, float):
        return math.isfinite(value)
    return False


def _encodable(text: str) -> bool:
    """UTF-8 can carry it: a lone surrogate from a custom mapper cannot go into a request body."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True

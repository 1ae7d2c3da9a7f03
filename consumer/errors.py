"""Every error this package raises, under one root.

    PisanoSmsError                  root; `retriable` says whether trying again can help
    ├── ConfigError                 configuration that cannot work (names the setting)
    ├── RecordError                 one Kafka record cannot be processed; carries its dead-letter reason
    │   ├── DecodeError             not Avro, unknown schema id, truncated    -> decode_error
    │   │   └── UnsupportedSchemaError  writer schema recursive, too deep, not Avro -> unsupported_schema
    │   ├── OversizeError           value larger than MAX_MESSAGE_BYTES      -> oversize
    │   ├── InvalidEventError       no event id, no or invalid phone         -> invalid_event
    │   ├── UnroutableError         no campaign for the event                -> unroutable
    │   └── StaleRecordError        older than the dedup horizon allows      -> stale
    ├── RegistryError               schema registry unreachable or failing (retriable); `kind` says how
    ├── StateStoreError             Redis unreachable or failing (retriable: fail closed, resume)
    │   └── OversizeStateError      a key of ours holds more than this consumer ever writes there (not retriable)
    └── PisanoError                 a call to the Pisano API did not succeed
        ├── PisanoApiError          Pisano answered with an error status (HTTP status, Pisano code)
        └── PisanoTransportError    no usable answer; `ambiguous` when the request may have arrived
            └── SlotMissed          not sent: its bytes would have left too late for its throttle slot

Third-party errors are wrapped with `raise ... from exc` so the cause stays in the traceback.
"""

from __future__ import annotations


class PisanoSmsError(Exception):
    """Root of the package's errors."""

    retriable: bool = False


class ConfigError(PisanoSmsError):
    """A setting has a value that cannot work; the message names it and the expected form."""


def unreadable_file(named: str, exc: OSError) -> ConfigError:
    """A file a setting (or --config) names could not be read: why, and what to do, in one line.
    `named` is how the operator wrote it: `MAPPING_FILE=/etc/pisano/mapping.yaml`."""
    return ConfigError(f"{named}: cannot read it ({exc.strerror}); check the path, and that the file is mounted "
                       "and readable by this process")


class RecordError(PisanoSmsError):
    """One record cannot be processed; it is dead-lettered with `reason`, never retried forever."""

    reason: str = "invalid_event"


class DecodeError(RecordError):
    reason = "decode_error"


class UnsupportedSchemaError(DecodeError):
    """The writer schema is one this consumer refuses to decode with (recursive, nested too deeply,
    or not Avro): decoding with it could exhaust the stack or loop on a few hostile bytes."""

    reason = "unsupported_schema"


class OversizeError(RecordError):
    reason = "oversize"


class InvalidEventError(RecordError):
    reason = "invalid_event"


class UnroutableError(RecordError):
    reason = "unroutable"


class StaleRecordError(RecordError):
    reason = "stale"


class RegistryError(PisanoSmsError):
    """The registry did not give a schema. `kind`: `unreachable` (no answer), `permission` (401, 403:
    its credentials or ACLs), `server` (5xx or any other answer), `busy` (our own bound on registry
    requests per second is spent: not the registry's fault, try again shortly)."""

    retriable = True

    def __init__(self, message: str, kind: str = "server", retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.retry_after_s = retry_after_s


class StateStoreError(PisanoSmsError):
    """Redis could not be reached or refused a command; callers fail closed and try again later."""

    retriable = True


class OversizeStateError(StateStoreError):
    """Redis answered, but a key of ours holds more than this consumer ever writes there (a
    partition's marks past MAX_PARTITION_MARKS, consumer/state/dead_letters.py): read whole, it
    would take longer than any Redis timeout, and no wait makes it smaller. The message names the
    key, its size and what to do; the caller goes on without what the key holds."""

    retriable = False


class PisanoError(PisanoSmsError):
    """A call to Pisano did not succeed."""


class PisanoApiError(PisanoError):
    """Pisano answered with an error. `code` is Pisano's numeric code when the body carried one.

    `pisano_body` says the body was Pisano's own JSON error (a `code` or `status` field): Pisano
    itself answered. Without it, a proxy or gateway in front of Pisano may have answered instead,
    which for a 502 leaves open whether the request reached Pisano.
    """

    def __init__(
        self,
        http_status: int,
        code: int | None,
        message: str,
        *,
        retry_after_s: float | None = None,
        pisano_body: bool = False,
    ) -> None:
        super().__init__(f"HTTP {http_status}" + (f" code {code}" if code else "") + f": {message}")
        self.http_status = http_status
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s
        self.pisano_body = pisano_body


class PisanoTransportError(PisanoError):
    """No usable answer came back.

    `ambiguous` is True when the request may have reached Pisano (read timeout, connection reset
    after the body was sent): resending could deliver a second SMS.
    """

    def __init__(self, message: str, *, ambiguous: bool) -> None:
        super().__init__(message)
        self.message = message
        self.ambiguous = ambiguous
        self.retriable = not ambiguous


class UnusableToken(PisanoTransportError):
    """The token cannot go in the Authorization header (a line break, a space, a character that is
    not printable ASCII): the request was never built, so nothing was sent, and no retry can build
    it either. A configuration error on the token: dead-lettered, never `ambiguous`, never retried
    (consumer/delivery/failures.py). Its message says what to fix and never holds the token."""

    def __init__(self, message: str) -> None:
        super().__init__(message, ambiguous=False)
        self.retriable = False


class SlotMissed(PisanoTransportError):
    """The request was not sent: its first byte would have left `over_s` after the latest moment
    its throttle slot allowed (consumer/delivery/request_deadline.py). Nothing reached Pisano, and
    the slot is lost: the request takes a new one; it is no failed attempt."""

    def __init__(self, over_s: float) -> None:
        super().__init__(f"not sent: it would have left {over_s * 1000:.0f} ms after its throttle slot allowed",
                         ambiguous=False)
        self.over_s = over_s

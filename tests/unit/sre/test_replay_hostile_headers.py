"""The DLQ is input: malformed headers make a record refused with a reason, never a crash; replay
signatures cannot be forged or moved to another record."""

from __future__ import annotations

import pytest

from consumer.outcomes.deadletter import Failure
from consumer.sre.dlq_read import MalformedDeadLetter, parse_dead_letter
from consumer.sre.replay import replay_headers
from consumer.sre.replay_signature import ATTEMPT_HEADER, SIGNATURE_HEADER, VerifiedReplay, sign, verified_replay
from tests.unit.sre.test_dlq_filters import CAMPAIGN_A, TOKEN_FAILURE, FakeMessage, dead_lettered, letter

KEY = b"fleet-replay-key-0123456789abcdef"
NOW_MS = 1_800_000_000_000
DAY_MS = 86_400_000
ATTEMPT = "0123456789ab|cdef0123"


def verified_replays(*args: object) -> int:
    return verified_replay(*args).count  # type: ignore[arg-type]


class UnreadableHeaders(FakeMessage):
    """confluent_kafka raises SystemError for a header name that is not UTF-8."""

    def __init__(self) -> None:
        super().__init__(None)
        self.calls = 0

    def headers(self) -> list[tuple[str, bytes | None]] | None:
        self.calls += 1
        raise SystemError("<built-in method headers> returned a result with an exception set")


def with_header(name: str, value: bytes) -> FakeMessage:
    headers = [(k, v) for k, v in dead_lettered(TOKEN_FAILURE).headers() or [] if k != name]
    return FakeMessage([*headers, (name, value)], topic="pisano-sms.dlq", partition=0, offset=7)


def test_unreadable_header_names_are_refused_after_one_read() -> None:
    message = UnreadableHeaders()
    with pytest.raises(MalformedDeadLetter, match="header name is not UTF-8"):
        parse_dead_letter(message)
    assert message.calls == 1  # a second call can crash the interpreter


@pytest.mark.parametrize(("name", "value", "reason"), [
    ("dlq.original.offset", b"x", "dlq.original.offset is not a number"),
    ("dlq.original.partition", "\u00b2".encode(), "dlq.original.partition is not a number"),
    ("dlq.replays", b"abc", "dlq.replays is not a number"),
    ("dlq.replays", b"9" * 40, "dlq.replays is not a number"),
    ("dlq.replays", "\u0663".encode(), "dlq.replays is not a number"),
    ("pisano.error.code", b"1e5", "pisano.error.code is not a number"),
    ("dlq.original.topic", b"../../other topic", "not a Kafka topic name"),
    ("dlq.original.topic", b"\xff\xfe", "not a Kafka topic name"),
    ("dlq.failed.at", b"yesterday", "not an ISO 8601 time"),
    ("dlq.reason", b"because", "not a dead-letter reason"),
    ("dlq.attempt.id", b"abc|def\nforged", "dlq.attempt.id is not an attempt id"),
])
def test_malformed_headers_are_refused_with_the_reason(name: str, value: bytes, reason: str) -> None:
    with pytest.raises(MalformedDeadLetter, match=reason):
        parse_dead_letter(with_header(name, value))


def test_conflicting_duplicate_headers_are_refused() -> None:
    headers = [*(dead_lettered(TOKEN_FAILURE).headers() or []), ("dlq.replays", b"0"), ("dlq.replays", b"5")]
    with pytest.raises(MalformedDeadLetter, match="twice"):
        parse_dead_letter(FakeMessage(headers))


@pytest.mark.parametrize("when", [b"0001-01-01T00:00:00+01:00", b"9999-12-31T23:59:59-01:00"])
def test_a_failure_time_at_the_edge_of_the_calendar_is_malformed(when: bytes) -> None:
    # In UTC these fall outside datetime's range: OverflowError, not ValueError.
    with pytest.raises(MalformedDeadLetter, match=r"dlq\.failed\.at is not an ISO 8601 time"):
        parse_dead_letter(with_header("dlq.failed.at", when))


class Exploding(FakeMessage):
    """A record whose reading raises what no check foresaw: whatever its bytes, parse_dead_letter
    answers MalformedDeadLetter (replay and stats skip it) or lets the caller's own failures through."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(dead_lettered(TOKEN_FAILURE).headers(), topic="pisano-sms.dlq", partition=0, offset=7)
        self.error = error

    def value(self) -> bytes | None:
        raise self.error


@pytest.mark.parametrize("error", [OverflowError("date value out of range"), RecursionError(), KeyError("x"),
                                   UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")])
def test_any_failure_reading_a_record_is_malformed_with_its_kind_only(error: BaseException) -> None:
    with pytest.raises(MalformedDeadLetter) as refused:
        parse_dead_letter(Exploding(error))
    assert str(refused.value) == f"the record could not be read ({type(error).__name__})"


@pytest.mark.parametrize("error", [KeyboardInterrupt(), MemoryError()])
def test_an_interrupt_or_exhausted_memory_is_not_a_malformed_record(error: BaseException) -> None:
    with pytest.raises(type(error)):
        parse_dead_letter(Exploding(error))


@pytest.mark.parametrize("campaign", [b"\x1b]0;owned\x07\x1b[2J", b"+905321234567", b"camp-a",
                                      b"{ae51458c-9e82-417f-8f1d-e074891ea5c1}", "\u202e".encode()])
def test_a_campaign_that_is_not_a_campaign_id_is_malformed(campaign: bytes) -> None:
    with pytest.raises(MalformedDeadLetter, match=r"^dlq\.campaign\.id is not a campaign id"):
        parse_dead_letter(with_header("dlq.campaign.id", campaign))


def test_a_campaign_id_in_upper_case_is_the_same_campaign() -> None:
    parsed = parse_dead_letter(with_header("dlq.campaign.id", CAMPAIGN_A.upper().encode()))
    assert parsed is not None and parsed.campaign_id == CAMPAIGN_A


def test_a_header_name_quoted_in_a_reason_is_escaped() -> None:
    name = "dlq.x\x1b[2J+905321234567"
    headers = [*(dead_lettered(TOKEN_FAILURE).headers() or []), (name, b"0"), (name, b"5")]
    with pytest.raises(MalformedDeadLetter, match="twice") as refused:
        parse_dead_letter(FakeMessage(headers))
    reason = str(refused.value)
    assert "\x1b" not in reason and "905321234567" not in reason
    assert "\\x1b[2J" in reason  # shown escaped: the SRE sees what is there


# ----------------------------------------------------------------------------- signatures

def test_a_signed_replay_verifies() -> None:
    value, key = b"\x02avro", b"evt-1"
    headers = [("dlq.replays", b"1"), (SIGNATURE_HEADER, sign(KEY, "transactions", 1, NOW_MS, key, value))]
    assert verified_replays(KEY, "transactions", key, value, headers, NOW_MS + 1000, DAY_MS) == 1


@pytest.mark.parametrize("change", ["no_key", "wrong_key", "other_value", "other_topic", "other_count",
                                    "too_old", "future", "two_signatures", "garbage", "unsigned", "none_value"])
def test_a_replay_signature_cannot_be_forged_or_moved(change: str) -> None:
    value, key = b"\x02avro", b"evt-1"
    signature = sign(KEY, "transactions", 1, NOW_MS, key, value)
    headers: list[tuple[str, bytes | None]] = [("dlq.replays", b"1"), (SIGNATURE_HEADER, signature)]
    verify_key, topic, now = KEY, "transactions", NOW_MS
    if change == "no_key":
        verify_key = None  # type: ignore[assignment]
    elif change == "wrong_key":
        verify_key = b"another-key-0123456789abcdef"
    elif change == "other_value":
        value = b"\x02avro-with-another-event-id"
    elif change == "other_topic":
        topic = "payments"
    elif change == "other_count":
        headers = [("dlq.replays", b"2"), (SIGNATURE_HEADER, signature)]
    elif change == "too_old":
        now = NOW_MS + 2 * DAY_MS
    elif change == "future":
        now = NOW_MS - DAY_MS
    elif change == "two_signatures":
        headers.append((SIGNATURE_HEADER, signature))
    elif change == "garbage":
        headers = [("dlq.replays", b"1"), (SIGNATURE_HEADER, b"v1:1:\xff:zz")]
    elif change == "unsigned":
        headers = [("dlq.replays", b"1")]
    elif change == "none_value":
        headers = [("dlq.replays", b"1"), (SIGNATURE_HEADER, None)]
    assert verified_replays(verify_key, topic, key, value, headers, now, DAY_MS) == 0


def test_replay_headers_carry_a_signature_for_the_target_topic() -> None:
    dead = letter(Failure("ambiguous", "timeout", attempt_id=ATTEMPT), original_headers=[("trace-id", b"abc")])
    headers = replay_headers(dead, KEY, "transactions", now_ms=NOW_MS)
    assert [name for name, _ in headers] == ["trace-id", "dlq.replays", "dlq.source.timestamp", ATTEMPT_HEADER,
                                             SIGNATURE_HEADER]
    assert verified_replay(KEY, "transactions", dead.key, dead.value, headers, NOW_MS, DAY_MS) == \
        VerifiedReplay(1, ATTEMPT)
    assert verified_replays(KEY, "elsewhere", dead.key, dead.value, headers, NOW_MS, DAY_MS) == 0
    # Without a key: unsigned, exactly as before.
    assert replay_headers(dead) == [("trace-id", b"abc"), ("dlq.replays", b"1"),
                                    ("dlq.source.timestamp", str(dead.original_timestamp_ms).encode())]


def test_only_a_replay_of_an_ambiguous_dead_letter_names_an_attempt() -> None:
    """Issue 11, finding 1: a 13001 replay must never override a sibling's unknown mark; an
    ambiguous one written before attempts were named may override only a legacy mark."""
    token = letter(TOKEN_FAILURE)
    headers = replay_headers(token, KEY, "transactions", now_ms=NOW_MS)
    assert ATTEMPT_HEADER not in dict(headers)
    assert verified_replay(KEY, "transactions", token.key, token.value, headers, NOW_MS, DAY_MS) == \
        VerifiedReplay(1, None)
    legacy = letter(Failure("ambiguous", "timeout"))
    assert dict(replay_headers(legacy, KEY, "transactions", now_ms=NOW_MS))[ATTEMPT_HEADER] == b"-"


@pytest.mark.parametrize("change", ["other_attempt", "added_attempt", "removed_attempt", "two_attempts"])
def test_the_attempt_a_replay_may_override_cannot_be_forged(change: str) -> None:
    value, key = b"\x02avro", b"evt-1"
    signed = sign(KEY, "transactions", 1, NOW_MS, key, value, ATTEMPT)
    headers: list[tuple[str, bytes | None]] = [("dlq.replays", b"1"), (ATTEMPT_HEADER, ATTEMPT.encode()),
                                               (SIGNATURE_HEADER, signed)]
    if change == "other_attempt":  # a source producer naming a mark it wants overridden
        headers[1] = (ATTEMPT_HEADER, b"aaaaaaaaaaaa|bbbbbbbb")
    elif change == "added_attempt":  # a 13001 replay given an attempt afterwards
        headers = [("dlq.replays", b"1"), (ATTEMPT_HEADER, ATTEMPT.encode()),
                   (SIGNATURE_HEADER, sign(KEY, "transactions", 1, NOW_MS, key, value))]
    elif change == "removed_attempt":
        headers = [headers[0], headers[2]]
    elif change == "two_attempts":
        headers.append((ATTEMPT_HEADER, ATTEMPT.encode()))
    assert verified_replay(KEY, "transactions", key, value, headers, NOW_MS, DAY_MS) == VerifiedReplay()


def test_an_old_signature_in_the_dlq_is_dropped_and_signed_afresh() -> None:
    # A replay that failed again: its DLQ record holds the old signature among our headers.
    first = letter(original_headers=[("trace-id", b"abc"), ("dlq.replays", b"1"),
                                     (SIGNATURE_HEADER, b"v1:1:1:old")])
    headers = replay_headers(first, KEY, "transactions", now_ms=NOW_MS)
    assert [v for k, v in headers if k == SIGNATURE_HEADER] == [sign(KEY, "transactions", 2, NOW_MS, first.key,
                                                                    first.value)]


def test_replay_verifier_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from consumer.config.settings import Settings
    from consumer.sre.replay_signature import ReplayVerifier

    monkeypatch.delenv("REPLAY_SIGNING_KEY", raising=False)
    monkeypatch.delenv("REPLAY_SIGNING_KEY_FILE", raising=False)
    now_ms = int(time.time() * 1000)
    headers = [("dlq.replays", b"1"), (SIGNATURE_HEADER, sign(KEY, "transactions", 1, now_ms, b"k", b"v"))]
    verifier = ReplayVerifier.from_settings(Settings(replay_signing_key=KEY.decode()))
    assert verifier.replay("transactions", b"k", b"v", headers).count == 1
    assert "fleet-replay-key" not in repr(verifier)
    assert ReplayVerifier.from_settings(Settings()).replay("transactions", b"k", b"v", headers).count == 0


def test_an_attempt_a_former_build_replica_named_with_a_claim_record_is_read_as_the_claim() -> None:
    """Found in review: a replica of the build before claims recorded the mark they replaced names
    a lapsed recorded claim `<R>|u|<X>` (README, Upgrading); such a dead-letter was refused as
    malformed, so no replay of it could ever be signed. Its attempt is R, as this build names it."""
    letter = parse_dead_letter(with_header("dlq.attempt.id", f"{ATTEMPT}|u|fedcba987654|01234567".encode()))
    assert letter is not None and letter.attempt_id == ATTEMPT
    with pytest.raises(MalformedDeadLetter, match="not an attempt id"):
        parse_dead_letter(with_header("dlq.attempt.id", f"{ATTEMPT}|u|x\nforged".encode()))

"""Dead-letter parsing, replay filters and decisions, replay headers and group names, without Kafka."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from consumer.outcomes.deadletter import Failure, dead_letter_headers
from consumer.sre.dlq_read import DeadLetter, Filters, MalformedDeadLetter, parse_dead_letter, parse_when
from consumer.sre.dlq_stats import DlqStats
from consumer.sre.replay import ReplaySummary, Verdict, default_group, judge, replay_headers
from consumer.sre.replayed_records import ReplayedRecords

FAILED_AT = datetime(2026, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC)
# The consumer only ever writes a campaign API id (consumer/ingest/mapping.py is_campaign_id).
CAMPAIGN_A = "ae51458c-9e82-417f-8f1d-e074891ea5c1"
CAMPAIGN_B = "0b7c2e4a-1f3d-4c5b-9a8e-7d6f5e4c3b2a"


class FakeMessage:
    """What confluent_kafka.Message offers, for a record of the source topic or of the DLQ."""

    def __init__(self, headers: list[tuple[str, bytes | None]] | None, *, topic: str = "transactions",
                 partition: int = 3, offset: int = 42, key: bytes | None = b"evt-1",
                 value: bytes | None = b"\x02avro+905551234567", timestamp_ms: int = 1_700_000_000_000) -> None:
        self._headers, self._topic, self._partition, self._offset = headers, topic, partition, offset
        self._key, self._value, self._timestamp_ms = key, value, timestamp_ms

    def headers(self) -> list[tuple[str, bytes | None]] | None:
        return self._headers

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return (1, self._timestamp_ms)

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value


Headers = list[tuple[str, bytes | None]]


def dead_lettered(failure: Failure, original_headers: Headers | None = None, *, failed_at: datetime = FAILED_AT,
                  extra: Headers | None = None, offset: int = 42, written_at: datetime | None = None) -> FakeMessage:
    """The DLQ record the real dead-letter code writes for a source record, written at `written_at`
    (by default a second before it failed)."""
    written = written_at if written_at is not None else failed_at - timedelta(seconds=1)
    source = FakeMessage(original_headers, offset=offset, timestamp_ms=int(written.timestamp() * 1000))
    headers: list[tuple[str, bytes | None]] = [*dead_letter_headers(source, failure, failed_at), *(extra or [])]
    return FakeMessage(headers, topic="pisano-sms.dlq", partition=0, offset=7)


TOKEN_FAILURE = Failure("pisano_error", "Wrong authentication token", code=13001, http_status=401,
                        campaign_id=CAMPAIGN_A, attempts=1)


def letter(failure: Failure = TOKEN_FAILURE, original_headers: Headers | None = None, *,
           failed_at: datetime = FAILED_AT, extra: Headers | None = None, offset: int = 42,
           written_at: datetime | None = None) -> DeadLetter:
    parsed = parse_dead_letter(dead_lettered(failure, original_headers, failed_at=failed_at, extra=extra,
                                             offset=offset, written_at=written_at))
    assert parsed is not None
    return parsed


# ----------------------------------------------------------------------------- parsing


def test_headers_parse_into_a_typed_dead_letter() -> None:
    parsed = parse_dead_letter(dead_lettered(TOKEN_FAILURE, [("trace-id", b"abc")]))
    assert parsed == DeadLetter(
        partition=0, offset=7, reason="pisano_error", origin=("transactions", 3, 42), failed_at=FAILED_AT,
        replays=0, error_code=13001, http_status=401, campaign_id=CAMPAIGN_A, value_omitted=False, key=b"evt-1",
        value=b"\x02avro+905551234567", original_headers=(("trace-id", b"abc"),),
        original_timestamp_ms=int(FAILED_AT.timestamp() * 1000) - 1000,  # the source record's time
    )


def test_optional_headers_absent_and_value_omitted() -> None:
    parsed = letter(Failure("decode_error", "not avro"), extra=[("dlq.value.omitted", b"2000000")])
    assert (parsed.error_code, parsed.http_status, parsed.campaign_id) == (None, None, None)
    assert parsed.value_omitted


def test_records_without_our_headers_are_foreign() -> None:
    assert parse_dead_letter(FakeMessage(None)) is None
    assert parse_dead_letter(FakeMessage([("trace-id", b"abc")])) is None
    # Some of ours, not all: not written by consumer.outcomes.deadletter either.
    assert parse_dead_letter(FakeMessage([("dlq.reason", b"ambiguous"), ("dlq.original.topic", b"t")])) is None
    # All of ours but one unusable: refused with the reason (test_replay_hostile_headers.py), not foreign.


def test_the_repr_never_shows_the_value_or_original_headers() -> None:
    parsed = letter(original_headers=[("customer-phone", b"+905551234567")])
    assert "905551234567" not in repr(parsed)
    assert "evt-1" in repr(parsed)  # keys may be shown


# ----------------------------------------------------------------------------- times


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-01-02", datetime(2026, 1, 2, tzinfo=UTC)),
    ("2026-01-02T03:04:05Z", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)),
    ("2026-01-02T03:04:05.678Z", datetime(2026, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC)),
    ("2026-01-02T03:04", datetime(2026, 1, 2, 3, 4, tzinfo=UTC)),  # no offset: UTC, like dlq.failed.at
    ("2026-01-02T06:04:05+03:00", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)),
])
def test_times_parse_as_utc(text: str, expected: datetime) -> None:
    parsed = parse_when(text)
    assert parsed == expected and parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize("text", ["yesterday", "", "2026-13-01", "02/01/2026"])
def test_bad_times_are_refused_with_the_expected_form(text: str) -> None:
    with pytest.raises(ValueError, match=r"expected e\.g\. 2026-01-31"):
        parse_when(text)


# ----------------------------------------------------------------------------- filters


def test_options_become_filters() -> None:
    filters = Filters.from_options(["13001", "13034"], ["pisano_error"], [CAMPAIGN_A], "2026-01-01",
                                   "2026-01-03T00:00Z")
    assert filters == Filters(frozenset({13001, 13034}), frozenset({"pisano_error"}), frozenset({CAMPAIGN_A}),
                              datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 3, tzinfo=UTC))
    assert Filters.from_options() == Filters()


@pytest.mark.parametrize(("options", "message"), [
    ({"error_codes": ["13001x"]}, "--error-code '13001x': expected a Pisano numeric error code"),
    ({"reasons": ["ambigous"]}, "--reason 'ambigous': not a dead-letter reason; expected one of pisano_error"),
    ({"since": "last week"}, "--since 'last week' is not an ISO 8601"),
    ({"until": "2026/01/01"}, "--until '2026/01/01' is not an ISO 8601"),
    ({"since": "2026-01-02", "until": "2026-01-01"}, "--since 2026-01-02 is not before --until 2026-01-01"),
    # str.isdigit takes these, int() refuses or misreads them.
    ({"error_codes": ["\u00b2"]}, "--error-code '\u00b2': expected a Pisano numeric error code"),
    ({"error_codes": ["\u0661\u0663"]}, "--error-code '\u0661\u0663': expected a Pisano numeric error code"),
    ({"error_codes": ["9" * 5000]}, "--error-code '999"),
    ({"campaigns": ["camp-a"]}, "--campaign 'camp-a': not a campaign id; expected its UUID"),
    ({"since": "0001-01-01T00:00:00+01:00"}, "--since '0001-01-01T00:00:00+01:00' is outside the dates"),
    ({"until": "9999-12-31T23:59:59-01:00"}, "--until '9999-12-31T23:59:59-01:00' is outside the dates"),
])
def test_bad_options_name_the_option(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as raised:
        Filters.from_options(**options)  # type: ignore[arg-type]
    assert str(raised.value).startswith(message)


@pytest.mark.parametrize("option", ["--limit", "--max-replays"])
@pytest.mark.parametrize("value", ["\u0663", "\uff15", " 5", "1_000", "\u00b2"])
def test_counts_on_the_command_line_are_ascii_digits(option: str, value: str) -> None:
    from click.testing import CliRunner

    from consumer.cli import main

    result = CliRunner().invoke(main, ["replay", option, value])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"Invalid value for '{option}': {value!r} is not a whole number in ASCII digits, e.g. 100" in result.output


def test_max_replays_stays_within_what_a_signature_can_carry() -> None:
    """Found in review: `--max-replays 1000000` let a record replayed 999,999 times go out as replay
    1,000,000, a count no signature verifies (6 digits at most): the consumers took it for a plain
    record, whose claim can override no unknown mark."""
    from click.testing import CliRunner

    from consumer.cli import main
    from consumer.sre.replay_signature import MAX_SIGNED_REPLAYS

    result = CliRunner().invoke(main, ["replay", "--max-replays", str(MAX_SIGNED_REPLAYS + 1)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"Invalid value for '--max-replays': {MAX_SIGNED_REPLAYS + 1} is not in the range 1<=x<=" in result.output


def test_a_campaign_option_in_upper_case_is_the_same_filter() -> None:
    assert Filters.from_options(campaigns=[CAMPAIGN_A.upper()]) == Filters.from_options(campaigns=[CAMPAIGN_A])


def test_criteria_combine_with_and_values_with_or() -> None:
    token = letter()
    campaign = letter(Failure("pisano_error", "no campaign", code=13034, http_status=404, campaign_id=CAMPAIGN_B))
    ambiguous = letter(Failure("ambiguous", "read timeout", campaign_id=CAMPAIGN_A))
    everything = [token, campaign, ambiguous]

    def matching(filters: Filters) -> list[DeadLetter]:
        return [d for d in everything if filters.matches(d)]

    assert matching(Filters()) == everything
    assert matching(Filters(error_codes=frozenset({13001, 13034}))) == [token, campaign]
    assert matching(Filters(reasons=frozenset({"ambiguous"}))) == [ambiguous]
    assert matching(Filters(campaigns=frozenset({CAMPAIGN_A}))) == [token, ambiguous]
    assert matching(Filters(error_codes=frozenset({13001}), campaigns=frozenset({CAMPAIGN_B}))) == []
    assert matching(Filters(reasons=frozenset({"pisano_error"}), campaigns=frozenset({CAMPAIGN_B}))) == [campaign]


def test_since_is_inclusive_and_until_exclusive() -> None:
    record = letter(failed_at=FAILED_AT)
    assert Filters(since=FAILED_AT).matches(record)
    assert not Filters(until=FAILED_AT).matches(record)
    assert Filters(until=FAILED_AT + timedelta(milliseconds=1)).matches(record)
    assert not Filters(since=FAILED_AT + timedelta(milliseconds=1)).matches(record)
    istanbul = timezone(timedelta(hours=3))
    assert Filters(since=datetime(2026, 1, 2, 6, 4, 5, tzinfo=istanbul)).matches(record)


# ----------------------------------------------------------------------------- decisions


def test_decisions_in_order() -> None:
    fresh = letter(offset=1)
    again = letter(offset=1)  # the same origin, dead-lettered twice
    omitted = letter(offset=2, extra=[("dlq.value.omitted", b"5000000")])
    worn = letter(original_headers=[("dlq.replays", b"3")], offset=3)
    replayed = ReplayedRecords()
    assert judge(fresh, Filters(reasons=frozenset({"ambiguous"})), replayed, 3) is Verdict.UNMATCHED
    assert judge(fresh, Filters(), replayed, 3) is Verdict.REPLAY
    replayed.add(fresh)
    assert judge(again, Filters(), replayed, 3) is Verdict.DUPLICATE
    assert judge(omitted, Filters(), replayed, 3) is Verdict.VALUE_OMITTED
    assert worn.replays == 3
    assert judge(worn, Filters(), replayed, 3) is Verdict.OVER_MAX_REPLAYS
    assert judge(worn, Filters(), replayed, 4) is Verdict.REPLAY


def test_summary_counts() -> None:
    summary = ReplaySummary(read=6)
    summary.verdicts.update({Verdict.FOREIGN: 1, Verdict.UNMATCHED: 2, Verdict.REPLAY: 2, Verdict.DUPLICATE: 1})
    stale_before = FAILED_AT + timedelta(days=1)
    summary.add_replay(letter(), "transactions", stale_before)
    summary.add_replay(letter(Failure("ambiguous", "timeout"), failed_at=stale_before, written_at=stale_before),
                       "transactions", stale_before)
    assert (summary.matched, summary.replayed, summary.stale) == (3, 2, 1)
    assert summary.by_code == {"13001": 1, "-": 1}
    assert summary.by_campaign == {CAMPAIGN_A: 1, "-": 1}
    assert summary.by_reason == {"pisano_error": 1, "ambiguous": 1}


# ----------------------------------------------------------------------------- replay headers


def test_replay_keeps_original_headers_strips_ours_and_counts_the_replay() -> None:
    original = [("trace-id", b"abc"), ("tenant", b"acme"), ("empty", None)]
    source = letter(original_headers=original)
    headers = replay_headers(source)
    assert headers == [("trace-id", b"abc"), ("tenant", b"acme"), ("empty", b""), ("dlq.replays", b"1"),
                       ("dlq.source.timestamp", str(source.original_timestamp_ms).encode())]


def test_a_record_replayed_before_gets_its_count_raised() -> None:
    # Replayed twice, failed again: the DLQ record says 2, its replay says 3.
    source = letter(original_headers=[("trace-id", b"abc"), ("dlq.replays", b"2"), ("pisano.error.code", b"13001")])
    headers = replay_headers(source)
    assert headers == [("trace-id", b"abc"), ("dlq.replays", b"3"),
                       ("dlq.source.timestamp", str(source.original_timestamp_ms).encode())]


# ----------------------------------------------------------------------------- group names


def test_default_group_is_stable_and_depends_on_the_filters() -> None:
    tokens = Filters.from_options(["13001"])
    assert default_group(tokens) == default_group(Filters.from_options(["13001"]))
    assert default_group(tokens).startswith("pisano-sms-replay-")
    assert len(default_group(tokens)) == len("pisano-sms-replay-") + 10
    # The order the options came in does not matter; the values do.
    assert default_group(Filters.from_options(["13034", "13001"])) == \
        default_group(Filters.from_options(["13001", "13034"]))
    others = [Filters(), Filters.from_options(reasons=["ambiguous"]), Filters.from_options(["13034"]),
              Filters.from_options(["13001"], campaigns=[CAMPAIGN_A]),
              Filters.from_options(["13001"], since="2026-01-01"), Filters.from_options(["13001"], until="2026-01-01")]
    names = {default_group(f) for f in [tokens, *others]}
    assert len(names) == 1 + len(others)
    # Same instant, different spelling: same group.
    assert default_group(Filters.from_options(since="2026-01-01T03:00:00+03:00")) == \
        default_group(Filters.from_options(since="2026-01-01"))


def test_default_group_is_the_same_in_every_process() -> None:
    # sha256 of the canonical filter text, not Python's per-process salted hash().
    assert default_group(Filters()) == "pisano-sms-replay-" + hashlib.sha256(
        b"code=;reason=;campaign=;since=;until=").hexdigest()[:10]


def test_default_groups_of_runs_without_past_horizon_keep_their_names() -> None:
    # The names main gave before --past-horizon existed (b28e0f4): a group that changed name would
    # read the DLQ from its start again. --past-horizon is a filter set of its own.
    sets = {"pisano-sms-replay-dc0ed24e02": Filters(),
            "pisano-sms-replay-5443c44e0f": Filters.from_options(["13001"]),
            "pisano-sms-replay-6e7dbfefbe": Filters.from_options(reasons=["ambiguous"], since="2026-11-26T10:00Z",
                                                                 campaigns=[CAMPAIGN_A.upper()])}
    for name, filters in sets.items():
        assert default_group(filters) == name
        assert default_group(replace(filters, past_horizon=True)) not in sets


# ----------------------------------------------------------------------------- stats


def test_stats_rows_count_records_unique_origins_and_times() -> None:
    stats = DlqStats("pisano-sms.dlq")
    later = FAILED_AT + timedelta(hours=1)
    stats.add(letter(offset=1))
    stats.add(letter(offset=1, failed_at=later))  # dead-lettered twice
    stats.add(letter(offset=2))
    stats.add(letter(Failure("decode_error", "bad"), offset=3))
    stats.add(None)
    document = stats.as_json()
    assert (document["records"], document["foreign"], document["unique_origins"]) == (5, 1, 3)
    assert document["rows"][0] == {"error_code": "13001", "reason": "pisano_error", "campaign_id": CAMPAIGN_A,
                                   "records": 3, "unique_origins": 2, "oldest": "2026-01-02T03:04:05.678Z",
                                   "newest": "2026-01-02T04:04:05.678Z"}
    assert document["rows"][1]["error_code"] is None and document["rows"][1]["campaign_id"] is None
    table = stats.table()
    assert table[0].split() == ["error", "code", "reason", "campaign", "records", "origins", "oldest", "failure",
                                "newest", "failure"]
    assert table[1].split() == ["13001", "pisano_error", CAMPAIGN_A, "3", "2", "2026-01-02T03:04:05Z",
                                "2026-01-02T04:04:05Z"]
    assert table[-1] == "5 record(s) in pisano-sms.dlq, 3 unique origin(s), 1 foreign (not written by pisano-sms)"


def test_the_horizon_goes_by_the_older_of_the_failure_and_the_source_records_time() -> None:
    # Found by review (sre): a record read days after it was written fails recently, but another copy
    # of its event may have been delivered when it was written (DeadLetter.older_than).
    cutoff = FAILED_AT - timedelta(hours=1)
    assert not letter().older_than(cutoff)
    assert letter(written_at=FAILED_AT - timedelta(days=2)).older_than(cutoff)
    assert letter(failed_at=cutoff - timedelta(seconds=1)).older_than(cutoff)
    # A `stale` one is old by its source time by definition: named by --reason, it goes by its failure.
    assert not letter(Failure("stale", "old"), written_at=FAILED_AT - timedelta(days=8)).older_than(cutoff)
    untimed = [(n, v) for n, v in dead_lettered(TOKEN_FAILURE).headers() or [] if n != "dlq.original.timestamp"]
    parsed = parse_dead_letter(FakeMessage(untimed, topic="pisano-sms.dlq", partition=0, offset=7))
    assert parsed is not None and parsed.original_timestamp_ms is None and not parsed.older_than(cutoff)
    headers = dead_lettered(TOKEN_FAILURE).headers() or []
    odd = [(n, b"yesterday" if n == "dlq.original.timestamp" else v) for n, v in headers]
    with pytest.raises(MalformedDeadLetter, match=r"dlq\.original\.timestamp is not a number"):
        parse_dead_letter(FakeMessage(odd, topic="pisano-sms.dlq", partition=0, offset=7))


def test_a_replay_carries_its_source_record_s_time_through_every_failure() -> None:
    # A replay is a new record with a new Kafka timestamp: it carries the source record's time
    # (dlq.source.timestamp), so MAX_EVENT_AGE counts from the event (consumer/ingest/freshness.py),
    # and failing again it keeps that time as its dlq.original.timestamp, for the next replay and its
    # horizon hold (`DeadLetter.older_than`), not the time it was re-published.
    written = FAILED_AT - timedelta(days=4)
    first = letter(written_at=written)
    assert first.original_timestamp_ms == int(written.timestamp() * 1000)
    headers = replay_headers(first)
    assert ("dlq.source.timestamp", str(first.original_timestamp_ms).encode()) in headers
    again = parse_dead_letter(FakeMessage([*dead_letter_headers(
        FakeMessage(headers, timestamp_ms=int(FAILED_AT.timestamp() * 1000) + 60_000), TOKEN_FAILURE, FAILED_AT)],
        topic="pisano-sms.dlq", partition=0, offset=8))
    assert again is not None and again.original_timestamp_ms == first.original_timestamp_ms
    assert dict(replay_headers(again))["dlq.source.timestamp"] == str(first.original_timestamp_ms).encode()

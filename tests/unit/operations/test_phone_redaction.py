"""Phone redaction as a property: however a number is written and wherever it sits in a text, no
run of its digits long enough to call it survives `redact_phones`.

A seeded generator (hypothesis is not a dependency of this project) writes thousands of numbers in
the ways people, spreadsheets and systems write them: E.164, 00 and trunk prefixes, groups split by
spaces, non-breaking and narrow spaces, dots, hyphens, dashes, slashes and brackets, other digit
scripts, and letters or punctuation glued to either end.
"""

import json
import random
import re
from urllib.parse import quote, quote_plus, unquote_plus

import pytest

from consumer.operations.logs import redact_phones
from tests.support.timing import growth

CASES = 5000
# Kept visible by the mask: a country code (up to 3 characters) and the last two digits. Any
# window of this many consecutive original digits in the output means the number leaked.
LEAK_WINDOW = 6
SEPARATORS = [" ", "  ", "\u00a0", "\u202f", "\u2007", ".", "-", " - ", "/", "\u2013", "\u2212", "\t", ". "]
DIGIT_SCRIPTS = ["0123456789", "\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669",
                 "\uff10\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18\uff19"]
GLUE = ["", "", " ", "x", "tel:", "phone=", '"', "'", "(", "[", "<", "msisdn ", "#", "\u00a0", "ext"]
CONTEXT = ["Invalid parameters for", "the mapper failed: ValueError:", "code 13028 at phone_numbers[3]:",
           '{"message": "bad', "Kunde", "m\u00fc\u015fteri numaras\u0131", ""]


def _write_number(rng: random.Random) -> tuple[str, str]:
    """A random phone number as (ASCII digits, how it is written)."""
    country = rng.choice(["90", "49", "1", "44", "971", "7", "380"])
    national = "".join(rng.choice("0123456789") for _ in range(rng.randint(7, 11)))
    national = str(rng.randint(1, 9)) + national[1:]
    style = rng.randrange(4)
    if style == 0:
        head, digits = "+" + country, country + national
    elif style == 1:
        head, digits = "00" + country, "00" + country + national
    elif style == 2:
        head, digits = "0", "0" + national
    else:
        head, digits = country, country + national
    groups: list[str] = []
    rest = national
    while rest:
        size = rng.randint(1, 4)
        groups.append(rest[:size])
        rest = rest[size:]
    separator = rng.choice(SEPARATORS)
    mixed = rng.random() < 0.3
    written = head
    if rng.random() < 0.3:
        groups[0] = f"({groups[0]})"
    for group in groups:
        written += (rng.choice(SEPARATORS) if mixed else separator) if rng.random() < 0.8 else ""
        written += group
    script = rng.choice(DIGIT_SCRIPTS) if rng.random() < 0.15 else DIGIT_SCRIPTS[0]
    written = written.translate(str.maketrans("0123456789", script))
    return digits, written


def _leaks(digits: str, output: str) -> bool:
    seen = "".join(str(int(ch)) for ch in re.findall(r"\d", output))
    return any(digits[i:i + LEAK_WINDOW] in seen for i in range(len(digits) - LEAK_WINDOW + 1))


@pytest.mark.parametrize("seed", range(5))
def test_no_written_phone_survives_redaction(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(CASES // 5):
        digits, written = _write_number(rng)
        text = f"{rng.choice(CONTEXT)} {rng.choice(GLUE)}{written}{rng.choice(GLUE)} {rng.choice(CONTEXT)}"
        output = redact_phones(text)
        assert not _leaks(digits, output), (text, output)


@pytest.mark.parametrize("text", [
    "0532.123.45.67", "905321234567x", "0532\u00a0123\u00a045\u00a067", "+90\u202f532\u202f123\u202f45\u202f67",
    "(0532) 123 45 67", "0532/123 45 67", "+90-532-123-45-67", "tel:+905321234567;", "0 5 3 2 1 2 3 4 5 6 7",
    "\u0660\u0665\u0663\u0662\u0661\u0662\u0663\u0664\u0665\u0666\u0667",
])
def test_formats_named_in_the_issue(text: str) -> None:
    assert not _leaks("05321234567" if "90" not in text else "905321234567", redact_phones(text))


ENCODINGS = {"quote": lambda text: quote(text, safe=""), "quote_plus": quote_plus,
             "twice": lambda text: quote(quote(text, safe=""), safe="")}


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_no_percent_encoded_phone_survives_redaction(encoding: str) -> None:
    """Found in review: a number percent-encoded in a query or form Pisano or a proxy echoes
    (`to=0532%20123%2045%2067`, `%2B90+532+...`) reached the logs and dead-letter headers in clear:
    `%20` cut the digits into runs too short to be a number."""
    rng = random.Random(7)
    for _ in range(1000):
        digits, written = _write_number(rng)
        text = f"{rng.choice(CONTEXT)} to={ENCODINGS[encoding](rng.choice(GLUE) + written)}&lang=tr"
        output = redact_phones(text)
        assert not _leaks(digits, _decoded(output)), (text, output)


def _decoded(text: str) -> str:
    """What a reader decoding the text (twice, as it may be encoded twice) sees."""
    return unquote_plus(unquote_plus(text))


@pytest.mark.parametrize("text", [
    "to=0532%20123%2045%2067", "to=%2B90%20532%20123%2045%2067", "%2B90%205321234567", "to=0532%2D123%2D45%2D67",
    "p=%280532%29%20123%2045%2067", "p=0532%C2%A0123%C2%A045%C2%A067", "q=0532%2520123%252045%252067",
    "q=0532+123+45+67", "body=%7B%22phone%22%3A%220532%20123%2045%2067%22%7D",
])
def test_percent_encoded_formats(text: str) -> None:
    assert not _leaks("05321234567" if "90" not in text else "905321234567", _decoded(redact_phones(text)))


WRITERS = {"repr": repr, "json": json.dumps}


def _unescaped(text: str) -> str:
    """What a reader of a repr or a JSON string sees: `\\xa0`, `\\u202f`, `\\t` as the characters."""
    named = {"t": "\t", "n": "\n", "r": "\r", "f": "\f", "v": "\v"}
    return re.sub(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|[tnrfv])",
                  lambda e: named.get(e[1]) or chr(int(e[1][1:], 16)), text)


@pytest.mark.parametrize("writer", WRITERS)
def test_no_phone_written_by_repr_or_json_survives_redaction(writer: str) -> None:
    """Found in review: a number with non-breaking or narrow spaces or tabs, or in another digit
    script, quoted by a repr (`ValueError: invalid phone '0532\\xa0123\\xa045\\xa067'`, as `{value!r}`
    and pydantic write it) or by a JSON encoder (`"0532\\u00a0123..."`) reached the logs in clear:
    the escapes cut the digits into runs too short to be a number."""
    rng = random.Random(11)
    for _ in range(1000):
        digits, written = _write_number(rng)
        text = f"{rng.choice(CONTEXT)} invalid phone {WRITERS[writer](rng.choice(GLUE) + written)}, code 13028"
        output = redact_phones(text)
        assert not _leaks(digits, _unescaped(output)), (text, output)


@pytest.mark.parametrize("text", ["ValueError: invalid phone '0532\\xa0123\\xa045\\xa067'",
                                  '{"to": "+90\\u202f532\\u202f123\\u202f45\\u202f67"}', "'0532\\t123\\t45\\t67'",
                                  '"\\u0660\\u0665\\u0663\\u0662\\u0661\\u0662\\u0663\\u0664\\u0665\\u0666\\u0667"'])
def test_escaped_formats(text: str) -> None:
    assert not _leaks("05321234567" if "90" not in text else "905321234567", _unescaped(redact_phones(text)))


def test_escaped_text_without_a_number_stays_as_written() -> None:
    text = "b'\\x00\\x00\\x01\\x02\\x03\\x04\\x05\\x06\\x07' at 12\\t34, '\\u00e7 1\\xa02\\xa03', C:\\x\\u12"
    assert redact_phones(text) == text


def test_encoded_text_without_a_number_stays_as_written() -> None:
    text = "50% done, a%2Fb, url=https%3A%2F%2Fapi.pisano.co%2Fv2%3Flang%3Dtr, code%3D13028, 100%25"
    assert redact_phones(text) == text


def test_short_numbers_stay_readable() -> None:
    text = "HTTP 400 code 13028 at phone_numbers[3], attempt 2 of 6, 5000 recipients"
    assert redact_phones(text) == text


def test_addresses_with_a_port_stay_readable() -> None:
    text = "cannot reach Kafka at 10.100.200.30:9092 nor Redis at 192.168.10.20:6379"
    assert redact_phones(text) == text
    assert "532.123.45.67" not in redact_phones("call 0532.123.45.67:1")


@pytest.mark.parametrize("text", ["MOVED 3999 127.0.0.1:6381", "ASK 12182 10.0.0.5:6379",
                                  "slot 3999 moved to 10.100.200.30:6379"])
def test_an_address_after_a_number_stays_readable(text: str) -> None:
    """Found in review: a Redis cluster redirection (`MOVED <slot> <host:port>`) came out as
    `MOVED 3*******01:6381`: slot and address read as one number with spaces and dots."""
    assert redact_phones(text) == text
    shown = redact_phones("call 0532 123 45 67 10.0.0.5:6379")
    assert "10.0.0.5:6379" in shown and not _leaks("05321234567", shown)


TIMESTAMPS = ["2026-12-04T21:00:00Z", "2026-12-04T21:00:00.123+03:00", "2026-12-04 21:00:00", "2026-12-04T21:00",
              "2026-12-04T21:00:00.123456", "2026-12-04T21:00:00+0300", "2026-12-04T21:00:00-05:00",
              "1999-01-31T00:00:59Z"]
UUIDS = ["123e4567-e89b-12d3-a456-42661417400b", "00000000-0000-4000-8000-000000013002",
         "123E4567-E89B-12D3-A456-42661417400B", "ae51458c-9e82-417f-8f1d-e074891ea5c1"]


@pytest.mark.parametrize("kept", TIMESTAMPS + UUIDS)
def test_timestamps_and_uuids_stay_readable(kept: str) -> None:
    """Found in review: an event's id and time, what an SRE traces a record by, came out masked
    (`2*****04T21:00:00Z`, `123e4567-e89b-12d3-a4************00`): their digits read as a number."""
    for text in (kept, f"event {kept} failed", f'{{"id": "{kept}", "code": 13028}}', f"at={kept};",
                 f"dead-lettering a-bc 1-23: {kept} and {kept}"):
        assert redact_phones(text) == text


@pytest.mark.parametrize("text", ["2026-12-04", "on 2026-12-04 at 21", "532.123.45.67", "0532.123.45.67",
                                  "2026-12-04T2100", "2026-13-04T21:00:00Z", "2026-12-04T25:00:00Z",
                                  "123e4567-e89b-12d3-a456-4266141740001", "123e4567-e89b-12d3-a456-42661417400",
                                  "123e4567-e89b-12d3-a4561-426614174000", "1123e4567-e89b-12d3-a456-426614174000",
                                  "123e4567-e89b-12d3-a456-426614174000a", "x123e4567-e89b-12d3-a456-426614174000",
                                  "123e4567e89b12d3a456426614174000", "\u0662026-12-04T21:00:00Z",
                                  "123e4567-e89b-12d3-a456-426614174000-12",
                                  "1234-123e4567-e89b-12d3-a456-426614174000", "attempt 2 2026-12-04T21:00:00Z"])
def test_a_bare_date_an_address_and_near_misses_stay_masked(text: str) -> None:
    """A date alone is an 8-digit number as it may be written, and an IPv4 address without a port a
    Turkish number (532.123.45.67); neither is kept, nor anything that is not a whole canonical UUID
    or a whole timestamp with a time, nor one a number runs into (its digits could be the number's)."""
    assert redact_phones(text) != text


# Fifth review: a time in a field named for one (`ts`, `time`, `date`, `..._at`, `sentAt`): epoch
# milliseconds now and for years to come (13 digits from 1: no phone is written so, E.164 or
# national) and a bare date. 13 digits from 2 stay masked: a Nigerian number is written so (+234).
FIELD_TIMES = ["ts=1764902400000", '{"ts": 1764902400000, "code": 13028}', "created_at=1764902400000;",
               '"sentAt":"1764902400000"', "date=2026-12-05", '{"expires_at": "2026-12-05"}', "eventDate: 2026-12-05",
               "ts=2026-12-05 next", '"{\\"ts\\":1764902400000}"', "Time => 1764902400000"]
NOT_FIELD_TIMES = ["1764902400000", "id=1764902400000", "ts=2348031234567", "ts=17649024000001", "format=1764902400000",
                   "ts=1764902400000 532 12", "ts=905321234567", "date=05321234567", "ts=2026-12-05 123 45 67",
                   "data=2026-12-05", "ts: 0532 123 45 67", "ts=1764902400000-45 67", "that=1764902400000",
                   "ts=2026-12-45", "ts=+1764902400000", "ts=0 1764902400000"]


@pytest.mark.parametrize("kept", FIELD_TIMES)
def test_a_time_in_a_field_named_for_one_stays_readable(kept: str) -> None:
    for text in (kept, f"event {kept} failed", f"{kept}, to +90 532 123 45 67"):
        shown = redact_phones(text)
        assert kept in shown and "5321234567" not in shown.replace(" ", ""), shown


@pytest.mark.parametrize("text", NOT_FIELD_TIMES)
def test_a_number_that_is_not_clearly_a_time_stays_masked(text: str) -> None:
    assert redact_phones(text) != text


@pytest.mark.parametrize("text", [
    "{ts} {n}", "{n} {ts}", "{ts}{n}", "2026-12-04T21:00:00+{n}", "2026-12-04T21:00:00.{n}",
    "2026-12-04T21:00:00.{n7} {tail}",
    "2026-12-04T{n}", "T{n}Z", "{ts}+90 541 987 65 03", "{ts}+90541\u00a0987\u00a06503", "uuid={uuid};phone={n}",
    "{uuid}+9{n}", "{n}-{uuid}", "{n}{uuid}", "123e4567-e89b-12d3-a456-{n}", "123e4567-e89b-12d3-a456-4266{n}",
    "abcdef{n}", "{n}abcdef", "e{n}-e89b", "{uuid} 0541 987 65 03", "{uuid}0541 987 65 03",
    # A number running into one (a digit, then separators): its digits could be the number's.
    "+90 54 19876503-e89b-12d3-a456-426614174000", "123e4567-e89b-12d3-a456-426605419876 503",
    "2026-12-04T21:00:00.054198 76503", "2026-12-04T21:00:00+05:41 987 65 03",
])
def test_a_number_next_to_a_timestamp_or_uuid_is_still_masked(text: str) -> None:
    """The exemption keeps a whole timestamp or UUID and nothing more: a number written next to
    one, glued to it or with T or hex letters around it is masked as anywhere else."""
    number = "05419876503"  # no six of its digits in a row in the timestamp or UUID around it
    text = text.format(ts="2026-12-04T21:00:00Z", uuid="123e4567-e89b-12d3-a456-426614174000", n=number,
                       n7=number[:7], tail=number[7:])
    output = redact_phones(text)
    assert not _leaks("90" + number[1:] if "+9" in text else number, output), (text, output)


def test_a_fraction_of_more_than_nanoseconds_is_masked_with_the_seconds() -> None:
    """Nanoseconds (Java) and ticks (.NET, 7 digits) are a timestamp's; a longer run after the
    seconds could be a number's, and the seconds run into it."""
    for kept in ("2026-12-04T21:00:00.123456789Z", "2026-12-04T21:00:00.1234567Z", "2026-12-04T21:00:00.5321234"):
        assert redact_phones(f"at {kept}.") == f"at {kept}."
    shown = redact_phones("at 2026-12-04T21:00:00.0532123456Z")
    assert shown.startswith("at 2026-12-04T21:00:") and "5321234" not in shown


@pytest.mark.parametrize("unit", ["1 ", "1+", "1.1.1.1 ", "1 1.1.1.1:1 ", "%20", "1%20", "%2B9", "0532%20123%20",
                                  "%2520", "%3", "a%2", "1\\xa0", "\\x0", "\\u20", "1\\u202f", "\\t1", "1\\",
                                  "\\u12zz1",
                                  # The timestamp and UUID exemption: long digit and hyphen runs, near misses.
                                  "1-", "-1", "12-", "2026-12-04T", "2026-12-04 ", "2026-12-04 21:00:",
                                  "2026-12-04T21:00:00.",
                                  " 2026-12-04T21:00:00.1234567", "2026-12-04T21:00:00Z ", "2026-12-04T21:00:00+03:0",
                                  "123e4567-", "123e4567-e89b-12d3-a456-", "12345678-1234-1234-1234-12345678901",
                                  " 123e4567-e89b-12d3-a456-426614174000", "abcdef12-", "1 2026-12-04T21:00:00 ",
                                  "123e4567-e89b-12d3-a456-426614174000 1 ", "2026-12-04T21:00:00.1234567890 ", "a-bc",
                                  # Fifth review: times in fields named for one.
                                  "ts=1764902400000 ", "1764902400000", "11111111111111", "ts=", "at: 2026-12-05 ",
                                  "createdAt=1764902400000,", "ts=1764902400000 1", " " * 40 + "ts=1"])
def test_redaction_is_linear_in_the_text_even_an_adversarial_one(unit: str) -> None:
    """Percent-encoded runs are decoded (up to three levels), backslash-escaped runs unescaped, an
    address is looked for inside a number, and timestamps and UUIDs are cut out first: sixteen
    times the text still takes about sixteen times as long (bound as in the masking's linearity
    test, tests/unit/config/test_secret_settings.py)."""
    small, large = unit * (400 // len(unit)), unit * (6400 // len(unit))
    redact_phones(small)  # warm
    ratio = growth(lambda: [redact_phones(small) for _ in range(160)],
                   lambda: [redact_phones(large) for _ in range(10)]) * 16
    assert ratio < 64, f"16x the text took {ratio:.0f}x as long"


@pytest.mark.parametrize("text", ["00000000-0000-0000-0000-905321234567", "00000000-0000-4000-8000-005321234567",
                                  "05321234-e89b-12d3-a456-426614174000", "12345678-1234-1234-1234-123456789012",
                                  "123e4567-e89b-12d3-a456-426614174000"])
def test_a_uuid_whose_group_is_a_phone_long_number_is_masked(text: str) -> None:
    """Found in review: an id padded from a phone number (`...-0000-905321234567`) was kept whole as a
    UUID. A group that is a number of 7 or more digits, leading zeros aside, is masked like any."""
    number = max(text.split("-"), key=lambda group: len(group.lstrip("0"))).lstrip("0")
    output = redact_phones(f"event {text} failed")
    assert number not in output and number[:-2] not in output, output


# Characters nobody sees between two digits: zero-width and joiners, a soft hyphen, a byte order
# mark, bidirectional controls, and control characters a terminal or a C string leaves in.
INVISIBLE = ["\u200b", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u202e", "\u2066", "\x00", "\x1b", "\x7f"]


@pytest.mark.parametrize("mark", INVISIBLE)
def test_a_number_cut_by_invisible_characters_is_masked(mark: str) -> None:
    """Found in review: `+90532\u200b123\u200b4567` (and the same written as escapes) was left in
    clear: the invisible characters were no separators, and cut the digits into runs too short."""
    escaped = mark.encode("unicode_escape").decode("ascii")
    for text in (f"to +90532{mark}123{mark}4567 failed", f"to '+90532{escaped}123{escaped}4567' failed"):
        output = redact_phones(text)
        assert "4567" not in output and "90532" not in output, (text, output)


# Marks written on a digit (a combining underline or accent, a keycap `5️⃣`: a variation selector
# and the combining keycap) leave each digit readable to a person.
COMBINING = ["\u0332", "\u0301", "\u20e3", "\ufe0f\u20e3", "\ufe0f", "\u1ab0", "\u1dc0", "\ufe20", "\u0651"]


@pytest.mark.parametrize("mark", COMBINING)
def test_a_number_whose_digits_carry_combining_marks_is_masked(mark: str) -> None:
    """Noticed in review: `0̲5̲3̲2̲1̲2̲3̲4̲5̲6̲7̲` (and keycap digits) was left in clear: the marks were
    no separators, and cut the digits into runs of one."""
    escaped = mark.encode("unicode_escape").decode("ascii")
    number = "05321234567"
    for joined in (mark, escaped):
        text = f"to {joined.join(number)}{joined} failed"
        output = redact_phones(text)
        digits = [char for char in output.replace(joined, "") if char.isdigit()]
        assert len(digits) <= 3, (text, output)  # the mask's `0********67`


# The phone library's own punctuation (phonenumbers' _VALID_PUNCTUATION and _PLUS_CHARS: it reads
# full-width digits with full-width hyphens, U+FF0D, as a valid Turkish number, as libphonenumber
# does wherever Pisano or a CRM parses one), the full-width and small forms of the ASCII
# separators, the middle dots people write between groups, and blanks that show as nothing (Hangul
# fillers, a Braille blank, the Mongolian vowel separator, the Arabic letter mark, deprecated
# format characters).
WRITTEN_BETWEEN = ["\uff0d", "\u30fc", "\uff0f", "\uff08", "\uff09", "\uff3b", "\uff3d", "~", "\u2053",
                   "\u223c", "\uff5e", "\u301c", "\uff0b", "\uff0e", "\ufe52", "\ufe58", "\ufe63", "\u00b7",
                   "\u2022", "\u2024", "\u2027", "\u2219", "\u22c5", "\u30fb", "\uff65", "\u02d7", "\u115f",
                   "\u1160", "\u3164", "\uffa0", "\u2800", "\u180e", "\u061c", "\u206a", "\ufff9"]


@pytest.mark.parametrize("mark", WRITTEN_BETWEEN)
def test_a_number_written_with_the_phone_librarys_or_full_width_punctuation_is_masked(mark: str) -> None:
    """Found in review: `0532\uff0d123\uff0d45\uff0d67` (full-width hyphens, which the phone library
    itself reads as a valid number), `0532·123·45·67`, `0532~123~45~67` and the same cut by a blank
    nobody sees were left in clear: those characters were no separators, and cut the digits into runs too
    short to be a number. In full-width digits too, and as a repr escapes them."""
    full_width = str.maketrans("0123456789", "\uff10\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18\uff19")
    for number in ("0532{0}123{0}45{0}67", "+90 {0}532{0} 123{0}45{0}67", "0532{0}{0}1234567"):
        written = number.format(mark)
        for text in (f"invalid phone {written} refused", f"invalid phone {written.translate(full_width)} refused",
                     f"ValueError: invalid phone {written!a}"):
            output = redact_phones(text)
            assert not _leaks("05321234567" if "90" not in written else "905321234567", _unescaped(output)), \
                (text, output)


def test_a_number_whose_separators_a_decoder_could_not_read_is_masked() -> None:
    """Found in review: an error page in Windows-1254 or Latin-1 (a proxy's, a legacy gateway's) is
    decoded as UTF-8 with replacement: its non-breaking spaces between the groups became U+FFFD,
    no separator, and `0532\ufffd123\ufffd45\ufffd67` reached the dead-letter header in clear."""
    page = "ge\u00e7ersiz numara 0532\u00a0123\u00a045\u00a067".encode("cp1254").decode("utf-8", "replace")
    output = redact_phones(page)
    assert not _leaks("05321234567", output), output


@pytest.mark.parametrize("text", [
    # A plug-in mapper's `ValueError(f"bad record {json.dumps(record)!r}")`: JSON's escape, escaped by the repr.
    "ValueError: bad record '{\"phone\": \"0532\\\\u00a0123\\\\u00a045\\\\u00a067\"}'",
    "'+90\\\\xa0532\\\\xa0123\\\\xa045\\\\xa067'", "\"0532\\\\\\\\t123\\\\\\\\t45\\\\\\\\t67\"",
])
def test_a_number_escaped_twice_is_masked(text: str) -> None:
    """Found in review: a JSON text quoted by a repr (or a JSON string inside a JSON string) writes
    each separator's escape with its backslash escaped, `0532\\\\u00a0123`, which was not read as
    an escape: the digits were cut into runs too short to be a number."""
    output = redact_phones(text)
    assert not _leaks("05321234567" if "90" not in text else "905321234567",
                      _unescaped(_unescaped(output.replace("\\\\", "\\")))), (text, output)


def test_a_client_error_cut_for_the_health_log_shows_no_part_of_a_number() -> None:
    """The health probe's cause of a Kafka or Redis failure is kept to 300 characters before the
    log line's redaction reads it: cut inside a number quoted there, its first digits went out in
    clear (found by review)."""
    from consumer.operations.health import _cause
    from consumer.operations.logs import redact_text

    message = "x" * (300 - len("ConnectionError: ") - 8) + " +90 532 123 45 67"
    shown = redact_text(_cause(ConnectionError(message)))
    assert "532" not in shown and shown.startswith("ConnectionError: xxx"), shown

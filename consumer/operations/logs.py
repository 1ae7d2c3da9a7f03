"""Logging: JSON lines in production, plain text on a terminal; configured only by the CLI.

Modules log through `logging.getLogger(__name__)` with lazy `%` arguments and pass context
(`topic`, `partition`, `offset`, `campaign`) in `extra`; the JSON formatter turns it into fields.
Phone numbers are masked with `mask_phone` before they reach a log call, and tokens never do.
Both formatters also pass the message, any traceback and every `extra` value but a plain number
through `redact_text` (phones redacted, URL credentials masked): an exception's text (a mapper's, a
library's, Pisano's) may quote a record or a URL, and no call site can be trusted to remember. An
int as long as a phone is redacted too, unless its key names a count or a position (`_field`).
"""

from __future__ import annotations

import functools
import json
import logging
import re
import sys
import threading
import time
from types import TracebackType
from typing import Any

from consumer.config.percent_encoded import DECODE_LEVELS, in_encoded_runs
from consumer.config.secrets import mask_urls_in_text

CONTEXT_FIELDS = ("topic", "partition", "offset", "campaign", "request_id", "pisano_request_id", "status", "code",
                  "reason", "count", "wait_ms", "attempt")

# Attributes every LogRecord has; anything else came in through `extra`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


# What people and systems put between the digits of a phone number: any Unicode space (also
# non-breaking and narrow ones), dots, hyphens and dashes, slashes, brackets, and `+` (a space in
# a form-encoded query: `to=0532+123+45+67`). Also what nobody sees there, which would otherwise cut
# the digits into runs too short to be a number: control characters (NUL, ESC, DEL), a soft hyphen,
# zero-width characters and joiners, bidirectional marks and controls, a byte order mark. And the
# marks written on a digit, which leave it readable: combining accents and lines (the general blocks,
# and Arabic's, whose digits the phone library reads), the keycap (`5️⃣`) and variation selectors.
# Also (found by review) the phone library's own punctuation, which it reads a number through
# (phonenumbers' _VALID_PUNCTUATION and _PLUS_CHARS: full-width digits and hyphens, U+FF10... and
# U+FF0D, are a valid number to it, and to libphonenumber wherever Pisano or a CRM parses one):
# `~`, the prolonged sound mark and the swung dashes and tildes, the full-width and small forms of
# the ASCII separators and its full-width brackets (not `[ ]`: Pisano's errors index the request's
# array right before a number, `phone_numbers[3] +90...`, and the index would be read into it);
# the middle dots and bullets people write between groups (U+00B7, U+30FB); blanks that show as
# nothing (Hangul fillers, the Braille blank, the Mongolian vowel separator, the Arabic letter mark,
# deprecated format and annotation characters, tags); and U+FFFD, which a decoder writes for a byte
# it cannot read (a Windows-1254 page's non-breaking space).
_SEPARATOR_CHARS = (r"\s.\-/()+\u2010-\u2015\u2212"
                    r"\x00-\x08\x0e-\x1b\x7f\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff"
                    r"\u0300-\u036f\u064b-\u065f\u0670\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe00-\ufe0f\ufe20-\ufe2f"
                    r"\U000e0100-\U000e01ef"
                    r"~\u30fc\u2053\u223c\uff5e\u301c\uff08\uff09\uff0b\uff0d-\uff0f\uff3b\uff3d\ufe52\ufe58-\ufe5a"
                    r"\ufe62\ufe63\u00b7\u2022\u2024\u2027\u2043\u2219\u22c5\u30fb\uff65\u02d7"
                    r"\u115f\u1160\u3164\uffa0\u2800\u180e\u061c\u206a-\u206f\ufff9-\ufffb\ufffd"
                    r"\U000e0001\U000e0020-\U000e007f")
_SEPARATOR = "[" + _SEPARATOR_CHARS + "]"
# A phone-like run: an optional + or 00, then at least MIN_PHONE_DIGITS digits (any script: the
# phone library reads Arabic-Indic and full-width digits too) with up to 4 separator characters between
# any two. Letters around it do not protect it (`905321234567x`, `tel:0532...`).
MIN_PHONE_DIGITS = 7
_PHONE_LIKE = re.compile(r"\+?\d(?:" + _SEPARATOR + r"{0,4}\d){" + str(MIN_PHONE_DIGITS - 1) + r",}")


# A number as a repr (`{value!r}`, pydantic's `input_value=`) or a JSON encoder writes it: a
# separator or a digit of another script as a backslash escape (`'0532\xa0123\xa045\xa067'`,
# `"+90\u202f532..."`, `\t`), which cut the digits into runs too short to be a number. The run of
# digits, separators and escapes around such an escape is redacted as unescaped.
# An escape written in a text escaped again (a repr of a JSON text, `'0532\\\\u00a0123'`; a JSON string
# inside one) has its backslash escaped too: up to three levels are read as the escape they write.
_BACKSLASH_ESCAPE = re.compile(r"\\{1,4}(?:x[0-9A-Fa-f]{2}|u[0-9A-Fa-f]{4}|U[0-9A-Fa-f]{8}|[tnrfv])")
_NUMBER_CHAR = re.compile(rf"[\d{_SEPARATOR_CHARS}]")
_ESCAPED_RUN_TAIL = re.compile(rf"(?:[\d{_SEPARATOR_CHARS}]|{_BACKSLASH_ESCAPE.pattern})*+")
_NAMED_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f", "v": "\v"}
_ESCAPED_AGAIN = {ord(char): "\\" + name for name, char in _NAMED_ESCAPES.items()}


# A host:port address (brokers, Redis) looks like a dotted number; it is left readable, also after
# a number (`MOVED 3999 10.0.0.5:6379`, a cluster's slot). Not a dotted number's tail
# (`0532.123.45.67:1` holds `32.123.45.67:1`).
_IPV4_WITH_PORT = re.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d):\d")


# What an SRE traces a record by: an event's id (a UUID) and its time (an ISO-8601 timestamp). Their
# digits read as a number (`2026-12-04T...` holds 8, a UUID's last group 12), so a text is first cut
# at each whole one, kept as written, and the numbers are looked for in the pieces between: a number
# next to one (`...Z 0532...`, `uuid=...;phone=...`) is masked there as anywhere else. Only whole
# forms, word-bounded: a date alone (`2026-12-04`, an 8-digit number as it may be written) and a
# dotted address without a port (`532.123.45.67`) stay masked. Nor is one kept that a number runs
# into (a digit, then at most 4 separators, at an end that is a digit): its digits could be that
# number's (`+90 53 21234567-e89b-...`), so no phone-like run that is kept reaches outside it. A
# timestamp's fields are checked (ASCII digits; year 19xx or 20xx, month, day, hour, minute,
# second); its fraction has at most 9 digits (nanoseconds, as Java writes them; .NET writes 7):
# a longer run after the seconds is masked with them, the time kept to the minute. Linear: a
# fixed form of at most 36 characters tried at each position, and 5 characters around it.
_HEX = "[0-9A-Fa-f]"
_NO_NUMBER_BEFORE = "".join(rf"(?<!\d{_SEPARATOR}{{{n}}})" for n in range(1, 5))
_NO_NUMBER_AFTER = rf"(?!{_SEPARATOR}{{1,4}}\d)"
_UUID = (rf"(?<!\w)(?:(?=[A-Fa-f])|{_NO_NUMBER_BEFORE}){_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{11}}"
         rf"(?:[A-Fa-f]|[0-9]{_NO_NUMBER_AFTER})(?!\w)")
_TIMESTAMP = (rf"(?<!\w){_NO_NUMBER_BEFORE}(?:19|20)[0-9]{{2}}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])[Tt ]"
              r"(?:[01][0-9]|2[0-3]):[0-5][0-9](?::(?:[0-5][0-9]|60)(?:[.,][0-9]{1,9}(?!\d))?)?"
              rf"(?:[Zz]|[+-][01][0-9]:?[0-5][0-9](?!\d))?(?!\d)(?:(?<=[Zz])|{_NO_NUMBER_AFTER})")
# A time in a field named for one (`ts=`, `"created_at": `, `sentAt:`; `_TIME_FIELD`) is kept too:
# epoch milliseconds from 2001 to 2033 (13 digits from 1: no phone is written so, E.164's +1 has
# 11 and a national number starts with its trunk 0; 13 from 2 may be Nigeria's +234, masked) and a
# bare date (8 digits: masked anywhere else). Bounded as the others, a number running into it not.
_FIELD_TIME = (r"(?=[12])(?<!\w)(?P<time>1[0-9]{12}|(?:19|20)[0-9]{2}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01]))"
               rf"(?![\w.,]?\d){_NO_NUMBER_AFTER}")
# The name's last word and its separator, just before the value (a name is read back from there, at
# most _FIELD_REACH characters): `ts`, `time`, `date` alone or after `_`, `.`, `-`, or capitalized
# after a lower-case letter (`sentAt`); `at` as a word only (`format=` is no time).
_TIME_FIELD = re.compile(r"(?:(?<![A-Za-z])(?i:ts|time|timestamp|at|date|datetime)"
                         r"|(?<=[a-z0-9])(?:Ts|TS|Time|Timestamp|At|Date|DateTime))"
                         r"(?:\\{0,3}[\"'])?[ \t]*+(?:=>|[:=])[ \t]*+(?:\\{0,3}[\"'])?\Z")
_FIELD_REACH = 24


# Trying the field times at every position costs the scan about a fifth more: they are looked for
# only in a text with a value like one just after a `:` or `=` (a search that skips to those).
# Compiled when a text first holds a hint of one (`_TRACE_ID_HINT`), once each: the two forms cost
# 7 ms of CPU to compile, at every start of every process, and most runs never log a trace id.
@functools.cache
def _trace_ids(with_times: bool) -> re.Pattern[str]:
    return re.compile(f"{_TIMESTAMP}|{_UUID}|{_FIELD_TIME}" if with_times else f"{_TIMESTAMP}|{_UUID}")


_FIELD_TIME_HINT = re.compile(r"[:=>][ \t]*+(?:\\{0,3}[\"'])?[12][0-9]{3}")
# A UUID's group that is a number as long as a phone's, leading zeros aside: an id padded from one
# (`00000000-0000-0000-0000-905321234567`) is no trace id to keep. About 2% of random UUIDs have such
# a group (all 8 digits of the first, or 12 of the last): that group is masked, the rest kept.
# (A timestamp's groups are at most 4 digits, but its fraction: nanoseconds are kept.)
_PHONE_LONG_GROUP = re.compile(rf"(?:^|-)0*[1-9][0-9]{{{MIN_PHONE_DIGITS - 1},}}(?:-|$)")
# Each holds this from its 4th (a timestamp, `6-12`) or 8th character (a UUID, `7-e8`) on: a text
# without it (most, also `dead-lettering`) is not scanned for them, one with it from just before
# it. The scan, lookbehinds tried at every position, costs about 90 ns a character, the search for
# this about 3 (it starts with a class of characters, which the engine skips to).
_TRACE_ID_HINT = re.compile(r"[0-9A-Fa-f](?:-[0-9A-Fa-f]{2}|[0-9]{12})")  # ...or epoch milliseconds
_HINT_OFFSET = 7


def redact_phones(text: str) -> str:
    """Mask anything in a text from outside (Pisano's error message, a mapper's exception) that
    could be a phone number: we cannot know what the text echoes back. Runs of 7 or more digits
    are masked whatever separates them, also percent-encoded (`to=0532%20123%2045%2067`, as a query
    Pisano or a proxy echoes writes it) or escaped (`'0532\\xa0123...'`, as a repr or JSON writes
    it); shorter numbers (codes, counts, indexes), IPv4 addresses with a port, and whole ISO-8601
    timestamps (a date and a time) and UUIDs stay readable."""
    return _redacted(text, DECODE_LEVELS)


def _redacted(text: str, levels: int) -> str:
    # Encoded runs first, as decoded (`%20` cuts the digits into runs too short to be a number);
    # a run holding a number is encoded again, so the pass over the plain text finds none in it.
    if levels > 0:
        text = in_encoded_runs(text, lambda plain: _redacted(plain, levels - 1))
    if "\\" in text:
        text = _redacted_escaped_runs(text)
    return _redacted_plain(text)


def _redacted_plain(text: str) -> str:
    hint = _TRACE_ID_HINT.search(text)
    if hint is None:
        return _masked_numbers(text)
    parts: list[str] = []
    done = 0
    ids = _trace_ids(_FIELD_TIME_HINT.search(text) is not None)
    for kept in ids.finditer(text, max(0, hint.start() - _HINT_OFFSET)):
        if kept.groupdict().get("time") is None:
            if _PHONE_LONG_GROUP.search(kept.group()) is not None:
                continue  # masked with the text around it
        elif _TIME_FIELD.search(text, max(0, kept.start() - _FIELD_REACH), kept.start()) is None:
            continue  # a number like any other: no field says it is a time
        parts += (_masked_numbers(text[done:kept.start()]), kept.group())
        done = kept.end()
    return "".join(parts) + _masked_numbers(text[done:]) if parts else _masked_numbers(text)


def _masked_numbers(text: str) -> str:
    return _PHONE_LIKE.sub(lambda match: _masked_run(text, match), text)


def _redacted_escaped_runs(text: str) -> str:
    r"""Every run of digits, separators and escapes around an escape of a digit or a separator,
    redacted as unescaped; escaped again (as a repr would) only if a number was masked, so a run
    without one (`b'\x00\x01'`, `12\t34`) is left exactly as written. An escape of anything else
    (`m\u00fc\u015fteri`) cuts no number and is passed over. Linear: escapes are found by their
    backslash, and a run is read back to the end of the one before it at most, then forward once."""
    parts: list[str] = []
    done = run_end = position = 0
    while (escape := _BACKSLASH_ESCAPE.search(text, position)) is not None:
        position = escape.end()
        if _NUMBER_CHAR.fullmatch(_unescaped(escape)) is None:
            continue
        start = escape.start()
        while start > run_end and _NUMBER_CHAR.match(text, start - 1) is not None:
            start -= 1
        tail = _ESCAPED_RUN_TAIL.match(text, escape.start())  # at least the escape itself
        run_end = position = tail.end() if tail is not None else escape.end()
        plain = _BACKSLASH_ESCAPE.sub(_unescaped, text[start:run_end])
        masked = _redacted_plain(plain)
        if masked != plain:
            again = masked.encode("ascii", "backslashreplace").decode("ascii").translate(_ESCAPED_AGAIN)
            parts += (text[done:start], again)
            done = run_end
    return "".join(parts) + text[done:] if parts else text


def _unescaped(escape: re.Match[str]) -> str:
    code = escape.group().lstrip("\\")
    if code in _NAMED_ESCAPES:
        return _NAMED_ESCAPES[code]
    return chr(int(code[1:], 16)) if int(code[1:], 16) <= 0x10FFFF else escape.group()


def _masked_run(text: str, match: re.Match[str]) -> str:
    # An address with a port can only end the run (`:` is no separator): it stays, and what comes
    # before it is looked at alone. Bounded: one search within the run.
    address = _IPV4_WITH_PORT.search(text, match.start(), match.end() + 2)
    if address is None:
        return _masked_number(match.group())
    head = text[match.start():address.start()]
    return _PHONE_LIKE.sub(lambda number: _masked_number(number.group()), head) + text[address.start():match.end()]


def _masked_number(written: str) -> str:
    # The digits alone, and a leading + (a + between them is a separator).
    return mask_phone(("+" if written.startswith("+") else "") + re.sub(r"\D", "", written))


def redact_text(text: str) -> str:
    """A text fit for a log line: URL credentials masked, then phone numbers redacted."""
    return redact_phones(mask_urls_in_text(text))


# Where a text from outside is cut to a length before it is redacted (an exception's text,
# Pisano's message), the cut may fall inside a URL's user info (`https://crm:VerySecr`: no `@` is
# left to say what it is) or a number (`+90 532`: too few digits left to be one), which the
# redaction then cannot see. So the last word goes (back to the blank before it, at most
# CUT_WORD_REACH characters: a URL, a token, an escaped or encoded number are one word), and the
# digits and separators before it (a number written with spaces; at most _CUT_NUMBER_REACH).
CUT_WORD_REACH = 256
_CUT_NUMBER_REACH = 64
_LAST_BLANK = re.compile(r"\s(?=\S*\Z)")


def cut(text: str, limit: int) -> str:
    """`text` at most `limit` characters long, for a message redacted later: as it is when it fits,
    else cut where no part of a URL's credentials or of a number is left (above)."""
    if len(text) <= limit:
        return text
    start = max(0, limit - CUT_WORD_REACH)
    blank = _LAST_BLANK.search(text, start, limit)
    end = blank.start() if blank is not None else start
    floor = max(0, end - _CUT_NUMBER_REACH)
    while end > floor and _NUMBER_CHAR.match(text, end - 1) is not None:
        end -= 1
    return text[:end]


def cut_short(text: str, limit: int) -> str:
    """A record's value quoted short (a route key, a campaign, an attribute name: at most `limit`
    characters) for a message redacted later: cut at `limit`, less the part before the cut of a
    number that runs across it (`+90 532| 123 45 67` would leave five digits, too few for the
    redaction to read as a number). The rest of the word stays: what the value was is what such
    a message is for, and a record's field is no place for a URL's credentials (`cut` is, for an
    error's text)."""
    if len(text) <= limit:
        return text
    end = limit
    if _NUMBER_CHAR.match(text, end) is not None:
        floor = max(0, end - _CUT_NUMBER_REACH)
        while end > floor and _NUMBER_CHAR.match(text, end - 1) is not None:
            end -= 1
    return text[:end]


def mask_phone(phone: str) -> str:
    """Keep the country code and last two digits: enough to correlate, not enough to call."""
    if len(phone) <= 4:
        return "*" * len(phone)
    keep_head = 3 if phone.startswith("+") else 1
    return phone[:keep_head] + "*" * (len(phone) - keep_head - 2) + phone[-2:]


# Ids this consumer makes, by the key they are logged under, in the one form it makes them: not
# text from outside, and kept whole so a request can be traced (a request id, `uuid4().hex`, holds
# 7 digits in a row about a third of the time, which the redaction would mask). A topic is the
# broker's name for where a record came from, chosen by whoever runs the cluster, not a record's
# text: one in Kafka's characters with a letter in it stays whole (a dated `sms.events-20261204`
# was `sms.events******04` in every line about it); one of digits and separators alone could be a
# number, and is redacted.
_OWN_IDS = {"request_id": re.compile(r"[0-9a-f]{12}4[0-9a-f]{3}[89ab][0-9a-f]{15}"),  # its version, variant
            "topic": re.compile(r"(?=[0-9._-]*+[A-Za-z])[A-Za-z0-9._-]{1,249}")}


# An int under these keys is a count or a position, kept as a JSON number to query by whatever its
# size (an offset passes 7 digits). Under any other key an int of a phone's length may be one, as
# a record's field passed as it came (`extra={"phone": 905321234567}`): redacted as its text.
_NUMBER_FIELDS = frozenset({"partition", "offset", "count", "wait_ms", "status", "code", "attempt"})
_NUMBER_SUFFIXES = ("_ms", "_count", "_offset", "_bytes", "_lag", "_total", "_size")


def _field(key: str, value: object) -> str | int | float | bool | None:
    """An `extra` field fit for a log line. Its key is chosen by the code; its value may be a text
    from outside (Pisano's message, an exception, a record's value), so any text, and the text of
    any other object, is redacted like the message. Plain numbers stay numbers (offsets, counts:
    a JSON number to query by), but one as long as a phone under a key not named for a number,
    which is redacted, and kept as a number if nothing in it was masked (a time under a time's
    name: `created_at`); a subclass could write anything, so it is written as a text."""
    if value is None or type(value) is bool:
        return value
    # A float as well: a number parsed as a double (`905321234567.0`) is the same phone.
    if isinstance(value, (int, float)) and type(value) in (int, float):
        if abs(value) < 10 ** (MIN_PHONE_DIGITS - 1) or key in _NUMBER_FIELDS or key.endswith(_NUMBER_SUFFIXES):
            return value
        shown = _redacted_field(key, str(value))
        return value if shown == str(value) else shown
    text = value if type(value) is str else str(value)
    own = _OWN_IDS.get(key)
    return text if own is not None and own.fullmatch(text) is not None else _redacted_field(key, text)


def _redacted_field(key: str, text: str) -> str:
    """`text` redacted as the value of `key`: a time under a key named for one (`created_at`,
    `sentAt`: epoch milliseconds, a bare date) stays, as it does after that name in a text."""
    if _TIME_FIELD.search(key[-_FIELD_REACH:] + "=") is None:
        return redact_text(text)
    named = f"{key}="
    shown = redact_text(named + text)
    return shown[len(named):] if shown.startswith(named) else redact_text(text)


# The JSON formatter's own fields. An `extra` of one of these names would replace it (a line
# claiming another level, logger or time, or losing its traceback): it is written as `extra_<key>`
# instead, whether or not the line has that field (`exc` only comes with a traceback), so a query
# finds it under one name. (`msg` never comes through `extra`: logging refuses LogRecord's own names.)
_OWN_FIELDS = frozenset({"ts", "level", "logger", "msg", "exc"})


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": redact_text(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_") and key != "color_message":
                out[f"extra_{key}" if key in _OWN_FIELDS else key] = _field(key, value)
        if record.exc_info:
            out["exc"] = redact_text(self.formatException(record.exc_info))
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = f"{self.formatTime(record, '%H:%M:%S')} {record.levelname:<7} {redact_text(record.getMessage())}"
        context = [f"{key}={_field(key, vars(record)[key])}" for key in CONTEXT_FIELDS if key in vars(record)]
        if context:
            line += "  [" + " ".join(context) + "]"
        if record.exc_info:
            line += "\n" + redact_text(self.formatException(record.exc_info))
        return line


def configure(fmt: str = "auto", level: str = "INFO") -> None:
    """Route every logger to stderr in the chosen format (`auto`: text on a terminal, else JSON)."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request with its URL at INFO; our own request log says more and less.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    for noisy in ("librdkafka", "consumer.ingest.kafka"):
        logger = logging.getLogger(noisy)
        logger.filters[:] = [RepeatFilter()]
    # An exception nobody caught (a bug out of `run`'s poll loop, a short-lived thread's) is logged
    # like any other line, redacted: Python's own hooks print it to stderr as it is, and its text
    # may quote a record or a URL (found by review: `KeyError('+905321234567')` in clear). Only
    # Python's own printers are replaced: a hook someone else put in place is still called after.
    global _other_hook, _other_thread_hook
    if sys.excepthook is not _log_uncaught:
        _other_hook = None if sys.excepthook is sys.__excepthook__ else sys.excepthook
        sys.excepthook = _log_uncaught
    if threading.excepthook is not _log_uncaught_in_thread:
        _other_thread_hook = None if threading.excepthook is threading.__excepthook__ else threading.excepthook
        threading.excepthook = _log_uncaught_in_thread


_other_hook: Any = None
_other_thread_hook: Any = None


def _log_uncaught(kind: type[BaseException], exc: BaseException, traceback: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):  # Ctrl-C: Python's own short word, nothing from outside
        sys.__excepthook__(kind, exc, traceback)
        return
    logging.getLogger("consumer").critical("uncaught %s; the process ends", kind.__name__,
                                           exc_info=(kind, exc, traceback), extra={"reason": "uncaught"})
    if _other_hook is not None:
        _other_hook(kind, exc, traceback)


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is not SystemExit:  # as Python's own hook: a thread's sys.exit() is said by nobody
        name = args.thread.name if args.thread is not None else "?"
        exc_info = (args.exc_type, args.exc_value, args.exc_traceback) if args.exc_value is not None else None
        logging.getLogger("consumer").error("thread %s ended by an uncaught %s", name, args.exc_type.__name__,
                                            exc_info=exc_info, extra={"reason": "thread_ended"})
    if _other_thread_hook is not None:
        _other_thread_hook(args)


class LogBudget:
    """At most `per_window` lines per key and window; the rest are counted and summarised.

    A producer that starts sending garbage must not turn into thousands of identical log lines
    a second: the dead-letter topic and the metrics carry every record, the log shows examples.
    """

    def __init__(self, per_window: int = 20, window_s: float = 60.0) -> None:
        self.per_window = per_window
        self.window_s = window_s
        self._window_start = time.monotonic()
        self._spent: dict[str, int] = {}

    def allow(self, key: str) -> bool:
        spent = self._spent.get(key, 0) + 1
        self._spent[key] = spent
        return spent <= self.per_window

    def roll(self, logger: logging.Logger) -> None:
        """Start a new window if this one is over, logging what was held back in it."""
        now = time.monotonic()
        if now - self._window_start < self.window_s:
            return
        # The new window starts before the summary is written: a RepeatFilter rolls its budget from
        # the very logger the summary goes to, and would otherwise roll this window again, without end.
        spent_in_window, self._spent = self._spent, {}
        self._window_start = now
        for key, spent in sorted(spent_in_window.items()):
            if spent > self.per_window:
                logger.warning("%d more like that (%s) in the last %.0fs, not logged one by one",
                               spent - self.per_window, key, self.window_s, extra={"reason": key})


class RepeatFilter(logging.Filter):
    """Lets the same kind of message through at most `per_window` times a window.

    librdkafka reports a broker it cannot reach on every reconnect attempt, several times a
    second per connection; one line every few seconds says the same thing.
    """

    def __init__(self, per_window: int = 3, window_s: float = 30.0) -> None:
        super().__init__()
        self.budget = LogBudget(per_window, window_s)

    def filter(self, record: logging.LogRecord) -> bool:
        self.budget.roll(logging.getLogger(record.name))
        return self.budget.allow(_kind(record.getMessage()))


def _kind(message: str) -> str:
    """Messages that differ only in numbers (ids, ports, timings) are the same kind."""
    return "".join(ch for ch in message[:100] if not ch.isdigit())

"""Phone normalisation with `phonenumbers`: one canonical form per number, invalid ones refused.

A number is the same recipient however it was typed (`0532 123 45 67`, `+90 532 1234567`), and
Pisano keys its request maps by the number, so every phone goes through `normalise` first.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any, Literal

import phonenumbers

from consumer.errors import ConfigError, InvalidEventError

PhoneFormat = Literal["e164", "e164_digits", "national", "national_significant"]
ForeignPolicy = Literal["e164", "reject"]
PHONE_FORMATS: tuple[PhoneFormat, ...] = ("e164", "e164_digits", "national", "national_significant")
FOREIGN_POLICIES: tuple[ForeignPolicy, ...] = ("e164", "reject")
_NATIONAL_FORMATS = ("national", "national_significant")
MAX_REMEMBERED_PHONES = 65_536
_MAX_PHONE_CHARS = 64  # longer input is not a phone; refuse before the parser spends time on it
# Every string a format above can produce, and nothing with a separator or a stray sign in it; the
# pipeline's recipient check (consumer/ingest/intake.py) accepts exactly this. E.164 is `+` and 3 to
# 15 digits (a calling code and a national number of at least 2 digits, phonenumbers' bound: Iran's
# valid +989601 has 6); e164_digits, national and national_significant are digits only, 4 to 17 (a
# national significant number is at most 17, Italy's keeps its leading 0, and a national form with
# its prefix, the leading 0 or 8, stays within 17), checked over every region's example numbers in
# tests/unit/ingest/test_phone_formats.py.
CANONICAL_PHONE = re.compile(r"^(\+[1-9][0-9]{2,14}|[0-9]{4,17})\Z")


def remembered(memory: dict[str, str], phone: str, make: Callable[[str], str]) -> str:
    """`make(phone)`, kept in `memory` for the next ask: up to MAX_REMEMBERED_PHONES, dropped whole
    when full (for a stream of new customers an LRU's bookkeeping on every miss cost more than the
    work it saves). What `make` raises is raised, and nothing is kept."""
    found = memory.get(phone)
    if found is None:
        found = make(phone)
        if len(memory) >= MAX_REMEMBERED_PHONES:
            memory.clear()
        memory[phone] = found
    return found


def is_canonical_phone(phone: str) -> bool:
    """`CANONICAL_PHONE` matches `phone`, decided with str methods (ASCII `isdigit` is exactly
    0-9): the intake guard asks it for every event, and a regex call costs several times more
    (tests/unit/ingest/test_phone_formats.py holds the two to the same verdicts)."""
    if not phone.isascii():
        return False
    if phone[:1] == "+":
        return 4 <= len(phone) <= 16 and phone[1] != "0" and phone[1:].isdigit()
    return 4 <= len(phone) <= 17 and phone.isdigit()
_COUNTRY_CODES = phonenumbers.COUNTRY_CODE_TO_REGION_CODE
# A mobile number as people write it: an optional leading +, then digits (any script: phonenumbers
# folds them to ASCII) and separators. Letters are refused before the parser sees them: it reads
# them as a vanity number (`+90 541 ABC 45 67` becomes +905412224567, a number nobody gave), and
# it also accepts `tel:` URIs and extensions, which are not a customer's mobile number either.
_DIGITS_AND_SEPARATORS = re.compile(r"^\+?[\d\s().\-/]+$")


class PhoneNormaliser:
    """`normalise(raw)` writes a valid number in `output`:

    - `e164` `+905321234567` (the default), `e164_digits` `905321234567` (Pisano strips the `+`
      before its SMS provider anyway), `national` `05321234567`, `national_significant`
      `5321234567` (the form in Pisano's own client samples).
    - A national form only means something inside `region`'s numbering plan: written without its
      country code, `+447911123456` would become `07911123456`, which in Turkey dials someone else.
      So a number whose calling code is not the region's is written in E.164 (`foreign="e164"`) or
      refused as an invalid event (`foreign="reject"`), never stripped of its country code. Regions
      sharing a calling code (US and CA, GB and JE) share one numbering plan, so theirs stay national.
    """

    def __init__(self, region: str | None, output: PhoneFormat, foreign: ForeignPolicy = "e164") -> None:
        if region is not None and region not in phonenumbers.SUPPORTED_REGIONS:
            raise ConfigError(
                f"phone_region={region!r}: expected an ISO 3166 region code such as TR, DE or US"
            )
        if output not in PHONE_FORMATS:
            raise ConfigError(f"phone_format={output!r}: expected one of {', '.join(PHONE_FORMATS)}")
        if foreign not in FOREIGN_POLICIES:
            raise ConfigError(f"phone_foreign={foreign!r}: expected one of {', '.join(FOREIGN_POLICIES)}")
        if output in _NATIONAL_FORMATS and region is None:
            # Without a region every number is foreign to it: the national form would drop every
            # country code, so there is no safe meaning for it.
            raise ConfigError(f"phone_format={output}: set phone_region (e.g. TR) too; a national form "
                              "is only unambiguous inside one region's numbering plan")
        self.region = region
        self.output = output
        self.foreign = foreign
        self._region_code = phonenumbers.country_code_for_region(region) if region else 0
        self._known: dict[str, str] = {}  # raw -> normalised, at most MAX_REMEMBERED_PHONES

    def normalise(self, raw: str) -> str:
        """`raw` written in `output`, or InvalidEventError. Repeat customers are common: the
        numbers seen last skip the parser (`remembered`)."""
        return remembered(self._known, raw, self._normalise)

    def _normalise(self, raw: str) -> str:
        if self.output in ("e164", "e164_digits") and is_valid_e164(raw):
            return raw if self.output == "e164" else raw[1:]
        if len(raw) > _MAX_PHONE_CHARS:
            raise InvalidEventError("phone is too long to be a phone number")
        if not _DIGITS_AND_SEPARATORS.match(raw):
            raise InvalidEventError("phone holds characters other than digits and separators "
                                    "(space . - / parentheses, one leading +); fix the producer's phone field")
        try:
            number = phonenumbers.parse(raw, self.region)
        except phonenumbers.NumberParseException as exc:
            raise InvalidEventError(f"phone is not a phone number ({exc._msg})") from None
        if not phonenumbers.is_valid_number(number):
            raise InvalidEventError("phone is not a valid number for its region")
        e164 = str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))
        if self.output == "e164":
            return e164
        if self.output == "e164_digits":
            return e164[1:]
        if number.country_code != self._region_code:
            if self.foreign == "reject":
                raise InvalidEventError(f"phone has a country code outside phone_region {self.region}, "
                                        "and phone_foreign is reject; set phone_foreign: e164 to send it "
                                        "in E.164")
            return e164
        if self.output == "national_significant":
            return str(phonenumbers.national_significant_number(number))
        national = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
        # Pisano takes the number as one token; drop the spaces and dashes of the display form.
        return "".join(ch for ch in str(national) if ch.isdigit())


def is_valid_e164(raw: str) -> bool:
    """`raw` is a valid number written in E.164 (`+`, a digit other than 0, 6 to 14 more digits;
    checked with str methods: a regex call costs more), by `_valid_canonical_e164`'s fast rule."""
    return (raw[:1] == "+" and 8 <= len(raw) <= 16 and raw[1] != "0" and raw.isascii() and raw[1:].isdigit()
            and _valid_canonical_e164(raw))


def _valid_canonical_e164(raw: str) -> bool:
    """Fast path for input already in E.164: validate the digits directly instead of parsing.

    Most events carry canonical numbers, and `phonenumbers.parse` plus `is_valid_number` cost
    more than everything else done per event. Only a *valid* verdict is taken from here; anything
    else (a national part with leading zeros, a national prefix to strip, a calling code several
    regions share) goes through the full parser, which has the final word.
    """
    digits = raw[1:]
    found = _calling_code(digits[:3])
    if found is None:
        return False
    length, country_code, validate = found
    national = digits[length:]
    if not national or national[0] == "0":
        return False
    if validate is not None:
        return validate(national)
    number = phonenumbers.PhoneNumber(country_code=country_code, national_number=int(national))
    return bool(phonenumbers.is_valid_number(number))


@lru_cache(maxsize=1024)  # keyed by the first three digits: at most 900 of them
def _calling_code(head: str) -> tuple[int, int, Callable[[str], bool] | None] | None:
    """(its length, the calling code, its validator) of a number starting with `head`: calling
    codes are prefix-free, so the first one of 1, 2 or 3 digits is the number's."""
    for length in (1, 2, 3):
        country_code = int(head[:length])
        if country_code in _COUNTRY_CODES:
            return length, country_code, _validator(country_code)
    return None


# Number types in the order phonenumbers tries them; a number of none of them is not valid.
_TYPES = ("premium_rate", "toll_free", "shared_cost", "voip", "personal_number", "pager", "uan", "voicemail",
          "fixed_line", "mobile")


# A calling code's validity rule as pattern texts: (the general description, its lengths, the
# alternation of the number types allowing each length, that of the types listing no length).
Rule = tuple[str, tuple[int, ...], dict[int, str], "str | None"]


@lru_cache(maxsize=512)
def validity_rule(country_code: int) -> Rule | None:
    """phonenumbers' own validity rule for a calling code of one region, as pattern texts: the
    national number matches the general description (and one of its lengths, if it lists any)
    and at least one number type (length and pattern, as `phonenumberutil._number_type_helper`
    does); None for a calling code several regions share, or one without metadata. `_validator`
    compiles it for Python, the native core (consumer/ingest/fused.py) for its own engine."""
    regions = _COUNTRY_CODES.get(country_code, ())
    if len(regions) != 1:
        return None
    metadata = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(country_code, regions[0])
    if metadata is None:
        return None
    general = _described(metadata.general_desc)
    if general is None:
        return None
    types = [d for d in (_described(getattr(metadata, name, None)) for name in _TYPES) if d is not None]
    general_pattern, general_lengths = general
    by_length = _types_by_length(types)
    any_length = by_length.pop(None, None)
    return general_pattern, tuple(sorted(general_lengths)), by_length, any_length  # type: ignore[return-value]


@lru_cache(maxsize=512)
def _validator(country_code: int) -> Callable[[str], bool] | None:
    """`validity_rule` compiled: the types that allow a length are one alternation per length,
    behind a lookahead for the general description, so a number costs one regex match, not one
    per type (a mobile number, the common case, is the last type phonenumbers tries)."""
    rule = validity_rule(country_code)
    if rule is None:
        return None
    general, general_lengths, by_length, any_length = rule

    def joined(types: str) -> re.Pattern[str]:
        return re.compile(f"(?=(?:{general})\\Z)(?:{types})")

    lengths = frozenset(general_lengths)
    compiled = {length: joined(types) for length, types in by_length.items()}
    other_lengths = joined(any_length) if any_length is not None else None

    def valid(national: str) -> bool:
        if lengths and len(national) not in lengths:
            return False
        pattern = compiled.get(len(national)) or other_lengths
        return pattern is not None and pattern.fullmatch(national) is not None

    return valid


def _described(desc: Any) -> tuple[str, frozenset[int]] | None:
    if desc is None or not desc.national_number_pattern:
        return None
    return str(desc.national_number_pattern), frozenset(desc.possible_length or ())


def _types_by_length(types: list[tuple[str, frozenset[int]]]) -> dict[int | None, str]:
    """The alternation of the type patterns that allow each length; key None for a length no
    type lists (only the types without a length list allow it)."""
    lengths = {n for _, allowed in types for n in allowed}
    any_length = [pattern for pattern, allowed in types if not allowed]
    out: dict[int | None, str] = {}
    for length in (*lengths, None):
        patterns = [pattern for pattern, allowed in types if length in allowed] + any_length
        if patterns:
            out[length] = "|".join(f"(?:{p})" for p in patterns)
    return out

"""Phone formats (issue 11, finding 8): e164, e164_digits, national, national_significant; a number
outside the mapping's region is never written without its country code."""

import random
from typing import Any

import phonenumbers
import pytest

from consumer.errors import ConfigError, InvalidEventError
from consumer.ingest import phones
from consumer.ingest.intake import check_recipient
from consumer.ingest.mapping import DeclarativeMapper, Recipient
from consumer.ingest.phones import CANONICAL_PHONE, PHONE_FORMATS, PhoneNormaliser, is_canonical_phone

CAMPAIGN = "ae51458c-9e82-417f-8f1d-e074891ea5c1"


@pytest.mark.parametrize(("output", "expected"), [
    ("e164", "+905321234567"),
    ("e164_digits", "905321234567"),
    ("national", "05321234567"),
    ("national_significant", "5321234567"),  # the form of Pisano's own client samples
])
@pytest.mark.parametrize("raw", ["+905321234567", "+90 532 123 45 67", "0532 123 45 67", "(0532) 123-4567"])
def test_each_format_of_a_number_in_the_region(raw: str, output: Any, expected: str) -> None:
    assert PhoneNormaliser("TR", output).normalise(raw) == expected


@pytest.mark.parametrize("output", ["national", "national_significant"])
@pytest.mark.parametrize("raw", ["+447911123456", "+44 7911 123456", "00447911123456"])
def test_a_foreign_number_keeps_its_country_code(raw: str, output: Any) -> None:
    # With region TR, `07911123456` (or `7911123456`) would dial a number in Turkey: someone else.
    assert PhoneNormaliser("TR", output).normalise(raw) == "+447911123456"


@pytest.mark.parametrize("output", ["national", "national_significant"])
def test_a_foreign_number_is_an_invalid_event_when_the_mapping_rejects_them(output: Any) -> None:
    normaliser = PhoneNormaliser("TR", output, foreign="reject")
    with pytest.raises(InvalidEventError, match="outside phone_region TR") as raised:
        normaliser.normalise("+447911123456")
    assert "7911" not in str(raised.value)
    assert normaliser.normalise("+905321234567") in ("05321234567", "5321234567")


def test_international_formats_keep_every_country_code() -> None:
    assert PhoneNormaliser("TR", "e164").normalise("+447911123456") == "+447911123456"
    assert PhoneNormaliser("TR", "e164_digits").normalise("+44 7911 123456") == "447911123456"
    assert PhoneNormaliser(None, "e164_digits").normalise("+905321234567") == "905321234567"


def test_regions_sharing_a_calling_code_share_a_numbering_plan() -> None:
    # +1 416 is Canada; from the US it is dialled as a national number, so it stays national.
    assert PhoneNormaliser("US", "national_significant").normalise("+1 416 555 0123") == "4165550123"


def test_configuration_errors_say_what_to_set() -> None:
    with pytest.raises(ConfigError, match="set phone_region"):
        PhoneNormaliser(None, "national")
    with pytest.raises(ConfigError, match="phone_foreign='drop': expected one of e164, reject"):
        PhoneNormaliser("TR", "national", foreign="drop")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="expected one of e164, e164_digits, national, national_significant"):
        PhoneNormaliser("TR", "intl")  # type: ignore[arg-type]


def test_the_mapping_file_chooses_format_and_foreign_policy() -> None:
    spec = {"event_id": "id", "phone": "phone", "campaign_id": "campaign", "phone_region": "TR",
            "phone_format": "national_significant", "phone_foreign": "reject"}
    mapper = DeclarativeMapper(spec)
    assert mapper.map({"id": "e1", "phone": "0532 123 45 67", "campaign": CAMPAIGN}).phone == "5321234567"
    with pytest.raises(InvalidEventError):
        mapper.map({"id": "e2", "phone": "+447911123456", "campaign": CAMPAIGN})
    spec["phone_foreign"] = "e164"
    assert DeclarativeMapper(spec).map({"id": "e2", "phone": "+447911123456",
                                        "campaign": CAMPAIGN}).phone == "+447911123456"


def _examples() -> list[phonenumbers.PhoneNumber]:
    kinds = [phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE,
             phonenumbers.PhoneNumberType.TOLL_FREE, phonenumbers.PhoneNumberType.VOIP,
             phonenumbers.PhoneNumberType.PAGER, phonenumbers.PhoneNumberType.UAN]
    return [n for region in sorted(phonenumbers.SUPPORTED_REGIONS) for kind in kinds
            for n in [phonenumbers.example_number_for_type(region, kind)] if n is not None]


def test_the_pipeline_boundary_accepts_every_format_of_every_region() -> None:
    """What a format produces passes `check_recipient`, for every region's example numbers, each
    normalised in its own region (national forms) and from another region (written in E.164)."""
    checked = 0
    for number in _examples():
        region = phonenumbers.region_code_for_number(number)
        raw = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
        for home in (region, "TR" if number.country_code != 90 else "DE"):
            for output in PHONE_FORMATS:
                phone = PhoneNormaliser(home, output).normalise(raw)
                check_recipient(Recipient(event_id="e", campaign_id=CAMPAIGN, phone=phone))
                if number.country_code != phonenumbers.country_code_for_region(home) \
                        and output.startswith("national"):
                    assert phone.startswith(f"+{number.country_code}")
                checked += 1
    assert checked > 6000


@pytest.mark.parametrize("phone", ["+90 5321234567", "0532-123-4567", "+0532123456", "++905321234567",
                                   "90532123456a", "123", "5" * 18, "+9053212345678901", " 5321234567"])
def test_the_pipeline_boundary_refuses_what_no_format_produces(phone: str) -> None:
    with pytest.raises(InvalidEventError, match="not canonical"):
        check_recipient(Recipient(event_id="e", campaign_id=CAMPAIGN, phone=phone))


def test_the_canonical_check_by_str_methods_gives_the_regex_s_verdicts() -> None:
    """is_canonical_phone (the intake guard's check, per event) against CANONICAL_PHONE itself,
    over every string of up to 18 characters drawn from digits, signs, separators, a newline and
    non-ASCII digits, at random, plus the lengths at each bound."""
    rng = random.Random(11)
    alphabet = "0123456789" * 4 + "+ -\n\t.\u0663\u0967\uff10a"  # Arabic-Indic, Devanagari, fullwidth digits
    samples = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 19))) for _ in range(50_000)]
    samples += [prefix + "1" * n for prefix in ("", "+", "+0", "0", "+1") for n in range(0, 20)]
    samples += [s + "\n" for s in samples[-100:]]
    for phone in samples:
        assert is_canonical_phone(phone) == (CANONICAL_PHONE.match(phone) is not None), repr(phone)


def test_remembered_numbers_are_bounded_and_a_refused_one_is_refused_each_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(phones, "MAX_REMEMBERED_PHONES", 100)
    normaliser = PhoneNormaliser("TR", "e164")
    for n in range(250):
        assert normaliser.normalise(f"0532 {n:07d}") == f"+90532{n:07d}"
        assert len(normaliser._known) <= 100
    assert normaliser.normalise("0532 0000249") == "+905320000249"  # remembered, or parsed again
    for _ in range(2):
        with pytest.raises(InvalidEventError):
            normaliser.normalise("0532 12")

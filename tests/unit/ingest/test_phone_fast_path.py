"""The E.164 fast path (consumer/ingest/phones.py) agrees with phonenumbers on every verdict it
gives: a number it calls valid, phonenumbers calls valid, and the other way round."""

from __future__ import annotations

import random

import phonenumbers
import pytest

from consumer.ingest.phones import _COUNTRY_CODES, _TYPES, _validator

_TYPE_ENUMS = [getattr(phonenumbers.PhoneNumberType, name.upper()) for name in _TYPES]


def _samples(country_code: int, region: str, rng: random.Random) -> set[str]:
    """Example numbers of every type, and near misses of each: one digit changed, one more, one
    fewer, and random numbers of the example's length."""
    national: set[str] = set()
    for kind in _TYPE_ENUMS:
        example = phonenumbers.example_number_for_type(region, kind)
        if example is None:
            continue
        digits = str(example.national_number)
        national.add(digits)
        national.add(digits[:-1] + str((int(digits[-1]) + 1) % 10))
        national.add(digits + "7")
        national.add(digits[:-1])
        for _ in range(5):
            national.add(str(rng.randint(1, 9)) + "".join(str(rng.randint(0, 9)) for _ in range(len(digits) - 1)))
    return {n for n in national if n and n[0] != "0"}


@pytest.mark.parametrize("country_code", sorted(cc for cc, regions in _COUNTRY_CODES.items() if len(regions) == 1))
def test_the_fast_validator_agrees_with_phonenumbers(country_code: int) -> None:
    validate = _validator(country_code)
    if validate is None:
        pytest.skip("no metadata: the fast path leaves this calling code to the parser")
    rng = random.Random(country_code)
    for national in _samples(country_code, _COUNTRY_CODES[country_code][0], rng):
        number = phonenumbers.PhoneNumber(country_code=country_code, national_number=int(national))
        assert validate(national) == phonenumbers.is_valid_number(number), f"+{country_code} {national}"

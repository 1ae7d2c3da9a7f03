"""Adversarial review of the contact policy (opt-out list, cooldown): defects a bank would see as an
opted-out customer surveyed, or a customer surveyed twice inside the cooldown. Each test failed on
the code before its fix."""

from __future__ import annotations

import time
from typing import Any

import pytest

from consumer.app import build_admission
from consumer.config.resources import default_mapping_file
from consumer.config.settings import Settings
from consumer.ingest.mapping import DeclarativeMapper, Mapper, Recipient
from consumer.ingest.records import InboundRecord
from consumer.state import suppression as suppression_module
from consumer.state.redis import Keys
from consumer.state.suppression import MemoryOptOutList, OptOutHasher
from tests.support.fakes import event, rig

KEY = "k" * 32


class PlugInMapper(Mapper):
    """A plug-in mapper (not the declarative one): the app reads its phones with PHONE_REGION."""

    def map(self, record: Any) -> Recipient:
        raise NotImplementedError


class _State:
    client = None
    keys = Keys("pisano-sms")


def _stamped(i: int, phone: str) -> Any:
    e = event(i)
    e.recipient.phone = phone
    e.message = InboundRecord("t", 0, i, None, b"", [], (1, int(time.time() * 1000)))
    return e


def suppressing_rig(store: MemoryOptOutList) -> Any:
    """A sender rig whose admission checks `store` (a plug-in mapper's phones read in TR)."""
    r = rig()
    settings = Settings(kafka_topics=["t"], pisano_url="https://pisano.invalid", suppression_key=KEY,
                        phone_region="TR")
    admission = build_admission(settings, _State(), PlugInMapper())  # type: ignore[arg-type]
    assert admission.suppression is not None
    admission.suppression.store = store
    r.sender.admission = admission
    return r


def test_a_plug_in_mappers_national_digits_without_phone_region_are_not_read_as_e164() -> None:
    """A plug-in mapper without PHONE_REGION that returns a national number (`05321200001`, digits
    only: the recipient check accepts it) had it looked up as `+05321200001`, a number that does not
    exist: the customer who opted out as +905321200001 was surveyed. README ("The opt-out list"):
    such a phone is dead-lettered as invalid_event rather than sent unchecked."""
    settings = Settings(kafka_topics=["t"], pisano_url="https://pisano.invalid", suppression_key=KEY)
    admission = build_admission(settings, _State(), PlugInMapper())  # type: ignore[arg-type]
    assert admission.suppression is not None
    store = MemoryOptOutList([OptOutHasher(KEY.encode(), None).phone("+905321200001")])
    admission.suppression.store = store
    r = rig()
    r.sender.admission = admission
    r.process([_stamped(0, "905321200000"), _stamped(1, "05321200001")])  # E.164 digits; national digits
    assert r.kinds() == {"e0": {"delivered"}, "e1": {"dead_letter"}}
    assert r.pisano.sent_phones == ["905321200000"]


def test_an_external_id_a_plug_in_mapper_gives_as_a_number_is_looked_up() -> None:
    """The recipient check lets a plug-in mapper send `external_id` as a JSON integer (1042), and
    Pisano gets it; the opt-out lookup read only strings, so `suppress add --external-id 1042` did
    not stop that customer's survey."""
    hasher = OptOutHasher(KEY.encode(), "TR")
    store = MemoryOptOutList([hasher.external_id("1042")])
    r = suppressing_rig(store)
    events = [_stamped(0, "+905321200000"), _stamped(1, "+905321200001")]
    events[1].recipient.custom_attributes["external_id"] = 1042
    r.process(events)
    assert r.kinds() == {"e0": {"delivered"}, "e1": {"suppressed"}}


def test_a_plug_in_mappers_e164_with_the_trunk_zero_is_looked_up_as_the_number_it_is() -> None:
    """`+9005321200001` (E.164 with the national trunk 0 kept, as a hand-written plug-in mapper may
    join "+90" and "0532...") passes the recipient check (a `+` and digits) and was hashed as it is
    written: the customer who opted out as +905321200001 was looked up under another entry, and
    surveyed. It is read as the number it is (phonenumbers drops the trunk 0), as `suppress` reads it;
    a `+` form that is no valid number is dead-lettered, not sent unchecked."""
    settings = Settings(kafka_topics=["t"], pisano_url="https://pisano.invalid", suppression_key=KEY,
                        phone_region="TR")
    admission = build_admission(settings, _State(), PlugInMapper())  # type: ignore[arg-type]
    assert admission.suppression is not None
    admission.suppression.store = MemoryOptOutList([OptOutHasher(KEY.encode(), "TR").phone("0532 120 00 01")])
    r = rig()
    r.sender.admission = admission
    r.process([_stamped(0, "+905321200000"), _stamped(1, "+9005321200001"), _stamped(2, "+9012")])
    assert r.kinds() == {"e0": {"delivered"}, "e1": {"suppressed"}, "e2": {"dead_letter"}}
    assert r.pisano.sent_phones == ["+905321200000"]


def test_the_dead_letter_of_a_phone_that_cannot_be_looked_up_names_its_campaign() -> None:
    """Every other dead-letter of the send path carries `dlq.campaign.id`; this one did not, so
    `dlq stats` counted it under no campaign and a replay filtered by campaign left it behind."""
    settings = Settings(kafka_topics=["t"], pisano_url="https://pisano.invalid", suppression_key=KEY)
    admission = build_admission(settings, _State(), PlugInMapper())  # type: ignore[arg-type]
    assert admission.suppression is not None
    admission.suppression.store = MemoryOptOutList()
    r = rig()
    r.sender.admission = admission
    r.process([_stamped(0, "905321200000"), _stamped(1, "05321200001")])
    failures = [o.failure for o in r.outcomes if o.failure is not None]
    assert [(f.reason, f.campaign_id) for f in failures] == [("invalid_event", event(1).recipient.campaign_id)]


def test_the_declarative_mappers_phones_are_not_checked_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    """The declarative mapper's `+` phones were proven valid E.164 when it wrote them
    (`Phones.normalise`): the opt-out entry hashes them unchecked (1.5 µs a recipient saved). A
    plug-in mapper's pass only the recipient check (any `+` and digits): checked, as above."""
    settings = Settings(kafka_topics=["t"], pisano_url="https://pisano.invalid", suppression_key=KEY)
    declarative = build_admission(settings, _State(), DeclarativeMapper.from_file(default_mapping_file()))  # type: ignore[arg-type]
    plug_in = build_admission(settings, _State(), PlugInMapper())  # type: ignore[arg-type]
    assert declarative.suppression is not None and plug_in.suppression is not None
    checked: list[str] = []
    real = suppression_module.is_valid_e164
    monkeypatch.setattr(suppression_module, "is_valid_e164", lambda phone: checked.append(phone) or real(phone))
    assert declarative.suppression.phone_entry("+905321234567") == plug_in.suppression.phone_entry("+905321234567")
    assert checked == ["+905321234567"]  # the plug-in mapper's phone only

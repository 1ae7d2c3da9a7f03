"""The native per-record core (consumer/ingest/fused.py, native/): what it plans for, what it
leaves to Python, and that its answers are the Python path's. The byte-level and schema-level
differential fuzzing is in test_fused_differential.py."""

from __future__ import annotations

import io
import logging
import uuid
from pathlib import Path
from typing import Any

import fastavro
import pytest

from consumer.config.resources import default_mapping_file
from consumer.errors import InvalidEventError, UnroutableError
from consumer.ingest import fused
from consumer.ingest.avro import SchemalessDecoder, reader_for
from consumer.ingest.intake import decode_and_map, native_recipient
from consumer.ingest.mapping import DeclarativeMapper, Recipient
from consumer.ingest.records import InboundRecord
from consumer.ingest.samples import default_schema, transactions

CAMPAIGN = "ae51458c-9e82-417f-8f1d-e074891ea5c1"
BASE = {"event_id": "event_id", "phone": "customer.phone", "campaign_id": "campaign_id",
        "custom_attributes": {"name": "customer.name", "external_id": "customer.id"}}


def mapper(**changes: Any) -> DeclarativeMapper:
    spec = {**BASE, **changes}
    return DeclarativeMapper({k: v for k, v in spec.items() if v is not None})


def event(**changes: Any) -> bytes:
    value = {"event_id": "e-1", "occurred_at": 1_700_000_000_000, "transaction_type": "CARD_PAYMENT",
             "customer": {"id": "c-1", "phone": "+905321234567", "name": "Ayşe", "email": None},
             "campaign_id": CAMPAIGN, "attributes": {"branch": "Moda"}}
    for key, new in changes.items():
        if key in ("phone", "id", "name"):
            value["customer"][key] = new  # type: ignore[index]
        else:
            value[key] = new
    out = io.BytesIO()
    fastavro.schemaless_writer(out, default_schema(), value)
    return out.getvalue()


def record(value: bytes) -> InboundRecord:
    return InboundRecord("t", 0, 1, None, value, [], (1, 0))


def both(decoder: SchemalessDecoder, mapper: DeclarativeMapper, value: bytes) -> tuple[Any, Any]:
    """(the Python path's answer, the native path's): a Recipient, or the error's class and text."""
    def answer(**native: Any) -> Any:
        try:
            return decode_and_map(record(value), decoder, mapper, 1_000_000, **native)
        except Exception as exc:
            return type(exc), str(exc)

    return answer(), answer(fused=native_recipient(decoder, mapper))


def test_the_native_core_is_built() -> None:
    # `make install` builds it (native/); without it every other test here would pass on Python alone.
    assert fused.available(), "pisano_native is not installed: run `make install` (needs cargo)"


def test_the_default_contract_is_decoded_and_mapped_natively_as_python_does() -> None:
    m = DeclarativeMapper.from_file(default_mapping_file())
    decoder = SchemalessDecoder(default_schema(), m.fields_read(), m)
    values = [v for _, v in transactions(2000, [CAMPAIGN, CAMPAIGN.upper()])]
    natively = [decoder.recipient(v) for v in values]
    assert all(isinstance(r, Recipient) for r in natively)
    assert natively == [m.map(decoder.decode(v)) for v in values]


@pytest.mark.parametrize("changes", [
    {"phone": "05321234567"},          # national: the parser's
    {"phone": " +905321234567"},       # stripped by Python first
    {"phone": "+90 532 123 45 67"},
    {"phone": "+15551234567"},         # a calling code several regions share
    {"phone": "+900000000000"},        # not a valid number
    {"phone": None},
    {"phone": "+" + "".join(chr(0xFF10 + int(d)) for d in "905321234567")},  # full-width digits
    {"event_id": ""},
    {"event_id": "x" * 257},
    {"event_id": "x" * 256},
    {"campaign_id": None},
    {"campaign_id": CAMPAIGN.upper()},
    {"campaign_id": "{" + CAMPAIGN + "}"},
    {"campaign_id": "not-a-campaign"},
    {"name": "n" * 1025},
    {"name": "ğ" * 2000},
    {"name": None},
])
def test_an_edge_case_ends_as_the_python_path_ends_it(changes: dict[str, Any]) -> None:
    m = mapper()
    decoder = SchemalessDecoder(default_schema(), m.fields_read(), m)
    python, native = both(decoder, m, event(**changes))
    assert native == python


def test_a_record_the_native_reader_refuses_is_python_s_to_judge() -> None:
    m = mapper()
    decoder = SchemalessDecoder(default_schema(), m.fields_read(), m)
    good = event()
    for value in (good[:-1], good + b"\x00", b"\xff" * 12, b""):
        assert decoder.recipient(value) is None
        python, native = both(decoder, m, value)
        assert native == python and python[0].__name__ == "DecodeError"


def test_a_fault_of_the_native_core_falls_back_to_python() -> None:
    m = mapper()
    decoder = SchemalessDecoder(default_schema(), m.fields_read(), m)

    def broken(value: bytes) -> Recipient | None:
        raise RuntimeError("native fault")

    assert decode_and_map(record(event()), decoder, m, 1_000_000, fused=broken) == m.map(decoder.decode(event()))


@pytest.mark.parametrize(("changes", "reason"), [
    ({"phone_format": "national", "phone_region": "TR"}, "phone_format national"),
    ({"event_time": "occurred_at"}, "event_time"),
    ({"campaign_id": None, "campaign_routes": {"field": "transaction_type", "routes": {"CARD_PAYMENT": CAMPAIGN}}},
     "campaign_routes"),
    ({"phone": "$kafka.key"}, "phone is not a plain dotted path"),
    ({"phone": "customer.phone || event_id"}, "phone is not a plain dotted path"),
    ({"custom_attributes": {"when": {"path": "occurred_at", "type": "datetime"}}}, "typed datetime"),
])
def test_a_mapping_it_cannot_take_whole_stays_with_python(changes: dict[str, Any], reason: str,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    m = mapper(**changes)
    with caplog.at_level(logging.INFO, logger="consumer.ingest.fused"):
        decoder = SchemalessDecoder(default_schema(), m.fields_read(), m)
    assert decoder.recipient(event()) is None
    assert reason in caplog.text


def test_a_subclass_of_the_declarative_mapper_maps_in_python() -> None:
    class Own(DeclarativeMapper):
        pass

    m = Own(BASE)
    assert SchemalessDecoder(default_schema(), m.fields_read(), m).recipient(event()) is None


@pytest.mark.parametrize("logical", [{"type": "string", "logicalType": "uuid"},
                                     {"type": "bytes", "logicalType": "decimal", "precision": 4, "scale": 2}])
def test_a_schema_with_a_logical_type_converting_text_or_bytes_stays_with_python(logical: dict[str, Any]) -> None:
    schema = fastavro.parse_schema({"type": "record", "name": "E", "fields": [
        {"name": "event_id", "type": "string"}, {"name": "campaign_id", "type": "string"},
        {"name": "phone", "type": "string"}, {"name": "odd", "type": logical}]})
    m = mapper(phone="phone", custom_attributes=None)
    assert fused.fused_reader(schema, m, reader_for) is None


def test_a_timestamp_out_of_python_s_calendar_is_python_s_to_refuse() -> None:
    # occurred_at is read by no path, but Python converts it all the same and refuses a year past 9999.
    m = mapper()
    decoder = SchemalessDecoder(default_schema(), m.fields_read(), m)
    for millis in (253_402_300_800_000, -62_135_596_800_001, 2**62):
        out = io.BytesIO()
        value = fastavro.schemaless_reader(io.BytesIO(event()), default_schema())
        fastavro.schemaless_writer(out, fastavro.parse_schema({**_raw_default_schema(), "fields": [
            {**f, "type": "long"} if f["name"] == "occurred_at" else f for f in _raw_default_schema()["fields"]]}),
            {**value, "occurred_at": millis})
        python, native = both(decoder, m, out.getvalue())
        assert native == python and python[0].__name__ == "DecodeError"


def _raw_default_schema() -> dict[str, Any]:
    import json

    from consumer.config.resources import default_schema_file
    raw: dict[str, Any] = json.loads(Path(default_schema_file()).read_text())
    return raw


def test_routed_mapper_leaves_a_campaign_no_destination_takes_to_its_refusal() -> None:
    from consumer.app import RoutedMapper

    m = mapper()
    decoder = SchemalessDecoder(default_schema(), m.fields_read(), m)
    routed = RoutedMapper(m, lambda campaign: None)
    with pytest.raises(UnroutableError, match="belongs to no configured destination"):
        decode_and_map(record(event()), decoder, routed, 1_000_000, fused=native_recipient(decoder, routed))
    taken = RoutedMapper(m, lambda campaign: "default")
    found = native_recipient(decoder, taken)
    assert found is not None and found(event()) == m.map(decoder.decode(event()))


def test_native_intake_off_plans_nothing() -> None:
    from consumer.app import native_mapper
    from consumer.config.settings import Settings

    m = mapper()
    assert native_mapper(Settings(native_intake="off"), m) is None
    assert native_mapper(Settings(), m) is m


def test_a_decoder_built_without_the_mapper_is_never_asked() -> None:
    m = mapper()
    assert native_recipient(SchemalessDecoder(default_schema(), m.fields_read()), m) is None
    other = mapper()
    assert native_recipient(SchemalessDecoder(default_schema(), m.fields_read(), m), other) is None


def test_the_phone_rule_given_to_the_native_core_is_python_s() -> None:
    # Every single-region calling code's example mobile number: the native verdict is Python's.
    import phonenumbers

    from consumer.ingest.phones import _valid_canonical_e164
    m = mapper()
    decoder = SchemalessDecoder(default_schema(), m.fields_read(), m)
    taken = 0
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
        if example is None:
            continue
        e164 = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
        for phone in (e164, e164[:-1], e164 + "1", e164[:-1] + str((int(e164[-1]) + 5) % 10)):
            python, native = both(decoder, m, event(phone=phone))
            assert native == python, phone
            if decoder.recipient(event(phone=phone)) is not None:
                taken += 1
                assert _valid_canonical_e164(phone)
    assert taken > 300


def test_invalid_event_errors_keep_python_s_text() -> None:
    m = mapper()
    decoder = SchemalessDecoder(default_schema(), m.fields_read(), m)
    python, native = both(decoder, m, event(phone="+90abc"))
    assert native == python == (InvalidEventError, python[1])


def test_uuid_campaigns_are_canonical_whatever_the_case() -> None:
    m = mapper()
    decoder = SchemalessDecoder(default_schema(), m.fields_read(), m)
    upper = str(uuid.uuid4()).upper()
    found = decoder.recipient(event(campaign_id=upper))
    assert found is not None and found.campaign_id == upper.lower()


def test_the_records_mapped_natively_are_counted_for_the_metric() -> None:
    m = mapper()
    decoder = SchemalessDecoder(default_schema(), m.fields_read(), m)
    before = fused.records_mapped()
    decoder.recipient(event())
    decoder.recipient(event(phone="05321234567"))  # Python's: not counted
    decoder.recipient(event()[:-1])
    assert fused.records_mapped() == before + 1

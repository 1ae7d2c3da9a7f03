from pathlib import Path
from typing import Any

import pytest

from consumer.config.resources import default_mapping_file
from consumer.config.settings import Settings
from consumer.errors import ConfigError, InvalidEventError, UnroutableError
from consumer.ingest.mapping import _VALID_CAMPAIGNS, DeclarativeMapper, fields_read_by, known_campaign, load_mapper

CAMPAIGN = "ae51458c-9e82-417f-8f1d-e074891ea5c1"
OTHER = "9a1e0000-0000-4000-8000-000000000001"


def event(**overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {"event_id": "e1", "customer": {"id": "c1", "phone": "+90 532 123 45 67",
                                                              "name": "Ayşe", "email": None},
                              "campaign_id": CAMPAIGN, "transaction_type": "CARD_PAYMENT"}
    record.update(overrides)
    return record


def test_default_mapping() -> None:
    recipient = DeclarativeMapper.from_file(default_mapping_file()).map(event())
    assert recipient.event_id == "e1"
    assert recipient.phone == "+905321234567"
    assert recipient.campaign_id == CAMPAIGN
    assert recipient.custom_attributes == {"name": "Ayşe", "external_id": "c1"}  # None values omitted
    assert recipient.built_in_responses == {}


FOREIGN = {
    "event_id": "header.messageId",
    "phone": "payload.party.contacts[?type=='MOBILE'] | [0].value",
    "phone_region": "TR",
    "phone_format": "national",
    "campaign_routes": {"field": "payload.kind", "routes": {"LOAN": CAMPAIGN, "CARD": OTHER}},
    "custom_attributes": {"name": "payload.party.fullName", "amount": "payload.amount"},
    "built_in_responses": {"customerDetailedInformation1": "payload.branch.code"},
}


def foreign(kind: str = "LOAN", phone: str = "0532 123 45 67") -> dict[str, Any]:
    return {"header": {"messageId": "m-1"},
            "payload": {"kind": kind, "amount": 12.5, "branch": {"code": "IST-3"},
                        "party": {"fullName": "Ali", "contacts": [{"type": "EMAIL", "value": "a@b"},
                                                                  {"type": "MOBILE", "value": phone}]}}}


def test_foreign_schema_with_jmespath_routes_and_national_format() -> None:
    mapper = DeclarativeMapper(FOREIGN)
    recipient = mapper.map(foreign())
    assert (recipient.event_id, recipient.phone, recipient.campaign_id) == ("m-1", "05321234567", CAMPAIGN)
    assert recipient.custom_attributes == {"name": "Ali", "amount": "12.5"}
    assert recipient.built_in_responses == {"customerDetailedInformation1": "IST-3"}
    assert mapper.map(foreign("CARD")).campaign_id == OTHER


def test_no_route_is_unroutable() -> None:
    with pytest.raises(UnroutableError, match="no campaign route for 'DEPOSIT'"):
        DeclarativeMapper(FOREIGN).map(foreign("DEPOSIT"))


def test_an_unroutable_error_quotes_at_most_64_characters_of_the_route_key() -> None:
    """Found in review: the key (up to MAX_ATTRIBUTE_CHARS of a record field) was quoted whole, and
    the message is redacted on the poll thread (dead-letter header, log line)."""
    with pytest.raises(UnroutableError) as raised:
        DeclarativeMapper(FOREIGN).map(foreign("key" * 341))
    assert f"no campaign route for {'key' * 341!r}"[:80] in str(raised.value)
    assert "key" * 22 not in str(raised.value) and len(str(raised.value)) < 130


def test_route_default() -> None:
    spec = {**FOREIGN, "campaign_routes": {**FOREIGN["campaign_routes"], "default": OTHER}}
    assert DeclarativeMapper(spec).map(foreign("DEPOSIT")).campaign_id == OTHER


@pytest.mark.parametrize(("record", "error", "text"), [
    (event(event_id=None), InvalidEventError, "no event id"),
    (event(customer={"phone": None}), InvalidEventError, "no phone"),
    (event(customer={"phone": "12"}), InvalidEventError, "phone"),
    (event(customer={"phone": "+90 123"}), InvalidEventError, "not a valid number"),
    (event(customer={"phone": "x" * 500}), InvalidEventError, "too long"),
    (event(campaign_id=None), UnroutableError, "names no campaign"),
    (event(campaign_id="not-a-uuid"), UnroutableError, "not a campaign API id"),
    (event(event_id="e" * 300), InvalidEventError, "longer than"),
])
def test_bad_events(record: dict[str, Any], error: type[Exception], text: str) -> None:
    with pytest.raises(error, match=text):
        DeclarativeMapper.from_file(default_mapping_file()).map(record)


def test_error_messages_never_contain_the_phone() -> None:
    with pytest.raises(InvalidEventError) as raised:
        DeclarativeMapper.from_file(default_mapping_file()).map(event(customer={"phone": "+90 532 000 11"}))
    assert "532" not in str(raised.value)


@pytest.mark.parametrize(("spec", "text"), [
    ({"phone": "a"}, "event_id"),
    ({"event_id": "a", "phone": "b"}, "campaign_id"),
    ({"event_id": "a", "phone": "b", "campaign_id": "c", "extra": 1}, "unknown key"),
    ({"event_id": "a[", "phone": "b", "campaign_id": "c"}, "not valid JMESPath"),
    ({"event_id": "a", "phone": "b", "campaign_id": "c", "phone_region": "XX"}, "ISO 3166"),
    ({"event_id": "a", "phone": "b", "campaign_id": "c", "phone_format": "intl"}, "e164, e164_digits, national"),
    ({"event_id": "a", "phone": "b", "campaign_routes": {"field": "t", "routes": {"A": "nope"}}}, "not a campaign"),
])
def test_bad_mapping_files(spec: dict[str, Any], text: str) -> None:
    with pytest.raises(ConfigError, match=text):
        DeclarativeMapper(spec)


def test_mapping_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        DeclarativeMapper.from_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("event_id: [")
    with pytest.raises(ConfigError, match="not valid YAML"):
        DeclarativeMapper.from_file(bad)


def test_unknown_mapper_entry_point() -> None:
    with pytest.raises(ConfigError, match="MAPPER='nope': no such mapper; installed: declarative"):
        load_mapper(Settings(mapper="nope"))


def test_entry_point_mapper_is_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib.metadata import EntryPoint

    import consumer.ingest.mapping as mapping

    ep = EntryPoint("custom", "tests.unit.ingest.custom_mapper:UpperMapper", mapping.ENTRY_POINT_GROUP)
    monkeypatch.setattr(mapping, "entry_points", lambda group, name=None: [ep] if name in (None, "custom") else [])
    mapper = load_mapper(Settings(mapper="custom"))
    assert mapper.map({"id": "x", "tel": "+905321234567"}).event_id == "X"


def test_a_plug_in_gets_its_small_context_not_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib.metadata import EntryPoint

    import consumer.ingest.mapping as mapping

    ep = EntryPoint("ctx", "tests.unit.ingest.context_mapper:PrefixMapper", mapping.ENTRY_POINT_GROUP)
    monkeypatch.setattr(mapping, "entry_points", lambda group, name=None: [ep] if name in (None, "ctx") else [])
    mapper = load_mapper(Settings(mapper="ctx", mapper_options={"prefix": "bank-"}, phone_region="TR"))
    assert mapper.map({"id": "x", "tel": "+905321234567"}).event_id == "bank-x"
    assert mapper.region == "TR"  # type: ignore[attr-defined]


def test_e164_fast_path_agrees_with_the_full_parser() -> None:
    import random

    import phonenumbers

    from consumer.ingest.phones import PhoneNormaliser

    rng = random.Random(7)
    fast = PhoneNormaliser(None, "e164")
    kinds = (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE,
             phonenumbers.PhoneNumberType.TOLL_FREE)
    examples = [phonenumbers.format_number(n, phonenumbers.PhoneNumberFormat.E164)
                for region in sorted(phonenumbers.SUPPORTED_REGIONS) for kind in kinds
                for n in [phonenumbers.example_number_for_type(region, kind)] if n]
    candidates = []
    for example in examples:
        for _ in range(25):
            digits = list(example[1:])
            digits[rng.randrange(1, len(digits))] = str(rng.randrange(10))
            if rng.random() < 0.2:  # a digit too many or too few
                digits.insert(rng.randrange(2, len(digits)), str(rng.randrange(10)))
            elif rng.random() < 0.2:
                del digits[rng.randrange(2, len(digits))]
            candidates.append("+" + "".join(digits))
    agreed = 0
    for raw in candidates:
        try:
            number = phonenumbers.parse(raw, None)
            expected = (phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
                        if phonenumbers.is_valid_number(number) else None)
        except phonenumbers.NumberParseException:
            expected = None
        try:
            got = fast.normalise(raw)
        except InvalidEventError:
            got = None
        assert got == expected, raw
        agreed += 1
    assert agreed > 10_000


def test_events_of_one_campaign_share_one_campaign_id_object() -> None:
    """Each decoded record has its own copy of the campaign id; the buffered recipients hold one
    shared object instead. A str subclass (a plug-in's) is checked on its own and never remembered."""
    mapper = DeclarativeMapper.from_file(default_mapping_file())
    recipients = [mapper.map(event(campaign_id=CAMPAIGN[:8] + CAMPAIGN[8:])) for _ in range(3)]  # 3 copies
    assert len({id(recipient.campaign_id) for recipient in recipients}) == 1

    class Sly(str):
        def __eq__(self, other: object) -> bool:
            return True

        __hash__ = str.__hash__

    assert known_campaign(Sly("not-a-uuid")) is None
    fresh = "5a5a0000-0000-4000-8000-00000000beef"  # no other test uses it
    assert known_campaign(Sly(fresh)) == fresh and fresh not in _VALID_CAMPAIGNS
    with pytest.raises(UnroutableError, match="not a campaign API id"):
        mapper.map(event(campaign_id=CAMPAIGN[:-1] + "z"))


def test_the_fields_a_mapping_reads_are_its_dotted_paths() -> None:
    """The decoder leaves the other fields out of the record (consumer/ingest/avro_compiled.py)."""
    spec = {"event_id": "event_id", "phone": "customer.phone", "campaign_routes": {
                "field": "transaction_type", "routes": {"A": "ae51458c-9e82-417f-8f1d-e074891ea5c1"}},
            "custom_attributes": {"external_id": "customer.id", "source": "$kafka.topic",
                                  "amount": {"path": "payment.amount", "type": "float"}},
            "built_in_responses": {"seen": {"path": "occurred_at", "type": "datetime"}},
            "event_time": "occurred_at"}
    assert DeclarativeMapper(spec).fields_read() == {
        ("event_id",), ("customer", "phone"), ("transaction_type",), ("customer", "id"), ("payment", "amount"),
        ("occurred_at",)}


def test_a_mapping_with_a_jmespath_expression_or_a_subclass_reads_the_whole_record() -> None:
    spec = {"event_id": "event_id", "phone": "customer.phone", "campaign_id": "campaign_id",
            "custom_attributes": {"first": "customer.names[0]", "external_id": "customer.id"}}
    assert DeclarativeMapper(spec).fields_read() is None

    class ReadsMore(DeclarativeMapper):
        """Found in review: it read a field no path names and got None for it (only an override
        of `map` or `map_kafka` was taken for mapping in its own way)."""

        @staticmethod
        def _values(paths: Any, record: Any, kafka: Any) -> dict[str, str]:
            return {**DeclarativeMapper._values(paths, record, kafka), "txn": str(record.get("transaction_type"))}

    class SaysWhatItReads(ReadsMore):
        def fields_read(self) -> frozenset[tuple[str, ...]] | None:
            return None if self.mapping_paths is None else self.mapping_paths | {("transaction_type",)}

    spec["custom_attributes"] = {"external_id": "customer.id"}
    assert DeclarativeMapper(spec).fields_read() is not None
    assert ReadsMore(spec).fields_read() is None  # a subclass gets the whole record unless it says
    assert SaysWhatItReads(spec).fields_read() == {("event_id",), ("customer", "phone"), ("campaign_id",),
                                                   ("customer", "id"), ("transaction_type",)}



def test_a_path_written_as_a_yaml_block_still_finds_its_field() -> None:
    """A YAML `|` block ends the path in a newline. A dotted path's `$` matched before it, so
    `customer.phone\n` looked for a field named `phone\n`: every event dead-lettered as invalid."""
    spec = {"event_id": "event_id\n", "phone": "customer.phone\n", "campaign_id": "campaign_id",
            "custom_attributes": {"external_id": "customer.id\n"}}
    mapper = DeclarativeMapper(spec)
    recipient = mapper.map(event())
    assert (recipient.event_id, recipient.phone, recipient.custom_attributes) == (
        "e1", "+905321234567", {"external_id": "c1"})
    paths = mapper.fields_read()
    assert paths is None or all(not step.endswith("\n") for path in paths for step in path)

@pytest.mark.parametrize("answer", [{"event_id", "campaign_id"}, "event_id", [("customer", 1)], {()}, 7])
def test_a_mapper_s_fields_read_that_are_not_paths_stop_the_start(answer: Any) -> None:
    """Found in review: strings became tuples of characters (every record decoded to {})."""

    class Odd(DeclarativeMapper):
        def fields_read(self) -> Any:
            return answer

    with pytest.raises(ConfigError, match="fields_read"):
        fields_read_by(Odd.from_file(default_mapping_file()))


def test_a_mapper_without_fields_read_gets_the_whole_record() -> None:
    class OnlyMap:
        def map(self, record: Any) -> Any:
            return record

    assert fields_read_by(OnlyMap()) is None
    assert fields_read_by(DeclarativeMapper.from_file(default_mapping_file())) is not None


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no text")


@pytest.mark.parametrize(("overrides", "where"), [
    ({"event_id": 10**5000}, "event_id"),  # past Python's 4,300-digit limit: str() raises ValueError
    ({"campaign_id": Unprintable()}, "campaign_id"),
    ({"customer": {"id": "c1", "phone": "+90 532 123 45 67", "name": -(10**5000)}}, "custom_attributes.name"),
])
def test_a_value_a_custom_decoder_gives_without_a_text_is_refused_naming_its_field(
        overrides: dict[str, Any], where: str) -> None:
    """Found by tests/unit/ingest/test_fuzz_record_path.py: such a value was a ValueError out of the
    mapper, dead-lettered by the intake's net as "the mapper failed: ValueError: Exceeds the limit
    ...", naming no field."""
    mapper = DeclarativeMapper.from_file(default_mapping_file())
    with pytest.raises(InvalidEventError, match=f"^{where}: a value of type .* cannot be written as text"):
        mapper.map(event(**overrides))

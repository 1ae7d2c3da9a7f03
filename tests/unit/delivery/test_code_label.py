"""The `code` label of the requests and dead-letter metrics takes only codes of Pisano's table.

Pisano's answer (or a proxy's in front of it) may carry any number as its code; a label value
taken from it unchecked would let one misbehaving gateway create a series per answer.
"""

from __future__ import annotations

from prometheus_client import generate_latest

from consumer.delivery.pisano_codes import CODES, OTHER_CODE_LABEL, code_label
from consumer.errors import PisanoApiError
from tests.support.fakes import FakePisano, event, rig


def test_codes_of_the_table_are_their_own_label_anything_else_is_other() -> None:
    assert {code_label(code) for code in CODES} == {str(code) for code in CODES}
    assert code_label(None) == ""
    for garbage in (0, -1, 13004, 13039, 99999, 2**63, 200):
        assert code_label(garbage) == OTHER_CODE_LABEL


def requests_samples(r) -> dict[tuple[str, str], float]:  # type: ignore[no-untyped-def]
    return {(s.labels["status"], s.labels["code"]): s.value
            for family in r.sender.metrics.registry.collect() if family.name == "pisano_sms_requests"
            for s in family.samples if s.name.endswith("_total")}


def test_a_code_outside_the_table_is_counted_as_other() -> None:
    r = rig(FakePisano(default=PisanoApiError(400, 987654321, "a gateway's own numbering")), max_attempts=1)
    r.process([event(1)])
    assert requests_samples(r) == {("400", OTHER_CODE_LABEL): 1.0}
    assert b"987654321" not in generate_latest(r.sender.metrics.registry)


def test_a_code_of_the_table_is_counted_as_itself() -> None:
    r = rig(FakePisano([PisanoApiError(404, 13002, "Requested resource not found!")]))
    r.process([event(1)])
    assert requests_samples(r) == {("404", "13002"): 1.0}

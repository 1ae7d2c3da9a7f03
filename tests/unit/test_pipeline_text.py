"""Text from outside (a plug-in mapper's error, Pisano's answers) may hold a lone surrogate: a JSON
string may escape one (`"\\ud800"`), and strict UTF-8 refuses it. Written into a dead-letter's
headers or a receipt, it raised out of the poll loop; the record was never committed, so every
replica in turn read it and died. It is written as its escape instead."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import pytest

from consumer.delivery.outcome import Outcome
from consumer.delivery.pisano import parse_error
from consumer.ingest.avro import SchemalessDecoder
from consumer.ingest.mapping import Mapper, Recipient
from consumer.ingest.samples import default_schema
from consumer.outcomes import deadletter
from consumer.outcomes.deadletter import Failure
from consumer.outcomes.receipts import ReceiptCodec
from consumer.state.memory import MemoryDeadLetterMarks, MemoryReceiptMarks
from tests.support.fake_kafka import pipeline
from tests.unit.test_pipeline_review import MAPPER, good, receipts_owner

LONE = json.loads('"\\ud800"')


class JsonCampaignMapper(Mapper):
    """A plug-in that reads the campaign from a JSON document in a string field and names it in its error."""

    def map(self, record: Mapping[str, Any]) -> Recipient:
        campaign = json.loads('{"campaign": "\\ud800-not-a-campaign"}')["campaign"]
        raise ValueError(f"unknown campaign {campaign}")


@pytest.mark.parametrize("marks", [False, True])
def test_a_mapper_error_with_a_lone_surrogate_is_dead_lettered_with_its_escape(marks: bool) -> None:
    loop, consumer, producer = pipeline(SchemalessDecoder(default_schema()), JsonCampaignMapper())
    if marks:  # as `run` builds it
        loop.dlq.marks = MemoryDeadLetterMarks(horizon_s=3600)
    consumer.queue = [good(0)]
    for _ in range(3):
        loop._step()
    [letter] = producer.produced
    assert letter["headers"]["dlq.reason"] == b"invalid_event"
    assert b"\\ud800-not-a-campaign" in letter["headers"]["pisano.error.message"]
    loop._commit()
    assert consumer.committed == {("t", 0): 1}


def test_a_pisano_error_message_with_an_escaped_lone_surrogate_is_dead_lettered() -> None:
    error = parse_error(400, "Bad Request", b'{"code": 1001, "message": "unknown field \\ud800"}')
    assert LONE in str(error.message)
    loop, consumer, producer = pipeline(SchemalessDecoder(default_schema()), MAPPER)
    consumer.queue = [good(0)]
    loop._step()
    events = loop.delivery.drop(lambda e: True)
    loop.outcomes.put(Outcome("dead_letter", events, Failure("pisano_error", str(error.message), code=1001,
                                                             http_status=400)))
    for _ in range(3):
        loop._step()
    [letter] = producer.produced
    assert letter["headers"]["pisano.error.message"] == b"unknown field \\ud800"


def test_a_pisano_request_id_with_a_lone_surrogate_goes_into_the_receipt_escaped() -> None:
    """With OUTCOME_TOPIC the request id of Pisano's 200 goes into the receipt: after the SMS left."""
    loop, consumer, producer = receipts_owner(MemoryReceiptMarks())
    consumer.queue = [good(0)]
    loop._step()
    events = loop.delivery.drop(lambda e: True)
    loop.outcomes.put(Outcome("delivered", events, accepted_at_ms=int(time.time() * 1000),
                              request_id="r-1", pisano_request_id=LONE))
    for _ in range(3):
        loop._step()
    loop._commit()
    assert consumer.committed == {("t", 0): 1}
    [receipt] = [ReceiptCodec().decode(p["value"]) for topic, p in zip(producer.topics, producer.produced,
                                                                      strict=True) if topic == "receipts"]
    assert receipt.pisano_request_id == "\\ud800"


def test_headers_that_cannot_be_written_still_dead_letter_the_record_with_its_reason(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(message: str) -> str:
        raise RuntimeError("a bug in the redaction")

    monkeypatch.setattr(deadletter, "error_text", broken)
    loop, consumer, producer = pipeline(SchemalessDecoder(default_schema()), JsonCampaignMapper())
    consumer.queue = [good(0)]
    for _ in range(3):
        loop._step()
    [letter] = producer.produced
    assert letter["headers"]["dlq.reason"] == b"invalid_event"
    assert letter["headers"]["dlq.original.offset"] == b"0"
    loop._commit()
    assert consumer.committed == {("t", 0): 1}

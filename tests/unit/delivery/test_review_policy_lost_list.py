"""Adversarial review of the contact policy, continued (README "Contact policy"): the opt-out list
lost under a running fleet. Each test failed on the code before its fix."""

from __future__ import annotations

import time
from typing import Any

from consumer.app import build_admission
from consumer.config.settings import Settings
from consumer.ingest.mapping import Mapper, Recipient
from consumer.ingest.records import InboundRecord
from consumer.state.redis import Keys
from consumer.state.suppression import MemoryOptOutList, OptOutHasher
from tests.support.fakes import event, rig

KEY = "k" * 32


class PlugInMapper(Mapper):
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


def test_an_opt_out_list_lost_under_a_running_replica_sends_nothing() -> None:
    """Redis restarted without its data (or was flushed, or failed over to a replica without the
    set): the list is then an empty set, every lookup answered "not on the list", and the customer
    who opted out was surveyed at the next event. A replica that has seen the list fails closed
    until it is imported again, as when Redis does not answer."""
    hasher = OptOutHasher(KEY.encode(), "TR")
    store = MemoryOptOutList([hasher.phone("+905321200001")])
    settings = Settings(kafka_topics=["t"], pisano_url="https://pisano.invalid", suppression_key=KEY,
                        phone_region="TR")
    r = rig()
    admission = build_admission(settings, _State(), PlugInMapper())  # type: ignore[arg-type]
    assert admission.suppression is not None
    admission.suppression.store = store
    r.sender.admission = admission
    r.process([_stamped(0, "+905321200001"), _stamped(1, "+905321200000")])
    assert r.kinds() == {"e0": {"suppressed"}, "e1": {"delivered"}}

    store._entries.clear()  # the list is gone from Redis
    r.process([_stamped(2, "+905321200001")])
    assert "+905321200001" not in r.pisano.sent_phones, "an opted-out customer was surveyed after the list was lost"
    assert r.kinds()["e2"] == {"requeue"}  # held back, uncommitted, as with Redis away

    store.add([hasher.phone("+905321200001")])  # imported again: the list answers again
    r.process([_stamped(3, "+905321200001"), _stamped(4, "+905321200002")])
    assert r.kinds()["e3"] == {"suppressed"} and r.kinds()["e4"] == {"delivered"}
    assert r.pisano.sent_phones == ["+905321200000", "+905321200002"]


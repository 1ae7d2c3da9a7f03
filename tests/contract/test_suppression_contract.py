"""The opt-out list's contract (consumer/state/suppression.py), on Redis, on a Redis Cluster and
in memory."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from consumer.errors import InvalidEventError
from consumer.state.redis import Keys
from consumer.state.suppression import MemoryOptOutList, OptOutHasher, OptOutList, RedisOptOutList, Suppression
from tests.contract.conftest import IMPLEMENTATIONS, _connect

KEY = b"contract-key-0123456789"


@pytest.fixture(params=IMPLEMENTATIONS)
def make_list(request: pytest.FixtureRequest) -> Callable[[], OptOutList]:
    """Each call: another replica's view of one list."""
    if request.param == "memory":
        shared = MemoryOptOutList()
        return lambda: shared
    return lambda: RedisOptOutList(_connect(request), Keys("t"))


def test_add_is_idempotent_and_counts_what_was_new(make_list: Callable[[], Any]) -> None:
    a, b = make_list(), make_list()
    assert a.add(["p:1", "p:2", "x:3"]) == 3
    assert b.add(["p:2", "x:3", "p:4"]) == 1
    assert a.size() == 4 and b.size() == 4
    assert a.contains(["p:1", "p:9", "x:3", "p:4"]) == [True, False, True, True]
    assert b.remove(["p:1", "p:9"]) == 1
    assert a.contains(["p:1"]) == [False] and sorted(a.entries()) == ["p:2", "p:4", "x:3"]


def test_empty_requests_answer_without_asking(make_list: Callable[[], Any]) -> None:
    store = make_list()
    assert store.add([]) == 0 and store.remove([]) == 0 and store.contains([]) == []
    assert list(store.entries()) == [] and store.size() == 0


def test_bulk_adds_span_chunks(make_list: Callable[[], Any]) -> None:
    store = make_list()
    entries = [f"p:{n:032x}" for n in range(25_001)]
    assert store.add(entries) == 25_001 and store.add(entries[:12_345]) == 0
    assert store.size() == 25_001 and len(set(store.entries())) == 25_001


def test_phones_in_any_form_are_one_entry_and_never_stored_in_clear(make_list: Callable[[], Any]) -> None:
    hasher = OptOutHasher(KEY, "TR")
    store = make_list()
    store.add([hasher.phone("0532 123 45 67")])
    suppression = Suppression(hasher, store, digits_are_e164=False)

    class R:
        def __init__(self, phone: str, external_id: str | None = None) -> None:
            self.phone = phone
            self.custom_attributes = {"external_id": external_id} if external_id else {}

    store.add([hasher.external_id("cust-9")])
    assert suppression.suppressed([R("+905321234567"), R("05321234567"), R("+905321234568"),
                                   R("+905321234569", "cust-9"), R("+905321234569", " cust-9 ")]) == \
        [True, True, False, True, True]
    stored = list(store.entries())
    assert all("5321234567" not in entry and "cust-9" not in entry for entry in stored)
    assert all(len(entry) == 34 and entry[:2] in ("p:", "x:") for entry in stored)
    # Another key, another list: an entry means nothing without SUPPRESSION_KEY.
    assert OptOutHasher(b"another-key-0123456789", "TR").phone("+905321234567") not in stored
    with pytest.raises(InvalidEventError):
        hasher.phone("not a phone")

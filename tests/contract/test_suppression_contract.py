"""The opt-out list's contract (consumer/state/suppression.py), on Redis, on a Redis Cluster and
in memory."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from consumer.errors import InvalidEventError, StateStoreError
from consumer.state.redis import Keys
from consumer.state.suppression import MemoryOptOutList, OptOutHasher, OptOutList, RedisOptOutList, Suppression
from consumer.state.trip import together
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


class _Recipient:
    def __init__(self, phone: str, external_id: str | None = None) -> None:
        self.phone = phone
        self.custom_attributes = {"external_id": external_id} if external_id else {}


def _lose(store: Any) -> None:
    """The list gone under a running replica: Redis restarted without its data, a FLUSHALL, the key
    deleted, a failover to a replica that never had it."""
    if isinstance(store, MemoryOptOutList):
        store._entries.clear()
    else:
        store.client.delete(store.key)


def test_a_list_lost_under_a_running_replica_fails_closed(make_list: Callable[[], Any]) -> None:
    """Review (policy): Redis lost the list (restart without data, flush, failover): the set is
    simply empty, SMISMEMBER answered 0 for every entry and every opted-out customer was surveyed
    again (KVKK/İYS). A replica that saw the list must refuse to send until it is back."""
    hasher = OptOutHasher(KEY, "TR")
    cli, replica = make_list(), make_list()
    cli.add([hasher.phone("+905321234567"), hasher.external_id("cust-9")])
    suppression = Suppression(hasher, replica, digits_are_e164=False)
    opted_out = [_Recipient("+905321234567"), _Recipient("+905321234568", "cust-9"), _Recipient("+905321234569")]
    assert suppression.suppressed(opted_out) == [True, True, False]
    assert together([suppression.stage(suppression.lookup(opted_out))])[0] == [True, True, False]

    _lose(cli)
    with pytest.raises(StateStoreError, match="opt-out list"):
        suppression.suppressed(opted_out)
    with pytest.raises(StateStoreError, match="opt-out list"):
        together([suppression.stage(suppression.lookup(opted_out))])

    cli.add([hasher.phone("+905321234567"), hasher.external_id("cust-9")])  # imported again: sends resume
    assert together([suppression.stage(suppression.lookup(opted_out))])[0] == [True, True, False]


def test_a_list_emptied_by_remove_is_not_a_loss(make_list: Callable[[], Any]) -> None:
    """Removing every entry (`suppress remove`) leaves an empty list, not a lost one: no false alarm,
    and the list's marker never shows in its size, its entries or its answers."""
    cli, replica = make_list(), make_list()
    assert cli.add(["p:1", "x:2"]) == 2 and cli.add(["p:1"]) == 0
    assert replica.contains(["p:1", "x:2", "p:3"]) == [True, True, False]
    assert cli.remove(["p:1", "x:2"]) == 2
    assert replica.contains(["p:1", "x:2"]) == [False, False]
    assert replica.size() == 0 and list(replica.entries()) == []
    assert cli.add(["p:1"]) == 1 and replica.size() == 1 and list(replica.entries()) == ["p:1"]

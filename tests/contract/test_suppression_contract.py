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
    """Each call: another replica's view of one list, an empty one as `suppress import` of a file
    of only its header leaves it (armed: MARKER; keyed by no key until a keyed store writes).
    `_lose` turns it into a lost list, which is also what a brand-new deployment's list is."""
    if request.param == "memory":
        shared = MemoryOptOutList()
        _arm(shared)
        return shared.replica
    _arm(RedisOptOutList(_connect(request), Keys("t")))
    return lambda: RedisOptOutList(_connect(request), Keys("t"))


def _arm(store: Any) -> Any:
    """An import of an empty file (`suppress import` of a header alone): the list is armed."""
    store.holding_marker = True
    store.complete()
    return store


def _import(store: Any, entries: list[str]) -> Any:
    """`suppress import` of a file holding these entries, to its end: chunks held, then `complete`."""
    store.holding_marker = True
    store.add(entries)
    store.complete()
    return store


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

    _import(cli, [hasher.phone("+905321234567"), hasher.external_id("cust-9")])  # imported again: sends resume
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


OTHER_KEY = b"another-key-0123456789"


def test_a_replica_on_another_key_than_the_import_fails_closed(make_list: Callable[[], Any]) -> None:
    """Review (contact policy): a replica started with another SUPPRESSION_KEY than the one the list
    was imported with (a typo in the Secret, a rotation done on half the fleet) matched no entry and
    surveyed every opted-out customer. The list's keyed marker tells it: it must refuse to send."""
    hasher = OptOutHasher(KEY, "TR")
    cli, replica = make_list(), make_list()
    Suppression(hasher, cli, digits_are_e164=False)  # the CLI's store, under the import's key
    cli.add([hasher.phone("+905321234567"), hasher.external_id("cust-9")])
    right = Suppression(hasher, make_list(), digits_are_e164=False)
    wrong = Suppression(OptOutHasher(OTHER_KEY, "TR"), replica, digits_are_e164=False)
    opted_out = [_Recipient("+905321234567"), _Recipient("+905321234568", "cust-9")]
    assert right.suppressed(opted_out) == [True, True]
    with pytest.raises(StateStoreError, match="SUPPRESSION_KEY") as raised:
        wrong.suppressed(opted_out)
    with pytest.raises(StateStoreError, match="SUPPRESSION_KEY"):
        together([wrong.stage(wrong.lookup(opted_out))])
    # Never the key, never a hash.
    assert OTHER_KEY.decode() not in str(raised.value) and KEY.decode() not in str(raised.value)
    assert "k:" not in str(raised.value) and hasher.phone("+905321234567") not in str(raised.value)


def _keyed(store: Any, key: bytes) -> Any:
    store.key_check = OptOutHasher(key, "TR").key_check
    return store


def test_a_list_from_before_the_key_check_is_used_and_keyed_by_the_next_add(
        make_list: Callable[[], Any], caplog: pytest.LogCaptureFixture) -> None:
    """A list written by the version before 0.3.0 (MARKER, no keyed marker) is not refused after
    the upgrade: lookups warn once per replica; the first `add` under this version writes the keyed
    marker, and from then on a replica on another key fails closed."""
    hasher = OptOutHasher(KEY, "TR")
    old_cli = make_list()  # knows no key: writes what 0.2 wrote
    old_cli.add([hasher.phone("+905321234567")])
    replica = Suppression(hasher, make_list(), digits_are_e164=False)
    wrong = Suppression(OptOutHasher(OTHER_KEY, "TR"), make_list(), digits_are_e164=False)
    with caplog.at_level("WARNING", logger="consumer.state.suppression"):
        assert replica.suppressed([_Recipient("+905321234567")]) == [True]
        assert replica.suppressed([_Recipient("+905321234567")]) == [True]
        assert wrong.suppressed([_Recipient("+905321234567")]) == [False]  # undetectable until keyed
    assert sum("before 0.3.0" in r.getMessage() for r in caplog.records) == 2  # once per replica

    cli = _keyed(make_list(), KEY)
    assert cli.add([hasher.external_id("cust-9")]) == 1
    assert replica.suppressed([_Recipient("+905321234567")]) == [True]
    with pytest.raises(StateStoreError, match="SUPPRESSION_KEY"):
        wrong.suppressed([_Recipient("+905321234567")])
    assert cli.size() == 2 and sorted(cli.entries()) == sorted([hasher.phone("+905321234567"),
                                                                 hasher.external_id("cust-9")])


def test_a_write_under_another_key_is_refused_and_changes_nothing(make_list: Callable[[], Any]) -> None:
    """`suppress add`/`remove`/`import` with another key (the import Job on an old Secret) would mix
    entries no replica matches into the list: refused, naming what to check."""
    cli = _keyed(make_list(), KEY)
    assert cli.add(["p:1", "x:2"]) == 2
    other = _keyed(make_list(), OTHER_KEY)
    with pytest.raises(StateStoreError, match="SUPPRESSION_KEY") as raised:
        other.add(["p:3"])
    assert "--new-key" in str(raised.value)
    with pytest.raises(StateStoreError, match="SUPPRESSION_KEY"):
        other.remove(["p:1"])
    assert cli.size() == 2 and sorted(cli.entries()) == ["p:1", "x:2"]
    assert cli.remove(["p:1", "x:2"]) == 2 and cli.size() == 0 and list(cli.entries()) == []
    assert cli.contains(["p:1"]) == [False]  # emptied by `remove`: still keyed, still not lost


def test_a_rotation_keys_the_list_anew_and_the_old_key_fails_closed(make_list: Callable[[], Any]) -> None:
    """Rotating SUPPRESSION_KEY: the source list imported under the new key (`import --new-key`:
    entries first, then the keyed marker swapped); replicas still on the old key then fail closed
    instead of matching none of the new entries, and replicas on the new one refused until then."""
    old, new = OptOutHasher(KEY, "TR"), OptOutHasher(OTHER_KEY, "TR")
    _keyed(make_list(), KEY).add([old.phone("+905321234567")])
    on_old = Suppression(old, make_list(), digits_are_e164=False)
    on_new = Suppression(new, make_list(), digits_are_e164=False)
    opted_out = [_Recipient("+905321234567")]

    importer = _keyed(make_list(), OTHER_KEY)
    importer.rotating = True
    importer.add([new.phone("+905321234567")])  # the import, chunk by chunk
    assert on_old.suppressed(opted_out) == [True]  # the old key's list is whole until the swap
    with pytest.raises(StateStoreError, match="SUPPRESSION_KEY"):
        on_new.suppressed(opted_out)
    importer.rotate_key()
    assert on_new.suppressed(opted_out) == [True]
    with pytest.raises(StateStoreError, match="SUPPRESSION_KEY"):
        on_old.suppressed(opted_out)
    assert importer.add([new.external_id("cust-9")]) == 1  # writes under the new key are plain again
    assert importer.size() == 3  # the old key's entry stays, unmatchable (re-import into a fresh list to drop it)
    assert all(not e.startswith(("k:", "m:")) for e in importer.entries())


def test_a_rotation_into_a_lost_list_keeps_the_old_key_closed(make_list: Callable[[], Any]) -> None:
    """Last review: `import --new-key` into a list without the key check (lost, or never keyed)
    wrote its entries with MARKER alone; a replica on the old key then read a list "from before
    0.3.0", warned once and sent to every customer who opted out, for as long as the import ran
    (for good if it was stopped midway)."""
    old, new = OptOutHasher(KEY, "TR"), OptOutHasher(OTHER_KEY, "TR")
    on_old = Suppression(old, make_list(), digits_are_e164=False)
    importer = _keyed(make_list(), OTHER_KEY)
    _lose(importer)
    importer.rotating = importer.holding_marker = True
    importer.add([new.phone("+905321234567")])  # a chunk, then the import is stopped
    with pytest.raises(StateStoreError, match="SUPPRESSION_KEY"):
        on_old.suppressed([_Recipient("+905321234567")])


def test_a_lost_list_stays_closed_until_its_import_completes(make_list: Callable[[], Any]) -> None:
    """Last review: a replica that saw the list lost sent again from the re-import's first chunk
    on; an import holds MARKER back until the whole file is in (`complete`)."""
    hasher = OptOutHasher(KEY, "TR")
    first = _keyed(make_list(), KEY)
    first.add([hasher.phone("+905321234567")])
    replica = Suppression(hasher, make_list(), digits_are_e164=False)
    assert replica.suppressed([_Recipient("+905321234568")]) == [False]  # seen
    first.remove([hasher.phone("+905321234567")])
    _lose(first)
    with pytest.raises(StateStoreError):
        replica.suppressed([_Recipient("+905321234568")])
    importer = _keyed(make_list(), KEY)
    importer.holding_marker = True
    importer.add([hasher.phone("+905321234567")])  # the first chunk
    with pytest.raises(StateStoreError):
        replica.suppressed([_Recipient("+905321234568")])
    importer.add([hasher.phone("+905321234568")])
    importer.complete()
    assert replica.suppressed([_Recipient("+905321234568")]) == [True]
    assert importer.size() == 2


def test_a_write_under_the_old_key_after_the_rotation_is_refused(make_list: Callable[[], Any]) -> None:
    """Last review: an import (or a long-lived writer) under the old key that had written before the
    rotation's swap wrote the old key's marker back with every later chunk, unchecked: the list then
    carried both keys' markers, and replicas still on the old key sent again, missing every opt-out
    entered under the new key since."""
    old, new = OptOutHasher(KEY, "TR"), OptOutHasher(OTHER_KEY, "TR")
    old_writer = _keyed(make_list(), KEY)
    old_writer.add([old.phone("+905321234567")])  # its first chunk (the CRM sync's import, say)
    rotator = _keyed(make_list(), OTHER_KEY)
    rotator.rotating = True
    rotator.add([new.phone("+905321234567")])
    rotator.rotate_key()
    with pytest.raises(StateStoreError, match="SUPPRESSION_KEY"):
        old_writer.add([old.phone("+905321234568")])  # its next chunk
    on_old = Suppression(old, make_list(), digits_are_e164=False)
    with pytest.raises(StateStoreError, match="SUPPRESSION_KEY"):
        on_old.suppressed([_Recipient("+905321234568")])


def test_an_add_onto_a_lost_list_is_refused_and_does_not_re_arm_it(make_list: Callable[[], Any]) -> None:
    """Fail open (found by review): `add` wrote MARKER with every add. After a loss, while the fleet
    rightly sent nothing, the daily `suppress add` of one phone put MARKER back into the nearly empty
    set and every replica sent again, to every customer who had opted out. Only a whole import
    re-arms a list that lost its marker: an `add` onto it is refused and writes nothing."""
    hasher = OptOutHasher(KEY, "TR")
    cli = _keyed(make_list(), KEY)
    cli.add([hasher.phone("+905321234567"), hasher.external_id("cust-9")])
    replica = Suppression(hasher, make_list(), digits_are_e164=False)
    opted_out = [_Recipient("+905321234567"), _Recipient("+905321234568", "cust-9"), _Recipient("+905321234569")]
    assert replica.suppressed(opted_out) == [True, True, False]  # seen

    _lose(cli)
    operator = _keyed(make_list(), KEY)  # the next day's `suppress add`, a process of its own
    with pytest.raises(StateStoreError, match="no marker") as raised:
        operator.add([hasher.phone("+905321234570")])
    assert "suppress import" in str(raised.value)
    with pytest.raises(StateStoreError, match="opt-out list"):
        replica.suppressed(opted_out)
    with pytest.raises(StateStoreError, match="opt-out list"):
        together([replica.stage(replica.lookup(opted_out))])
    assert operator.size() == 0 and list(operator.entries()) == []  # nothing written

    importer = _keyed(make_list(), KEY)
    importer.holding_marker = True
    importer.add([hasher.phone("+905321234567")])  # the re-import's first chunk
    with pytest.raises(StateStoreError, match="opt-out list"):
        replica.suppressed(opted_out)
    with pytest.raises(StateStoreError, match="no marker"):
        operator.add([hasher.phone("+905321234570")])  # not while the import runs either
    importer.add([hasher.external_id("cust-9")])
    importer.complete()
    assert replica.suppressed(opted_out) == [True, True, False]
    assert operator.add([hasher.phone("+905321234570")]) == 1  # armed again: adds are plain again
    assert replica.suppressed([_Recipient("+905321234570")]) == [True]


def test_a_brand_new_list_takes_an_add_only_once_imported(make_list: Callable[[], Any]) -> None:
    """A list never written is a set that is not there, as a lost one: its first `add` is refused
    (the CLI says to import the list, an empty file if there is none yet), and an import of nothing
    arms an empty list."""
    cli = _keyed(make_list(), KEY)
    _lose(cli)  # never written
    with pytest.raises(StateStoreError, match="no marker"):
        cli.add(["p:1"])
    assert cli.size() == 0
    _arm(_keyed(make_list(), KEY))  # `suppress import` of a file of only its header
    replica = _keyed(make_list(), KEY)
    assert replica.contains(["p:1"]) == [False] and replica.size() == 0  # empty, armed
    assert cli.add(["p:1"]) == 1 and replica.contains(["p:1"]) == [True] and cli.size() == 1
    _lose(cli)
    with pytest.raises(StateStoreError, match="opt-out list"):
        replica.contains(["p:1"])  # armed, then lost: the replica closes


def test_no_write_but_a_whole_import_re_arms_a_lost_list(make_list: Callable[[], Any]) -> None:
    """`remove`, a key's markers (`add` of a keyed store, a rotating import's chunks) never write
    MARKER onto a lost list: the replicas that saw it stay closed until an import ends."""
    old, new = OptOutHasher(KEY, "TR"), OptOutHasher(OTHER_KEY, "TR")
    cli = _keyed(make_list(), KEY)
    cli.add([old.phone("+905321234567")])
    replica = Suppression(old, make_list(), digits_are_e164=False)
    assert replica.suppressed([_Recipient("+905321234568")]) == [False]  # seen
    _lose(cli)
    assert cli.remove([old.phone("+905321234567")]) == 0
    rotating = _keyed(make_list(), OTHER_KEY)
    rotating.rotating = True
    with pytest.raises(StateStoreError, match="no marker"):
        rotating.add([new.phone("+905321234567")])  # a rotating write outside an import
    rotating.holding_marker = True
    rotating.add([new.phone("+905321234567")])  # `import --new-key`'s chunk: held
    with pytest.raises(StateStoreError, match="no marker"):
        _keyed(make_list(), KEY).add([old.phone("+905321234567")])
    with pytest.raises(StateStoreError, match="opt-out list"):
        replica.suppressed([_Recipient("+905321234568")])
    rotating.rotate_key()  # the rotation's import ended: whole, armed, under the new key
    on_new = Suppression(new, make_list(), digits_are_e164=False)
    assert on_new.suppressed([_Recipient("+905321234567"), _Recipient("+905321234568")]) == [True, False]


@pytest.mark.parametrize("lost_at", ["between chunks", "before the end"])
def test_a_list_lost_while_it_is_imported_is_not_armed_by_the_import_s_end(
        make_list: Callable[[], Any], lost_at: str) -> None:
    """Fail open (found with the `add` one): an import that started before a loss (the nightly CRM
    sync, Redis restarted midway) went on into the emptied set and its `complete` wrote MARKER: the
    fleet that saw the loss reopened with the entries after the loss alone. Only an import that ran
    whole into the list it ends may arm it: one that sees its own key markers gone stops."""
    hasher = OptOutHasher(KEY, "TR")
    _import(_keyed(make_list(), KEY), [hasher.phone("+905321234567"), hasher.phone("+905321234568")])
    replica = Suppression(hasher, make_list(), digits_are_e164=False)
    opted_out = [_Recipient("+905321234567"), _Recipient("+905321234568")]
    assert replica.suppressed(opted_out) == [True, True]  # seen
    importer = _keyed(make_list(), KEY)
    importer.holding_marker = True
    importer.add([hasher.phone("+905321234567")])
    _lose(importer)
    if lost_at == "between chunks":
        with pytest.raises(StateStoreError, match=r"lost .*while this import ran"):
            importer.add([hasher.phone("+905321234568")])
    with pytest.raises(StateStoreError, match=r"lost .*while this import ran"):
        importer.complete()
    with pytest.raises(StateStoreError, match="opt-out list"):
        replica.suppressed(opted_out)
    _import(_keyed(make_list(), KEY), [hasher.phone("+905321234567"), hasher.phone("+905321234568")])  # again
    assert replica.suppressed(opted_out) == [True, True]


def _rotation_lost_under(make_list: Callable[[], Any]) -> tuple[OptOutHasher, Suppression, Any]:
    """A list imported under KEY and seen by a replica on it (`on_old`), then an `import --new-key`
    under OTHER_KEY (`rotating`) that wrote one chunk before the list was lost."""
    old, new = OptOutHasher(KEY, "TR"), OptOutHasher(OTHER_KEY, "TR")
    _import(_keyed(make_list(), KEY), [old.phone("+905321234567")])
    on_old = Suppression(old, make_list(), digits_are_e164=False)
    assert on_old.suppressed([_Recipient("+905321234567")]) == [True]  # seen
    rotating = _keyed(make_list(), OTHER_KEY)
    rotating.rotating = rotating.holding_marker = True
    rotating.add([new.phone("+905321234567")])
    _lose(rotating)
    return old, on_old, rotating


def _stays_closed(rotating: Any, on_old: Suppression) -> None:
    """The rotation lost under stops (its next chunk, its swap) and the replica stays closed."""
    new = OptOutHasher(OTHER_KEY, "TR")
    with pytest.raises(StateStoreError, match=r"lost .*while this import ran"):
        rotating.add([new.phone("+905321234568")])
    with pytest.raises(StateStoreError, match=r"lost .*while this import ran"):
        rotating.rotate_key()
    with pytest.raises(StateStoreError, match="opt-out list"):
        on_old.suppressed([_Recipient("+905321234567")])


def test_a_list_lost_while_it_is_rotated_into_is_not_armed_by_the_swap(make_list: Callable[[], Any]) -> None:
    """The same for `import --new-key`: `rotate_key` wrote MARKER onto a list lost under it."""
    _, on_old, rotating = _rotation_lost_under(make_list)
    _stays_closed(rotating, on_old)


def test_an_import_lost_under_is_not_armed_by_another_import_s_claim(make_list: Callable[[], Any]) -> None:
    """Fail open (review): an import checked the list's keyed marker to tell it was not lost under
    it, but any import under the same key writes that marker. The nightly import A lost its first
    chunk with the list (a restart without data); a second import B (the retried Job, an operator
    re-importing) began and claimed the key; A's next chunk and its `complete` found the marker and
    armed the list holding A's tail and B's head: the customers of A's lost chunk that B had not
    reached yet were surveyed. An import must tell its own writes, not the key's."""
    hasher = OptOutHasher(KEY, "TR")
    head, tail = hasher.phone("+905321234567"), hasher.phone("+905321234568")
    _import(_keyed(make_list(), KEY), [head, tail])
    replica = Suppression(hasher, make_list(), digits_are_e164=False)
    opted_out = [_Recipient("+905321234567"), _Recipient("+905321234568")]
    assert replica.suppressed(opted_out) == [True, True]  # seen
    a = _keyed(make_list(), KEY)
    a.holding_marker = True
    a.add([head])
    _lose(a)
    b = _keyed(make_list(), KEY)
    b.holding_marker = True
    b.add([hasher.external_id("cust-1")])  # B's first chunk: not yet at `head`
    with pytest.raises(StateStoreError, match=r"lost .*while this import ran"):
        a.add([tail])
    with pytest.raises(StateStoreError, match=r"lost .*while this import ran"):
        a.complete()
    with pytest.raises(StateStoreError, match="opt-out list"):
        replica.suppressed(opted_out)  # still closed: `head` is on no list yet
    b.add([head, tail])
    b.complete()  # B ran whole into the list it arms
    assert replica.suppressed(opted_out) == [True, True]
    assert sorted(b.entries()) == sorted([head, tail, hasher.external_id("cust-1")]) and b.size() == 3


def test_a_rotation_lost_under_is_not_armed_by_another_import_s_claim(make_list: Callable[[], Any]) -> None:
    """The same for `import --new-key`: its chunks and its swap checked KEYED, which any import writes."""
    old, on_old, rotating = _rotation_lost_under(make_list)
    other = _keyed(make_list(), KEY)
    other.holding_marker = True
    other.add([old.phone("+905321234569")])  # an import under the old key begins: KEYED is back
    _stays_closed(rotating, on_old)


def test_an_import_whose_list_was_lost_before_its_first_chunk_runs_whole(make_list: Callable[[], Any]) -> None:
    """An import that wrote nothing before the loss imports the whole file into the emptied list:
    it may arm it (it stopped with LOST_IMPORTING, a re-run for nothing)."""
    hasher = OptOutHasher(KEY, "TR")
    _import(_keyed(make_list(), KEY), [hasher.phone("+905321234567")])
    importer = _keyed(make_list(), KEY)
    importer.holding_marker = True
    importer.verify_key()
    _lose(importer)
    importer.add([hasher.phone("+905321234567"), hasher.phone("+905321234568")])
    importer.complete()
    assert importer.contains([hasher.phone("+905321234568")]) == [True] and importer.size() == 2


def test_no_write_under_the_old_key_lands_while_a_rotation_runs(make_list: Callable[[], Any]) -> None:
    """Found by review (SRE tools): while `suppress import --new-key` ran, a `suppress add` on the
    old Secret passed its checks (the old key's marker was still there), said "added 1", and the
    swap then dropped that key: the customer's entry matched nothing under the new key, and the
    fleet surveyed someone who had just opted out. A plain import under the old key finishing
    meanwhile lost its entries the same way. While a rotation runs, every write but the
    rotation's is refused (nothing written; the message says to write under the new key), and a
    `remove` too (the new key's entry would stay)."""
    old, new = OptOutHasher(KEY, "TR"), OptOutHasher(OTHER_KEY, "TR")
    _keyed(make_list(), KEY).add([old.phone("+905321234567")])
    nightly = _keyed(make_list(), KEY)  # an import under the old key, begun before the rotation
    nightly.holding_marker = True
    nightly.add([old.phone("+905321234569")])
    rotator = _keyed(make_list(), OTHER_KEY)
    rotator.rotating = rotator.holding_marker = True
    rotator.add([new.phone("+905321234567"), new.phone("+905321234569")])  # the rotation's first chunk

    old_secret = _keyed(make_list(), KEY)
    with pytest.raises(StateStoreError, match="rotation"):
        old_secret.add([old.phone("+905321234568")])  # `suppress add` on the old Secret
    with pytest.raises(StateStoreError, match="rotation"):
        old_secret.remove([old.phone("+905321234567")])
    with pytest.raises(StateStoreError, match="rotation"):
        nightly.add([old.phone("+905321234570")])  # its next chunk
    with pytest.raises(StateStoreError):
        nightly.complete()
    late = _keyed(make_list(), KEY)
    late.holding_marker = True
    with pytest.raises(StateStoreError, match="rotation"):
        late.add([old.phone("+905321234568")])  # an import under the old key begun during the rotation

    rotator.rotate_key()
    assert all(not e.startswith(("k:", "m:")) for e in rotator.entries())
    on_new = Suppression(new, make_list(), digits_are_e164=False)
    assert on_new.suppressed([_Recipient("+905321234567"), _Recipient("+905321234569")]) == [True, True]
    new_secret = _keyed(make_list(), OTHER_KEY)
    assert new_secret.add([new.phone("+905321234568")]) == 1  # after the swap, writes under the new key go
    assert on_new.suppressed([_Recipient("+905321234568")]) == [True]


def test_a_rotation_stopped_before_its_end_lets_the_old_key_write_again(make_list: Callable[[], Any]) -> None:
    """An `import --new-key` stopped midway (`abandon`: Ctrl-C, a bad line) leaves the old key the
    list's: writes under it go again (a rotation killed outright is finished by running it again)."""
    old, new = OptOutHasher(KEY, "TR"), OptOutHasher(OTHER_KEY, "TR")
    _keyed(make_list(), KEY).add([old.phone("+905321234567")])
    rotator = _keyed(make_list(), OTHER_KEY)
    rotator.rotating = rotator.holding_marker = True
    rotator.add([new.phone("+905321234567")])
    rotator.abandon()
    assert _keyed(make_list(), KEY).add([old.phone("+905321234568")]) == 1
    on_old = Suppression(old, make_list(), digits_are_e164=False)
    assert on_old.suppressed([_Recipient("+905321234568")]) == [True]

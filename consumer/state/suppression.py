"""The opt-out list: phones and external ids that must not be surveyed (issue 13, point 4).

A customer who opted out (KVKK, İYS consent for commercial messages) is never sent a survey: each
event of a batch is looked up by its phone and its `external_id` attribute, in the round trip of
the batch's dedup claim (consumer/delivery/claims.py), and an event on the list ends with the
outcome `suppressed`, unsent, its claim released. Operators manage the list with `pisano-sms suppress`
(consumer/sre/suppress.py).

What is stored is never the phone or the id: an entry is the HMAC-SHA256 of the canonical value
under SUPPRESSION_KEY (a secret every replica and the CLI share), cut to 128 bits, prefixed by its
kind: `p:<32 hex>` for a phone, `x:<32 hex>` for an external id. A keyed hash, not a plain one: the
phone space is small (Turkish mobiles are about 10^9 numbers), so a plain or salted SHA-256 of a
leaked list could be reversed by trying every number; without the key it cannot. The price: the
list cannot be exported in clear, and changing the key empties it in effect (re-import the source
list under the new key). 128 bits leave no collision in any list a company could hold.

Phones are canonical before hashing (E.164 through the mapping's PhoneNormaliser and its region),
so `0532 123 45 67` and `+905321234567` are one entry; external ids are taken as written, without
surrounding whitespace.

The list is one Redis set, `{<prefix>}:optout`: one SMISMEMBER per batch answers for all its
events, sent in the claim's pipeline (`stage_contains`, consumer/state/trip.py). Its hash tag is
the dedup keys' own, so on a Redis Cluster it lives in their slot; an entry takes about 80 bytes there (two
million entries, a million customers by phone and external id, measured 160 MB).

A lost list fails closed. Redis restarted without its data, a FLUSHALL, a failover to a replica
that never had the set: the list is then simply empty, every lookup answers "not on the list", and
every customer who opted out would be surveyed. So the set also holds a marker member, `MARKER`
(no hash: it matches no entry), written with every `add` and never removed (`suppress remove` of
every entry leaves an empty list, not a lost one). Every lookup asks for it in the same SMISMEMBER;
a replica that has seen it and then finds it gone raises StateStoreError (nothing of the batch is
sent, as when Redis does not answer) until the list is imported again. A replica started after the
loss has never seen it and cannot tell a lost list from one never imported: as the throttle's loss
detection, a live replica proves the loss (README, "The opt-out list").

`OptOutList` is the contract; `RedisOptOutList` and `MemoryOptOutList` (below, small enough to live
beside it) both pass tests/contract/test_suppression_contract.py.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol

import phonenumbers

from consumer.errors import InvalidEventError, StateStoreError
from consumer.ingest.phones import PhoneNormaliser, is_valid_e164
from consumer.state.redis import Call, Keys, translated
from consumer.state.trip import Step

log = logging.getLogger(__name__)

PHONE, EXTERNAL_ID = "p", "x"
CHUNK = 10_000  # members per command when adding or removing in bulk
# A member of every list that was ever added to: its absence under a replica that saw it means the
# list was lost (module docstring). Not `p:`/`x:` and no hash, so no entry is ever equal to it.
MARKER = "m:list"
LOST = ("the opt-out list is gone from Redis (it was there: a restart without its data, a flush or a failover "
        "lost it); nothing is sent until it is imported again with `pisano-sms suppress import`")


class ListPresence:
    """Whether the list's marker was seen, per replica: its disappearance is a loss, not an empty list."""

    def __init__(self) -> None:
        self.seen = False

    def check(self, marked: bool) -> None:
        """StateStoreError when the marker, once seen, is gone."""
        if marked:
            self.seen = True
        elif self.seen:
            log.error("%s", LOST)
            raise StateStoreError(LOST)


class OptOutList(Protocol):
    """The stored entries (already hashed: see `OptOutHasher`)."""

    def add(self, entries: Sequence[str]) -> int:
        """Add entries; how many were not there before (adding twice is harmless)."""

    def remove(self, entries: Sequence[str]) -> int:
        """Remove entries; how many were there."""

    def contains(self, entries: Sequence[str]) -> list[bool]:
        """One answer per entry, in order, in one round trip."""

    def stage_contains(self, entries: Sequence[str]) -> Step[list[bool]]:
        """`contains` as a step of a round trip shared with other stores (consumer/state/trip.py):
        the opt-out lookup of a batch travels with its dedup claim (consumer/delivery/claims.py)."""

    def entries(self) -> Iterator[str]:
        """Every entry, in no particular order (for export)."""

    def size(self) -> int: ...


class OptOutHasher:
    """Canonical phone or external id -> entry. `region` reads national numbers (the mapping's)."""

    def __init__(self, key: bytes, region: str | None) -> None:
        # HMAC-SHA256 with its two padded key blocks hashed once (RFC 2104): each entry then costs
        # two copies and two short updates, 0.55 us against 1.4 us for hmac.digest, which keys
        # OpenSSL's HMAC anew every time. Admission hashes every event of every batch.
        block = (hashlib.sha256(key).digest() if len(key) > 64 else key).ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))
        self.region = region  # the phone's region for national numbers, None when only E.164 is read
        self._phones = PhoneNormaliser(region, "e164")
        self._national = _national_fast_path(region)

    def phone(self, raw: str) -> str:
        """The entry of a phone in any form the mapping accepts; InvalidEventError if it is not one."""
        text = raw.strip()
        e164 = self._national(text) if self._national is not None and not text.startswith("+") else None
        return self._entry(PHONE, e164 or self._phones.normalise(text))

    def external_id(self, raw: str) -> str:
        value = raw.strip()
        if not value:
            raise InvalidEventError("an empty external id")
        return self._entry(EXTERNAL_ID, value)

    def canonical_phone(self, e164: str) -> str:
        """The entry of a phone already in canonical E.164 (a recipient's): no parsing."""
        return self._entry(PHONE, e164)

    def _entry(self, kind: str, canonical: str) -> str:
        inner = self._inner.copy()
        inner.update(f"{kind}:{canonical}".encode())
        outer = self._outer.copy()
        outer.update(inner.digest())
        return f"{kind}:{outer.digest()[:16].hex()}"


_SEPARATORS = str.maketrans("", "", " .-/()")


def _national_fast_path(region: str | None) -> Callable[[str], str | None] | None:
    """For a region whose national prefix is a plain `0` (Turkey, most of Europe): a national
    number as `+<calling code><number without the 0>`, if phones.py's own fast validator finds it
    valid; None sends it to the full parser. An import of a million national numbers through
    `phonenumbers.parse` alone takes most of a minute; this keeps it to seconds. Regions with
    prefix rewriting (Argentina's 15, Mexico's 044) always take the parser."""
    if region is None:
        return None
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    if metadata is None or metadata.national_prefix_transform_rule or \
            (metadata.national_prefix_for_parsing or metadata.national_prefix) != "0":
        return None
    code = f"+{phonenumbers.country_code_for_region(region)}"

    def national(text: str) -> str | None:
        digits = text.translate(_SEPARATORS)
        if not digits.isdigit() or not digits.isascii():
            return None
        candidate = code + (digits[1:] if digits.startswith("0") else digits)
        if is_valid_e164(candidate):
            return candidate
        return None

    return national


class Suppression:
    """What admission asks: which of these recipients are on the list (one round trip)."""

    def __init__(self, hasher: OptOutHasher, store: OptOutList, *, digits_are_e164: bool,
                 plus_is_valid: bool = False) -> None:
        self.hasher = hasher
        self.store = store
        # Recipients' phones are canonical in the mapping's phone_format: with e164_digits a phone
        # of digits only is E.164 without its `+`; with a national format it is read in the region.
        self.digits_are_e164 = digits_are_e164
        # The declarative mapper's `+` phones were proven valid E.164 when it wrote them
        # (`Phones.normalise`): checking each again here cost 1.5 µs per recipient for nothing. A
        # plug-in mapper's phones passed only the recipient check (any `+` and digits): checked.
        self.plus_is_valid = plus_is_valid

    def suppressed(self, recipients: Sequence[Any]) -> list[bool | None]:
        """One answer per recipient: its phone or its external_id attribute is on the list; None
        when its phone cannot be read as a number to look up (a plug-in mapper's digits-only phone
        without a region). StateStoreError when Redis does not answer (the caller fails closed)."""
        lookup = self.lookup(recipients)
        return lookup.answers(self.store.contains(lookup.entries) if lookup.entries else [])

    def lookup(self, recipients: Sequence[Any]) -> Lookup:
        """The entries to ask for these recipients, and how to read the answers (`suppressed` in
        two halves, so that the asking can share a round trip: `stage`)."""
        entries: list[str] = []
        owners: list[int] = []
        uncheckable: set[int] = set()
        for index, recipient in enumerate(recipients):
            try:
                entries.append(self.phone_entry(recipient.phone))
            except InvalidEventError:
                uncheckable.add(index)
                continue
            owners.append(index)
            external = recipient.custom_attributes.get("external_id")
            if type(external) is int:  # a plug-in mapper's number (the recipient check allows it): as written
                external = str(external)
            elif type(external) is float and external.is_integer():  # 1042.0, a JSON number decoded as a float
                external = str(int(external))
            if isinstance(external, str) and external.strip():
                entries.append(self.hasher.external_id(external))
                owners.append(index)
        return Lookup(len(recipients), entries, owners, uncheckable)

    def stage(self, lookup: Lookup) -> Step[list[bool | None]]:
        """The lookup as a step of a shared round trip: its answer is `suppressed`'s."""
        if not lookup.entries:
            return Step.answered(lookup.answers([]))
        return self.store.stage_contains(lookup.entries).map(lookup.answers)

    def phone_entry(self, phone: str) -> str:
        """The entry of a recipient's phone (the contact cooldown keys phones by it too);
        InvalidEventError when it cannot be read back into E.164."""
        # A recipient's phone passed the recipient check, which takes any `+` and digits: valid E.164
        # (the declarative mapper's, nearly every phone) is hashed as it is; anything else a plug-in
        # mapper wrote (`+9005321234567`, the trunk 0 kept) is read as the number it is, as `suppress`
        # reads it, or refused (InvalidEventError): hashed as written it would match no opt-out.
        if phone.startswith("+"):
            if self.plus_is_valid or is_valid_e164(phone):
                return self.hasher.canonical_phone(phone)
            return self.hasher.phone(phone)
        if self.digits_are_e164:
            # Checked, not assumed: a plug-in mapper without PHONE_REGION may return national digits
            # (`05321234567` passes the recipient check), which as `+0532...` would hash a number no
            # opt-out matches. Read by the normaliser (valid E.164 takes its fast path, remembered).
            return self.hasher.phone("+" + phone)
        return self.hasher.phone(phone)


class Lookup:
    """A batch's entries for the opt-out list (`Suppression.lookup`): which recipient each entry
    belongs to, and the recipients whose phone cannot be looked up."""

    def __init__(self, count: int, entries: list[str], owners: list[int], uncheckable: set[int]) -> None:
        self.count = count
        self.entries = entries
        self.owners = owners
        self.uncheckable = uncheckable

    def answers(self, found: Sequence[bool]) -> list[bool | None]:
        """Per recipient: on the list (True), not (False), cannot be looked up (None)."""
        out: list[bool | None] = [None if i in self.uncheckable else False for i in range(self.count)]
        for owner, hit in zip(self.owners, found, strict=True):
            if hit:
                out[owner] = True
        return out


class RedisOptOutList:
    def __init__(self, client: Any, keys: Keys) -> None:
        self.client = client
        self.key = f"{{{keys.prefix}}}:optout"
        self.presence = ListPresence()

    def add(self, entries: Sequence[str]) -> int:
        return self._bulk("sadd", entries)

    def remove(self, entries: Sequence[str]) -> int:
        return self._bulk("srem", [e for e in entries if e != MARKER])

    def _bulk(self, command: str, entries: Sequence[str]) -> int:
        if not entries:
            return 0
        with translated("the opt-out list"):
            pipe = self.client.pipeline(transaction=False)
            for start in range(0, len(entries), CHUNK):
                getattr(pipe, command)(self.key, *entries[start:start + CHUNK])
            if command == "sadd":  # the list exists from now on (module docstring); not counted
                pipe.sadd(self.key, MARKER)
                return sum(int(n) for n in pipe.execute()[:-1])
            return sum(int(n) for n in pipe.execute())

    def contains(self, entries: Sequence[str]) -> list[bool]:
        if not entries:
            return []
        with translated("the opt-out list"):
            found = self.client.smismember(self.key, [MARKER, *entries])
        return self._read(found)

    def stage_contains(self, entries: Sequence[str]) -> Step[list[bool]]:
        if not entries:
            return Step.answered([])
        return Step.remote("the opt-out list", self.client,
                           [Call([self.key], [MARKER, *entries], command="SMISMEMBER")],
                           lambda replies: self._read(replies[0]))

    def _read(self, found: Sequence[Any]) -> list[bool]:
        """The answers for the entries, after the marker's (a lost list raises StateStoreError)."""
        self.presence.check(bool(found[0]))
        return [bool(n) for n in found[1:]]

    def entries(self) -> Iterator[str]:
        with translated("the opt-out list"):
            for member in self.client.sscan_iter(self.key, count=10_000):
                text = member.decode() if isinstance(member, bytes) else str(member)
                if text != MARKER:
                    yield text

    def size(self) -> int:
        with translated("the opt-out list"):
            pipe = self.client.pipeline(transaction=False)
            pipe.scard(self.key)
            pipe.sismember(self.key, MARKER)
            count, marked = pipe.execute()
            return int(count) - (1 if marked else 0)


class MemoryOptOutList:
    """The in-memory twin, for unit tests and single-process tools."""

    def __init__(self, entries: Iterable[str] = ()) -> None:
        self._entries = set(entries)
        if self._entries:
            self._entries.add(MARKER)
        self._lock = threading.Lock()
        self.presence = ListPresence()

    def add(self, entries: Sequence[str]) -> int:
        if not entries:
            return 0
        with self._lock:
            before = len(self._entries - {MARKER})
            self._entries.update(entries)
            self._entries.add(MARKER)
            return len(self._entries - {MARKER}) - before

    def remove(self, entries: Sequence[str]) -> int:
        with self._lock:
            before = len(self._entries)
            self._entries.difference_update(e for e in entries if e != MARKER)
            return before - len(self._entries)

    def contains(self, entries: Sequence[str]) -> list[bool]:
        if not entries:
            return []
        with self._lock:
            marked = MARKER in self._entries
            found = [entry in self._entries for entry in entries]
        self.presence.check(marked)
        return found

    def stage_contains(self, entries: Sequence[str]) -> Step[list[bool]]:
        return Step.local("the opt-out list", lambda: self.contains(entries))

    def entries(self) -> Iterator[str]:
        with self._lock:
            snapshot = [e for e in self._entries if e != MARKER]
        return iter(snapshot)

    def size(self) -> int:
        with self._lock:
            return len(self._entries) - (1 if MARKER in self._entries else 0)

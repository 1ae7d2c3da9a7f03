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
(no hash: it matches no entry), never removed (`suppress remove` of every entry leaves an empty
list, not a lost one) and written by one thing only: an import that reached the end of its file
(`complete`, or `rotate_key` after `--new-key`; an import holds it back meanwhile, `holding_marker`),
so that a lost list re-imported stays closed until it is whole; an import that finds its own
marker gone (`m:i:` and a token, written by BEGIN before its first entry, removed by its end; checked
by COMPLETE, SWAP and each chunk) was lost under, and stops without writing it (found by review: the
nightly import through a restart armed the entries after the loss alone; and the key's markers
could not tell, since another import under the key writes them again). A plain `add` never writes it, and
is refused (NotArmedError, nothing written) onto a list without it: a lost list and one never
written are the same absent set, and an `add` that wrote MARKER after a loss reopened the whole
fleet with the nearly empty list (found by review). A new deployment imports a file of only its
header first. Every lookup asks for it in the same SMISMEMBER; a replica that has seen it and then
finds it gone raises StateStoreError (nothing of the batch is sent, as when Redis does not answer)
until the list is imported again. A replica started after the loss has never seen it and cannot
tell a lost list from one never imported: as the throttle's loss detection, a live replica proves
the loss (README, "The opt-out list").

A wrong key fails closed too. Entries hashed under one key match nothing under another: a replica
started with another SUPPRESSION_KEY than the import's (a typo in a Secret, a rotation done on half
the fleet, the import Job on an old Secret) would answer "not on the list" for every customer. So a
store that knows its key (`key_check`, `OptOutHasher.key_check`: `k:` and the HMAC of KEY_CHECK, cut
like an entry; `Suppression` gives its store its own) writes two more members with every `add`: that
keyed marker, and the plain `KEYED` ("this list carries a keyed marker"). Every lookup asks for both
in the same SMISMEMBER as MARKER: `KEYED` present and this key's marker absent means the list was
written under another key, and the lookup raises StateStoreError (nothing of the batch is sent), from
the first lookup on: no "seen before" is needed. A list holds one keyed marker: `add` under another
key than the list's raises StateStoreError rather than mix two keys' entries (rotating is
`rotate_key`, after an import under the new key, `pisano-sms suppress import --new-key`, whose
writes carry `KEYED` without their keyed marker: a list that had none, lost or from before 0.3.0,
then fails closed under the old key rather than being read as unkeyed). A key's markers are
written by a script that checks and adds at once: `BEGIN` for an import, whose every chunk asks
again in its pipeline whether the list is still its key's, and `ADD`, each chunk of a plain `add`;
a writer that checked before a rotation's swap stops at its next chunk, instead of writing the old
key's marker back.

A list written before 0.3.0 has MARKER and no `KEYED`: it is used as it is (a lookup logs a warning
once per replica), since failing closed on it would stop every production fleet at the upgrade until
someone imports the list again, and the version it replaces failed open on a wrong key anyway. The
first `add` or `import` under this version writes the keyed marker and the check applies from then on.

The states of the set, for a replica and a writer on key K (`+` present, `-` absent):

    state                      MARKER KEYED k:<K>  a lookup answers                     a plain add
    never written, or lost       -      -     -    entries if it never saw MARKER, LOST  NotArmedError
                                                   (StateStoreError) if it did
    importing (held)             -      ±     ±    as above, but WrongKeyError when      NotArmedError
                                                   KEYED is there without k:<K>
    armed, keyed by K            +      +     +    entries                              adds
    armed, another key's         +      +     -    WrongKeyError                        WrongKeyError
    armed, previous version      +      -     -    entries (a warning once)             adds, keys it by K

    loss (flush, restart without data, failover, DEL)      any state -> never written / lost
    an import's first chunk (`holding_marker`; BEGIN)      its own marker `m:i:<token>` and this key's
                                                           markers in (a rotating import: KEYED alone)
    an import's chunks                                     entries in; MARKER never
    `complete` (end of file, even a file of only a header)  -> armed, keyed by K (another key's: refused),
                                                           its own marker removed
    `import --new-key`'s first write (BEGIN, rotating)      ROTATING in: every other write is refused
                                                           (RotatingError) until the swap or `abandon`
    `rotate_key` (end of `import --new-key`)               -> armed, keyed by K, other keyed markers gone,
                                                           ROTATING gone
    either, or a chunk, once the import's own marker is    refused (LOST_IMPORTING): the list lost
           gone (another import's markers do not count)    under the import stays unarmed
    `abandon` (an import stopped before its end)           its own marker removed
    `add` (ADD: the marker and the key checked, then the   armed only; MARKER never written
           entries added, at once)
    `remove`                                               entries only: the state is unchanged

`OptOutList` is the contract; `RedisOptOutList` and `MemoryOptOutList` (below, small enough to live
beside it) both pass tests/contract/test_suppression_contract.py.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol

import phonenumbers

from consumer.errors import InvalidEventError, StateStoreError
from consumer.ingest.phones import PhoneNormaliser, is_valid_e164, remembered
from consumer.state.redis import Call, Keys, translated
from consumer.state.trip import Step

log = logging.getLogger(__name__)

PHONE, EXTERNAL_ID = "p", "x"
CHUNK = 10_000  # members per command when adding or removing in bulk
# Members per ADD script (a plain `add`): a script holds Redis for its whole run, 7.4 ms for 10,000
# members on the local stack against 3.5 ms for a SADD of as many; 1,000 keep each under a millisecond.
ADD_CHUNK = 1_000
# A member of every list that was ever added to: its absence under a replica that saw it means the
# list was lost (module docstring). Not `p:`/`x:` and no hash, so no entry is ever equal to it.
MARKER = "m:list"
KEYED = "m:keyed"  # the list carries a keyed marker (`k:` + 32 hex): a list without it is from before 0.3.0
KEY_CHECK = "pisano-sms opt-out list key check"  # what the keyed marker is the HMAC of (under SUPPRESSION_KEY)
WRONG_KEY = ("the opt-out list in Redis was written under another SUPPRESSION_KEY than this one, so none of its "
             "entries would match: nothing is sent. Check SUPPRESSION_KEY (or SUPPRESSION_KEY_FILE) against the key "
             "the list was imported with, or, if the key was rotated, import the source list under the new key "
             "(`pisano-sms suppress import --new-key FILE`)")
WRONG_KEY_WRITE = ("the opt-out list in Redis was written under another SUPPRESSION_KEY than this one: nothing was "
                   "changed. Check SUPPRESSION_KEY (or SUPPRESSION_KEY_FILE) against the key the consumers use; to "
                   "rotate the key, import the whole source list under the new key with "
                   "`pisano-sms suppress import --new-key FILE`")
UNKEYED = ("the opt-out list was written before 0.3.0 and carries no key check: a SUPPRESSION_KEY other than the "
           "import's cannot be told from an empty list until the next `pisano-sms suppress import` or `add` "
           "writes one (README, \"The opt-out list\")")
# An import's own marker (`m:i:` and a random token: `_is_marker`, so no entry, never exported or
# removed by `remove`), written before its first entry and gone only with the list: its absence at
# a chunk or at the end is the list lost under this import. The key's markers cannot tell: any
# other import under the key writes them again (found by review: an import lost under, then a
# second import's claim, and the first one's `complete` armed the list with its tail alone).
SESSION_PREFIX = "m:i:"
# A rotation is under way (`import --new-key`, from its first write to its swap or `abandon`): any
# other write is refused meanwhile (found by review: a `suppress add` on the old Secret passed every
# check while the rotation ran, said "added", and the swap then dropped the old key: the entry
# matched nothing, and a customer who had just opted out was surveyed). A rotation killed outright
# leaves it: running the rotation again finishes it (ROTATING_WRITE says so).
ROTATING = "m:rotating"
ROTATING_WRITE = ("a SUPPRESSION_KEY rotation is under way (`pisano-sms suppress import --new-key`): written under "
                  "the old key now, this would match nothing once the rotation ends, so nothing was changed. Write "
                  "it under the new key once the rotation has ended; if no rotation is running any more (one was "
                  "killed), finish it by running `pisano-sms suppress import --new-key FILE` again")


def _claim_markers(mode: str, key_marker: str, *, refused: str, rotating: str) -> str:
    """Lua shared by the scripts below (the set is `list`): 'rotating' writes KEYED and ROTATING;
    any other `mode` returns `rotating` from the script while ROTATING is there; then 'check'
    returns `refused` when the list is another key's, else writes this key's markers (KEYED and
    `key_marker`); 'plain' writes nothing."""
    return f"""if {mode} == 'rotating' then
  redis.call('SADD', list, '{KEYED}', '{ROTATING}')
else
  if redis.call('SISMEMBER', list, '{ROTATING}') == 1 then return {rotating} end
  if {mode} == 'check' then
    if redis.call('SISMEMBER', list, '{KEYED}') == 1 and redis.call('SISMEMBER', list, {key_marker}) == 0 then
      return {refused}
    end
    redis.call('SADD', list, '{KEYED}', {key_marker})
  end
end"""

# An import's start, atomically (one key: one slot on a Redis Cluster; a check then a plain SADD
# let two imports under two keys both pass before either wrote): ARGV[1] its marker; ARGV[2]
# "check" (ARGV[3] this key's marker: refused, 0, onto another key's list, else this key's markers
# written too), "rotating" (KEYED and ROTATING written) or "plain"; -3 while a rotation runs.
BEGIN = f"""
local list = KEYS[1]
{_claim_markers('ARGV[2]', 'ARGV[3]', refused='0', rotating='-3')}
redis.call('SADD', list, ARGV[1])
return 1
"""
NOT_ARMED = ("the opt-out list has no marker: Redis lost it, or it was never imported; nothing was added. Import "
             "the whole list with `pisano-sms suppress import FILE` (a file of only the header line `phone` starts "
             "an empty list); `add` works again once that import has ended")
# A plain `add` (no import under way), one chunk, atomically: refused (-1) onto a list without
# MARKER, which it never writes (only a whole import does: `complete`, `rotate_key`); refused (-2)
# onto another key's list; refused (-3) while a rotation runs, unless it is the rotation's; else
# this key's markers claimed (ARGV[1] "check": ARGV[2] is the keyed marker; "rotating": KEYED and
# ROTATING; "plain": none) and the entries ARGV[3..] added (at most
# ADD_CHUNK: Lua's unpack takes about 8,000 values). A check, then a pipelined SADD, would let a
# loss between the two put entries into the lost set; nothing here writes onto one.
ADD = f"""
local list = KEYS[1]
if redis.call('SISMEMBER', list, '{MARKER}') == 0 then return -1 end
{_claim_markers('ARGV[1]', 'ARGV[2]', refused='-2', rotating='-3')}
return redis.call('SADD', list, unpack(ARGV, 3))
"""
LOST_IMPORTING = ("the opt-out list was lost from Redis while this import ran (a restart without its data, a flush "
                  "or a failover): what it had added before is gone, and the list was not armed (replicas that "
                  "saw it still send nothing); import the whole file again")
# The end of an import, atomically: -1 when this import's own marker (ARGV[1], "" when it wrote
# nothing) is gone (the list was lost under it: arming it would reopen the fleet with part of the
# file), 0 when ARGV[2] is "check" and the list is another key's (ARGV[3] this key's marker), -3
# while a rotation runs, else MARKER (and, checking, this key's markers) written and the import's
# own marker removed.
COMPLETE = f"""
local list = KEYS[1]
if ARGV[1] ~= '' and redis.call('SISMEMBER', list, ARGV[1]) == 0 then return -1 end
{_claim_markers('ARGV[2]', 'ARGV[3]', refused='0', rotating='-3')}
redis.call('SADD', list, '{MARKER}')
if ARGV[1] ~= '' then redis.call('SREM', list, ARGV[1]) end
return 1
"""
# The end of `import --new-key`: -1 when its own marker (ARGV[2], "" when it wrote nothing) is
# gone; else this key's markers (ARGV[1]) and MARKER written, the other keyed markers (ARGV[3..]),
# ROTATING and its own marker removed.
SWAP = (f"if ARGV[2] ~= '' and redis.call('SISMEMBER', KEYS[1], ARGV[2]) == 0 then return -1 end "
        f"redis.call('SADD', KEYS[1], '{MARKER}', '{KEYED}', ARGV[1]) "
        f"redis.call('SREM', KEYS[1], '{ROTATING}') "
        f"if #ARGV > 2 then redis.call('SREM', KEYS[1], unpack(ARGV, 3)) end "
        f"if ARGV[2] ~= '' then redis.call('SREM', KEYS[1], ARGV[2]) end return 1")
LOST = ("the opt-out list is gone from Redis (it was there: a restart without its data, a flush or a failover "
        "lost it); nothing is sent until it is imported again with `pisano-sms suppress import`")


class ListPresence:
    """Whether the list's marker was seen, per replica: its disappearance is a loss, not an empty list."""

    def __init__(self) -> None:
        self.seen = False
        self.warned_unkeyed = False

    def check(self, marked: bool, keyed: bool | None = None, key_matches: bool = False) -> None:
        """StateStoreError when the marker, once seen, is gone, or when the list was written under
        another key (`keyed` and not `key_matches`); `keyed` None: the store knows no key."""
        if marked:
            self.seen = True
        elif self.seen:
            log.error("%s", LOST)
            raise StateStoreError(LOST)
        if keyed is None or key_matches:
            return
        if keyed:
            log.error("%s", WRONG_KEY)
            raise WrongKeyError(WRONG_KEY)
        if marked and not self.warned_unkeyed:
            self.warned_unkeyed = True
            log.warning("%s", UNKEYED)


class WrongKeyError(StateStoreError):
    """The list was written under another SUPPRESSION_KEY than this store's (WRONG_KEY, WRONG_KEY_WRITE)."""


class RotatingError(WrongKeyError):
    """A write under the old key while a rotation runs (ROTATING_WRITE); nothing was written."""


class NotArmedError(StateStoreError):
    """A plain `add` onto a list without MARKER (lost, or never imported): only a whole import arms
    it (NOT_ARMED); nothing was written."""


def _is_marker(member: str) -> bool:
    """MARKER, KEYED or a keyed marker: members that are no entry (entries are `p:` and `x:`)."""
    return member.startswith(("m:", "k:"))


class OptOutList(Protocol):
    """The stored entries (already hashed: see `OptOutHasher`)."""

    def add(self, entries: Sequence[str]) -> int:
        """Add entries; how many were not there before (adding twice is harmless). Unless an import
        holds the marker (`holding_marker`), NotArmedError onto a list without MARKER, writing
        nothing: an add never arms a list (module docstring, the table)."""

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

    # The keyed marker of this store's key (`OptOutHasher.key_check`), None when it knows no key.
    key_check: str | None
    # While True (`suppress import --new-key`): writes neither check nor carry the keyed marker
    # (they carry KEYED: a list being rotated into is keyed, by no key until `rotate_key`).
    rotating: bool
    # While True (`suppress import`): writes go into a list without MARKER too (a lost one being
    # re-imported, a new one); `complete` (or `rotate_key`) writes MARKER once the whole file is in:
    # a lost list stays lost, failing closed, until then. While False, `add` needs MARKER there.
    holding_marker: bool

    def verify_key(self) -> None:
        """WrongKeyError when the list carries another key's marker: writing under this key would mix
        two keys' entries (`add` and `remove` ask it themselves; a no-op once it passed)."""

    def rotate_key(self) -> None:
        """Make this store's key the list's: its keyed marker replaces any other (after an import of
        the whole source list under it; replicas on the old key then fail closed)."""

    def complete(self) -> None:
        """The whole source list is in (after an import with `holding_marker`): write MARKER, and
        this key's markers unless rotating."""

    def abandon(self) -> None:
        """An import stopped before the end of its file: its own marker is removed (it never arms)."""


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

    @property
    def key_check(self) -> str:
        """The list's keyed marker under this key: a member no entry equals (module docstring)."""
        return self._entry("k", KEY_CHECK)

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
        self.store = store  # given this hasher's key check (the property below)
        # Recipients' phones are canonical in the mapping's phone_format: with e164_digits a phone
        # of digits only is E.164 without its `+`; with a national format it is read in the region.
        self.digits_are_e164 = digits_are_e164
        # The declarative mapper's `+` phones were proven valid E.164 when it wrote them
        # (`Phones.normalise`): checking each again here cost 1.5 µs per recipient for nothing. A
        # plug-in mapper's phones passed only the recipient check (any `+` and digits): checked.
        self.plus_is_valid = plus_is_valid
        self._entries: dict[str, str] = {}  # phone -> its entry (`phone_entry`); shared by the senders

    @property
    def store(self) -> OptOutList:
        return self._store

    @store.setter
    def store(self, store: OptOutList) -> None:
        # Whoever gives the store (app.py, a test swapping it in), its lookups check that the list
        # was written under this hasher's key: a store on another key would fail open (module docstring).
        store.key_check = self.hasher.key_check
        self._store = store

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
        InvalidEventError when it cannot be read back into E.164. A claim asks it twice for each
        phone, for the list and for the cooldown's key: the entries made last are kept, as the
        phone normaliser keeps its numbers (`remembered`)."""
        if type(phone) is not str:  # a str subclass could fake equality: made each time, never kept
            return self._phone_entry(phone)
        return remembered(self._entries, phone, self._phone_entry)

    def _phone_entry(self, phone: str) -> str:
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
    def __init__(self, client: Any, keys: Keys, *, key_check: str | None = None) -> None:
        self.client = client
        self.key = f"{{{keys.prefix}}}:optout"
        self.presence = ListPresence()
        self.key_check = key_check  # set by `Suppression` from its hasher when not given here
        # `suppress import --new-key`: add under a key the list does not carry yet, without its
        # keyed marker; `rotate_key` writes it once the whole file is in.
        self.rotating = False
        self.holding_marker = False  # `suppress import`: MARKER once the whole file is in (`complete`)
        self._key_written = False  # the list carries this key's marker (checked once per store)
        self._session: str | None = None  # this import's own marker once written (SESSION_PREFIX)
        self._lost_importing = False  # a chunk found the list lost under this import: it never arms it

    def add(self, entries: Sequence[str]) -> int:
        if not entries:
            return 0
        if not self.holding_marker:
            return self._add_armed(entries)  # ADD checks the marker, then the key, at once
        self.verify_key()
        return self._bulk("sadd", entries)

    def remove(self, entries: Sequence[str]) -> int:
        entries = [e for e in entries if not _is_marker(e)]
        if not entries:
            return 0
        self.verify_key()
        if not self.rotating:  # the rotation's own entry of the value would stay: the customer still out
            with translated("the opt-out list"):
                if self.client.sismember(self.key, ROTATING):
                    raise RotatingError(ROTATING_WRITE)
        return self._bulk("srem", entries)

    def verify_key(self) -> None:
        """StateStoreError when the list carries another key's marker (module docstring)."""
        if self.key_check is None or self.rotating or self._key_written:
            return
        with translated("the opt-out list"):
            keyed, ours = self.client.smismember(self.key, [KEYED, self.key_check])
        if keyed and not ours:
            raise WrongKeyError(WRONG_KEY_WRITE)
        self._key_written = bool(ours)

    def _checking(self) -> bool:
        return self.key_check is not None and not self.rotating

    def _mode(self) -> str:
        """How an import's start and end treat the key (BEGIN, COMPLETE): "check" writes this key's
        markers unless the list is another key's, "rotating" KEYED alone, "plain" (no key) none."""
        return "plain" if self.key_check is None else "rotating" if self.rotating else "check"

    def _begin(self) -> None:
        """An import's first write, before any entry: its own marker, and the key's markers (BEGIN).
        An import into a list lost before this runs whole into the emptied set: it may arm it."""
        session = SESSION_PREFIX + secrets.token_hex(8)
        mode = self._mode()
        with translated("the opt-out list"):
            began = int(self.client.eval(BEGIN, 1, self.key, session, mode, self.key_check or ""))
        if began == -3:
            raise RotatingError(ROTATING_WRITE)
        if not began:
            self._key_written = False
            raise WrongKeyError(WRONG_KEY_WRITE)
        self._session, self._key_written = session, mode == "check"

    def abandon(self) -> None:
        """An import that stopped before the end of its file: its own marker removed (best effort:
        one left by a killed import is only counted by `size` as an entry)."""
        session, self._session = self._session, None
        if session is not None:
            with translated("the opt-out list"):
                # A rotation stopped before its swap: the old key is the list's again (ROTATING).
                self.client.srem(self.key, session, *([ROTATING] if self.rotating else []))

    def _add_armed(self, entries: Sequence[str]) -> int:
        """A plain `add` (no import under way): each chunk by ADD, which refuses a list without
        MARKER and never writes it (found by review: `add` wrote MARKER, and a routine add after a
        loss re-armed the nearly empty list: every replica sent again)."""
        mode = "check" if self._checking() else "rotating" if self.key_check is not None and self.rotating \
            else "plain"
        added = 0
        for start in range(0, len(entries), ADD_CHUNK):
            with translated("the opt-out list"):
                reply = int(self.client.eval(ADD, 1, self.key, mode, self.key_check or "",
                                             *entries[start:start + ADD_CHUNK]))
            if reply == -1:
                raise NotArmedError(NOT_ARMED)
            if reply == -2:
                self._key_written = False
                raise WrongKeyError(WRONG_KEY_WRITE)
            if reply == -3:
                raise RotatingError(ROTATING_WRITE)
            self._key_written = mode == "check"
            added += reply
        return added

    def _bulk(self, command: str, entries: Sequence[str]) -> int:
        adding = command == "sadd"  # an import's chunks (a plain add is `_add_armed`)
        if adding and self._lost_importing:
            raise StateStoreError(LOST_IMPORTING)
        if adding and self._session is None:
            self._begin()
        # Each chunk of an import asks again, in its own pipeline, whether its own marker is still
        # there (else the list was lost under it), whether the list is still this key's (a
        # rotation may have swapped it since) and whether a rotation began since (ROTATING): one
        # more command per CHUNK entries. (A chunk in the same moment as a rotation's first write
        # is in, under the old key; the import then stops at its next chunk or its end.)
        checking = adding and self._checking()
        with translated("the opt-out list"):
            pipe = self.client.pipeline(transaction=False)
            if adding:
                pipe.smismember(self.key, [self._session, KEYED, self.key_check or KEYED, ROTATING])
            for start in range(0, len(entries), CHUNK):
                getattr(pipe, command)(self.key, *entries[start:start + CHUNK])
            replies = pipe.execute()
        if adding:
            (own, keyed, ours, rotation), replies = replies[0], replies[1:]
            if not own:
                # Lost under this import since it began (found by review: it claimed the list again,
                # or another import's claim was taken for its own, and its `complete` armed the
                # entries after the loss alone). What this chunk added is in, unarmed.
                self._key_written = False
                self._lost_importing = True
                raise StateStoreError(LOST_IMPORTING)
            if rotation and not self.rotating:
                raise RotatingError(ROTATING_WRITE)
            if checking and not ours:
                self._key_written = False
                if keyed:  # rotated away under this writer: its chunk is in, unmatchable, and it stops
                    raise WrongKeyError(WRONG_KEY_WRITE)
                self._lost_importing = True  # its key's markers gone, not by a loss: stop, unarmed
                raise StateStoreError(LOST_IMPORTING)
        return sum(int(n) for n in replies)

    def rotate_key(self) -> None:
        if self.key_check is None:
            raise ValueError("rotate_key needs the store's key_check")
        if self._lost_importing:
            raise StateStoreError(LOST_IMPORTING)
        with translated("the opt-out list"):
            others = [m for m in (_text(m) for m in self.client.sscan_iter(self.key, match="k:*", count=10_000))
                      if m != self.key_check]
            swapped = int(self.client.eval(SWAP, 1, self.key, self.key_check, self._session or "", *others))
        if swapped < 0:  # lost under the import: MARKER not written
            self._lost_importing = True
            raise StateStoreError(LOST_IMPORTING)
        self.rotating, self.holding_marker, self._key_written, self._session = False, False, True, None

    def complete(self) -> None:
        """MARKER (and this key's markers) once the whole file is in, unless the list was lost under
        the import (its own marker, written at its start, gone: StateStoreError, nothing written)."""
        if self._lost_importing:
            raise StateStoreError(LOST_IMPORTING)
        mode = self._mode()
        with translated("the opt-out list"):
            done = int(self.client.eval(COMPLETE, 1, self.key, self._session or "", mode, self.key_check or ""))
        if done == -3:
            raise RotatingError(ROTATING_WRITE)
        if done < 0:
            self._key_written = False
            self._lost_importing = True
            raise StateStoreError(LOST_IMPORTING)
        if done == 0:
            self._key_written = False
            raise WrongKeyError(WRONG_KEY_WRITE)
        self.holding_marker, self._key_written, self._session = False, mode == "check", None

    def _asked(self, entries: Sequence[str]) -> list[str]:
        if self.key_check is None:
            return [MARKER, *entries]
        return [MARKER, KEYED, self.key_check, *entries]

    def contains(self, entries: Sequence[str]) -> list[bool]:
        if not entries:
            return []
        with translated("the opt-out list"):
            found = self.client.smismember(self.key, self._asked(entries))
        return self._read(found)

    def stage_contains(self, entries: Sequence[str]) -> Step[list[bool]]:
        if not entries:
            return Step.answered([])
        return Step.remote("the opt-out list", self.client,
                           [Call([self.key], self._asked(entries), command="SMISMEMBER")],
                           lambda replies: self._read(replies[0]))

    def _read(self, found: Sequence[Any]) -> list[bool]:
        """The answers for the entries, after the markers' (a lost list, or one written under
        another key, raises StateStoreError)."""
        if self.key_check is None:
            self.presence.check(bool(found[0]))
            return [bool(n) for n in found[1:]]
        self.presence.check(bool(found[0]), bool(found[1]), bool(found[2]))
        return [bool(n) for n in found[3:]]

    def entries(self) -> Iterator[str]:
        with translated("the opt-out list"):
            for member in self.client.sscan_iter(self.key, count=10_000):
                text = _text(member)
                if not _is_marker(text):
                    yield text

    def size(self) -> int:
        with translated("the opt-out list"):
            pipe = self.client.pipeline(transaction=False)
            pipe.scard(self.key)
            pipe.smismember(self.key, [MARKER, KEYED, self._session or MARKER, ROTATING])
            count, (marked, keyed, own, rotation) = pipe.execute()
            # A list with KEYED holds one keyed marker (`add` refuses another key, `rotate_key` swaps);
            # an import under way holds its own marker (another import's is counted: `abandon`).
            return int(count) - (1 if marked else 0) - (2 if keyed else 0) - (1 if own and self._session else 0) \
                - (1 if rotation else 0)


def _text(member: Any) -> str:
    return member.decode() if isinstance(member, bytes) else str(member)


class MemoryOptOutList:
    """The in-memory twin, for unit tests and single-process tools; `replica()` is another
    process's view of the same list (its own key and presence)."""

    def __init__(self, entries: Iterable[str] = (), *, key_check: str | None = None) -> None:
        # A list as an import of `entries` (none: an empty file) left it: armed (MARKER), and keyed
        # when a key is given, else as the version before 0.3.0 left it. A lost or never-written
        # list is an empty set: `_entries.clear()`.
        self._entries = {*entries, MARKER}
        if key_check is not None:
            self._entries.update((KEYED, key_check))
        self._lock = threading.Lock()
        self.presence = ListPresence()
        self.key_check = key_check
        self.rotating = False
        self.holding_marker = False
        self._session: str | None = None  # as RedisOptOutList's: this import's own marker once written
        self._lost_importing = False  # as RedisOptOutList's

    def replica(self, key_check: str | None = None) -> MemoryOptOutList:
        view = MemoryOptOutList(key_check=key_check)
        view._entries, view._lock = self._entries, self._lock
        return view

    def verify_key(self) -> None:
        if self.key_check is not None and not self.rotating and KEYED in self._entries \
                and self.key_check not in self._entries:
            raise WrongKeyError(WRONG_KEY_WRITE)

    def _count(self) -> int:
        # As Redis's `size`: a list with KEYED holds one keyed marker; an import its own marker.
        own = self._session is not None and self._session in self._entries
        return len(self._entries) - (MARKER in self._entries) - 2 * (KEYED in self._entries) - own \
            - (ROTATING in self._entries)

    def _check_not_rotating(self) -> None:
        # As RedisOptOutList's scripts and chunks: only the rotation writes while it runs.
        if not self.rotating and ROTATING in self._entries:
            raise RotatingError(ROTATING_WRITE)

    def add(self, entries: Sequence[str]) -> int:
        if not entries:
            return 0
        with self._lock:
            if not self.holding_marker and MARKER not in self._entries:
                raise NotArmedError(NOT_ARMED)  # as RedisOptOutList's ADD: nothing written
            if self.holding_marker:
                self._check_not_lost()
            self._check_not_rotating()
            self.verify_key()
            if self.holding_marker and self._session is None:  # as RedisOptOutList's BEGIN
                self._mark()
                self._session = SESSION_PREFIX + secrets.token_hex(8)
                self._entries.add(self._session)
            before = self._count()
            self._entries.update(entries)
            if not self.holding_marker:
                self._mark()
            return self._count() - before

    def _mark(self) -> None:
        # As RedisOptOutList's: an add writes this key's markers, never MARKER.
        if self.key_check is not None:
            self._entries.add(KEYED)
            self._entries.add(ROTATING if self.rotating else self.key_check)

    def _check_not_lost(self) -> None:
        # As RedisOptOutList's import: its own marker, written at its start, gone is a loss under it.
        if self._lost_importing or (self._session is not None and self._session not in self._entries):
            self._lost_importing = True
            raise StateStoreError(LOST_IMPORTING)

    def abandon(self) -> None:
        with self._lock:
            if self._session is not None:
                self._entries.discard(self._session)
                if self.rotating:  # as RedisOptOutList's: the old key is the list's again
                    self._entries.discard(ROTATING)
            self._session = None

    def complete(self) -> None:
        with self._lock:
            self._check_not_lost()
            self._check_not_rotating()
            self.verify_key()
            self._mark()
            self._entries.add(MARKER)
            if self._session is not None:
                self._entries.discard(self._session)
            self._session = None
        self.holding_marker = False

    def remove(self, entries: Sequence[str]) -> int:
        entries = [e for e in entries if not _is_marker(e)]
        if not entries:
            return 0
        with self._lock:
            self.verify_key()
            self._check_not_rotating()
            before = len(self._entries)
            self._entries.difference_update(entries)
            return before - len(self._entries)

    def rotate_key(self) -> None:
        if self.key_check is None:
            raise ValueError("rotate_key needs the store's key_check")
        with self._lock:
            self._check_not_lost()
            self._entries.difference_update([e for e in self._entries if e.startswith("k:")] + [ROTATING])
            self._entries.update((MARKER, KEYED, self.key_check))
            if self._session is not None:
                self._entries.discard(self._session)
            self._session = None
        self.rotating = self.holding_marker = False

    def contains(self, entries: Sequence[str]) -> list[bool]:
        if not entries:
            return []
        with self._lock:
            marked = MARKER in self._entries
            keyed = None if self.key_check is None else KEYED in self._entries
            ours = self.key_check in self._entries
            found = [entry in self._entries for entry in entries]
        self.presence.check(marked, keyed, ours)
        return found

    def stage_contains(self, entries: Sequence[str]) -> Step[list[bool]]:
        return Step.local("the opt-out list", lambda: self.contains(entries))

    def entries(self) -> Iterator[str]:
        with self._lock:
            snapshot = [e for e in self._entries if not _is_marker(e)]
        return iter(snapshot)

    def size(self) -> int:
        with self._lock:
            return self._count()

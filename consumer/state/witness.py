"""The consumer group's commits as a witness of the dedup and contact state (README, "When Redis
loses its data").

The origins (origins.py) show a running replica what Redis loses while it watches. A loss while no
replica ran (the whole fleet stopped, and Redis restarted without its data, or from an old
snapshot) leaves origins that a starting replica sees for the first time, with nothing to compare
them with. Kafka kept something from before: every commit of the group carries, as its offset
metadata, a *stamp* of the state its replica last saw whole: per state, when it saw it, a digest of
the buckets' origins, two bytes of each, and the sum of the check counts it knows Redis held.

A replica reads its group's stamps before it consumes (`CommittedStamps`), and its origin watch
compares them with what its first complete check reads (`judge`): origins that are not the stamp's
prove that the state was lost, or replaced (a new key prefix), since that commit; counts lower than
the stamp's, that Redis went back to an older state. A stamp older than the time a state's marks
matter (DEDUP_HORIZON_S, the longest contact cooldown) is passed over: what was lost then no longer
counted; so is one dated more than AHEAD_S after now. Until the watch has compared, each commit
carries the partition's stamp as it was read, so a replica that stops before its first check leaves
the evidence for the next.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

log = logging.getLogger(__name__)

PREFIX = "pisano-sms/1"
# Kafka refuses a commit whose metadata is longer than the broker's offset.metadata.max.bytes
# (4096 by default); a stamp of both states is about 600 characters.
MAX_STAMP_CHARS = 1024
# Each bucket's origin in two bytes: the count of buckets lost is short by one once in 65,536 buckets
# (one byte undercounted a loss of all 64 once in four).
BUCKET_CHARS = 4
# A stamp dated later than this after now witnesses nothing: sorted after every other, it would
# decide every start's verdict (another tool's metadata in this form, a replica's clock set years
# ahead), and a date past time_t cannot be said. Writers' clocks minutes apart are well within it.
AHEAD_S = 86_400.0


@dataclass(frozen=True)
class StateStamp:
    """One state as a replica last saw it whole."""

    at: int  # when (epoch seconds): the oldest of its buckets' last reads
    digest: str  # 12 hex characters over every bucket's origin, in bucket order
    buckets: str  # BUCKET_CHARS hex characters per bucket's origin: which ones changed (a collision once in 65,536)
    checks: int | None  # the sum of the counts Redis surely held (OriginWatch's baselines); None: unknown

    def text(self) -> str:
        return f"{self.at}.{self.digest}.{self.buckets}.{'-' if self.checks is None else self.checks}"

    @classmethod
    def parse(cls, text: str) -> StateStamp | None:
        parts = text.split(".")
        if len(parts) != 4:
            return None
        at, digest, buckets, checks = parts
        if not (_digits(at) and len(digest) == 12 and _hex(digest) and buckets and len(buckets) % BUCKET_CHARS == 0
                and _hex(buckets) and (checks == "-" or _digits(checks))):
            return None
        return cls(int(at), digest, buckets, None if checks == "-" else int(checks))


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 20


def _hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


def stamp_of(at: int, origins: Sequence[str], baselines: Sequence[int | None]) -> StateStamp:
    """The stamp of a state whose buckets' origins (in bucket order) were seen whole."""
    digest = hashlib.blake2b("\n".join(origins).encode(), digest_size=6).hexdigest()
    buckets = "".join(hashlib.blake2b(origin.encode(), digest_size=BUCKET_CHARS // 2).hexdigest() for origin in origins)
    checks = None if any(b is None for b in baselines) else sum(b for b in baselines if b is not None)
    return StateStamp(at, digest, buckets, checks)


def stamp_text(states: Mapping[str, StateStamp]) -> str:
    return " ".join([PREFIX, *(f"{name}={stamp.text()}" for name, stamp in sorted(states.items()))])


def parse_stamp(metadata: str | None) -> dict[str, StateStamp]:
    """The states a commit's metadata stamps; none for another tool's metadata or a damaged one."""
    if not metadata or len(metadata) > MAX_STAMP_CHARS or not metadata.startswith(PREFIX + " "):
        return {}
    states = {}
    for part in metadata[len(PREFIX) + 1:].split(" "):
        name, _, text = part.partition("=")
        stamp = StateStamp.parse(text)
        if stamp is not None:
            states[name] = stamp
    return states


@dataclass(frozen=True)
class Verdict:
    """What the stamps prove of one state: buckets lost since `lost_since` (at least one when the
    digest differs; the bytes kept per bucket may undercount by a collision), or Redis gone back to
    before `rolled_back_before`."""

    lost: int = 0
    lost_since: int = 0
    rolled_back_before: int | None = None


def judge(stamps: Iterable[StateStamp], origins: Sequence[str], checks: Sequence[int] | None, now: float,
          keeps_s: float, said: Collection[int] = ()) -> Verdict:
    """Compare the stamps of one state with a check that read every bucket (`origins`, `checks`:
    this check's, its own count included; None: origins only read, no rollback judged). `said`:
    the buckets (indexes) whose loss this replica said itself since it started, not counted again."""
    current = stamp_of(0, origins, [None] * len(origins))
    verdict = Verdict()
    for stamp in sorted((s for s in stamps if -AHEAD_S <= now - s.at <= keeps_s), key=lambda s: s.at):
        found = _compare(stamp, current, None if checks is None else sum(checks), len(origins), said)
        if found is None:  # the state as a later commit saw it: what was lost before, that replica saw
            verdict = Verdict()
        elif isinstance(found, int):
            verdict = replace(verdict, lost=max(verdict.lost, found), lost_since=stamp.at)
        else:
            verdict = replace(verdict, rolled_back_before=stamp.at)
    return verdict


ROLLED_BACK = "rolled back"


def _compare(stamp: StateStamp, current: StateStamp, checks: int | None, buckets: int,
             said: Collection[int] = ()) -> int | str | None:
    """The buckets lost since the stamp, ROLLED_BACK, or None when the state is the stamp's (but
    for buckets whose loss was said already)."""
    if stamp.digest != current.digest:
        if len(stamp.buckets) != len(current.buckets):
            return buckets  # another bucket count: another state altogether
        changed = [n for n in range(len(stamp.buckets) // BUCKET_CHARS)
                    if stamp.buckets[BUCKET_CHARS * n:BUCKET_CHARS * (n + 1)]
                    != current.buckets[BUCKET_CHARS * n:BUCKET_CHARS * (n + 1)]]
        unsaid = [n for n in changed if n not in said]
        if changed and not unsaid:
            return None  # (their counts began anew: no sum to compare)
        return max(1, len(unsaid))  # none changed: a collision of the bytes kept per bucket
    # Each count is at least its baseline plus this check's own, unless Redis went back: a sum
    # below that proves it (the baseline is the check before the last, which losing the last
    # second of an AOF does not take back; see origins.py).
    if stamp.checks is not None and checks is not None and checks < stamp.checks + buckets:
        return ROLLED_BACK
    return None


def read_stamps(committed: Iterable[tuple[str, int, str | None]], kept: str | None = None
                ) -> dict[str, list[StateStamp]]:
    """Per state, the stamps of the group's commits (topic, partition, metadata) and the one kept in
    Redis, in the order they were made."""
    found: dict[str, set[StateStamp]] = {}
    for metadata in [*(metadata for _, _, metadata in committed), kept]:
        for name, stamp in parse_stamp(metadata).items():
            found.setdefault(name, set()).add(stamp)
    return {name: sorted(stamps, key=lambda s: s.at) for name, stamps in found.items()}


class Witnessed(Protocol):
    """What the commits need of the origin watch (origins.OriginWatch)."""

    @property
    def stamp(self) -> str | None: ...

    def witness(self, stamps: Mapping[str, Sequence[StateStamp]]) -> None: ...


class CommittedStamps:
    """The stamps the group's commits held when this replica started, and the metadata each of
    its commits carries."""

    def __init__(self, watch: Witnessed) -> None:
        self.watch = watch
        self._read: dict[tuple[str, int], str] = {}
        # The broker refused a commit for its metadata's size: commits carry none from then on.
        self.refused = False

    def read(self, committed: Iterable[tuple[str, int, str | None]]) -> None:
        """The committed (topic, partition, metadata) of the group, read before consuming."""
        committed = list(committed)
        self._read = {(topic, partition): metadata for topic, partition, metadata in committed if metadata}
        self.watch.witness(read_stamps(committed))

    def unread(self, why: str) -> None:
        log.warning("could not read the consumer group's committed offsets (%s): Redis losing the dedup or contact "
                    "state while no replica ran goes unsaid this time (README, \"When Redis loses its data\")", why,
                    extra={"reason": "redis_state_unchecked"})
        self.watch.witness({})

    def metadata(self, tp: tuple[str, int]) -> str | None:
        if self.refused:
            return None
        stamp = self.watch.stamp
        return stamp if stamp is not None else self._read.get(tp)

    def refuse(self) -> None:
        if not self.refused:
            log.warning("Kafka refused a commit's metadata as too large: commits carry no stamp of the Redis state "
                        "from now on, so a loss of it while no replica runs goes unsaid; raise the brokers' "
                        "offset.metadata.max.bytes to at least %d", MAX_STAMP_CHARS,
                        extra={"reason": "redis_state_unchecked"})
        self.refused = True

"""One `replay` at a time per dead-letter topic and group (found by review: two runs of the same
command at once each read from the group's committed position and re-published the same
records; the consumers' dedup absorbed them, but an SRE should not be able to do it by accident).

The lock is a Redis key (the fleet's REDIS_URL and REDIS_KEY_PREFIX) naming its holder (user, host,
pid, start time, a nonce), written with SET NX and a TTL of LOCK_TTL_MS, renewed every
RENEW_EVERY_S by a thread of the holder while it runs, and deleted at its end only by the holder
(compare and delete). A holder that dies without releasing it (SIGKILL, its machine lost) leaves it
to lapse LOCK_TTL_MS after its last renewal. A second run refuses to start, naming the holder;
`--force` takes the lock over (after the SRE made sure that holder is gone), and the holder, if it
still runs, finds at its next checkpoint that the lock is no longer its own and stops there: each
checkpoint asks the store (one GET), not only what the renewal thread last found (every 10 s).
The holder also counts its lease itself, from the sending of its last renewal that succeeded: once
less than LEASE_MARGIN of it is left (a renewal hanging, Redis away, the process suspended), the
lock is lost at the next checkpoint even if the store cannot be asked, before it lapses for others.

The renewal is a long-lived thread (consumer/operations/threads.py `long_lived`): what ends it
that is not an `Exception` (a library's sys.exit, a Redis client's own BaseException) is this
run's loss of the lock, said at its next checkpoint with the exception and what to do, before the
lease lapses for the others (not a bare traceback, or nothing at all for a SystemExit, and 20 s
more of a run on a lease nobody renews).

Without Redis (unreachable, or no permission) the replay runs without the lock and says so: the
lock guards against an accident, the consumers' dedup is what keeps a record from being sent twice.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from consumer.errors import PisanoSmsError
from consumer.operations.logs import redact_text
from consumer.operations.threads import LongLivedThread, long_lived
from consumer.sre.record_text import shown_id

LOCK_TTL_MS = 30_000
RENEW_EVERY_S = 10.0
# A run stops once less than this share of its lease is left unrenewed: a checkpoint comes every
# 2 s (replay.py), so the run stops before the lock lapses and another run may take it.
LEASE_MARGIN = 1 / 3
# After a renewal that failed (Redis away), the next one is tried this soon, not RENEW_EVERY_S later.
RETRY_EVERY_S = 1.0

_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


class ReplayLocked(PisanoSmsError):
    """Another replay of the same topic and group holds the lock; the message names it and says what to do."""


class LockStore(Protocol):
    def take(self, key: str, value: str, ttl_ms: int, force: bool) -> tuple[str | None, int]:
        """Set `key` to `value` unless another value holds it (always with `force`); the value that
        held it before (None if none) and its time to live in ms."""

    def renew(self, key: str, value: str, ttl_ms: int) -> bool:
        """Extend `key` if `value` still holds it."""

    def release(self, key: str, value: str) -> None:
        """Delete `key` if `value` still holds it."""

    def holds(self, key: str, value: str) -> bool:
        """Whether `value` holds `key` now."""


class RedisLockStore:
    def __init__(self, client: Any) -> None:
        self.client = client

    def take(self, key: str, value: str, ttl_ms: int, force: bool) -> tuple[str | None, int]:
        if force:
            before = self.client.set(key, value, px=ttl_ms, get=True)
            return _text(before), 0
        if self.client.set(key, value, px=ttl_ms, nx=True):
            return None, 0
        held, ttl = self.client.get(key), self.client.pttl(key)
        if held is None:  # lapsed in between: try once more
            if self.client.set(key, value, px=ttl_ms, nx=True):
                return None, 0
            held, ttl = self.client.get(key), self.client.pttl(key)
        return _text(held) or "?", int(ttl)

    def renew(self, key: str, value: str, ttl_ms: int) -> bool:
        return bool(self.client.eval(_RENEW, 1, key, value, ttl_ms))

    def release(self, key: str, value: str) -> None:
        self.client.eval(_RELEASE, 1, key, value)

    def holds(self, key: str, value: str) -> bool:
        return _text(self.client.get(key)) == value


class MemoryLockStore:
    """For tests: one process's locks, with their expiry."""

    def __init__(self) -> None:
        self.held: dict[str, tuple[str, float]] = {}

    def _live(self, key: str) -> tuple[str, float] | None:
        held = self.held.get(key)
        if held is not None and held[1] <= time.monotonic():
            del self.held[key]
            return None
        return held

    def take(self, key: str, value: str, ttl_ms: int, force: bool) -> tuple[str | None, int]:
        held = self._live(key)
        if held is not None and not force:
            return held[0], int((held[1] - time.monotonic()) * 1000)
        self.held[key] = (value, time.monotonic() + ttl_ms / 1000)
        return (held[0] if held else None), 0

    def renew(self, key: str, value: str, ttl_ms: int) -> bool:
        held = self._live(key)
        if held is None or held[0] != value:
            return False
        self.held[key] = (value, time.monotonic() + ttl_ms / 1000)
        return True

    def release(self, key: str, value: str) -> None:
        held = self._live(key)
        if held is not None and held[0] == value:
            del self.held[key]

    def holds(self, key: str, value: str) -> bool:
        held = self._live(key)
        return held is not None and held[0] == value


def _text(raw: Any) -> str | None:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw


def lock_key(prefix: str, source_topic: str, group: str) -> str:
    return f"{{{prefix}}}:replay-lock:{source_topic}:{group}"


def describe_holder(value: str) -> str:
    """Who holds the lock, from its value (written by `holder_value`; anything else shown escaped)."""
    try:
        holder = json.loads(value)
        return (f"pid {int(holder['pid'])} on {shown_id(str(holder['host']), 80)} (user "
                f"{shown_id(str(holder['user']), 40)}), started {shown_id(str(holder['started']), 40)}")
    except (ValueError, KeyError, TypeError):
        return f"an unknown holder ({shown_id(value, 80)})"


def holder_value() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid()) if hasattr(os, "getuid") else "?"
    return json.dumps({"user": user, "host": socket.gethostname(), "pid": os.getpid(),
                       "started": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
                       "nonce": uuid.uuid4().hex}, sort_keys=True)


@dataclass
class ReplayLock:
    """The lock of one replay run: `acquire`, then `lost()` at each checkpoint, then `release`."""

    store: LockStore
    key: str
    what: str  # "<topic> with group <group>", for the messages
    ttl_ms: int = LOCK_TTL_MS
    renew_every_s: float = RENEW_EVERY_S

    def __post_init__(self) -> None:
        self.value = holder_value()
        self._stop = threading.Event()
        self._thread: LongLivedThread | None = None
        self._lost: str | None = None
        # Until when (monotonic) the lock is ours for sure: the sending of the last take or
        # renewal that succeeded, plus the TTL (the store set it no sooner).
        self._lease_until = time.monotonic()

    def acquire(self, force: bool = False) -> str | None:
        """Take the lock or raise ReplayLocked; with `force`, who held it (a warning to print), if anyone."""
        sent = time.monotonic()
        before, ttl_ms = self.store.take(self.key, self.value, self.ttl_ms, force)
        if before is not None and not force:
            raise ReplayLocked(
                f"another replay of {self.what} is running: {describe_holder(before)}; its lock lapses "
                f"{max(ttl_ms, 0) // 1000 + 1} s from now unless that run renews it (every "
                f"{self.renew_every_s:.0f} s while it runs). Two at once would re-publish the same records. Wait "
                f"for it to finish (its summary says what it did); if it is gone (killed with SIGKILL, its machine "
                f"lost), the lock lapses {self.ttl_ms // 1000} s after its last renewal; once you made sure it no "
                "longer runs, you may also run again with --force")
        self._lease_until = sent + self.ttl_ms / 1000
        self._thread = long_lived(self._renew, name="replay-lock", role="other")
        self._thread.when_ended(self._renewal_ended)
        self._thread.start()
        if before is not None and before != self.value:
            return (f"--force: took the replay lock of {self.what} over from {describe_holder(before)}; if that run "
                    "still runs, it stops at its next checkpoint")
        return None

    def _renew(self) -> None:
        wait = self.renew_every_s
        while not self._stop.wait(wait):
            sent = time.monotonic()
            try:
                if not self.store.renew(self.key, self.value, self.ttl_ms):
                    self._lost = "another run took it over (--force), or it lapsed"
                    return
                self._lease_until, wait = sent + self.ttl_ms / 1000, self.renew_every_s
            except Exception as exc:  # Redis failing: try again soon, until the lease is gone
                if time.monotonic() >= self._lease_until:
                    self._lost = f"it could not be renewed for {self.ttl_ms // 1000} s ({type(exc).__name__})"
                    return
                wait = min(self.renew_every_s, RETRY_EVERY_S)

    def _renewal_ended(self, thread: LongLivedThread, exc: BaseException) -> None:
        """The renewal thread ended by what is not an Exception: nothing renews the lease now."""
        text = shown_id(redact_text(str(exc)), 200)
        kind = f"{type(exc).__name__}: {text}" if str(exc) else type(exc).__name__
        self._lost = (f"its renewal thread ended by {kind}, so nothing renews the lock before it lapses; this run "
                      "releases it: run the same command again to resume, and report this line if it comes back")

    def lost(self) -> str | None:
        """Why this run no longer holds the lock, or None while it does: at each checkpoint. Lost
        when the renewal thread found so, when less than LEASE_MARGIN of the lease is left (a
        renewal hanging or failing: the lock lapses soon for the others), or when the store says
        another run holds it (--force); the store being away leaves the lease to decide."""
        if self._lost is not None:
            return self._lost
        left = self._lease_until - time.monotonic()
        if left <= self.ttl_ms / 1000 * LEASE_MARGIN:
            self._lost = (f"it was not renewed for {self.ttl_ms / 1000 - max(left, 0):.0f} s: it lapses, or lapsed, "
                          "for the other runs")
            return self._lost
        try:
            holds = self.store.holds(self.key, self.value)
        except Exception:  # the store away: the lease, counted above, decides
            return None
        if not holds:
            self._lost = "another run took it over (--force), or it lapsed"
        return self._lost

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        # Also after lost(): a run that stopped because its lease ran short may still hold the
        # lock (compare and delete: another run's is never touched), and the next run need not
        # wait for it to lapse.
        with contextlib.suppress(Exception):  # it lapses by itself after its TTL
            self.store.release(self.key, self.value)

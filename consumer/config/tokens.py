"""Where a destination's Pisano token comes from, and how a rotated token takes effect.

Three sources, one per destination:

* `StaticToken`: PISANO_API_TOKEN (or a destination's `api_token`); fixed for the process's life.
* a token file (PISANO_API_TOKEN_FILE, a destination's `api_token_file`): a Kubernetes Secret
  mounted as a volume is updated in place, by swapping the `..data` symlink to a new directory,
  so the file is watched: `os.stat` follows the symlinks, and a new device, inode, size or mtime
  means the file is read again;
* a token provider (PISANO_TOKEN_PROVIDER): a company's own secret source, a callable taking
  the destination's name and returning its token, named as `module:callable` or by an entry
  point of the group `pisano_sms.token_providers`.

The last two are refreshed by a daemon thread every PISANO_TOKEN_REFRESH_MS, never on a request's
path: a slow provider must not make a request late for its throttle slot. A request reads the
current token once, when it is built (`current()` is an attribute read), so a request in flight
keeps the token it left with and the next one carries the new one: no request fails because of a
rotation. A new token that is unreadable or malformed (the checks of `secrets.check_token`), or
a provider that raises, keeps the last good token and logs a warning saying what to fix, once
per distinct problem.

The throttle and circuit state stay with the destination across a rotation:
`consumer.state.accounts` keys them by the token the destination first had, not the current one.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Protocol

from consumer.config.secrets import MAX_SECRET_FILE_BYTES, check_token
from consumer.errors import ConfigError
from consumer.operations.threads import LongLivedThread, long_lived

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "pisano_sms.token_providers"
TokenProvider = Callable[[str], str]


class TokenSource(Protocol):
    def current(self) -> str:
        """The token for the next request."""

    def refresh(self) -> bool:
        """Read the source again now; True when the token changed."""

    def close(self) -> None:
        """Stop watching (nothing to do for a fixed token)."""


class StaticToken:
    def __init__(self, token: str) -> None:
        self._token = token

    def current(self) -> str:
        return self._token

    def refresh(self) -> bool:
        return False

    def close(self) -> None:
        pass


class RefreshingToken:
    """A token fetched again every `interval_s` by a daemon thread (see the module docstring).

    `fetch()` returns the raw new token, or None when the source has not changed; it may raise
    (OSError, a provider's own error): the last good token stays."""

    def __init__(self, destination: str, initial: str, fetch: Callable[[], str | None], source: str,
                 interval_s: float) -> None:
        self.destination = destination
        self.source = source  # named in warnings: the setting to fix, never the token
        self._token = initial
        self._fetch = fetch
        self._interval_s = interval_s
        self._problem: str | None = None
        self._lock = threading.Lock()  # the watch thread, and a sender whose token was just refused
        self._stop = threading.Event()
        self._thread: LongLivedThread | None = None
        self.rotations = 0

    def current(self) -> str:
        return self._token

    def start(self) -> RefreshingToken:
        self._thread = long_lived(self._watch, name=f"token-{self.destination}", role="token_watcher")
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def refresh(self) -> bool:
        """Fetch once; True when the token changed. Never raises."""
        with self._lock:
            return self._refresh()

    def _refresh(self) -> bool:
        try:
            raw = self._fetch()
        except Exception as exc:  # a provider is foreign code: whatever it raises keeps the last token
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            self._warn(f"could not read it ({reason})")
            return False
        if raw is None:
            return False
        try:
            token = check_token(raw)
        except ValueError as exc:
            self._warn(f"the new token is refused: {exc}")
            return False
        self._problem = None
        if token == self._token:
            return False
        self._token = token
        self.rotations += 1
        log.warning("destination %s: the Pisano token from %s changed; the next requests carry the new one "
                    "(requests in flight keep theirs)", self.destination, self.source)
        return True

    def _watch(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.refresh()

    def _warn(self, problem: str) -> None:
        if problem != self._problem:  # once per distinct problem, not once a second
            self._problem = problem
            log.warning("destination %s: %s: %s; still sending with the previous token; fix the secret (a "
                        "token file holds the token alone, printable characters, no spaces)",
                        self.destination, self.source, problem)


class TokenFile:
    """The token file's content when it changed since the last call (None otherwise)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int, int, int] | None = None  # None: read on the first call

    def __call__(self) -> str | None:
        info = os.stat(self.path)  # follows the `..data` symlink of a mounted Secret
        signature = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
        if signature == self._seen:
            return None
        if info.st_size > MAX_SECRET_FILE_BYTES:
            raise OSError(0, "larger than 64 KiB, not a token file")
        with open(self.path, "rb") as file:
            data = file.read(MAX_SECRET_FILE_BYTES + 1)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise OSError(0, "not UTF-8 text") from None
        self._seen = signature  # only once read: a failed read is tried again next time
        return text


def load_token_provider(spec: str) -> TokenProvider:
    """The callable PISANO_TOKEN_PROVIDER names (`module:callable` or an entry point name)."""
    setting = f"PISANO_TOKEN_PROVIDER={spec!r}"
    if ":" in spec:
        module_name, _, attribute = spec.partition(":")
        try:
            provider = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"{setting}: cannot load it ({type(exc).__name__}: {exc})") from None
    else:
        found = entry_points(group=ENTRY_POINT_GROUP, name=spec)
        if not found:
            names = sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
            raise ConfigError(f"{setting}: no such provider in the entry point group {ENTRY_POINT_GROUP} "
                              f"(installed: {', '.join(names) or 'none'}); or give module:callable")
        provider = next(iter(found)).load()
    if not callable(provider):
        raise ConfigError(f"{setting}: {provider!r} is not callable")
    return provider  # type: ignore[no-any-return]


def first_token(provider: TokenProvider, destination: str, spec: str) -> str:
    """The provider's token for `destination` at start-up; ConfigError if it has none."""
    try:
        return check_token(_provided(provider, destination))
    except ValueError as exc:
        raise ConfigError(f"PISANO_TOKEN_PROVIDER={spec!r} for destination {destination}: {exc}") from None
    except Exception as exc:  # foreign code
        raise ConfigError(f"PISANO_TOKEN_PROVIDER={spec!r} for destination {destination} failed "
                          f"({type(exc).__name__}); fix the provider or its secret store") from None


def _provided(provider: TokenProvider, destination: str) -> str:
    token = provider(destination)
    if not isinstance(token, str):
        raise TypeError(f"the provider returned {type(token).__name__}, not the token as str")
    return token


def token_source(destination: str, initial: str, *, token_file: Path | None, provider: str | None,
                 interval_s: float) -> TokenSource:
    """The destination's token source, watching the file or the provider if it has one."""
    if provider is not None:
        call = load_token_provider(provider)
        return RefreshingToken(destination, initial, lambda: _provided(call, destination),
                               f"PISANO_TOKEN_PROVIDER={provider}", interval_s).start()
    if token_file is not None:
        return RefreshingToken(destination, initial, TokenFile(token_file), f"the token file {token_file}",
                               interval_s).start()
    return StaticToken(initial)

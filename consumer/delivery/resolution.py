"""Name resolution that keeps to a request's deadline (consumer/delivery/request_deadline.py).

getaddrinfo takes no timeout, and httpcore calls it inside its connect: a resolver that does not
answer (a DNS server dropping queries, a stuck NSS module) would keep a sender thread past its
request's deadline, and so past the claims' lease sized from it (README, "DEDUP_CLAIM_LEASE_MS").
So the lookup runs on a daemon thread of its own (never joined: it cannot hold up the process's
exit), and the request waits for it at most the time it has. A thread cannot be stopped: one still
looking a name up is shared by every request for that name meanwhile, so a resolver that hangs
holds one thread per name, not one per request. A lookup that never returns (a deadlocked NSS
module) must not lock its name out for the process's life: past SUPERSEDE_AFTER_S a request starts
a fresh one, up to MAX_LOOKUPS_PER_NAME still running for that name (past that, threads that
never end would pile up: the name fails, its error saying a restart clears it). An IP literal needs no
resolver: it is turned into its address at once, on the caller's thread.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from typing import Any

import httpcore

Address = tuple[Any, ...]  # a getaddrinfo sockaddr: (host, port) or (host, port, flowinfo, scope_id)


class ResolutionTimeout(httpcore.ConnectTimeout):
    """The name was not resolved in time; no connection was opened, nothing sent. Its text is our
    own words and the host's name (pisano.py shows it): what to check."""


class ResolutionFailed(httpcore.ConnectError):
    """The resolver answered that the name does not resolve (or the name cannot be encoded); no
    connection was opened, nothing sent. Its text, like ResolutionTimeout's, names the host and
    what to check, with the OS's reason."""


# Longer than glibc's own give-up (5 s a try, 2 tries, up to 3 name servers): a lookup still running
# past it is wedged, not slow.
SUPERSEDE_AFTER_S = 60.0
MAX_LOOKUPS_PER_NAME = 4  # the threads a resolver that stays wedged can hold, per name
_clock = time.monotonic

_CHECK = "check DNS for that host (PISANO_URL's, a destination's url or the proxy's)"


class _Lookup:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.started = _clock()
        self.addresses: list[str] = []
        self.error: Exception | None = None


_pending: dict[tuple[str, int], _Lookup] = {}  # the newest lookup still running, by (host, port)
_running: dict[tuple[str, int], int] = {}  # the lookups still running (newest and superseded), by (host, port)
_pending_lock = threading.Lock()


def resolve(host: str, port: int, timeout: float | None) -> list[str]:
    """The addresses of `host` to connect to (literals: `literal`), in the resolver's order, within
    `timeout` seconds (None: however long it takes). Raises ResolutionTimeout past it,
    ResolutionFailed (an httpcore.ConnectError) if the name cannot be resolved: both mean nothing
    was sent."""
    if _is_literal(host):
        return _literal_addresses(host, port)
    key = (host, port)
    hung = 0  # at the cap: the lookups of the name hanging past SUPERSEDE_AFTER_S
    with _pending_lock:
        lookup = _pending.get(key)
        wedged = lookup is not None and _clock() - lookup.started > SUPERSEDE_AFTER_S
        if lookup is None or (wedged and _running.get(key, 0) < MAX_LOOKUPS_PER_NAME):
            lookup = _Lookup()
            thread = threading.Thread(target=_look_up, args=(key, lookup), name="resolve", daemon=True)
            try:
                thread.start()
            except RuntimeError as exc:  # the process is out of threads: not sent, like any failed connect
                raise httpcore.ConnectError(f"no thread to resolve {host}: the process is out of threads; "
                                            "check its thread limit (ulimit -u, the pod's pids limit)") from exc
            _pending[key] = lookup
            _running[key] = _running.get(key, 0) + 1
        elif wedged:
            hung = _running[key]
    if not lookup.done.wait(timeout):
        if hung:
            # No lookup of the name is started again until one of these returns, which may be
            # never: the name fails until the process restarts, whatever DNS answers meanwhile.
            raise ResolutionTimeout(f"resolving {host}: {hung} lookups have hung over {SUPERSEDE_AFTER_S:.0f} s in "
                                    "this process and no more are started (its resolver is wedged: a stuck NSS "
                                    "module or nscd); if DNS answers for that host, restart the process")
        raise ResolutionTimeout(f"resolving {host} took over {timeout:.1f} s; {_CHECK}")
    if lookup.error is not None:
        # The OS's reason ("Name or service not known") in our words, which pisano.py shows; the
        # error itself as the context too, which httpcore's pool keeps (it re-raises `from None`,
        # dropping the cause).
        error = lookup.error
        reason = error.strerror if isinstance(error, OSError) and error.strerror else type(error).__name__
        failed = ResolutionFailed(f"cannot resolve {host}: {reason}; {_CHECK}")
        failed.__context__ = error
        raise failed from error
    return lookup.addresses


def _look_up(key: tuple[str, int], lookup: _Lookup) -> None:
    try:
        # As socket.create_connection asks (httpcore's connect): any family, stream sockets.
        lookup.addresses = [literal(info[4]) for info in socket.getaddrinfo(key[0], key[1], type=socket.SOCK_STREAM)]
    except Exception as exc:  # a gaierror, or a name IDNA cannot encode (a UnicodeError): not sent either way
        lookup.error = exc
    finally:
        with _pending_lock:
            if _pending.get(key) is lookup:
                del _pending[key]
            left = _running.pop(key, 1) - 1
            if left:
                _running[key] = left
        lookup.done.set()


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.partition("%")[0])  # a scoped IPv6 literal: fe80::1%eth0
    except ValueError:
        return False
    return True


def _literal_addresses(host: str, port: int) -> list[str]:
    """A literal's address, as getaddrinfo gives it (no resolver asked: AI_NUMERICHOST)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except (OSError, UnicodeError) as exc:  # an unknown scope (fe80::1%nosuch): not sent
        raise ResolutionFailed(f"cannot use the address {host}: {exc}; check the URL's host") from exc
    return [literal(info[4]) for info in infos]


def literal(address: Address) -> str:
    """The host of a getaddrinfo sockaddr, as a literal that resolves back to it at once. A scoped
    IPv6 address (link-local: `fe80::1%eth0`, from the URL or the resolver) keeps its scope id,
    which the sockaddr's host leaves out: without it the connect fails (EINVAL)."""
    host: str = address[0]
    if len(address) == 4 and address[3]:
        return f"{host}%{address[3]}"
    return host

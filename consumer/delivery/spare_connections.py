"""Connections to Pisano set up before a throttle slot, not at it.

A request is checked for its slot at the wire (consumer/delivery/request_deadline.py): one that
has to set up its connection first (name lookup, TCP, TLS: a few round trips to a distant Pisano)
can miss its slot there, every time its pooled connection has expired (httpx keeps an idle one
5 s). So a sender asks for a connection a little before its slot (`SlotReserver.ready`): when the
pool holds no idle one for Pisano, one is set up then and kept here as a *spare*, and the pool's
next new connection to that host and port is the spare, already connected and secured.

A spare is kept as long as httpx keeps an idle connection (SPARE_TTL_S), one per host and port,
and not handed out once the server has closed it (a closed socket reads as readable). Not through
a proxy: its connections carry a tunnel's state (the transport keeps no spares then).
"""

from __future__ import annotations

import ssl
import threading
import time

import httpcore

# As long as httpx keeps an idle connection in its pool (its default keep-alive expiry): a
# spare is one that has not yet been in the pool, and a server may close it as soon.
SPARE_TTL_S = 5.0


class Spares:
    """The spare connections of one transport, by (host, port); thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: dict[tuple[str, int], tuple[float, httpcore.NetworkStream]] = {}
        # Closed with its transport: a spare set up meanwhile (a sender's warm) is closed, not kept.
        self._closed = False

    def has(self, host: str, port: int) -> bool:
        """A spare for (host, port) kept lately (it may still turn out closed when taken)."""
        with self._lock:
            kept = self._kept.get((host, port))
            return kept is not None and time.monotonic() - kept[0] < SPARE_TTL_S

    def keep(self, host: str, port: int, stream: httpcore.NetworkStream) -> None:
        with self._lock:
            earlier = self._kept.pop((host, port), None)
            if not self._closed:
                self._kept[(host, port)] = (time.monotonic(), stream)
        if self._closed:
            stream.close()
        if earlier is not None:
            earlier[1].close()

    def take(self, host: str, port: int) -> httpcore.NetworkStream | None:
        """The spare for (host, port), if it is fresh and the server has not closed it."""
        with self._lock:
            kept = self._kept.pop((host, port), None)
        if kept is None:
            return None
        made_at, stream = kept
        if time.monotonic() - made_at >= SPARE_TTL_S or not _open_and_quiet(stream):
            stream.close()
            return None
        return stream

    def close(self) -> None:
        with self._lock:
            self._closed = True
            kept, self._kept = list(self._kept.values()), {}
        for _, stream in kept:
            stream.close()


def _open_and_quiet(stream: httpcore.NetworkStream) -> bool:
    """Whether an idle connection is still open and the server has sent nothing on it. Readable
    while idle, it was closed (or sent what no request asked for); over TLS 1.3 it is also readable
    with the session tickets the server sends after the handshake, which a read takes in."""
    if not stream.get_extra_info("is_readable"):
        return True
    sock = stream.get_extra_info("socket")
    if not isinstance(sock, ssl.SSLSocket):
        return False
    try:
        sock.settimeout(0.0)  # httpcore sets each read's and write's own timeout
        sock.recv(1)  # data no request asked for, or the end (b""): not usable either way
        return False
    except ssl.SSLWantReadError:
        return True  # only the handshake's messages were there
    except OSError:
        return False

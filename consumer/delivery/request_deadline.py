"""One deadline for a whole HTTP request, whatever phase it is in (consumer/delivery/pisano.py).

httpx's timeouts apply per operation: a peer that sends, or takes, a byte now and then never trips
them, and a request could outlive the claims sized from its timeout. Here every network operation
of the request gets at most the time left (`_DeadlineStream`, over httpcore's own sockets through
`DeadlineTransport`; the name's resolution too, resolution.py), and a timer shuts the connection
the request is using when the deadline passes (`Deadline`). The deadline is per thread (`arm`): a
sender thread sends one request at a time.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

from consumer.delivery.resolution import resolve


def _shut(stream: httpcore.NetworkStream) -> None:
    """Shut the stream's socket: a read or write blocked on it returns at once with an error."""
    sock = stream.get_extra_info("socket")
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):  # already closed
            # The plain socket's shutdown, also for a TLS socket: it only stops the transfer.
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


class Deadline:
    """One request's deadline (time.monotonic()), armed when `send` starts.

    Every network operation of the request asks it for its time left (`_DeadlineStream`), and a
    timer thread shuts the connection the request is using when it passes, whatever the phase: a
    read or write blocked then returns at once. httpx's timeouts apply per operation, so a peer
    sending (or taking) a byte now and then would never trip them."""

    def __init__(self, deadline: float) -> None:
        self.at = deadline
        self.passed = False
        self._lock = threading.Lock()
        self._stream: httpcore.NetworkStream | None = None
        self._finished = False
        self._timer = threading.Timer(max(0.0, deadline - time.monotonic()), self._expire)
        self._timer.daemon = True
        self._timer.start()

    def left(self) -> float:
        return self.at - time.monotonic()

    def using(self, stream: httpcore.NetworkStream) -> None:
        """The request is about to wait on `stream`: the one to shut when the deadline passes."""
        with self._lock:
            self._stream = stream
            if self.passed:
                _shut(stream)

    def finish(self) -> None:
        """The request is done with its connection (before the pool may hand it to another)."""
        with self._lock:
            self._finished = True
        self._timer.cancel()

    def _expire(self) -> None:
        with self._lock:
            if self._finished:
                return
            self.passed = True
            if self._stream is not None:
                _shut(self._stream)


_requests = threading.local()  # `.deadline`: the Deadline of the request this thread is sending


def arm(deadline: Deadline | None) -> None:
    """`deadline` is the one of the request this thread sends from now (None: no request)."""
    _requests.deadline = deadline


def _current() -> Deadline | None:
    deadline: Deadline | None = getattr(_requests, "deadline", None)
    return deadline


def _clamp(timeout: float | None, left: float) -> float:
    return left if timeout is None else min(timeout, left)


def _time_for(deadline: Deadline | None, timeout: float | None) -> float | None:
    """The time a connect step may take: its timeout, cut to the time left; a ConnectTimeout
    (nothing sent) if none is."""
    if deadline is None:
        return timeout
    left = deadline.left()
    if left <= 0:
        raise httpcore.ConnectTimeout("the request's deadline passed")
    return _clamp(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose operations keep to the deadline of the request using it (`Deadline`).

    Once it has passed, an operation cut short, or asked for, fails as a timeout of its phase:
    a write as a WriteTimeout (the body never arrived whole: Pisano cannot have acted on it; a
    WriteError would be swallowed by httpcore, which goes on to read an answer), a read as a
    ReadTimeout (the request may have reached Pisano), a TLS handshake as a ConnectTimeout."""

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self.stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        deadline = _current()
        if deadline is None:
            return self.stream.read(max_bytes, timeout)
        left = deadline.left()
        if left <= 0:
            raise httpcore.ReadTimeout("the request's deadline passed")
        deadline.using(self.stream)
        try:
            data = self.stream.read(max_bytes, _clamp(timeout, left))
        except httpcore.NetworkError:
            if not deadline.passed:
                raise
            data = b""
        if not data and deadline.passed:  # a shut socket reads as the end of the stream
            raise httpcore.ReadTimeout("the request's deadline passed")
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        deadline = _current()
        if deadline is None or not buffer:  # an empty write sends nothing: no deadline to keep
            self.stream.write(buffer, timeout)
            return
        left = deadline.left()
        if left <= 0:
            raise httpcore.WriteTimeout("the request's deadline passed")
        deadline.using(self.stream)
        try:
            self.stream.write(buffer, _clamp(timeout, left))
        except httpcore.NetworkError:
            if not deadline.passed:
                raise
        else:
            return  # written whole: even past the deadline, the next read says what came of it
        raise httpcore.WriteTimeout("the request's deadline passed")

    def close(self) -> None:
        self.stream.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        deadline = _current()
        if deadline is None:
            return _DeadlineStream(self.stream.start_tls(ssl_context, server_hostname, timeout))
        left = deadline.left()
        if left <= 0:
            self.stream.close()
            raise httpcore.ConnectTimeout("the request's deadline passed")
        # The socket cannot be shut during the handshake (the TLS socket takes it over), but the
        # handshake as a whole keeps to the socket's timeout, however the bytes trickle in.
        secured = self.stream.start_tls(ssl_context, server_hostname, _clamp(timeout, left))
        if deadline.left() <= 0:
            secured.close()
            raise httpcore.ConnectTimeout("the request's deadline passed")
        return _DeadlineStream(secured)

    def get_extra_info(self, info: str) -> Any:
        return self.stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's own sockets, as `_DeadlineStream`s. The host's name is resolved, and a
    connection opened, within the connect timeout and the time left (resolution.py: getaddrinfo
    takes no timeout), and closed unused if the deadline passed meanwhile: no byte of a request
    leaves after its deadline. The TLS name stays the host's (httpcore passes it to `start_tls`)."""

    def __init__(self) -> None:
        self.backend = httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None) -> httpcore.NetworkStream:
        deadline = _current()
        failed: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        # Each address in turn, as socket.create_connection would, each within the time left;
        # an address is a literal, which the backend's own getaddrinfo turns into a sockaddr at once.
        for address in resolve(host, port, _time_for(deadline, timeout)):
            try:
                stream = self.backend.connect_tcp(address, port, _time_for(deadline, timeout), local_address,
                                                  socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failed = failed or exc  # the first address's failure, as create_connection reports
                continue
            if deadline is not None and deadline.left() <= 0:
                stream.close()
                raise httpcore.ConnectTimeout("the request's deadline passed")
            return _DeadlineStream(stream)
        raise failed or httpcore.ConnectError(f"no address for {host}")

    def sleep(self, seconds: float) -> None:
        self.backend.sleep(seconds)


class DeadlineTransport(httpx.HTTPTransport):
    """httpx's transport (its pooling, proxying, mapping of errors) over `_DeadlineBackend`."""

    def __init__(self, ssl_context: ssl.SSLContext, limits: httpx.Limits, proxy: str | None) -> None:
        super().__init__(verify=ssl_context, limits=limits, proxy=proxy)
        # httpx takes no network backend: its pool (direct, or through a proxy) is given ours.
        # Refuse to start rather than run without the deadline should httpcore rename it.
        if not isinstance(getattr(self._pool, "_network_backend", None), httpcore.NetworkBackend):
            raise RuntimeError("httpcore's connection pool changed: the request deadline cannot be installed")
        self._pool._network_backend = _DeadlineBackend()


def environment_proxy(base_url: str) -> str | None:
    """The proxy the environment names for `base_url` (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, less
    NO_PROXY), as httpx would take it: a client given its own transport no longer looks."""
    url = httpx.URL(base_url)
    proxies = urllib.request.getproxies()
    found = proxies.get(url.scheme) or proxies.get("all")
    if not found or urllib.request.proxy_bypass(url.host):
        return None
    return found if "://" in found else f"http://{found}"

"""One deadline for a whole HTTP request, whatever phase it is in (consumer/delivery/pisano.py).

httpx's timeouts apply per operation: a peer that sends, or takes, a byte now and then never trips
them, and a request could outlive the claims sized from its timeout. Here every network operation
of the request gets at most the time left (`_DeadlineStream`, over httpcore's own sockets through
`DeadlineTransport`; the name's resolution too, resolution.py), and the client's one deadline
thread shuts the connection the request is using when the deadline passes (`Deadline`,
`DeadlineWatch`). The deadline is per thread (`arm`): a sender thread sends one request at a time.

A request may also carry the latest moment its first byte may leave (`Deadline.leave_by`: its
throttle slot's, consumer/delivery/slots.py). It is checked at the wire, just before the write
that carries the request's head, not before the request is built: whatever ran in between
(a connection set up, the interpreter handed to busy threads) would otherwise come out of
PISANO_RATE_MARGIN_MS unseen. A request found late there is not sent (`SlotMissed`). Its head
(status line and headers) is held and leaves in one write with the body (`_DeadlineStream`): a
second write would wait for the interpreter again, and the body would reach Pisano that much later.
A late request's connection stays usable: none of its bytes are written, and the stream answers it
itself (`MISSED_REPLY`), so httpcore ends the exchange and pools the connection. Closed, as httpcore
closes a connection a request failed on, it would be set up again for the next slot's request: where
setting one up takes longer than the lateness allowed (a distant Pisano, TLS, a proxy's tunnel),
that one would miss too, slot after slot. A tunnel's CONNECT is not checked: it goes to the proxy,
not to Pisano, and the request's own head after it is. A sender sets up its connection before its
slot (`DeadlineTransport.warm`, consumer/delivery/spare_connections.py), so that at the slot only
the POST remains.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Iterable, Iterator
from typing import Any

import httpcore
import httpx

from consumer.delivery.resolution import resolve
from consumer.delivery.spare_connections import Spares
from consumer.operations.threads import long_lived

# Deadlines kept past their request (done before its time) are dropped once the heap holds this
# many: the live ones are at most the client's connections.
PRUNE_AT = 1024
# How long after a warm's time (`DeadlineTransport.warm`) the request may still come: the renewal's
# lead before its slot (consumer/delivery/slots.py PREPARE_LEAD_S) and the lateness allowed, with room.
USE_AFTER_S = 0.5


def _shut(stream: httpcore.NetworkStream) -> None:
    """Shut the stream's socket: a read or write blocked on it returns at once with an error."""
    sock = stream.get_extra_info("socket")
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):  # already closed
            # The plain socket's shutdown, also for a TLS socket: it only stops the transfer.
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


class Deadline:
    """One request's deadline (time.monotonic()), armed when `send` starts.

    Every network operation of the request asks it for its time left (`_DeadlineStream`), and the
    client's `DeadlineWatch` shuts the connection the request is using when it passes, whatever
    the phase: a read or write blocked then returns at once. httpx's timeouts apply per operation,
    so a peer sending (or taking) a byte now and then would never trip them."""

    def __init__(self, deadline: float, watch: DeadlineWatch, leave_by: float | None = None) -> None:
        self.at = deadline
        self.leave_by = leave_by  # the latest its head may leave (None: any time before `at`)
        # The request's next write is its head: its first write, and after a tunnel's CONNECT the
        # request's own (`mark_head`).
        self.head_next = True
        # Set when its head was found late (`_DeadlineStream`): by how much. None of its bytes left.
        self.missed_s: float | None = None
        self.passed = False
        self._lock = threading.Lock()
        self._stream: httpcore.NetworkStream | None = None
        self.finished = False
        watch.add(self)

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
            self.finished = True

    def expire(self) -> None:
        """The deadline passed (`DeadlineWatch`): shut the connection, unless the request is done."""
        with self._lock:
            if self.finished:
                return
            self.passed = True
            if self._stream is not None:
                _shut(self._stream)


class DeadlineWatch:
    """One long-lived thread that expires the `Deadline`s of a client's requests, in time order.

    Not a timer thread per request: Thread.start waits until the new thread runs, 12 ms at the
    median and 38 ms at p99 beside one busy thread (a poll loop working through a backlog), 44 to
    66 ms beside two, measured on this project's 2-core machine; every POST paid it after the
    throttle's lateness check (consumer/delivery/slots.py) and before its bytes left, eating
    the margin that keeps it inside Pisano's windows. Adding a deadline is a heap push."""

    def __init__(self, destination: str) -> None:
        self._ready = threading.Condition()
        self._heap: list[tuple[float, int, Deadline]] = []
        self._order = itertools.count()  # ties in time: no Deadline is ever compared
        self._closed = False
        # Watched with the build's other threads (app.build_pipeline): a dead one would leave
        # every stalled request to its per-operation timeouts alone.
        # Its name carries the destination, as the senders' and token watchers' do: /healthz
        # names the threads that ended by their names.
        self.thread = long_lived(self._run, name=f"request-deadlines-{destination}", role="request_deadlines")
        self.thread.start()

    def add(self, deadline: Deadline) -> None:
        with self._ready:
            if self._closed:
                raise RuntimeError("the client is closed: no deadline can be kept")
            if len(self._heap) >= PRUNE_AT:
                self._heap = [entry for entry in self._heap if not entry[2].finished]
                heapq.heapify(self._heap)
            heapq.heappush(self._heap, (deadline.at, next(self._order), deadline))
            if self._heap[0][2] is deadline:  # sooner than the one the thread sleeps towards
                self._ready.notify()

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify()

    def _run(self) -> None:
        while (due := self._next_due()) is not None:
            due.expire()

    def _next_due(self) -> Deadline | None:
        """The next deadline to pass, once it has (None once closed)."""
        with self._ready:
            while not self._closed:
                while self._heap and self._heap[0][2].finished:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._ready.wait()
                    continue
                left = self._heap[0][0] - time.monotonic()
                if left <= 0:
                    return heapq.heappop(self._heap)[2]
                self._ready.wait(left)
            return None


_requests = threading.local()  # `.deadline`: the Deadline of the request this thread is sending

# What the stream answers a request it did not send for its slot (`_DeadlineStream`): an exchange
# httpcore reads to its end, leaving the connection idle on both sides. `PisanoClient.send` raises
# SlotMissed for it (`Deadline.missed_s`), whatever it reads here.
MISSED_REPLY = b"HTTP/1.1 599 Slot Missed\r\nContent-Length: 0\r\n\r\n"

# httpcore's event (its `trace` extension) just before it writes a request's status line and
# headers: a tunnel's CONNECT and the request itself. The client speaks HTTP/1.1 only.
HEAD_STARTED = "http11.send_request_headers.started"


def mark_head(event: str, info: object) -> None:
    """httpcore's `trace` callback: the next write of this thread's request is a request head."""
    if event == HEAD_STARTED and (deadline := _current()) is not None:
        deadline.head_next = True


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

    def __init__(self, stream: httpcore.NetworkStream, secured_for: str | None = None) -> None:
        self.stream = stream
        # A spare set up before its request (spare_connections.py): already secured, for this name.
        self.secured_for = secured_for
        self.head = b""  # a request's head, held to leave with its body (module docstring)
        self.reply = b""  # the answer to a request not sent for its slot (MISSED_REPLY), read next

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        deadline = _current()
        if deadline is None:
            return self.stream.read(max_bytes, timeout)
        if self.head:  # a request without a body (a tunnel's CONNECT): its head leaves now
            self._send(b"", deadline, timeout)
        if self.reply:
            reply, self.reply = self.reply, b""
            return reply
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
        if deadline.missed_s is not None:  # its head was late: nothing more of it leaves either
            return
        if deadline.head_next:
            deadline.head_next = False
            self.head = buffer
            return
        self._send(buffer, deadline, timeout)

    def _send(self, buffer: bytes, deadline: Deadline, timeout: float | None) -> None:
        """`buffer` after the held head, if any: in one write, within the deadline, and a head
        not after `leave_by` (checked last, just before the bytes leave)."""
        left = deadline.left()
        if left <= 0:
            raise httpcore.WriteTimeout("the request's deadline passed")
        deadline.using(self.stream)
        if self.head:
            buffer, self.head = self.head + buffer, b""
            if deadline.leave_by is not None and not buffer.startswith(b"CONNECT ") \
                    and (over := time.monotonic() - deadline.leave_by) > 0:
                # Nothing written: answered here, so that the connection stays (module docstring).
                deadline.missed_s, self.reply = over, MISSED_REPLY
                return
            buffer = buffer[self._write_at_once(buffer):]
            if not buffer:
                return
        try:
            self.stream.write(buffer, _clamp(timeout, left))
        except httpcore.NetworkError:
            if not deadline.passed:
                raise
        else:
            return  # written whole: even past the deadline, the next read says what came of it
        raise httpcore.WriteTimeout("the request's deadline passed")

    def _write_at_once(self, buffer: bytes) -> int:
        """Write what a plain connection's socket takes now, in one call; how much it took.

        A socket with a timeout (httpcore's) waits for writability before each send, and the
        sender needs the interpreter back between the two: beside busy threads, one more handover
        between the check and the bytes (tens of ms, benchmarks/post_lateness.py). TLS writes
        first and waits only when the socket is full, so it is left to the stream."""
        sock = self.stream.get_extra_info("socket")
        if type(sock) is not socket.socket or self.stream.get_extra_info("ssl_object") is not None:
            return 0
        try:
            return os.write(sock.fileno(), buffer)
        except OSError:  # full (or broken): the stream's own write waits, or says what failed
            return 0

    def close(self) -> None:
        self.stream.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        if self.secured_for is not None:  # a spare: its handshake is done
            if self.secured_for == server_hostname:
                return self
            self.stream.close()
            raise httpcore.ConnectError("a spare connection secured for another name")
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
    leaves after its deadline. The TLS name stays the host's (httpcore passes it to `start_tls`).
    With `spares`, a connection set up before its request (`set_up`) is the next one asked for."""

    def __init__(self, spares: Spares | None = None) -> None:
        self.backend = httpcore.SyncBackend()
        self.spares = spares

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None) -> httpcore.NetworkStream:
        if self.spares is not None and local_address is None and (spare := self.spares.take(host, port)):
            return spare
        return self._connect(host, port, timeout, local_address, socket_options)

    def set_up(self, host: str, port: int, within_s: float, tls: tuple[ssl.SSLContext, str] | None) -> None:
        """A spare connection to (host, port), secured for `tls`'s name with its context, set up
        within about `within_s`; none if one is kept already, or it cannot be (the request then
        sets one up itself, and says what failed)."""
        if self.spares is None or self.spares.has(host, port):
            return
        ends = time.monotonic() + within_s
        try:
            # All of it within `within_s` (`ends`), not each address's attempt: a Pisano unreachable
            # behind several addresses would hold the sender past its slot, slot after slot.
            stream = self._connect(host, port, within_s, None, None, ends)
            if tls is not None:
                left = ends - time.monotonic()
                if left <= 0:
                    stream.close()
                    return
                context, name = tls
                context.set_alpn_protocols(["http/1.1"])  # as httpcore sets it for each connection
                stream = _DeadlineStream(stream.stream.start_tls(context, name, left), secured_for=name)
        except (httpcore.ConnectError, httpcore.ConnectTimeout, OSError):
            return
        self.spares.keep(host, port, stream)

    def _connect(self, host: str, port: int, timeout: float | None, local_address: str | None,
                 socket_options: Iterable[httpcore.SOCKET_OPTION] | None,
                 ends: float | None = None) -> _DeadlineStream:
        """`ends` (monotonic): when a connection set up with no request (a spare) must be done."""
        deadline = _current()
        failed: httpcore.ConnectError | httpcore.ConnectTimeout | None = None

        def step() -> float | None:
            allowed = _time_for(deadline, timeout)
            if ends is None:
                return allowed
            if (left := ends - time.monotonic()) <= 0:
                raise httpcore.ConnectTimeout("no time left to set up a spare connection")
            return _clamp(allowed, left)

        # Each address in turn, as socket.create_connection would, each within the time left;
        # an address is a literal, which the backend's own getaddrinfo turns into a sockaddr at once.
        for address in resolve(host, port, step()):
            try:
                stream = self.backend.connect_tcp(address, port, step(), local_address, socket_options)
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


class _FinishingStream(httpx.SyncByteStream):
    """An answer's body that finishes its request's deadline as it closes: before the connection
    goes back to the pool, where another thread's request may take it at once. httpx closes it
    as soon as the body is read to its end, while `send` is still reading; a deadline passing
    after that and finished only later would shut the connection under the next request."""

    def __init__(self, stream: httpx.SyncByteStream, deadline: Deadline) -> None:
        self.stream = stream
        self.deadline = deadline

    def __iter__(self) -> Iterator[bytes]:
        yield from self.stream

    def close(self) -> None:
        self.deadline.finish()
        self.stream.close()


def _kept_until(connection: httpcore.ConnectionInterface) -> float:
    """When the pool drops this idle connection (monotonic; inf: not known, or never)."""
    expire_at = getattr(getattr(connection, "_connection", None), "_expire_at", None)
    return float("inf") if expire_at is None else float(expire_at)


class DeadlineTransport(httpx.HTTPTransport):
    """httpx's transport (its pooling, proxying, mapping of errors) over `_DeadlineBackend`."""

    def __init__(self, ssl_context: ssl.SSLContext, limits: httpx.Limits, proxy: str | None) -> None:
        super().__init__(verify=ssl_context, limits=limits, proxy=proxy)
        # httpx takes no network backend: its pool (direct, or through a proxy) is given ours.
        # Refuse to start rather than run without the deadline should httpcore rename it.
        if not isinstance(getattr(self._pool, "_network_backend", None), httpcore.NetworkBackend):
            raise RuntimeError("httpcore's connection pool changed: the request deadline cannot be installed")
        self._backend = _DeadlineBackend(Spares() if proxy is None else None)
        self._pool._network_backend = self._backend
        self._ssl_context = ssl_context

    def warm(self, url: httpx.URL, within_s: float) -> None:
        """A connection to `url`'s origin ready for the next request, unless the pool holds an
        idle one: set up now, within about `within_s` (spare_connections.py)."""
        if self._backend.spares is None or within_s <= 0:
            return
        port = url.port or (443 if url.scheme == "https" else 80)
        origin = httpcore.Origin(url.raw_scheme, url.raw_host, port)
        # An idle connection counts only if it is still kept when the request comes: at its slot,
        # after `within_s` and the renewal's lead (USE_AFTER_S); httpx drops it 5 s after its last
        # answer, and the POST would set one up at the slot, late.
        used_at = time.monotonic() + within_s + USE_AFTER_S
        if any(connection.can_handle_request(origin) and connection.is_idle() and not connection.has_expired()
               and _kept_until(connection) > used_at for connection in self._pool.connections):
            return
        # The name as httpcore asks for it, and secures it (its ASCII form: an IDN's IDNA), not url.host.
        host = url.raw_host.decode("ascii")
        self._backend.set_up(host, port, within_s, (self._ssl_context, host) if url.scheme == "https" else None)

    def close(self) -> None:
        super().close()
        if self._backend.spares is not None:
            self._backend.spares.close()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        deadline = _current()
        response = super().handle_request(request)
        if deadline is not None and isinstance(response.stream, httpx.SyncByteStream):
            response.stream = _FinishingStream(response.stream, deadline)
        return response


def environment_proxy(base_url: str) -> str | None:
    """The proxy the environment names for `base_url` (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, less
    NO_PROXY), as httpx would take it: a client given its own transport no longer looks."""
    url = httpx.URL(base_url)
    proxies = urllib.request.getproxies()
    found = proxies.get(url.scheme) or proxies.get("all")
    if not found or urllib.request.proxy_bypass(url.host):
        return None
    return found if "://" in found else f"http://{found}"

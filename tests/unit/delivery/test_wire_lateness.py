"""A POST's throttle slot is checked at the wire, not only before the request is built.

`SlotReserver.ready` says "go" at most half of PISANO_RATE_MARGIN_MS after the slot, but what ran
after it (a connection set up, the token read, the span, the interpreter handed to busy threads)
came out of the margin's other half unseen: a full chaos run put one request over a scaled window
after a replica had logged a request "ready 105 ms after its throttle slot". Now the client checks
the slot's latest moment just before the write that carries the request's head, and that write
carries the body too (a second write would wait for the interpreter again).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import pytest
from httpcore._backends.sync import SyncStream

from consumer.delivery import request_deadline
from consumer.delivery.batching import Batch
from consumer.delivery.pisano import PisanoClient
from consumer.delivery.slots import Slot
from consumer.errors import SlotMissed
from tests.support.fakes import FakePisano, event, rig, windows_limiter
from tests.support.local_server import serving

CAMPAIGN = "ae51458c-9e82-417f-8f1d-e074891ea5c1"
BODY = b'{"phone_numbers":["+905321200001"]}'
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


@contextmanager
def recording_server() -> Iterator[tuple[int, list[bytes]]]:
    """A local server answering 200 to each request; yields its port and the bytes of each
    connection (one entry per connection, growing as bytes arrive). On leaving, it waits until
    every connection has ended (the client closed): all that was sent has been received."""
    received: list[bytes] = []
    lock = threading.Lock()

    def serve(connection: socket.socket) -> None:
        with lock:
            received.append(b"")
            index = len(received) - 1
        with connection, suppress(OSError):
            while data := connection.recv(65536):
                received[index] += data
                if received[index].endswith(BODY):
                    connection.sendall(OK)

    with serving(serve) as port:
        yield port, received


def client_for(port: int) -> PisanoClient:
    return PisanoClient(f"http://127.0.0.1:{port}", "tok-123456789", timeout_s=2, connect_timeout_s=2,
                        max_connections=1)


def test_a_request_whose_connection_outlasts_its_slot_sends_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    real_resolve = request_deadline.resolve

    def slow_resolve(host: str, port: int, timeout: float | None) -> list[str]:
        time.sleep(0.3)  # a slow name server, a connection set up after keep-alive expired
        return real_resolve(host, port, timeout)

    with recording_server() as (port, received):
        client = client_for(port)
        try:
            monkeypatch.setattr(request_deadline, "resolve", slow_resolve)
            with pytest.raises(SlotMissed) as missed:
                client.send(CAMPAIGN, BODY, leave_by=time.monotonic() + 0.1)
            monkeypatch.setattr(request_deadline, "resolve", real_resolve)
            assert missed.value.over_s >= 0.15 and not missed.value.ambiguous
            assert "after its throttle slot" in str(missed.value)
            assert client.send(CAMPAIGN, BODY, leave_by=time.monotonic() + 1.0).http_status == 200
        finally:
            client.close()
    assert [data for data in received if data] and all(data.count(b"POST ") <= 1 for data in received)
    assert sum(data.count(b"POST ") for data in received) == 1, "the late request's bytes reached the server"


def test_a_request_in_time_leaves_in_one_write(monkeypatch: pytest.MonkeyPatch) -> None:
    writes: list[bytes] = []  # every write of request bytes to a socket, whichever way it went
    real_stream_write, real_os_write = SyncStream.write, os.write

    def stream_write(self: SyncStream, buffer: bytes, timeout: float | None = None) -> None:
        if buffer:  # httpcore ends a request with an empty write: nothing leaves
            writes.append(buffer)
        real_stream_write(self, buffer, timeout)

    def os_write(fd: int, buffer: bytes) -> int:
        written = real_os_write(fd, buffer)
        writes.append(bytes(buffer[:written]))
        return written

    monkeypatch.setattr(SyncStream, "write", stream_write)
    monkeypatch.setattr(request_deadline.os, "write", os_write)
    with recording_server() as (port, _):
        client = client_for(port)
        try:
            for leave_by in (time.monotonic() + 1.0, None):  # with a slot, and without a throttle
                writes.clear()
                assert client.send(CAMPAIGN, BODY, leave_by=leave_by).http_status == 200
                assert len(writes) == 1, "the head and the body left in separate writes"
                assert writes[0].startswith(b"POST /v1/sms_campaigns/") and writes[0].endswith(BODY)
        finally:
            client.close()


def test_a_post_held_up_after_its_go_takes_a_new_slot_and_is_sent_once() -> None:
    stalls = [0.4]  # the first request stalls on its way to the wire, past the lateness allowed (0.25 s)

    def stall() -> None:
        if stalls:
            time.sleep(stalls.pop())

    pisano = FakePisano(on_wire=stall)
    r = rig(pisano, limiter=windows_limiter("20/1s"))
    sent_at: list[float] = []
    inner = pisano.send

    def send(campaign_id: str, body: bytes, leave_by: float | None = None):  # type: ignore[no-untyped-def]
        accepted = inner(campaign_id, body, leave_by)
        sent_at.append(time.monotonic())
        assert leave_by is not None and sent_at[-1] <= leave_by + 0.05
        return accepted

    pisano.send = send  # type: ignore[method-assign]
    r.sender.process(Batch(CAMPAIGN, [event(1)]), slot=Slot(time.monotonic()))
    assert pisano.missed == 1, "the request left late instead of taking a new slot"
    assert len(pisano.requests) == 1 and r.kinds() == {"e1": {"delivered"}}
    assert [o.attempts for o in r.outcomes if o.kind == "delivered"] == [1]
    assert r.sender.metrics.throttle_wasted.labels("default")._value.get() == 1



def test_a_connection_set_up_for_a_missed_slot_serves_the_next_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """Setting up a connection (a distant Pisano, TLS, a proxy's tunnel) may take longer than the
    lateness allowed. The request found late at its head sent nothing, but httpcore closed the
    connection it had set up: the next slot's request set one up again and missed again, slot
    after slot, for as long as setting up took that long. A sender never sent, and took one of the
    fleet's slots each time. The connection set up stays for the next request."""
    real_resolve = request_deadline.resolve

    def slow_resolve(host: str, port: int, timeout: float | None) -> list[str]:
        time.sleep(0.3)  # every connection takes this long to set up
        return real_resolve(host, port, timeout)

    monkeypatch.setattr(request_deadline, "resolve", slow_resolve)
    with recording_server() as (port, received):
        client = client_for(port)
        try:
            with pytest.raises(SlotMissed):
                client.send(CAMPAIGN, BODY, leave_by=time.monotonic() + 0.1)
            assert client.send(CAMPAIGN, BODY, leave_by=time.monotonic() + 0.1).http_status == 200
        finally:
            client.close()
    assert len(received) == 1 and received[0].count(b"POST ") == 1, "the late request's bytes left, or a new connection"


class _Recorded(request_deadline.httpcore.NetworkStream):
    """A connection that records what is written to it and answers each read with `answer`."""

    def __init__(self, answer: bytes) -> None:
        self.written: list[bytes] = []
        self.answer = answer

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if buffer:
            self.written.append(buffer)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self.answer

    def close(self) -> None:
        pass


def test_a_late_tunnel_leaves_its_connect_and_the_request_in_it_is_answered_unsent() -> None:
    """Through the environment's proxy, a CONNECT found late was given up as the request: the
    connection to the proxy closed, to be set up and tunnelled again for the next slot, which a
    distant proxy made miss again. The CONNECT goes to the proxy, not to Pisano: it leaves, and the
    request's own head in the tunnel is the one checked; not sent, it is answered in place, the
    tunnel kept for the next request."""
    watch = request_deadline.DeadlineWatch("test")
    proxy = _Recorded(b"HTTP/1.1 200 Connection established\r\n\r\n")
    tunnel = request_deadline._DeadlineStream(proxy)
    origin = request_deadline._DeadlineStream(_Recorded(b""))
    deadline = request_deadline.Deadline(time.monotonic() + 5, watch, leave_by=time.monotonic() - 0.05)
    request_deadline.arm(deadline)
    try:
        request_deadline.mark_head(request_deadline.HEAD_STARTED, {})
        tunnel.write(b"CONNECT pisano.example:443 HTTP/1.1\r\nHost: pisano.example:443\r\n\r\n")
        assert tunnel.read(65536).startswith(b"HTTP/1.1 200")
        assert proxy.written == [b"CONNECT pisano.example:443 HTTP/1.1\r\nHost: pisano.example:443\r\n\r\n"]
        assert deadline.missed_s is None
        request_deadline.mark_head(request_deadline.HEAD_STARTED, {})
        origin.write(b"POST /v1/sms_campaigns/x/sms_sharings HTTP/1.1\r\nContent-Length: 2\r\n\r\n")
        origin.write(b"{}")
        origin.write(b"")
        assert origin.read(65536) == request_deadline.MISSED_REPLY
        assert isinstance(origin.stream, _Recorded) and origin.stream.written == []
        assert deadline.missed_s is not None and deadline.missed_s >= 0.05
    finally:
        request_deadline.arm(None)
        watch.close()


def test_an_error_after_a_missed_slot_leaves_the_unsent_events_released_not_unknown(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Before each attempt its ids are marked as possibly sent (`Claim.sending`): an error from then
    on settles them as unknown, dead-lettered as ambiguous, their phones counted as contacted. A
    first attempt found late at the wire sent nothing, yet its ids stayed marked: an error while the
    request waited for its new slot (here the wait itself; a Redis outage outlasting its retries)
    made events that never left ambiguous, to be checked with Pisano and replayed by hand."""
    from consumer.delivery.slots import SlotReserver

    stalls = [0.4]

    def stall() -> None:
        if stalls:
            time.sleep(stalls.pop())

    pisano = FakePisano(on_wire=stall)
    r = rig(pisano, limiter=windows_limiter("20/1s"))
    real_ready = SlotReserver.ready
    calls: list[int] = []

    def ready(self: SlotReserver, *args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("broke while waiting for a new slot")
        return real_ready(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(SlotReserver, "ready", ready)
    r.sender.process(Batch(CAMPAIGN, [event(1)]), slot=Slot(time.monotonic()))
    assert pisano.missed == 1 and not pisano.requests
    assert r.outcome_count() == 1
    assert r.reasons().get("e1") != "ambiguous", "an event that never left was dead-lettered as ambiguous"
    assert not (r.dedup.state("e1") or "").startswith("u|"), "an event that never left was marked unknown"


def test_a_replica_whose_requests_all_miss_at_the_wire_does_not_burn_the_fleets_budget() -> None:
    """Before: a request late at the wire took a new slot at once, and missed again: a replica
    short of CPU for good reserved (and wasted) slot after slot, the fleet's budget, as fast as
    the limiter granted them. Now a miss pauses the sender's reservations as a late reply does
    (0.25 s, doubled by each miss after the pause), until a request leaves on time."""
    stop = threading.Event()
    late = [True]

    def stall() -> None:
        if late[0]:
            time.sleep(0.3)  # past the lateness allowed (0.25 s)

    pisano = FakePisano(on_wire=stall)
    r = rig(pisano, limiter=windows_limiter("20/1s"), stop=stop)
    worker = threading.Thread(target=r.sender.process, args=(Batch(CAMPAIGN, [event(1)]), None), daemon=True)
    worker.start()
    time.sleep(4.5)
    # A miss every 0.5 s (the preparation's lead, then the stall), and after each a pause of 0.25,
    # 0.5, 1 and 2 s: the fourth at about 3.75 s. Before, one every 0.5 s: nine.
    assert 3 <= pisano.missed <= 5, pisano.missed
    late[0] = False  # the replica has its CPU back: the next slot is used, and the misses no longer count
    worker.join(8)
    assert not worker.is_alive() and len(pisano.requests) == 1 and r.kinds() == {"e1": {"delivered"}}
    assert r.sender.slots._misses == 0

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

CAMPAIGN = "ae51458c-9e82-417f-8f1d-e074891ea5c1"
BODY = b'{"phone_numbers":["+905321200001"]}'
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


@contextmanager
def recording_server() -> Iterator[tuple[int, list[bytes]]]:
    """A local server answering 200 to each request; yields its port and the bytes of each
    connection (one entry per connection, growing as bytes arrive)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    received: list[bytes] = []

    def serve(connection: socket.socket, index: int) -> None:
        with connection, suppress(OSError):
            while data := connection.recv(65536):
                received[index] += data
                if received[index].endswith(BODY):
                    connection.sendall(OK)

    def accept() -> None:
        with suppress(OSError):
            while True:
                connection, _ = listener.accept()
                received.append(b"")
                threading.Thread(target=serve, args=(connection, len(received) - 1), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield listener.getsockname()[1], received
    finally:
        listener.close()


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
        time.sleep(0.1)
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


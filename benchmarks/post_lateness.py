#!/usr/bin/env python3
"""How long after its "go" a POST reaches the server whole, beside busy Python threads.

    python benchmarks/post_lateness.py --busy 0 1 2 --requests 200 --allowed-ms 100

The throttle's lateness check (consumer/delivery/slots.py `ready`) passes a request at most half of
PISANO_RATE_MARGIN_MS after its slot; what runs after it, before the bytes leave, used to come out
of the other half. The client now checks the slot's latest moment again at the wire
(consumer/delivery/request_deadline.py) and gives the slot up rather than leave late. This measures
both: the product's `PisanoClient.send`, told to leave within `--allowed-ms` of its go, against a
bare HTTP server in another process, which stamps each request's first and last byte on the same
monotonic clock, while `--busy` threads spin in the sending process as a poll loop working through
a backlog would (the switch interval as `run` sets it, consumer/operations/gil.py). Printed per
`--busy`: p50, p90, p99, max in ms of the first and the last byte after the go, how many requests
arrived whole later than `--allowed-ms`, and how many slots were given up instead. `--no-check`
sends without the check (as before it, and as an older checkout's client runs this script).
"""

from __future__ import annotations

import argparse
import multiprocessing
import socket
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from consumer.delivery.pisano import PisanoClient  # noqa: E402
from consumer.errors import PisanoTransportError  # noqa: E402
from consumer.operations.gil import SWITCH_INTERVAL_S  # noqa: E402

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
CAMPAIGN = "ae51458c-9e82-417f-8f1d-e074891ea5c1"

def body(phones: int) -> bytes:
    return b'{"phone_numbers":[' + b",".join(b'"+9053212%05d"' % i for i in range(phones)) + b"]}"


def serve(listener: socket.socket, arrivals: multiprocessing.SimpleQueue) -> None:  # type: ignore[type-arg]
    """One connection at a time (the client keeps one, or opens another after giving a slot up):
    stamp each request's first and last byte, answer 200."""
    while True:
        connection, _ = listener.accept()
        pending, first = b"", 0.0
        while data := connection.recv(262144):
            if not pending:
                first = time.monotonic()
            pending += data
            head, sep, rest = pending.partition(b"\r\n\r\n")
            if sep and len(rest) >= int(dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:]
                                             )[b"Content-Length"]):
                arrivals.put((first, time.monotonic()))
                connection.sendall(OK)
                pending = b""
        connection.close()


def measure(url: str, arrivals: multiprocessing.SimpleQueue, busy: int, requests: int,  # type: ignore[type-arg]
            payload: bytes, allowed_s: float | None) -> tuple[list[float], list[float], int]:
    """First and last byte after the go (ms, sorted) of each request sent, and the slots given up."""
    stop = threading.Event()

    def spin() -> None:
        n = 0
        while not stop.is_set():
            n += 1

    spinners = [threading.Thread(target=spin, daemon=True) for _ in range(busy)]
    for spinner in spinners:
        spinner.start()
    client = PisanoClient(url, "tok-123456789", timeout_s=5, connect_timeout_s=1, max_connections=1)
    firsts, lasts, given_up = [], [], 0
    try:
        for _ in range(requests):
            time.sleep(0.01)  # a sender wakes at its slot
            go = time.monotonic()
            try:
                if allowed_s is None:
                    client.send(CAMPAIGN, payload)
                else:
                    client.send(CAMPAIGN, payload, leave_by=go + allowed_s)
            except PisanoTransportError:  # SlotMissed: nothing was sent
                given_up += 1
                continue
            first, last = arrivals.get()
            firsts.append((first - go) * 1000)
            lasts.append((last - go) * 1000)
    finally:
        stop.set()
        client.close()
    return sorted(firsts), sorted(lasts), given_up


def quantiles(values: list[float]) -> str:
    if not values:
        return "none sent"
    p50, p90, p99 = (values[min(len(values) - 1, int(q * len(values)))] for q in (0.5, 0.9, 0.99))
    return f"p50 {p50:.1f}  p90 {p90:.1f}  p99 {p99:.1f}  max {values[-1]:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--busy", type=int, nargs="+", default=[0, 1, 2], help="busy threads beside the sender")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--phones", type=int, default=5000, help="recipients per request (its body's size)")
    parser.add_argument("--allowed-ms", type=float, default=100.0,
                        help="how late after its go a request may leave (half of PISANO_RATE_MARGIN_MS)")
    parser.add_argument("--no-check", action="store_true", help="send without the check at the wire")
    args = parser.parse_args()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    listener = socket.create_server(("127.0.0.1", 0))
    arrivals: multiprocessing.SimpleQueue = multiprocessing.SimpleQueue()  # type: ignore[type-arg]
    server = multiprocessing.Process(target=serve, args=(listener, arrivals), daemon=True)
    server.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    payload = body(args.phones)
    allowed_s = None if args.no_check else args.allowed_ms / 1000
    how = "no check at the wire" if allowed_s is None else f"leaving within {args.allowed_ms:.0f} ms"
    print(f"from a POST's go to its first and last byte at the server, ms ({args.requests} requests of "
          f"{len(payload):,} bytes each, {how})", flush=True)
    for busy in args.busy:
        firsts, lasts, given_up = measure(url, arrivals, busy, args.requests, payload, allowed_s)
        over = sum(1 for last in lasts if last > args.allowed_ms)
        print(f"busy threads {busy}: first byte {quantiles(firsts)}", flush=True)
        print(f"{'':16}last byte  {quantiles(lasts)}", flush=True)
        print(f"{'':16}whole later than {args.allowed_ms:.0f} ms: {over} of {len(lasts)} sent; "
              f"slots given up: {given_up}", flush=True)
    server.terminate()


if __name__ == "__main__":
    main()

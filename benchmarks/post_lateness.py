#!/usr/bin/env python3
"""How long after its "go" a POST's first byte reaches the server, beside busy Python threads.

    python benchmarks/post_lateness.py --busy 0 1 2 --requests 200

The throttle's lateness check (consumer/delivery/slots.py `ready`) passes a request at most half of
PISANO_RATE_MARGIN_MS after its slot; what runs after it, before the bytes leave, comes out of the
other half. This measures that part: the product's `PisanoClient.send` against a bare HTTP server in
another process, which stamps each request's first byte on the same monotonic clock, while `--busy`
threads spin in the sending process as a poll loop working through a backlog would (the switch
interval as `run` sets it, consumer/operations/gil.py). Printed per `--busy`: p50, p90, p99, max in ms.
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
from consumer.operations.gil import SWITCH_INTERVAL_S  # noqa: E402

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
CAMPAIGN = "ae51458c-9e82-417f-8f1d-e074891ea5c1"
BODY = b'{"phone_numbers":["+905321200001"]}'


def serve(listener: socket.socket, arrivals: multiprocessing.SimpleQueue) -> None:  # type: ignore[type-arg]
    """One connection at a time (the client keeps one): stamp each request's first byte, answer 200."""
    while True:
        connection, _ = listener.accept()
        pending = b""
        while data := connection.recv(65536):
            if not pending:
                arrivals.put(time.monotonic())
            pending += data
            head, sep, body = pending.partition(b"\r\n\r\n")
            if sep and len(body) >= int(dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:]
                                             )[b"Content-Length"]):
                connection.sendall(OK)
                pending = b""


def measure(url: str, arrivals: multiprocessing.SimpleQueue, busy: int, requests: int) -> list[float]:  # type: ignore[type-arg]
    stop = threading.Event()

    def spin() -> None:
        n = 0
        while not stop.is_set():
            n += 1

    spinners = [threading.Thread(target=spin, daemon=True) for _ in range(busy)]
    for spinner in spinners:
        spinner.start()
    client = PisanoClient(url, "tok-123456789", timeout_s=5, connect_timeout_s=1, max_connections=1)
    late = []
    try:
        for _ in range(requests):
            time.sleep(0.01)  # a sender wakes at its slot
            go = time.monotonic()
            client.send(CAMPAIGN, BODY)
            late.append((arrivals.get() - go) * 1000)
    finally:
        stop.set()
        client.close()
    return sorted(late)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--busy", type=int, nargs="+", default=[0, 1, 2], help="busy threads beside the sender")
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    listener = socket.create_server(("127.0.0.1", 0))
    arrivals: multiprocessing.SimpleQueue = multiprocessing.SimpleQueue()  # type: ignore[type-arg]
    server = multiprocessing.Process(target=serve, args=(listener, arrivals), daemon=True)
    server.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    print(f"from a POST's go to its first byte at the server, ms ({args.requests} requests each)", flush=True)
    for busy in args.busy:
        late = measure(url, arrivals, busy, args.requests)
        p50, p90, p99 = (late[min(len(late) - 1, int(q * len(late)))] for q in (0.5, 0.9, 0.99))
        print(f"busy threads {busy}: p50 {p50:.1f}  p90 {p90:.1f}  p99 {p99:.1f}  max {late[-1]:.1f}", flush=True)
    server.terminate()


if __name__ == "__main__":
    main()

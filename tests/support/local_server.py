"""A local TCP server for the client tests that need real sockets (what reaches the wire, when)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress


@contextmanager
def serving(serve: Callable[[socket.socket], None]) -> Iterator[int]:
    """Listen on 127.0.0.1 and serve each connection with `serve` in a thread of its own; yields
    the port. On leaving, the listener closes and each connection's thread is waited for (5 s at
    most): once the client closed, everything it sent has been received."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    threads: list[threading.Thread] = []

    def accept() -> None:
        with suppress(OSError):
            while True:
                connection, _ = listener.accept()
                threads.append(threading.Thread(target=serve, args=(connection,), daemon=True))
                threads[-1].start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        for thread in threads:
            thread.join(5)

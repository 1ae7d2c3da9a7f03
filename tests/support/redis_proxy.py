"""A TCP proxy between a replica and the real Redis, to lose replies and slow commands on cue.

A mock Redis would only prove what the mock does; the failures of issue 11 (findings 5 and 6)
live on the wire: a script that ran in Redis whose reply never came back (a failover), a Redis
slow to answer. The proxy forwards bytes both ways and, when told:
- loses the reply to the next command whose bytes hold a marker (e.g. the claim script's SHA):
  the command reaches Redis and runs, its reply is kept here for the test and never forwarded,
  the connection is cut, and every connection is refused for `down_s` (Redis failing over);
- delays every command whose bytes hold a marker by `seconds` (a slow Redis for that command);
- holds back the reply to every n-th command holding a marker by `seconds`: the command ran at
  once, its answer arrives late (a client descheduled, a congested link on the way back).

One thread per direction per connection; redis-py sends one command at a time per connection,
so the first bytes back after a marked command are its reply.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass, field


@dataclass
class _Conn:
    client: socket.socket
    server: socket.socket
    drop_reply: bool = False  # the reply to the command just forwarded is to be lost
    hold_reply: float = 0.0  # seconds to hold the reply to the command just forwarded

    def cut(self) -> None:
        for sock in (self.client, self.server):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


@dataclass
class RedisProxy:
    upstream_host: str
    upstream_port: int
    lost: list[bytes] = field(default_factory=list)  # replies lost on purpose, as Redis sent them
    delayed: int = 0  # commands delayed so far
    held: int = 0  # replies held back so far
    _lose_marker: bytes | None = None
    _down_s: float = 0.0
    _down_until: float = 0.0
    _delay_marker: bytes | None = None
    _delay_s: float = 0.0
    _delay_times: int | None = None  # how many more commands to delay (None: all)
    _hold_marker: bytes | None = None
    _hold_s: float = 0.0
    _hold_every: int = 1
    _hold_seen: int = 0
    _conns: list[_Conn] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> RedisProxy:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, name="redis-proxy", daemon=True).start()
        return self

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def lose_reply(self, marker: bytes, down_s: float = 0.0) -> None:
        """Lose the reply to the next command holding `marker`, then refuse Redis for `down_s`."""
        with self._lock:
            self._lose_marker, self._down_s = marker, down_s

    def delay(self, marker: bytes, seconds: float, times: int | None = None) -> None:
        """Hold the commands holding `marker` (every one, or the next `times`) for `seconds`."""
        with self._lock:
            self._delay_marker, self._delay_s, self._delay_times = marker, seconds, times

    def hold_replies(self, marker: bytes, seconds: float, every: int = 1) -> None:
        """Hold back by `seconds` the reply to every `every`-th command holding `marker`."""
        with self._lock:
            self._hold_marker, self._hold_s, self._hold_every, self._hold_seen = marker, seconds, every, 0

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.cut()

    def _down(self) -> bool:
        return time.monotonic() < self._down_until

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            if self._down():  # failing over: the connection is dropped before any answer
                client.close()
                continue
            server = socket.create_connection((self.upstream_host, self.upstream_port))
            conn = _Conn(client, server)
            with self._lock:
                self._conns.append(conn)
            threading.Thread(target=self._upstream, args=(conn,), daemon=True).start()
            threading.Thread(target=self._downstream, args=(conn,), daemon=True).start()

    def _upstream(self, conn: _Conn) -> None:
        """Client to Redis: where commands are recognised by their marker."""
        tail = b""  # a marker may straddle two reads
        try:
            while data := conn.client.recv(65536):
                seen, tail = tail + data, data[-64:]
                if self._down():  # every connection dies in a failover, idle ones included
                    conn.cut()
                    return
                with self._lock:
                    if self._lose_marker is not None and self._lose_marker in seen:
                        self._lose_marker, conn.drop_reply = None, True
                    slow = 0.0
                    if self._delay_marker is not None and self._delay_marker in seen and self._delay_times != 0:
                        slow = self._delay_s
                        self._delay_times = None if self._delay_times is None else self._delay_times - 1
                    if self._hold_marker is not None and self._hold_marker in seen:
                        self._hold_seen += 1
                        if self._hold_seen % self._hold_every == 0:
                            conn.hold_reply = self._hold_s
                if slow:
                    self.delayed += 1
                    time.sleep(slow)
                conn.server.sendall(data)
        except OSError:
            pass
        conn.cut()

    def _downstream(self, conn: _Conn) -> None:
        """Redis to client: a reply marked lost is kept here, then the connection is cut."""
        try:
            while data := conn.server.recv(65536):
                if conn.drop_reply:  # the command ran in Redis; its answer never arrives
                    self.lost.append(data)
                    self._down_until = time.monotonic() + self._down_s
                    break
                if conn.hold_reply:  # the command ran; its answer comes back late
                    seconds, conn.hold_reply = conn.hold_reply, 0.0
                    self.held += 1
                    time.sleep(seconds)
                conn.client.sendall(data)
        except OSError:
            pass
        conn.cut()

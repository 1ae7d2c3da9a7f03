"""SIGTERM and Ctrl-C in the SRE tools (`replay`, `dlq stats`, `suppress import`).

Within `terminate_interrupts()`, SIGTERM (a Kubernetes Job deleted, `timeout`, a CI job
cancelled) raises `Terminated` where Ctrl-C raises KeyboardInterrupt, so a command ends the same
way on either: what it did so far, said, and exit 143 (130 for Ctrl-C).

Bookkeeping that must not stop half-way runs under `interrupt_deferred()`: a signal that lands
inside it only sets a flag, and is raised when the outermost such block ends (or, by
`raise_pending()`, at a point inside it where nothing is done yet). Python runs a signal handler
between two bytecodes of the main thread; the handler reads `_Guard.depth`, which the block
raises before its first step and lowers after its last, so a signal raises either before the
block began or after it ended, never inside it. No handler is swapped per block: a replay enters
one per record.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C's KeyboardInterrupt would be, so a run ends the same way: what
    was done kept, the counts so far, how to resume (found by review: SIGTERM killed the run silently)."""


class _Guard:
    def __init__(self) -> None:
        self.depth = 0  # open interrupt_deferred blocks
        self.caught: int | None = None  # the signal held back (SIGTERM wins over SIGINT)


_guard: _Guard | None = None


def _raise_for(signum: int) -> None:
    if signum == signal.SIGTERM:
        raise Terminated
    raise KeyboardInterrupt


def _handler(signum: int, _frame: Any) -> None:
    guard = _guard
    if guard is not None and guard.depth:
        if guard.caught != signal.SIGTERM:
            guard.caught = signum
        return
    _raise_for(signum)


@contextmanager
def terminate_interrupts() -> Iterator[None]:
    """Within the block, SIGTERM raises `Terminated` and Ctrl-C KeyboardInterrupt (unless Ctrl-C was
    set to something else than Python's own handler), both held back by `interrupt_deferred`; the
    previous handlers are put back after. Only in the main thread (where Python runs handlers)."""
    global _guard
    if threading.current_thread() is not threading.main_thread() or _guard is not None:
        yield
        return
    previous_term = signal.signal(signal.SIGTERM, _handler)
    previous_int = signal.getsignal(signal.SIGINT)
    own_int = previous_int is signal.default_int_handler
    if own_int:
        signal.signal(signal.SIGINT, _handler)
    _guard = _Guard()
    try:
        yield
    finally:
        _guard = None
        if own_int:
            signal.signal(signal.SIGINT, previous_int)
        signal.signal(signal.SIGTERM, previous_term if previous_term is not None else signal.SIG_DFL)


def raise_pending() -> None:
    """Raise the signal held back by the enclosing `interrupt_deferred` block now: for a point in
    it where nothing is done yet (before a record is produced), so a long wait does not hold it."""
    guard = _guard
    if guard is not None and guard.caught is not None:
        caught, guard.caught = guard.caught, None
        _raise_for(caught)


@contextmanager
def interrupt_deferred() -> Iterator[None]:
    """Hold a Ctrl-C (SIGINT), or a SIGTERM, until the block is done, then raise it: for
    bookkeeping that must not stop half-way. Nests; the outermost block raises."""
    guard = _guard
    if guard is None or threading.current_thread() is not threading.main_thread():
        with _swapped_handlers():
            yield
        return
    guard.depth += 1
    try:
        yield
    finally:
        guard.depth -= 1
    if not guard.depth:
        raise_pending()


@contextmanager
def _swapped_handlers() -> Iterator[None]:
    """Outside `terminate_interrupts`: hold a Ctrl-C by swapping Python's own handler for the block."""
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    caught: list[int] = []
    signal.signal(signal.SIGINT, lambda number, _frame: caught.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if caught:
        raise KeyboardInterrupt

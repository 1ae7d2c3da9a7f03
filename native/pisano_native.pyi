# Types of the native core (native/src/lib.rs); consumer/ingest/fused.py builds and calls it.
from collections.abc import Callable
from typing import Any

__version__: str

def records_mapped() -> int: ...

class Fused:
    def __init__(
        self,
        plan: tuple[Any, ...],
        symbols: list[str],
        slots: int,
        paths: tuple[int, int, int],
        custom: list[tuple[str, int]],
        built_in: list[tuple[str, int]],
        digits_only: bool,
        codes: list[int],
        rule_of: Callable[[int], Any],
        recipient: Callable[..., Any],
    ) -> None: ...
    def recipient(self, payload: bytes, offset: int) -> Any: ...

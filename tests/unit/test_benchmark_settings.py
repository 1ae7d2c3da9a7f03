"""The benchmarks' own settings pass the consumer's checks: `make bench-limiter` once failed before
measuring anything, its windows above the limit PISANO_RATE_LIMITS accepts (MAX_LIMIT)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from consumer.config.windows import MAX_LIMIT, parse_rate_limits

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_limiter_benchmark_windows_are_accepted_and_never_bind_in_its_run() -> None:
    limiter = _load("limiter")
    windows = parse_rate_limits(limiter.WINDOWS)
    assert windows and all(window.limit <= MAX_LIMIT for window in windows)
    # Tens of thousands of reservations a second for ten seconds stay far below every window.
    assert min(window.limit for window in windows) >= 1_000_000

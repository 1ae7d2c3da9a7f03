"""A stand-in for a read dead-letter, for what `dlq stats` counts (tests and benchmarks/dlq_stats_memory.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True)
class StatsLetter:
    """The attributes DlqStats.add reads of a DeadLetter: building real ones would measure their
    parsing, not the counting."""

    origin: tuple[str, int, int]
    code_label: str = "13001"
    reason: str = "pisano_error"
    campaign_label: str = "-"
    failed_at: datetime = datetime(2026, 1, 2, tzinfo=UTC)

"""Counters behind `GET /_sim/stats`: requests by answer, recipients delivered, throttle hits.

Every 429 counts once for its token and once for each window it exceeded, so a test can tell
which window a client ran into. Tokens appear as fingerprints only.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from consumer.config.windows import RateWindow

NO_ANSWER = "no_answer"  # the status key of requests that were never answered (hang faults)


class Stats:
    def __init__(self) -> None:
        self.by_status: Counter[str] = Counter()
        self.by_code: Counter[str] = Counter()
        self.throttled_by_token: Counter[str] = Counter()
        self.throttled_by_window: dict[str, Counter[str]] = {}

    def count_answer(self, http_status: int | None, code: int | None) -> None:
        self.by_status[NO_ANSWER if http_status is None else str(http_status)] += 1
        if code is not None:
            self.by_code[str(code)] += 1

    def count_throttled(self, token: str, exceeded: tuple[RateWindow, ...]) -> None:
        self.throttled_by_token[token] += 1
        windows = self.throttled_by_window.setdefault(token, Counter())
        for window in exceeded:
            windows[str(window)] += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": {
                "total": sum(self.by_status.values()),
                "by_status": dict(sorted(self.by_status.items())),
                "by_code": dict(sorted(self.by_code.items())),
            },
            "throttled": {
                "total": sum(self.throttled_by_token.values()),
                "by_token": {
                    token: {
                        "total": count,
                        "by_window": dict(self.throttled_by_window.get(token, {})),
                    }
                    for token, count in sorted(self.throttled_by_token.items())
                },
            },
        }

    def clear(self) -> None:
        self.by_status.clear()
        self.by_code.clear()
        self.throttled_by_token.clear()
        self.throttled_by_window.clear()

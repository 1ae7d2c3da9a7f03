"""A mapper written in code, as a company would ship in its own package (README example)."""

from collections.abc import Mapping
from typing import Any

from consumer.config.settings import Settings
from consumer.ingest.mapping import Mapper, Recipient


class UpperMapper(Mapper):
    @classmethod
    def from_settings(cls, settings: Settings) -> "UpperMapper":
        return cls()

    def map(self, record: Mapping[str, Any]) -> Recipient:
        return Recipient(event_id=str(record["id"]).upper(), campaign_id="ae51458c-9e82-417f-8f1d-e074891ea5c1",
                         phone=str(record["tel"]))

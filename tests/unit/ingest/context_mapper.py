"""A mapper plug-in written against the small context (README example)."""

from collections.abc import Mapping
from typing import Any

from consumer.mapping import Mapper, MapperContext, Recipient


class PrefixMapper(Mapper):
    def __init__(self, prefix: str, region: str | None) -> None:
        self.prefix = prefix
        self.region = region

    @classmethod
    def from_context(cls, context: MapperContext) -> "PrefixMapper":
        return cls(str(context.options.get("prefix", "")), context.phone_region)

    def map(self, record: Mapping[str, Any]) -> Recipient:
        return Recipient(event_id=self.prefix + str(record["id"]), campaign_id="ae51458c-9e82-417f-8f1d-e074891ea5c1",
                         phone=str(record["tel"]))

"""The mapper plug-in API, at the import path plug-ins use: `from consumer.mapping import ...`.

The implementation lives in consumer/ingest/mapping.py; this module keeps the public path stable.
"""

from consumer.errors import InvalidEventError, UnroutableError
from consumer.ingest.mapping import Mapper, MapperContext, Recipient

__all__ = ["InvalidEventError", "Mapper", "MapperContext", "Recipient", "UnroutableError"]

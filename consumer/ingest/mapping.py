"""Turning a decoded event into a Pisano recipient.

The mapping file (README, "The mapping file") names, as JMESPath expressions into the decoded
record, where the event id, the phone, the campaign and the recipient's attributes are. It is
compiled once; plain dotted paths such as `customer.phone` skip JMESPath and walk the dicts
directly, since they are nearly all paths in practice and this runs for every event.

A path may also read the Kafka record itself (`$kafka.key`, `$kafka.headers.<name>`, ...:
consumer/ingest/kafka_paths.py), an attribute may declare its type (consumer/ingest/attribute_types.py),
and `event_time` names the event's own time for MAX_EVENT_AGE (consumer/ingest/freshness.py).

Events that need code use a mapper class of their own, registered under the entry point group
`pisano_sms.mappers` and chosen with the `MAPPER` setting (README: "Mapping events that need
code").
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import jmespath
import jmespath.exceptions
import yaml

from consumer.config.campaign_ids import canonical_campaign_id
from consumer.config.resources import default_mapping_file
from consumer.config.settings import Settings
from consumer.errors import ConfigError, InvalidEventError, UnroutableError, unreadable_file
from consumer.ingest.attribute_types import Converter, converter, event_time_ms, time_zone
from consumer.ingest.kafka_paths import compile_kafka_path, is_kafka_path
from consumer.ingest.phones import PhoneNormaliser
from consumer.operations.logs import cut_short

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "pisano_sms.mappers"
MAX_EVENT_ID_CHARS = 256  # ids become Redis keys; a huge one is garbage, not an id
MAX_ATTRIBUTE_CHARS = 1024

_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_KEYS = {"event_id", "phone", "phone_region", "phone_format", "phone_foreign", "campaign_id",
         "campaign_routes", "custom_attributes", "built_in_responses", "event_time", "time_zone"}
EXTERNAL_ID_WARNING = ("the mapping sends no `external_id` custom attribute: Pisano's unsubscribe only holds "
                       "for customers sent with their external_id, and suppression by external id cannot match")

# A path reads (decoded value, Kafka record); the record is None when `map(value)` is called alone.
Path_ = Callable[[Any, Any], Any]


@dataclass(slots=True)
class Recipient:
    """What one event asks of Pisano: send `campaign_id`'s survey to `phone`."""

    event_id: str
    campaign_id: str
    phone: str
    custom_attributes: dict[str, str] = field(default_factory=dict)
    built_in_responses: dict[str, str] = field(default_factory=dict)
    # When the event happened (epoch ms), from the mapping's `event_time`; None: the Kafka timestamp
    # stands for it (MAX_EVENT_AGE, consumer/ingest/freshness.py).
    event_time_ms: int | None = None


@dataclass(frozen=True)
class MapperContext:
    """What a mapper plug-in is built from: its own options (`MAPPER_OPTIONS`), the mapping file
    (`MAPPING_FILE`, or the packaged default) and the region for phones written without a
    country code (`PHONE_REGION`). Deliberately small: a plug-in does not depend on every setting."""

    options: Mapping[str, Any]
    mapping_file: Path
    phone_region: str | None = None


class Mapper:
    """Base of every mapper: `map` turns a decoded record into a Recipient or raises
    InvalidEventError / UnroutableError (the event is then dead-lettered with that reason).

    Build it in `from_context`. `from_settings(settings)` is the older form, still honoured for
    mappers that define it and not `from_context`."""

    @classmethod
    def from_context(cls, context: MapperContext) -> Mapper:
        raise NotImplementedError

    @classmethod
    def from_settings(cls, settings: Settings) -> Mapper:
        raise NotImplementedError

    def map(self, record: Mapping[str, Any]) -> Recipient:
        raise NotImplementedError

    def map_kafka(self, record: Mapping[str, Any], kafka: Any) -> Recipient:
        """`map` with the Kafka record beside the decoded value (an `InboundRecord`); the pipeline
        calls this. Mappers that do not read Kafka metadata need not define it."""
        return self.map(record)

    def fields_read(self) -> frozenset[tuple[str, ...]] | None:
        """The record paths `map` reads (field names from the top record down), so that the
        decoder may leave the other fields out of the record it passes; None (this default) when
        it may read any: the whole record."""
        return None


def compile_path(key: str, expression: Any) -> Path_:
    if not isinstance(expression, str) or not expression.strip():
        raise ConfigError(f"mapping {key}: expected a JMESPath expression, got {expression!r}")
    # Surrounding whitespace is not part of a path (JMESPath ignores it too): a YAML `|` block
    # ends one in a newline.
    expression = expression.strip()
    steps = _dotted_steps(expression)
    if steps is not None:
        return _dotted(steps)
    if is_kafka_path(expression):
        return compile_kafka_path(key, expression)
    try:
        compiled = jmespath.compile(expression)
    except jmespath.exceptions.JMESPathError as exc:
        raise ConfigError(f"mapping {key}: {expression!r} is not valid JMESPath ({exc})") from None
    search = compiled.search
    return lambda record, kafka: search(record)


def _dotted_steps(expression: str) -> tuple[str, ...] | None:
    """The field names of a plain dotted path (`customer.phone`), or None for any other expression."""
    expression = expression.strip()  # as compile_path reads it
    return tuple(expression.split(".")) if _DOTTED.fullmatch(expression) else None


def record_paths(expressions: list[str]) -> frozenset[tuple[str, ...]] | None:
    """The record paths these (compiled, so valid) expressions read: a dotted path its fields, a
    `$kafka.*` path none; None if one is JMESPath, which may read anything."""
    paths = set()
    for expression in expressions:
        steps = _dotted_steps(expression)
        if steps is not None:
            paths.add(steps)
        elif not is_kafka_path(expression):
            return None
    return frozenset(paths)


def fields_read_by(mapper: Any) -> frozenset[tuple[str, ...]] | None:
    """The paths `mapper.fields_read()` names, checked at start-up: None (the whole record) for a
    mapper without the method; ConfigError for an answer that is not paths."""
    method = getattr(mapper, "fields_read", None)  # a duck-typed plug-in may have only `map`
    reads = method() if callable(method) else None
    if reads is None:
        return None
    try:
        paths = frozenset(reads) if not isinstance(reads, (str, bytes)) else None
    except TypeError:
        paths = None
    if paths is None or not all(type(path) is tuple and path and all(type(step) is str for step in path)
                                for path in paths):
        raise ConfigError(f"{type(mapper).__name__}.fields_read() must return None or paths as tuples of field "
                          "names, such as {('event_id',), ('customer', 'phone')}; fix the mapper")
    return paths


def _dotted(steps: tuple[str, ...]) -> Path_:
    """A dotted path as plain lookups. Decoded Avro records are dicts: `type(...) is dict` decides
    that at once, where `isinstance(..., Mapping)` goes through the ABC machinery on every step
    of every event; other mappings (a plug-in's) still take the general walk."""
    if len(steps) == 1:
        (first,) = steps

        def one(record: Any, kafka: Any) -> Any:
            if type(record) is dict:
                return record.get(first)
            return record.get(first) if isinstance(record, Mapping) else None

        return one
    if len(steps) == 2:
        outer, inner = steps

        def two(record: Any, kafka: Any) -> Any:
            if type(record) is dict:
                nested = record.get(outer)
                if type(nested) is dict:
                    return nested.get(inner)
            return _walk(steps, record)

        return two
    return lambda record, kafka: _walk(steps, record)


def _walk(steps: tuple[str, ...], record: Any) -> Any:
    for step in steps:
        if not isinstance(record, Mapping):
            return None
        record = record.get(step)
    return record


# The canonical 8-4-4-4-12 form only: `uuid.UUID` also takes braces, `urn:uuid:` and bare hex, and
# the id goes into the request's URL path, where only the canonical form is a campaign.
_CAMPAIGN_ID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")


def is_campaign_id(value: str) -> bool:
    return known_campaign(value) is not None


def known_campaign(value: str) -> str | None:
    """The campaign id `value` names, if it is one, in its canonical form (lower case: a UUID is
    case-insensitive, and send windows, destinations, cooldowns and circuits look campaigns up by
    exact string; consumer/config/campaign_ids.py) and as one shared object per id (each record
    decodes a copy of its own, which would otherwise stay with its event until its outcome); None
    if it is not a campaign id. A fleet routes to a handful of campaigns: each distinct id is
    matched once, then found in a dict (bounded, since ids come from records)."""
    exact = type(value) is str  # a str subclass could fake equality: matched each time, never remembered
    if exact:
        known = _VALID_CAMPAIGNS.get(value)
        if known is not None:
            return known
    if _CAMPAIGN_ID.match(value) is None:
        return None
    canonical = canonical_campaign_id(str.__str__(value))  # a plain str, whatever the subclass
    if exact:
        if len(_VALID_CAMPAIGNS) >= _MAX_REMEMBERED_CAMPAIGNS:
            _VALID_CAMPAIGNS.clear()
        canonical = _VALID_CAMPAIGNS.setdefault(canonical, canonical)
        _VALID_CAMPAIGNS[value] = canonical
    return canonical


_VALID_CAMPAIGNS: dict[str, str] = {}
_MAX_REMEMBERED_CAMPAIGNS = 4096


def _text(value: Any, field: str, name: str = "") -> str | None:
    """Attribute values go to Pisano as strings; nested structures are not attributes. `field`
    (and the attribute's `name`) name the field in the message of a value that has no text: put
    together only then, as this runs for every attribute value that is not a string."""
    if type(value) is str:  # nearly every value: skip the checks below
        return value if len(value) <= MAX_ATTRIBUTE_CHARS else value[:MAX_ATTRIBUTE_CHARS]
    if value is None or isinstance(value, (dict, list)):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    try:
        text = str(value)
    except Exception as exc:
        # No Avro reader gives such a value, a custom decoder may: an int past Python's 4,300
        # digits (ValueError), an object whose __str__ raises. A reason naming the field, where the
        # intake's net would only say that the mapper failed.
        where = f"{field}.{name}" if name else field
        raise InvalidEventError(f"{where}: a value of type {type(value).__name__} that cannot be written as text "
                                f"({type(exc).__name__}); convert it in the decoder or a custom mapper") from None
    return text[:MAX_ATTRIBUTE_CHARS]


@dataclass(frozen=True)
class CampaignRoutes:
    field: Path_
    routes: Mapping[str, str]
    default: str | None


class DeclarativeMapper(Mapper):
    """The mapping file, compiled."""

    def __init__(self, spec: Mapping[str, Any], source: str = "mapping") -> None:
        unknown = set(spec) - _KEYS
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {', '.join(sorted(unknown))}; "
                              f"expected some of {', '.join(sorted(_KEYS))}")
        for required in ("event_id", "phone"):
            if required not in spec:
                raise ConfigError(f"{source}: `{required}` is required (a path into the event)")
        if "campaign_id" not in spec and "campaign_routes" not in spec:
            raise ConfigError(f"{source}: set `campaign_id` (a path) or `campaign_routes`")
        self.spec = spec  # as read: the native core plans from it (consumer/ingest/fused.py)
        self.zone = time_zone(spec.get("time_zone"))
        self.event_id = compile_path("event_id", spec["event_id"])
        self.phone = compile_path("phone", spec["phone"])
        self.phones = PhoneNormaliser(spec.get("phone_region"), spec.get("phone_format", "e164"),
                                      spec.get("phone_foreign", "e164"))
        self.campaign_id = (compile_path("campaign_id", spec["campaign_id"])
                            if spec.get("campaign_id") else None)
        self.routes = self._routes(spec.get("campaign_routes"), source)
        self.custom_attributes = self._paths("custom_attributes", spec.get("custom_attributes"))
        self.built_in_responses = self._paths("built_in_responses", spec.get("built_in_responses"))
        self.custom_types = self._types("custom_attributes", spec.get("custom_attributes"))
        self.built_in_types = self._types("built_in_responses", spec.get("built_in_responses"))
        self.event_time = compile_path("event_time", spec["event_time"]) if spec.get("event_time") else None
        # Every path above, for the decoder (`fields_read`): the fields no path reads are left out.
        expressions = [spec["event_id"], spec["phone"]]
        if spec.get("campaign_id"):
            expressions.append(spec["campaign_id"])
        if self.routes is not None:
            expressions.append(spec["campaign_routes"]["field"])
        for key in ("custom_attributes", "built_in_responses"):
            expressions += _attribute_paths(key, spec.get(key))
        if spec.get("event_time"):
            expressions.append(spec["event_time"])
        self.mapping_paths = record_paths(expressions)
        # Said once, at load (and by `pisano-sms check`): not an error, some companies have none.
        self.warnings: list[str] = []
        if "external_id" not in (spec.get("custom_attributes") or {}):
            self.warnings.append(EXTERNAL_ID_WARNING)
            log.warning("%s: %s", source, EXTERNAL_ID_WARNING)

    def fields_read(self) -> frozenset[tuple[str, ...]] | None:
        # A subclass may read other fields in code of its own: it gets the whole record unless it
        # says what it reads, overriding this (`mapping_paths` are those of the mapping file).
        return self.mapping_paths if type(self) is DeclarativeMapper else None

    @classmethod
    def from_context(cls, context: MapperContext) -> DeclarativeMapper:
        return cls.from_file(context.mapping_file)

    @classmethod
    def from_settings(cls, settings: Settings) -> DeclarativeMapper:
        return cls.from_context(mapper_context(settings))

    @classmethod
    def from_file(cls, path: Path) -> DeclarativeMapper:
        try:
            spec = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise unreadable_file(f"MAPPING_FILE={path}", exc) from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"MAPPING_FILE={path}: not valid YAML; fix the file") from exc
        if not isinstance(spec, dict):
            raise ConfigError(f"MAPPING_FILE={path}: expected a mapping with event_id, phone, ...")
        return cls(spec, source=f"MAPPING_FILE={path}")

    @staticmethod
    def _paths(key: str, spec: Any) -> tuple[tuple[str, Path_], ...]:
        """The plain (string) attributes: `name: path`, or `name: {path: ..., type: string}`."""
        if spec is None:
            return ()
        if not isinstance(spec, dict):
            raise ConfigError(f"mapping {key}: expected a mapping of name: path")
        return tuple((str(name), compile_path(f"{key}.{name}", _attribute(key, name, path)[0]))
                     for name, path in spec.items() if _attribute(key, name, path)[1] == "string")

    def _types(self, key: str, spec: Any) -> tuple[tuple[str, Path_, Converter], ...]:
        """The typed attributes: `name: {path: ..., type: integer}` (consumer/ingest/attribute_types.py)."""
        if not isinstance(spec, dict):
            return ()
        typed = []
        for name, value in spec.items():
            path, kind = _attribute(key, name, value)
            if kind != "string":
                where = f"{key}.{name}"
                typed.append((str(name), compile_path(where, path), converter(kind, self.zone, where)))
        return tuple(typed)

    @staticmethod
    def _routes(spec: Any, source: str) -> CampaignRoutes | None:
        if spec is None:
            return None
        if not isinstance(spec, dict) or "field" not in spec or not isinstance(spec.get("routes"), dict):
            raise ConfigError(f"{source}: campaign_routes needs `field` (a path) and `routes` "
                              "(value: campaign id)")
        default = spec.get("default")
        for value in [*spec["routes"].values(), *([default] if default else [])]:
            if not is_campaign_id(str(value)):
                raise ConfigError(f"{source}: campaign_routes: {value!r} is not a campaign API id "
                                  "(a UUID such as ae51458c-9e82-417f-8f1d-e074891ea5c1)")
        # Canonical (lower case), as a record's own campaign id is: the settings look it up so.
        routes = {str(k): canonical_campaign_id(str(v)) for k, v in spec["routes"].items()}
        return CampaignRoutes(compile_path("campaign_routes.field", spec["field"]), routes,
                              canonical_campaign_id(str(default)) if default else None)

    def map(self, record: Mapping[str, Any]) -> Recipient:
        return self.map_kafka(record, None)

    def map_kafka(self, record: Mapping[str, Any], kafka: Any) -> Recipient:
        event_id = _text(self.event_id(record, kafka), "event_id")
        if not event_id:
            raise InvalidEventError("no event id at the mapping's event_id path")
        if len(event_id) > MAX_EVENT_ID_CHARS:
            raise InvalidEventError(f"event id longer than {MAX_EVENT_ID_CHARS} characters")
        raw_phone = self.phone(record, kafka)
        if not isinstance(raw_phone, str) or not (raw_phone := raw_phone.strip()):
            raise InvalidEventError("no phone at the mapping's phone path")
        phone = self.phones.normalise(raw_phone)
        custom = self._values("custom_attributes", self.custom_attributes, record, kafka)
        if self.custom_types:
            _typed(self.custom_types, record, kafka, custom)
        built_in = (self._values("built_in_responses", self.built_in_responses, record, kafka)
                    if self.built_in_responses else {})
        if self.built_in_types:
            _typed(self.built_in_types, record, kafka, built_in)
        # Positional (event id, campaign, phone, custom, built-in, event time): a keyword call costs
        # more, and this runs for every event. The campaign is still read after the phone.
        return Recipient(event_id, self._campaign(record, kafka), phone, custom, built_in,
                         self._event_time(record, kafka) if self.event_time is not None else None)

    def _event_time(self, record: Mapping[str, Any], kafka: Any) -> int:
        assert self.event_time is not None
        value = self.event_time(record, kafka)
        if value is None:  # the Kafka timestamp is no stand-in: the event may be older than its record
            raise InvalidEventError("no event time at the mapping's event_time path")
        return event_time_ms(value, self.zone)

    def _campaign(self, record: Mapping[str, Any], kafka: Any) -> str:
        campaign = _text(self.campaign_id(record, kafka), "campaign_id") if self.campaign_id else None
        if campaign is None and self.routes is not None:
            key = _text(self.routes.field(record, kafka), "campaign_routes.field")
            campaign = self.routes.routes.get(key, self.routes.default) if key else self.routes.default
            if campaign is None:
                # A record's field: quoted short, cut where no part of a number is left (redacted
                # on the poll thread, which could not read a number cut to a few digits).
                shown = key if key is None else cut_short(key, 64)
                raise UnroutableError(f"no campaign route for {shown!r} and no default route")
        if campaign is None:
            raise UnroutableError("the event names no campaign and there is no route table")
        known = known_campaign(campaign)
        if known is None:
            raise UnroutableError(f"campaign {cut_short(campaign, 64)!r} is not a campaign API id (a UUID)")
        return known

    @staticmethod
    def _values(field: str, paths: tuple[tuple[str, Path_], ...], record: Mapping[str, Any],
                kafka: Any) -> dict[str, str]:
        out = {}
        for name, path in paths:
            value = path(record, kafka)
            # Nearly every value is a short string: kept as `_text` would keep it, without the call.
            if (type(value) is str and len(value) <= MAX_ATTRIBUTE_CHARS) \
                    or (value := _text(value, field, name)) is not None:
                out[name] = value
        return out


def _typed(typed: tuple[tuple[str, Path_, Converter], ...], record: Mapping[str, Any], kafka: Any,
           out: dict[str, str]) -> None:
    for name, path, convert in typed:
        value = path(record, kafka)
        if value is not None:
            out[name] = convert(value)


def _attribute_paths(key: str, spec: Any) -> list[str]:
    """The paths of an attribute map (checked by `_paths` and `_types` already)."""
    return [_attribute(key, name, value)[0] for name, value in spec.items()] if isinstance(spec, dict) else []


def _attribute(key: str, name: Any, spec: Any) -> tuple[Any, str]:
    """(path, type) of one attribute: a plain path is a string attribute."""
    if not isinstance(spec, dict):
        return spec, "string"
    unknown = set(spec) - {"path", "type"}
    if unknown or "path" not in spec:
        raise ConfigError(f"mapping {key}.{name}: expected a path, or {{path: ..., type: ...}} "
                          "with type one of string, integer, float, boolean, date, datetime")
    return spec["path"], str(spec.get("type", "string"))


def mapper_context(settings: Settings) -> MapperContext:
    return MapperContext(options=dict(settings.mapper_options), mapping_file=settings.mapping_file
                         or default_mapping_file(), phone_region=settings.phone_region)


def load_mapper(settings: Settings) -> Mapper:
    """The mapper named by `MAPPER`, from the `pisano_sms.mappers` entry point group."""
    if settings.mapper == "declarative":
        return DeclarativeMapper.from_context(mapper_context(settings))
    found = entry_points(group=ENTRY_POINT_GROUP, name=settings.mapper)
    if not found:
        names = sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
        raise ConfigError(f"MAPPER={settings.mapper!r}: no such mapper; installed: {', '.join(names)}")
    mapper_class = next(iter(found)).load()
    if not (isinstance(mapper_class, type) and issubclass(mapper_class, Mapper)):
        raise ConfigError(f"MAPPER={settings.mapper!r}: {mapper_class!r} is not a consumer.mapping.Mapper")
    if mapper_class.from_context.__func__ is not Mapper.from_context.__func__:  # type: ignore[attr-defined]
        return mapper_class.from_context(mapper_context(settings))
    return mapper_class.from_settings(settings)

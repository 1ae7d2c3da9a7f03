"""`pisano-sms check --campaigns`: does every routed campaign exist at its destination, with a flow?

The campaigns are the ones the configuration can route: each destination's `campaigns` list,
the mapping file's `campaign_routes` (its routes and default), and any `--campaign`; each is
asked of the destination that would send it (as `consumer.app.router` routes).

The request sends no SMS: the sharing endpoint with an empty recipient list,
`{"phone_numbers": []}`. Pisano checks the token, then finds the campaign (404 13002 if there is
none, 404 13005 if its node has no flow, 400 13034 if the flow is invalid), and only then
validates the body, which an empty list fails (400 13015 / 13028): that answer proves the
campaign is ready, and no phone number was given to send to. The simulator answers in this order
(`consumer/simulator/sharing.py`). Each request takes a slot from the destination's throttle,
shared with the running fleet, as any other request to Pisano: it spends the same budget.

That order is not in Pisano's reference, so it is checked, once per destination, before its
campaigns: the same empty request for a campaign id that cannot exist (the nil UUID of the token
probe). Only a 404 there shows that the campaign is looked up before the body is validated; a
destination that answers it otherwise (a validation code: it validates first) cannot prove a
campaign this way, and its campaigns that drew a validation answer are reported `unproven`, not
ok. A preflight must never pass a campaign it did not prove.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from consumer.app import build_destination, build_state
from consumer.config.destinations import DEFAULT, destination_configs, routes
from consumer.config.secrets import mask_url
from consumer.config.settings import Settings
from consumer.delivery.destination import Destination
from consumer.delivery.pisano import PROBE_CAMPAIGN
from consumer.delivery.pisano_codes import RESOURCE_NOT_FOUND
from consumer.delivery.slots import NoSlot, send_in_slot
from consumer.errors import PisanoApiError, PisanoTransportError, StateStoreError
from consumer.ingest.mapping import DeclarativeMapper, is_campaign_id, known_campaign, load_mapper
from consumer.state.circuit import Trip, token_verdict
from consumer.state.limiter import Limiter

VALIDATION_CODES = frozenset({13015, 13028})  # the body was refused: the campaign was found first
NO_FLOW, INVALID_FLOW, PERMISSION_DENIED = 13005, 13034, 13013
EMPTY_REQUEST = b'{"phone_numbers":[]}'
MARGIN_S = 60.0


@dataclass(frozen=True)
class CampaignResult:
    destination: str
    campaign: str
    status: str  # ok | unknown campaign | no flow | invalid flow | wrong token | throttled | unproven | failed
    detail: str

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def routed_campaigns(settings: Settings, extra: tuple[str, ...] = ()) -> tuple[list[str], str | None]:
    """The campaign ids the configuration routes, and a note when events may name others."""
    campaigns: list[str] = []
    for config in destination_configs(settings).values():
        campaigns.extend(sorted(config.campaigns))
    note = None
    mapper = load_mapper(settings)
    if isinstance(mapper, DeclarativeMapper):
        if mapper.routes is not None:
            campaigns.extend(mapper.routes.routes.values())
            if mapper.routes.default:
                campaigns.append(mapper.routes.default)
        if mapper.campaign_id is not None:
            note = ("the mapping takes campaign ids from the events (`campaign_id`): those cannot be listed; "
                    "pass --campaign ID for each one you expect")
    else:
        note = f"MAPPER={settings.mapper}: its campaigns cannot be listed; pass --campaign ID for each"
    campaigns.extend(known_campaign(campaign) or campaign for campaign in extra)  # as a record's id is read
    return list(dict.fromkeys(campaigns)), note


def verdict(answer: PisanoApiError | None) -> tuple[str, str]:
    """(status, what it means and what to do) for Pisano's answer to the empty request."""
    if answer is None:
        return "ok", "accepted (HTTP 200 to an empty recipient list: nothing to send)"
    shown = f"HTTP {answer.http_status} code {answer.code}"
    if answer.http_status == 400 and answer.code in VALIDATION_CODES:
        return "ok", f"the campaign exists and has a flow ({shown} to the empty request)"
    if answer.code == RESOURCE_NOT_FOUND or (answer.http_status == 404 and answer.code is None):
        return "unknown campaign", (f"{shown}: no campaign with this API id at this account; copy the "
                                    "campaign's API ID from Pisano, or route it to the destination that owns it")
    if answer.code == NO_FLOW:
        return "no flow", f"{shown}: the campaign's node has no flow; bind its SMS channel to a flow in Pisano"
    if answer.code == INVALID_FLOW:
        return "invalid flow", f"{shown}: the campaign's flow is invalid; fix the flow in Pisano"
    if answer.code == PERMISSION_DENIED:  # given once the token passed: the token is not what to check
        return "failed", (f"{shown}: Pisano accepted the token, but its API user may not use this campaign; "
                          "give that user access to the campaign in Pisano")
    token = token_verdict(answer)
    if isinstance(token, Trip):
        return "wrong token", (f"{shown}: Pisano refused the token; check the destination's token "
                               "(PISANO_API_TOKEN, api_token_file or the token provider)")
    if answer.http_status == 429:
        return "throttled", f"{shown}: Pisano's throttle is spent; run the check again later"
    return "failed", f"unexpected answer {shown}"


def check_campaigns(settings: Settings, extra: tuple[str, ...] = ()) -> Iterator[CampaignResult | str]:
    """One result per routed campaign, each from one empty request in a throttle slot; a note
    (str) first when some campaigns cannot be listed."""
    campaigns, note = routed_campaigns(settings, extra)
    if note:
        yield note
    state = build_state(settings)
    configs = destination_configs(settings)
    owners = routes(configs)  # as `consumer.app.router` routes: a listed campaign, else `default`
    destinations: dict[str, Destination] = {}
    looks_up_first: dict[str, str | None] = {}  # per destination: None if proven, else why not
    try:
        for campaign in campaigns:
            name = owners.get(campaign, DEFAULT)
            if not is_campaign_id(campaign):
                yield CampaignResult(name, campaign, "unknown campaign", "not a campaign API id (a UUID)")
                continue
            if name not in configs:
                yield CampaignResult(name, campaign, "failed", "no destination takes it (set PISANO_URL or list it "
                                     "under a destination's campaigns)")
                continue
            if name not in destinations:
                destinations[name] = build_destination(configs[name], settings, state, connections=1,
                                                       horizon_ms=60_000)
                looks_up_first[name] = _control(destinations[name])
            result = _check_one(destinations[name], campaign, mask_url(configs[name].url))
            unproven = looks_up_first[name]
            if result.ok and unproven is not None:
                result = CampaignResult(name, campaign, "unproven", f"{result.detail}, but {unproven}")
            yield result
    finally:
        for destination in destinations.values():
            destination.client.close()


def _control(destination: Destination) -> str | None:
    """None when the destination answers the empty request for a campaign that cannot exist with
    a 404 (it looks the campaign up before it validates the body); else why its answers to the
    empty request prove nothing about a campaign (the module docstring)."""
    result = _check_one(destination, PROBE_CAMPAIGN, "")
    if result.status == "unknown campaign":
        return None
    return (f"the same request for the nil campaign id, which exists nowhere, got no 404 ({result.status}: "
            f"{result.detail}): this destination may validate the body before it looks the campaign up, so "
            "that answer proves nothing; check the campaign in Pisano")


def _check_one(destination: Destination, campaign: str, shown_url: str) -> CampaignResult:
    try:
        client = destination.client
        sent = send_in_slot(destination.limiter, _within_s(destination.limiter),
                            lambda leave_by: client.send(campaign, EMPTY_REQUEST, leave_by), warm=client.warm)
        if isinstance(sent, NoSlot):
            return CampaignResult(destination.name, campaign, "throttled", sent.why)
        answer = None
    except PisanoApiError as refused:
        answer = refused
    except PisanoTransportError as exc:
        return CampaignResult(destination.name, campaign, "failed", f"{shown_url}: {exc.message}; check its URL")
    except StateStoreError as exc:
        return CampaignResult(destination.name, campaign, "failed", f"no throttle slot: {exc}; check REDIS_URL")
    status, detail = verdict(answer)
    return CampaignResult(destination.name, campaign, status, detail)


def _within_s(limiter: Limiter) -> float:
    """How long a request waits for a slot of the shared throttle it can use on time."""
    longest = max((w.period_ms / 1000 for w in limiter.windows), default=0.0)
    return longest + MARGIN_S

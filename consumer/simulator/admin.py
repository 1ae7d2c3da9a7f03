"""The `/_sim/` admin endpoints: read what the simulator saw, change its behaviour at runtime.

GET  /_sim/healthz     {"status": "ok"}
GET  /_sim/deliveries  delivery records (deliveries.py), oldest first;
                       ?campaign=<id> filters, ?format=jsonl answers JSONL
GET  /_sim/requests    request records, oldest first; ?campaign=<id> filters
GET  /_sim/stats       requests by HTTP status and by code, recipients delivered,
                       429s per token and per window, the current config
POST /_sim/faults      JSON fault settings (config.FaultSettings field names), merged into
                       the current ones; ?mode=replace resets the fields not given
POST /_sim/config      JSON with any of tokens, campaigns (lists), any_campaign (bool),
                       rate_limits ("20/5s,40/25s" or "off"; new windows start from an
                       empty throttle log)
POST /_sim/reset       clears the logs (not the JSONL file), the counters and the throttle;
                       re-seeds the fault dice

The POST endpoints answer with the resulting settings, tokens shown as fingerprints. A bad value
answers 400 in the simulator's error shape with `"code": null`.

These endpoints show every recipient's full phone number and change the simulator's behaviour.
On loopback (the default) only local processes reach them. Bound to any other address, the
simulator needs an admin token (server.py refuses to start without one), and every `/_sim/`
request must carry it as `Authorization: Bearer <admin token>`; without it the answer is 401.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from consumer.errors import ConfigError
from consumer.simulator.answers import ErrorAnswer
from consumer.simulator.config import FaultSettings
from consumer.simulator.state import SimulatorState, simulator_state

logger = logging.getLogger(__name__)


Endpoint = Callable[[Request], Awaitable[Response]]


def admin_routes() -> list[Route]:
    return [
        Route("/_sim/healthz", _guarded(healthz), methods=["GET"]),
        Route("/_sim/deliveries", _guarded(deliveries), methods=["GET"]),
        Route("/_sim/requests", _guarded(requests), methods=["GET"]),
        Route("/_sim/stats", _guarded(stats), methods=["GET"]),
        Route("/_sim/faults", _guarded(faults), methods=["POST"]),
        Route("/_sim/config", _guarded(config), methods=["POST"]),
        Route("/_sim/reset", _guarded(reset), methods=["POST"]),
    ]


def _guarded(endpoint: Endpoint) -> Endpoint:
    async def guarded(request: Request) -> Response:
        expected: str | None = getattr(request.app.state, "admin_token", None)
        if expected is not None:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {expected}".encode()):
                return ErrorAnswer.for_status(401, "the /_sim/ endpoints need Authorization: Bearer <admin token> "
                                              "(--admin-token of the simulator)").to_answer().to_response()
        return await endpoint(request)

    guarded.__name__ = endpoint.__name__
    return guarded


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def deliveries(request: Request) -> Response:
    state = _state(request)
    log = state.deliveries
    campaign_id = request.query_params.get("campaign")
    if request.query_params.get("format") == "jsonl":
        return Response(await state.serial(log.jsonl, campaign_id), media_type="application/x-ndjson")
    return JSONResponse(await state.serial(log.records, campaign_id))


async def requests(request: Request) -> Response:
    state = _state(request)
    return JSONResponse(await state.serial(state.requests.records, request.query_params.get("campaign")))


async def stats(request: Request) -> Response:
    state = _state(request)
    return JSONResponse(await state.serial(state.stats_dict))


async def faults(request: Request) -> Response:
    state = _state(request)
    mode = request.query_params.get("mode", "merge")
    if mode not in ("merge", "replace"):
        return _bad_request("mode must be merge or replace")
    try:
        data = await _json_object(request)
        await state.serial(lambda: state.set_faults(
            FaultSettings.from_json(data, state.config.faults if mode == "merge" else None)))
    except ConfigError as exc:
        return _bad_request(str(exc))
    return JSONResponse(state.config.faults.public_dict())


async def config(request: Request) -> Response:
    state = _state(request)
    try:
        changes = await _json_object(request)
        await state.serial(lambda: state.set_config(state.config.with_changes(changes)))
    except ConfigError as exc:
        return _bad_request(str(exc))
    return JSONResponse(state.config.public_dict())


async def reset(request: Request) -> Response:
    state = _state(request)
    await state.serial(state.reset)
    logger.info("simulator reset")
    return JSONResponse({"status": "ok"})


def _state(request: Request) -> SimulatorState:
    return simulator_state(request.app)


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        data = json.loads(await request.body())
    except ValueError as exc:
        raise ConfigError("the body is not JSON") from exc
    if not isinstance(data, dict):
        raise ConfigError("the body must be a JSON object")
    return data


def _bad_request(message: str) -> Response:
    return ErrorAnswer.for_status(400, message).to_answer().to_response()

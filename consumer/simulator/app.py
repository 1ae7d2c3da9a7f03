"""The simulator as an ASGI app: Pisano's sharing endpoint plus the `/_sim/` admin endpoints.

    POST /v1/sms_campaigns/{campaign_id}/sms_sharings[/]    the simulated API (sharing.py)
    /_sim/...                                               admin (admin.py)

This module does the HTTP part of a sharing request: it reads the body up to the size limit
(refusing a declared Content-Length over it without reading), stamps its arrival, hands the
decision to `handle_sharing` on the state's worker thread (state.py), waits the injected
latency, and for hang faults answers nothing until the client disconnects. Unknown paths answer
404 with code 13002 and wrong methods 405, in the same error body shape as everything else.
"""

from __future__ import annotations

import asyncio

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from consumer.delivery.pisano_codes import RESOURCE_NOT_FOUND
from consumer.simulator.admin import admin_routes
from consumer.simulator.answers import ErrorAnswer
from consumer.simulator.clock import Clock, SystemClock
from consumer.simulator.config import SimulatorConfig
from consumer.simulator.sharing import Arrival, handle_sharing
from consumer.simulator.state import SimulatorState, simulator_state

SHARING_PATH = "/v1/sms_campaigns/{campaign_id}/sms_sharings"


def create_app(config: SimulatorConfig, clock: Clock | None = None, admin_token: str | None = None) -> Starlette:
    """The app; its SimulatorState is `app.state.simulator` (see `simulator_state`). With
    `admin_token`, the `/_sim/` endpoints answer only requests that carry it (admin.py)."""
    app = Starlette(
        routes=[
            Route(SHARING_PATH, share, methods=["POST"]),
            Route(SHARING_PATH + "/", share, methods=["POST"]),
            *admin_routes(),
        ],
        exception_handlers={404: _not_found, 405: _method_not_allowed},
    )
    app.state.simulator = SimulatorState(config, clock or SystemClock())
    app.state.admin_token = admin_token
    return app


async def share(request: Request) -> Response:
    state = simulator_state(request.app)
    try:
        body = await _read_body(request, state.config.max_body_bytes)
    except ClientDisconnect:
        return Response()  # the request never fully arrived: nothing to decide, no one to answer
    # Stamped here, on the loop, and submitted at once: the worker decides requests in the
    # order of their stamps, so the throttle log stays in time order.
    arrived = Arrival(state.clock.monotonic_ns(), state.clock.wall_ns())
    handling = await state.serial(
        handle_sharing, state, request.headers.get("authorization"), request.path_params["campaign_id"], body, arrived
    )
    if handling.answer is None:
        await _until_disconnected(request)
        return Response()  # the client is gone: the server drops what is sent to it
    if handling.delay_s:
        await asyncio.sleep(handling.delay_s)
    return handling.answer.to_response()


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it is known to be larger than `limit`."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def _until_disconnected(request: Request) -> None:
    # The body has been read, so the next message the server delivers is the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _not_found(request: Request, exc: Exception) -> Response:
    return ErrorAnswer.for_code(RESOURCE_NOT_FOUND).to_answer().to_response()


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    headers = dict(exc.headers or {}) if isinstance(exc, HTTPException) else {}
    return ErrorAnswer.for_status(405, headers=headers).to_answer().to_response()

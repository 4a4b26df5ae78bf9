"""``/admin/v1/``: the admin API, an aiohttp sub-application of the intake's app.

Bearer tokens from ``[admin] tokens``, each ``read`` or ``operate`` (which may also
read); compared in constant time. 401 without a valid token, 403 for a write with a
``read`` token. Handlers only parse and answer: every operation is a function of
``ops``, ``search``, ``bulk`` or ``audit``, which the CLI and the console call too.
"""

from __future__ import annotations

import contextvars
import hmac
import json
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Annotated, Any

import msgspec
from aiohttp import web
from redis.exceptions import RedisError

from ..durations import Duration
from ..history import STATUSES
from . import audit, bulk, customers, ops, search
from .common import AdminContext, BadRequest, Conflict, NotFound, page_size

CONTEXT = web.AppKey("admin_context", AdminContext)
TOKENS = web.AppKey("admin_tokens", tuple)
RELOAD: web.AppKey[ops.Reload | None] = web.AppKey("admin_reload")
#: The token name of the request being handled (set by ``guard``, in the handler's task).
ACTOR: contextvars.ContextVar[str] = contextvars.ContextVar("admin_actor", default="anonymous")
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_BODY = 64 * 1024
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Token:
    name: str
    scope: str  # read | operate
    secret: bytes


def _answer(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=msgspec.json.encode(body),
        content_type="application/json",
        headers=headers,
    )


def _error(status: int, code: str, message: str, where: str | None = None) -> web.Response:
    body: dict[str, Any] = {"error": code, "message": message}
    if where is not None:
        body["where"] = where
    headers = {"WWW-Authenticate": 'Bearer realm="tocsin-admin"'} if status == 401 else None
    return _answer(status, body, headers)


def _bearer(request: web.Request, tokens: tuple[Token, ...]) -> Token | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    given = value.strip().encode()
    match = None
    for token in tokens:  # every token compared: the time says nothing of which matched
        if hmac.compare_digest(given, token.secret):
            match = token
    return match


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authentication, scopes, and every failure as a JSON answer (never a 500 for bad
    input; a bug is a 500 without a traceback, logged by the intake's own middleware)."""
    if request.path.endswith("/openapi.json"):
        return await handler(request)
    token = _bearer(request, request.app[TOKENS])
    if token is None:
        return _error(401, "unauthorized", "send Authorization: Bearer <an [admin] token>")
    if request.method in WRITE_METHODS and token.scope != "operate":
        return _error(403, "forbidden", f"token {token.name!r} may only read (scope read)")
    ACTOR.set(token.name)
    try:
        return await handler(request)
    except BadRequest as exc:
        return _error(400, "bad_request", exc.reason, exc.where)
    except NotFound as exc:
        return _error(404, "not_found", str(exc))
    except Conflict as exc:
        return _error(409, "conflict", str(exc))
    except RedisError as exc:
        return _error(503, "unavailable", f"Redis: {exc}")


def _ctx(request: web.Request) -> AdminContext:
    return request.app[CONTEXT].acting(ACTOR.get())


# -- parameters ---------------------------------------------------------------------------


def _query(request: web.Request, allowed: tuple[str, ...]) -> dict[str, str]:
    query: dict[str, str] = {}
    for name, value in request.query.items():
        if name not in allowed:
            takes = ", ".join(allowed) or "none"
            raise BadRequest(name or "(empty name)", f"unknown parameter; this takes {takes}")
        if name in query:
            raise BadRequest(name, "given twice")
        query[name] = value
    return query


def _when(query: dict[str, str], name: str) -> float | None:
    """Epoch seconds, an ISO 8601 date-time (UTC unless it says), or a duration ago (2h)."""
    text = query.get(name)
    if text is None:
        return None
    if not 1 <= len(text) <= 64:
        raise BadRequest(name, "1 to 64 characters")
    try:
        value = float(text)
        if math.isfinite(value) and 0 <= value < 1e11:
            return value
    except ValueError:
        pass
    try:
        return time.time() - float(Duration.parse(text))
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise BadRequest(
            name, "epoch seconds, an ISO 8601 date-time, or a duration ago (2h)"
        ) from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def _cursor(query: dict[str, str]) -> str | None:
    value = query.get("cursor")
    if value is not None and not 1 <= len(value) <= 512:
        raise BadRequest("cursor", "malformed: pass the next_cursor a page returned")
    return value


def _limit(query: dict[str, str]) -> int | None:
    text = query.get("limit")
    if text is None:
        return None
    if not text.isdigit() or len(text) > 6:
        raise BadRequest("limit", "a whole number")
    return int(text)


def _text(query: dict[str, str], name: str) -> str | None:
    value = query.get(name)
    if value is not None and (not value or len(value) > 256):
        raise BadRequest(name, "1 to 256 characters")
    return value


async def _body(request: web.Request, type_: type[Any]) -> Any:
    if request.content_length and request.content_length > MAX_BODY:
        raise BadRequest("body", f"over {MAX_BODY} bytes")
    data = await request.read()
    if len(data) > MAX_BODY:
        raise BadRequest("body", f"over {MAX_BODY} bytes")
    try:
        return msgspec.json.decode(data or b"{}", type=type_)
    except msgspec.ValidationError as exc:
        raise BadRequest("body", str(exc)) from None
    except msgspec.DecodeError as exc:
        raise BadRequest("body", f"not JSON: {exc}") from None


class NoBody(msgspec.Struct, forbid_unknown_fields=True):
    """An action that takes nothing: ``{}`` or no body, and no unknown field."""


# -- handlers -----------------------------------------------------------------------------

EVENT_FILTERS = ("id", "type", "customer_id", "invoice_ref", "since", "until", "cursor", "limit")
DELIVERY_FILTERS: tuple[str, ...] = ("event_id", "customer_id", "invoice_ref", "channel")
DELIVERY_FILTERS += ("status", "to", "since", "until", "cursor", "limit")


async def events(request: web.Request) -> web.StreamResponse:
    q = _query(request, EVENT_FILTERS)
    page = await search.search_events(
        _ctx(request),
        event_id=_text(q, "id"),
        type_glob=_text(q, "type"),
        customer_id=_text(q, "customer_id"),
        invoice_ref=_text(q, "invoice_ref"),
        since=_when(q, "since"),
        until=_when(q, "until"),
        cursor=_cursor(q),
        limit=_limit(q),
    )
    return _answer(200, page.as_dict())


async def event(request: web.Request) -> web.StreamResponse:
    _query(request, ())
    found = await search.search_events(_ctx(request), event_id=request.match_info["event_id"])
    if not found.items:
        raise NotFound(f"no event {request.match_info['event_id']}")
    return _answer(200, found.items[0])


async def event_timeline(request: web.Request) -> web.StreamResponse:
    _query(request, ())
    return _answer(200, await ops.timeline(_ctx(request), request.match_info["event_id"]))


class ReplayEventBody(msgspec.Struct, forbid_unknown_fields=True):
    force: bool = False


async def event_replay(request: web.Request) -> web.StreamResponse:
    _query(request, ())
    body = await _body(request, ReplayEventBody)
    result = await ops.replay_event(_ctx(request), request.match_info["event_id"], force=body.force)
    return _answer(200, result)


async def deliveries(request: web.Request) -> web.StreamResponse:
    q = _query(request, DELIVERY_FILTERS)
    page = await search.search_deliveries(
        _ctx(request),
        event_id=_text(q, "event_id"),
        customer_id=_text(q, "customer_id"),
        invoice_ref=_text(q, "invoice_ref"),
        channel=_text(q, "channel"),
        status=_text(q, "status"),
        to=_text(q, "to"),
        since=_when(q, "since"),
        until=_when(q, "until"),
        cursor=_cursor(q),
        limit=_limit(q),
    )
    return _answer(200, page.as_dict())


async def delivery(request: web.Request) -> web.StreamResponse:
    _query(request, ())
    ctx = _ctx(request)
    record = await search.get_delivery(ctx, request.match_info["delivery_id"])
    if record is None:
        raise NotFound(f"no delivery {request.match_info['delivery_id']}")
    return _answer(200, search.delivery_item(ctx, record))


async def delivery_retry(request: web.Request) -> web.StreamResponse:
    _query(request, ())
    await _body(request, NoBody)
    return _answer(200, await ops.retry_now(_ctx(request), request.match_info["delivery_id"]))


async def dead_letters(request: web.Request) -> web.StreamResponse:
    q = _query(request, ("channel", "since", "cursor", "limit"))
    page = await ops.list_dead_letters(
        _ctx(request),
        channel=_text(q, "channel"),
        since=_when(q, "since"),
        cursor=_cursor(q),
        limit=_limit(q),
    )
    return _answer(200, page.as_dict())


class DeadReplayBody(msgspec.Struct, forbid_unknown_fields=True):
    ids: list[str]


async def dead_letters_replay(request: web.Request) -> web.StreamResponse:
    _query(request, ())
    body = await _body(request, DeadReplayBody)
    if len(body.ids) > 1000:
        raise BadRequest("body.ids", "at most 1000 at once (a bulk replay takes more)")
    return _answer(200, await ops.replay_dead_letters(_ctx(request), body.ids))


async def endpoints(request: web.Request) -> web.StreamResponse:
    _query(request, ())
    return _answer(200, {"items": await ops.list_endpoints(_ctx(request))})


class DisableBody(msgspec.Struct, forbid_unknown_fields=True):
    reason: str = ""


async def endpoint_disable(request: web.Request) -> web.StreamResponse:
    _query(request, ())
    body = await _body(request, DisableBody)
    channel = request.match_info["channel"]
    return _answer(200, await ops.disable_endpoint(_ctx(request), channel, body.reason[:200]))


async def endpoint_enable(request: web.Request) -> web.StreamResponse:
    _query(request, ())
    await _body(request, NoBody)
    return _answer(200, await ops.enable_endpoint(_ctx(request), request.match_info["channel"]))


async def scenarios(request: web.Request) -> web.StreamResponse:
    q = _query(request, ("key", "scenario", "status", "cursor", "limit"))
    page = await ops.list_instances(
        _ctx(request),
        key=_text(q, "key"),
        scenario=_text(q, "scenario"),
        status=_text(q, "status"),
        cursor=_cursor(q),
        limit=_limit(q),
    )
    return _answer(200, page.as_dict())


class CancelBody(msgspec.Struct, forbid_unknown_fields=True):
    key: str
    scenario: str | None = None


async def scenarios_cancel(request: web.Request) -> web.StreamResponse:
    _query(request, ())
    body = await _body(request, CancelBody)
    if not body.key:
        raise BadRequest("body.key", "the scenario key (tocsin scenarios list shows them)")
    return _answer(200, await ops.cancel_instances(_ctx(request), body.key, body.scenario))


class ReplayBody(msgspec.Struct, forbid_unknown_fields=True):
    filter: bulk.ReplayFilter
    dry_run: bool = True
    rate: Annotated[float, msgspec.Meta(gt=0, le=10_000)] = 100.0


async def replays(request: web.Request) -> web.StreamResponse:
    q = _query(request, ("limit",))
    return _answer(200, {"items": await bulk.list_jobs(_ctx(request), page_size(_limit(q)))})


async def replay_start(request: web.Request) -> web.StreamResponse:
    _query(request, ())
    body = await _body(request, ReplayBody)
    flt = body.filter
    if flt.status is not None and flt.status not in STATUSES:
        raise BadRequest("body.filter.status", f"one of {', '.join(STATUSES)}")
    if body.dry_run:
        return _answer(200, await bulk.dry_run(_ctx(request), flt))
    return _answer(202, await bulk.start_job(_ctx(request), flt, rate=body.rate))


async def replay(request: web.Request) -> web.StreamResponse:
    _query(request, ())
    return _answer(200, await bulk.job_status(_ctx(request), request.match_info["job_id"]))


async def replay_cancel(request: web.Request) -> web.StreamResponse:
    _query(request, ())
    await _body(request, NoBody)
    return _answer(200, await bulk.cancel_job(_ctx(request), request.match_info["job_id"]))


async def audit_log(request: web.Request) -> web.StreamResponse:
    q = _query(request, ("actor", "action", "cursor", "limit"))
    page = await audit.audit_entries(
        _ctx(request),
        actor=_text(q, "actor"),
        action=_text(q, "action"),
        cursor=_cursor(q),
        limit=_limit(q),
    )
    return _answer(200, page.as_dict())


class ForgetBody(msgspec.Struct, forbid_unknown_fields=True):
    #: More of the customer's values to erase (``tocsin forget --value``).
    values: Annotated[
        list[Annotated[str, msgspec.Meta(max_length=256)]], msgspec.Meta(max_length=20)
    ] = []
    rewrite_aof: bool = True


async def customer_forget(request: web.Request) -> web.StreamResponse:
    _query(request, ())
    body = await _body(request, ForgetBody)
    customer_id = request.match_info["customer_id"]
    report = await customers.forget(
        _ctx(request), customer_id, body.values, rewrite_aof=body.rewrite_aof
    )
    return _answer(200, report)


async def suppressions(request: web.Request) -> web.StreamResponse:
    q = _query(request, ("reason", "cursor", "limit"))
    page = await customers.list_suppressions(
        _ctx(request), reason=_text(q, "reason"), cursor=_cursor(q), limit=_limit(q)
    )
    return _answer(200, page.as_dict())


class SuppressBody(msgspec.Struct, forbid_unknown_fields=True):
    address: Annotated[str, msgspec.Meta(max_length=256)]
    reason: str = "manual"
    #: Epoch seconds when the entry stops counting; none: never.
    until: Annotated[float, msgspec.Meta(ge=0, lt=1e11)] | None = None
    note: Annotated[str, msgspec.Meta(max_length=500)] | None = None
    region: Annotated[str, msgspec.Meta(min_length=2, max_length=2)] | None = None


async def suppression_add(request: web.Request) -> web.StreamResponse:
    _query(request, ())
    body = await _body(request, SuppressBody)
    entry = await customers.add_suppression(
        _ctx(request),
        body.address,
        body.reason,
        until=body.until,
        note=body.note,
        region=body.region,
    )
    return _answer(200, entry)


async def suppression_check(request: web.Request) -> web.StreamResponse:
    _query(request, ())
    address = request.match_info["address"]
    return _answer(200, await customers.check_suppression(_ctx(request), address))


async def suppression_remove(request: web.Request) -> web.StreamResponse:
    _query(request, ())
    address = request.match_info["address"]
    return _answer(200, await customers.remove_suppression(_ctx(request), address))


def document_bytes() -> bytes:
    return resources.files("gateway.adminapi").joinpath("openapi.json").read_bytes()


def document() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(document_bytes())
    return doc


async def openapi(request: web.Request) -> web.StreamResponse:
    return web.Response(body=document_bytes(), content_type="application/json")


async def reload_conf(request: web.Request) -> web.StreamResponse:
    _query(request, ())
    await _body(request, NoBody)
    reload = request.app[RELOAD]
    if reload is None:
        raise Conflict("this process runs no reloader (it is starting or stopping)")
    answer = await ops.reload_conf(_ctx(request), reload)
    return _answer(200 if answer["ok"] else 409, answer)


async def processes(request: web.Request) -> web.StreamResponse:
    _query(request, ())
    return _answer(200, await ops.processes(_ctx(request)))


ROUTES: tuple[tuple[str, str, Handler], ...] = (
    ("GET", "/openapi.json", openapi),
    ("GET", "/events", events),
    ("GET", "/events/{event_id}", event),
    ("GET", "/events/{event_id}/timeline", event_timeline),
    ("POST", "/events/{event_id}/replay", event_replay),
    ("GET", "/deliveries", deliveries),
    ("GET", "/deliveries/{delivery_id}", delivery),
    ("POST", "/deliveries/{delivery_id}/retry", delivery_retry),
    ("GET", "/dead-letters", dead_letters),
    ("POST", "/dead-letters/replay", dead_letters_replay),
    ("GET", "/endpoints", endpoints),
    ("POST", "/endpoints/{channel}/disable", endpoint_disable),
    ("POST", "/endpoints/{channel}/enable", endpoint_enable),
    ("GET", "/scenarios", scenarios),
    ("POST", "/scenarios/cancel", scenarios_cancel),
    ("GET", "/replays", replays),
    ("POST", "/replays", replay_start),
    ("GET", "/replays/{job_id}", replay),
    ("POST", "/replays/{job_id}/cancel", replay_cancel),
    ("GET", "/audit", audit_log),
    ("POST", "/reload", reload_conf),
    ("GET", "/processes", processes),
    ("POST", "/customers/{customer_id}/forget", customer_forget),
    ("GET", "/suppressions", suppressions),
    ("POST", "/suppressions", suppression_add),
    ("GET", "/suppressions/{address}", suppression_check),
    ("DELETE", "/suppressions/{address}", suppression_remove),
)
PREFIX = "/admin/v1"


def admin_app(
    ctx: AdminContext, tokens: tuple[Token, ...], reload: ops.Reload | None = None
) -> web.Application:
    """The sub-application; mount it with ``app.add_subapp(PREFIX, admin_app(...))``."""
    app = web.Application(middlewares=[guard], client_max_size=MAX_BODY)
    app[CONTEXT] = ctx
    app[TOKENS] = tokens
    app[RELOAD] = reload
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)
    return app

"""The console's read pages: login, overview, search, dead letters, endpoints, replay
jobs, audit trail. Each lists what an admin operation returns (gateway.adminapi): the
console has no query of its own."""

from __future__ import annotations

import secrets
from urllib.parse import quote

from aiohttp import web

from ..adminapi import BadRequest, audit, bulk, ops, search
from . import auth
from .common import PREFIX, acting, field, page, params, problem, session_of, state
from .overview import overview_page


def _next_target(value: str | None) -> str:
    """Where to go after logging in: a console page, nothing else (no open redirect)."""
    if value and value.startswith(PREFIX + "/") and "//" not in value and "\\" not in value:
        return value
    return PREFIX + "/"


def _set_cookie(
    request: web.Request, response: web.Response, name: str, value: str, max_age: int
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        httponly=True,
        samesite="Strict",
        secure=state(request).secure or request.secure,
        path=PREFIX + "/",
    )


async def login_form(request: web.Request) -> web.StreamResponse:
    q = params(request, ("next",))
    # Before a session exists, the form's CSRF token is a double-submit cookie.
    token = request.cookies.get(auth.LOGIN_COOKIE) or secrets.token_urlsafe(32)
    response = page(
        request, "login.html", next=_next_target(q.get("next")), csrf=token, failed=False
    )
    _set_cookie(request, response, auth.LOGIN_COOKIE, token, 3600)
    return response


async def login(request: web.Request) -> web.StreamResponse:
    params(request, ())
    console = state(request)
    expected = request.cookies.get(auth.LOGIN_COOKIE, "")
    if not expected or not auth.same(field(request, "csrf", required=False), expected):
        return problem(request, 403, "Refused", "the login form is stale: reload it and try again")
    target = _next_target(field(request, "next", required=False))
    token = auth.match_token(field(request, "token", required=False), console.tokens)
    if token is None:
        return page(request, "login.html", 401, next=target, csrf=expected, failed=True)
    session = await auth.open_session(console.ctx.redis, console.prefix, token)
    response = web.Response(status=303, headers={"Location": target})
    _set_cookie(request, response, auth.COOKIE, session.sid, auth.SESSION_TTL)
    response.del_cookie(auth.LOGIN_COOKIE, path=PREFIX + "/")
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    params(request, ())
    console = state(request)
    session = session_of(request)
    await auth.close_session(console.ctx.redis, console.prefix, session.sid)
    response = web.Response(status=303, headers={"Location": PREFIX + "/login"})
    response.del_cookie(auth.COOKIE, path=PREFIX + "/")
    return response


async def overview(request: web.Request) -> web.StreamResponse:
    params(request, ())
    console = state(request)
    ctx = acting(request)
    data = await overview_page(
        ctx.redis, ctx.layout, list(ctx.channels), console.plan.conf.gateway.timezone
    )
    jobs = await bulk.list_jobs(ctx, 5)
    running = (await ops.processes(ctx))["items"]
    return page(request, "overview.html", data=data, jobs=jobs, processes=running)


SEARCH_BY = {"id": "event id", "customer": "customer id", "invoice": "invoice ref"}


async def search_page(request: web.Request) -> web.StreamResponse:
    q = params(request, ("by", "q", "type", "cursor"))
    by, text = q.get("by", "customer"), q.get("q")
    if by not in SEARCH_BY:
        raise BadRequest("by", f"one of {', '.join(SEARCH_BY)}")
    result = None
    if text is not None or "type" in q:
        if by == "id" and text is not None:
            found = await search.search_events(acting(request), event_id=text)
            if found.items:
                raise web.HTTPSeeOther(f"{PREFIX}/events/{quote(text, safe='')}")
            result = found
        else:
            result = await search.search_events(
                acting(request),
                customer_id=text if by == "customer" else None,
                invoice_ref=text if by == "invoice" else None,
                type_glob=q.get("type"),
                cursor=q.get("cursor"),
            )
    return page(
        request,
        "search.html",
        by=by,
        q=text or "",
        type=q.get("type", ""),
        result=result,
        choices=SEARCH_BY,
    )


async def dead_letters(request: web.Request) -> web.StreamResponse:
    q = params(request, ("channel", "cursor"))
    result = await ops.list_dead_letters(
        acting(request), channel=q.get("channel"), cursor=q.get("cursor")
    )
    channels = sorted(state(request).ctx.channels)
    return page(
        request, "dead_letters.html", result=result, channel=q.get("channel", ""), channels=channels
    )


async def endpoints(request: web.Request) -> web.StreamResponse:
    params(request, ())
    items = await ops.list_endpoints(acting(request))
    return page(request, "endpoints.html", items=items)


async def jobs(request: web.Request) -> web.StreamResponse:
    params(request, ())
    return page(request, "jobs.html", jobs=await bulk.list_jobs(acting(request), 50))


async def job(request: web.Request) -> web.StreamResponse:
    q = params(request, ("confirmed",))
    status = await bulk.job_status(acting(request), request.match_info["job_id"])
    return page(request, "job.html", job=status, confirmed=q.get("confirmed", ""))


async def audit_trail(request: web.Request) -> web.StreamResponse:
    q = params(request, ("actor", "action", "cursor"))
    result = await audit.audit_entries(
        acting(request), actor=q.get("actor"), action=q.get("action"), cursor=q.get("cursor")
    )
    return page(
        request, "audit.html", result=result, actor=q.get("actor", ""), action=q.get("action", "")
    )

"""The console's plumbing: its state, the guard every request passes, parameters, pages.

The guard authenticates (session cookie), checks the CSRF token of every POST and the
scope of every action, and turns every refusal into a page with its reason: bad input is
a 400 naming the parameter, never a 500.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import jinja2
from aiohttp import web
from redis.exceptions import RedisError

from ..adminapi import AdminContext, BadRequest, Conflict, NotFound, Token
from ..plan import Plan
from . import auth

log = logging.getLogger("tocsin.console")

PREFIX = "/console"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: Form bodies are a few fields; nothing larger is read.
MAX_BODY = 16 * 1024
#: Pages hold personal data and forms: never cached, framed, or sniffed. The email
#: preview's sandboxed iframe inherits this policy: its inline styles are allowed, its
#: scripts and remote images are not.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; frame-src 'self'; frame-ancestors 'none'; "
        "form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}


class Forbidden(PermissionError):
    """A read token asked for an action (403)."""


@dataclass
class Console:
    ctx: AdminContext
    tokens: tuple[Token, ...]
    plan: Plan
    env: jinja2.Environment
    #: Served over HTTPS (behind a proxy that says so): cookies get ``Secure``.
    secure: bool = False

    @property
    def prefix(self) -> str:
        return self.ctx.layout.prefix

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.plan.conf.gateway.timezone)


STATE = web.AppKey("console", Console)
# The request's session and form, set by ``guard`` for the handler (same task); reset at
# the start of every request, as a keep-alive connection's requests share a task.
_SESSION: contextvars.ContextVar[auth.Session | None] = contextvars.ContextVar(
    "console_session", default=None
)
_FORM: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "console_form", default=None
)


def current_session() -> auth.Session | None:
    return _SESSION.get()


def session_of(request: web.Request) -> auth.Session:
    """The logged-in session (every page but the login's has one)."""
    session = _SESSION.get()
    if session is None:
        raise Forbidden("not logged in")
    return session


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("gateway.console", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["urlquote"] = lambda value: quote(str(value), safe="")
    return env


def page(request: web.Request, name: str, /, status: int = 200, **values: Any) -> web.Response:
    console = request.app[STATE]
    session = current_session()
    zone = console.zone

    def when(moment: float | str | None) -> str:
        """Epoch seconds, or ISO 8601 text (the audit stream's ``at``), in the zone."""
        if not moment:
            return "-"
        if isinstance(moment, str) and not moment.replace(".", "", 1).isdigit():
            stamp = datetime.fromisoformat(moment.replace("Z", "+00:00"))
        else:
            stamp = datetime.fromtimestamp(float(moment), UTC)
        return stamp.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S")

    def ago(seconds: float | None) -> str:
        if not seconds or seconds <= 0:
            return "-"
        s = int(seconds)
        if s >= 3600:
            return f"{s // 3600}h{s % 3600 // 60:02d}m"
        return f"{s // 60}m{s % 60:02d}s"

    html = console.env.get_template(name).render(
        base=PREFIX,
        session=session,
        when=when,
        ago=ago,
        zone=str(zone),
        utc=lambda epoch: datetime.fromtimestamp(float(epoch), UTC).isoformat(),
        **values,
    )
    return web.Response(status=status, text=html, content_type="text/html", headers=HEADERS)


def problem(
    request: web.Request, status: int, title: str, reason: str, where: str = ""
) -> web.Response:
    return page(request, "error.html", status, title=title, reason=reason, where=where)


def params(request: web.Request, allowed: tuple[str, ...]) -> dict[str, str]:
    """The query, each parameter known, given once, 1 to 256 characters; empty fields of
    a submitted search form count as not given."""
    found: dict[str, str] = {}
    for name, value in request.query.items():
        if name not in allowed:
            takes = ", ".join(allowed) or "no parameter"
            raise BadRequest(name or "(empty name)", f"unknown parameter; this page takes {takes}")
        if name in found:
            raise BadRequest(name, "given twice")
        if len(value) > 256:
            raise BadRequest(name, "at most 256 characters")
        if value:
            found[name] = value
    return found


def field(request: web.Request, name: str, required: bool = True) -> str:
    """A form field of the POST being handled (the guard has read the form)."""
    form = _FORM.get() or {}
    value = form.get(name, "").strip()
    if required and not value:
        raise BadRequest(name, "required")
    if len(value) > 512:
        raise BadRequest(name, "at most 512 characters")
    return value


def _public(request: web.Request) -> bool:
    rel = request.path[len(PREFIX) :]
    return rel in ("/login", "/login/") or rel.startswith("/static/")


async def _read_form(request: web.Request) -> dict[str, str]:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise BadRequest("body", f"over {MAX_BODY} bytes")
    form = await request.post()
    out: dict[str, str] = {}
    for name, value in form.items():
        if not isinstance(value, str):
            raise BadRequest(name, "a text field, not a file")
        out[name] = value
    return out


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    console = request.app[STATE]
    _SESSION.set(None)
    _FORM.set(None)
    try:
        if not _public(request):
            session = await auth.find_session(
                console.ctx.redis, console.prefix, request.cookies.get(auth.COOKIE), console.tokens
            )
            if session is None:
                if request.method == "GET":
                    target = request.path_qs if request.path_qs.startswith(PREFIX) else PREFIX
                    raise web.HTTPSeeOther(f"{PREFIX}/login?next={quote(target, safe='')}")
                return problem(request, 401, "Not logged in", "log in again: the session ended")
            _SESSION.set(session)
            if request.method == "POST":
                form = await _read_form(request)
                _FORM.set(form)
                if not auth.same(form.get("csrf", ""), session.csrf):
                    return problem(
                        request, 403, "Refused", "the form's CSRF token is missing or stale: "
                        "reload the page and try again"
                    )  # fmt: skip
        elif request.method == "POST":
            _FORM.set(await _read_form(request))
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return problem(request, exc.status, exc.reason, exc.text or exc.reason)
    except BadRequest as exc:
        return problem(request, 400, "Bad request", exc.reason, exc.where)
    except Forbidden as exc:
        return problem(request, 403, "Forbidden", str(exc))
    except NotFound as exc:
        return problem(request, 404, "Not found", str(exc))
    except Conflict as exc:
        return problem(request, 409, "Not done", str(exc))
    except RedisError as exc:
        log.warning("console: Redis: %s", exc)
        return problem(request, 503, "Redis unavailable", str(exc))


def require_operate(request: web.Request) -> auth.Session:
    session = session_of(request)
    if not session.can_operate:
        raise Forbidden(f"token {session.name!r} may only read (scope read)")
    return session


def state(request: web.Request) -> Console:
    return request.app[STATE]


def acting(request: web.Request) -> AdminContext:
    """The operations' context, acting as the logged-in token (the audit trail's actor)."""
    return request.app[STATE].ctx.acting(session_of(request).name)

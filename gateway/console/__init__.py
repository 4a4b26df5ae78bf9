"""The web console (``/console/``, docs/operations.md "Web console"): server-rendered
pages over the admin API's operations, for the same ``[admin] tokens``.

Jinja2 templates (autoescaped) and a little JavaScript, all served from this package:
no build step, nothing fetched from another site.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from ..adminapi import AdminContext, Token
from ..plan import Plan
from . import actions, pages, preview, timeline
from .common import MAX_BODY, PREFIX, STATE, Console, environment, guard

STATIC = Path(__file__).parent / "static"


def console_app(
    ctx: AdminContext, tokens: tuple[Token, ...], plan: Plan, *, secure: bool = False
) -> web.Application:
    """The sub-application; mount it with ``app.add_subapp(PREFIX, console_app(...))``."""
    app = web.Application(middlewares=[guard], client_max_size=MAX_BODY)
    app[STATE] = Console(ctx, tokens, plan, environment(), secure)
    add = app.router.add_route
    add("GET", "/", pages.overview)
    add("GET", "/login", pages.login_form)
    add("POST", "/login", pages.login)
    add("POST", "/logout", pages.logout)
    add("GET", "/search", pages.search_page)
    add("GET", "/events/{event_id}", timeline.event_page)
    add("GET", "/dead-letters", pages.dead_letters)
    add("GET", "/endpoints", pages.endpoints)
    add("GET", "/replays", pages.jobs)
    add("GET", "/replays/{job_id}", pages.job)
    add("GET", "/audit", pages.audit_trail)
    add("GET", "/preview", preview.preview_page)
    add("GET", "/confirm/{action}", actions.confirm)
    add("POST", "/do/{action}", actions.perform)
    add("GET", "/replay", actions.replay_count)
    add("POST", "/replay", actions.replay_start)
    app.router.add_static("/static/", STATIC, append_version=True)
    return app


def mount(app: web.Application, ctx: AdminContext, plan: Plan) -> bool:
    """Add ``/console/`` to the intake's app, if ``[admin] tokens`` names any (the same
    tokens and scopes as the admin API)."""
    tokens = tuple(
        Token(t.name, t.scope, t.token.reveal().encode()) for t in plan.conf.admin.tokens
    )
    if not tokens:
        return False
    # Behind a TLS-terminating proxy the request says http: the public URL says https.
    secure = plan.conf.intake.public_url.startswith("https://")
    app.add_subapp(PREFIX, console_app(ctx, tokens, plan, secure=secure))
    # ``/console`` without its slash: where people type it.
    app.router.add_get(PREFIX, _to_console)
    return True


async def _to_console(request: web.Request) -> web.StreamResponse:
    raise web.HTTPMovedPermanently(PREFIX + "/")


__all__ = ["PREFIX", "console_app", "mount"]

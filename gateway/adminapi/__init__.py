"""The admin API (``/admin/v1/``) and the operations behind it (docs/operations.md,
"Admin API"): search across both history tiers, an event's timeline, retry now, bulk
replay jobs, endpoints, scenario instances, and the audit trail of every write.

``ops``, ``search``, ``bulk`` and ``audit`` are the operations, one implementation each,
called by the API's handlers, the CLI and the console alike, with an ``AdminContext``.
"""

from __future__ import annotations

from aiohttp import web
from redis.asyncio import Redis

from ..archive import ArchiveStore
from ..plan import Plan
from ..privacy.outboxes import outbox_roots
from .app import PREFIX, Token, admin_app, document, document_bytes
from .bulk import JobRunner, ReplayFilter
from .common import AdminContext, BadRequest, Conflict, NotFound, Page
from .ops import Reload


def context_for(
    plan: Plan, redis: Redis, archive: ArchiveStore | None, actor: str = "anonymous"
) -> AdminContext:
    """What operations need of a deployment, from its plan."""
    conf = plan.conf
    channels = {
        name: conf.channels[name].type if name in conf.channels else "confirm"
        for name in plan.channels
    }
    return AdminContext(
        redis,
        conf.redis.layout(),
        archive,
        float(conf.history.retention),
        actor,
        rules=plan.rules,
        channels=channels,
        erp_channels=frozenset(n for n, c in plan.channels.items() if c.erp_call),
        scenarios=tuple(plan.scenarios),
        timezone=conf.gateway.timezone,
        privacy_key=conf.privacy.key.reveal().encode() if conf.privacy.key is not None else None,
        outbox_roots=tuple(outbox_roots(conf)),
    )


def mount(
    app: web.Application, ctx: AdminContext, plan: Plan, reload: Reload | None = None
) -> bool:
    """Add ``/admin/v1/`` to the intake's app, if ``[admin] tokens`` names any."""
    tokens = tuple(
        Token(t.name, t.scope, t.token.reveal().encode()) for t in plan.conf.admin.tokens
    )
    if not tokens:
        return False
    app.add_subapp(PREFIX, admin_app(ctx, tokens, reload))
    return True


__all__ = [
    "PREFIX",
    "AdminContext",
    "BadRequest",
    "Conflict",
    "JobRunner",
    "NotFound",
    "Page",
    "ReplayFilter",
    "Token",
    "admin_app",
    "context_for",
    "document",
    "document_bytes",
    "mount",
]

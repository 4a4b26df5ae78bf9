"""The audit trail: every write an operator makes (API, CLI, console), in the audit
stream ``<prefix>:audit`` (``gateway.privacy.audit``: the erasures and reloads are
there too; trimmed by ``[retention] audit``).

One entry per action: who (token name or ``cli:<user>``), what, on what, when, and how
it ended. Written after the action, with its outcome; an action that raised is recorded
(``refused``, ``not_found``, ``error: ...``) before the error goes on.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
from redis.exceptions import RedisError

from ..privacy.audit import audit
from ..streams import as_text, entry_order
from .common import (
    AdminContext,
    BadRequest,
    Conflict,
    NotFound,
    Page,
    decode_cursor,
    encode_cursor,
    page_size,
)


@dataclass
class Recorded:
    """What ``audited`` lets the action fill in: its outcome and a detail."""

    outcome: str = "ok"
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


async def record(
    ctx: AdminContext, action: str, target: str, outcome: str, detail: str = ""
) -> str:
    return await audit(
        ctx.redis,
        ctx.layout.prefix,
        actor=ctx.actor,
        action=action,
        target=target,
        outcome=outcome,
        detail=detail[:500] or None,
    )


@contextlib.asynccontextmanager
async def audited(ctx: AdminContext, action: str, target: str) -> AsyncIterator[Recorded]:
    """Run an action and record it: ``outcome`` as the action set it, ``error`` (with
    the exception) if it raised."""
    done = Recorded()
    try:
        yield done
    except BaseException as exc:
        outcome = f"error: {type(exc).__name__}"
        if isinstance(exc, NotFound):
            outcome = "not_found"
        elif isinstance(exc, (Conflict, BadRequest)):
            outcome = "refused"
        with contextlib.suppress(RedisError, OSError):
            await record(ctx, action, target, outcome, str(exc) or type(exc).__name__)
        raise
    await record(ctx, action, target, done.outcome, done.detail)


async def audit_entries(
    ctx: AdminContext,
    *,
    actor: str | None = None,
    action: str | None = None,
    cursor: str | None = None,
    limit: int | None = None,
) -> Page:
    """Newest first."""
    size = page_size(limit)
    high = "+"
    if cursor is not None:
        (entry,) = decode_cursor(cursor, (str,))
        try:
            ms, seq = entry_order(entry)
        except ValueError:
            raise BadRequest("cursor", "malformed: not a cursor of this listing") from None
        high = f"{ms}-{seq - 1}" if seq else f"{ms - 1}-18446744073709551615"
        if ms < 0 or (ms == 0 and seq == 0):
            return Page([], None)
    items: list[dict[str, Any]] = []
    more = False
    while True:
        chunk: Any = await ctx.redis.xrevrange(ctx.layout.audit, max=high, min="-", count=200)
        for entry_id, fields in chunk:
            item: dict[str, Any] = {as_text(k): as_text(v) for k, v in fields.items()}
            if (actor and item.get("actor") != actor) or (action and item.get("action") != action):
                continue
            if len(items) == size:
                more = True
                break
            item["id"] = as_text(entry_id)
            if "detail" in item:  # JSON, as gateway.privacy.audit writes it
                with contextlib.suppress(msgspec.DecodeError):
                    item["detail"] = msgspec.json.decode(item["detail"])
            items.append(item)
        if more or len(chunk) < 200:
            break
        ms, seq = entry_order(chunk[-1][0])
        high = f"{ms}-{seq - 1}" if seq else f"{ms - 1}-18446744073709551615"
    return Page(items, encode_cursor((items[-1]["id"],)) if more else None)

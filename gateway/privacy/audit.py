"""The audit stream ``<prefix>:audit``: who did what to whom, when, and how it went.

One stream for every shard (it is written by operators, not by the pipeline). Every
entry has the fields ``actor`` (a token's or a person's name), ``action`` (``forget``,
``reload``...), ``target`` (``customer:cus_42``...), ``at`` (ISO 8601, UTC),
``outcome`` (``ok`` or ``error: ...``) and may add ``detail`` (JSON). The admin API
writes its entries with the same ``audit`` call. Trimmed by ``[retention] audit``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import msgspec
from redis.asyncio import Redis

FIELDS = ("actor", "action", "target", "at", "outcome")


def audit_key(prefix: str) -> str:
    return f"{prefix}:audit"


async def audit(
    redis: Redis,
    prefix: str,
    *,
    actor: str,
    action: str,
    target: str,
    outcome: str,
    detail: Any = None,
    now: float | None = None,
) -> str:
    """Append one entry; returns its stream id."""
    at = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    fields: dict[str, str | bytes] = {
        "actor": actor,
        "action": action,
        "target": target,
        "at": at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "outcome": outcome,
    }
    if detail is not None:
        fields["detail"] = msgspec.json.encode(detail)
    entry: Any = await redis.xadd(audit_key(prefix), fields)  # type: ignore[arg-type]
    return entry.decode() if isinstance(entry, bytes) else str(entry)


async def read_audit(redis: Redis, prefix: str, count: int = 100) -> list[dict[str, str]]:
    """Newest first."""
    entries: Any = await redis.xrevrange(audit_key(prefix), count=count)
    return [
        {"id": i.decode(), **{k.decode(): v.decode() for k, v in f.items()}} for i, f in entries
    ]

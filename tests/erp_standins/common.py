"""What the ERP stand-ins share: the fault switch, the server helper, number parsing."""

from __future__ import annotations

import contextlib
import re
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from aiohttp import web

from gateway.redis_server import free_port

CURRENCY_IDS = {"EUR": 1, "USD": 2, "JPY": 3, "GBP": 4}


@dataclass
class Faults:
    http_503: int = 0
    concurrency: int = 0
    lose_answer: int = 0

    def take(self, name: str) -> bool:
        left = getattr(self, name)
        if left > 0:
            setattr(self, name, left - 1)
            return True
        return False


@contextlib.asynccontextmanager
async def serve(
    app: web.Application, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[str]:
    """Run ``app`` on a free port of 127.0.0.1; yields its root URL."""
    port = free_port()
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ssl_context).start()
    try:
        yield f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def _number(value: Any) -> Decimal | None:
    """A float field as Odoo/Frappe read it: numbers and numeric strings, never bools."""
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _iso_date(value: Any) -> date | None:
    if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def _money(value: Decimal) -> float:
    return float(value)


def _compare(actual: Any, op: str, value: Any) -> bool:
    if op == "=":
        return bool(actual == value)
    if op == "!=":
        return bool(actual != value)
    if op == "in":
        return actual in value
    if op == "not in":
        return actual not in value
    if op in ("ilike", "like"):
        pattern = str(value).strip("%")
        text = str(actual)
        return pattern.lower() in text.lower() if op == "ilike" else pattern in text
    raise ValueError(f"Invalid leaf operator {op!r}")

"""The an in-house REST API stand-in: a real aiohttp server on 127.0.0.1 (see the package docstring)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .common import Faults

# -- an in-house REST system -----------------------------------------------------------------


@dataclass
class InHouseStandin:
    """What ops point a ``call`` at: records each request, dedupes on Idempotency-Key."""

    TOKEN = "inhouse-token-9f"
    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    faults: Faults = field(default_factory=Faults)
    #: Answer this status to the next request (then 201 again).
    status_once: int | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.Response:
        if self.faults.take("http_503"):
            return web.Response(status=503, headers={"Retry-After": "1"})
        if request.headers.get("Authorization") != f"Bearer {self.TOKEN}":
            return web.json_response({"error": "unauthorized"}, status=401)
        if self.status_once is not None:
            status, self.status_once = self.status_once, None
            return web.json_response({"error": "refused"}, status=status)
        raw = await request.read()
        body = json.loads(raw) if raw else None
        key = request.headers.get("Idempotency-Key")
        if key is not None and any(r["key"] == key for r in self.requests):
            return web.json_response({"duplicate": True}, status=200)
        self.requests.append(
            {
                "method": request.method,
                "path": request.raw_path,
                "key": key,
                "content_type": request.headers.get("Content-Type"),
                "body": body,
            }
        )
        return web.json_response({"ok": True}, status=201)

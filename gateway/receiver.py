"""``tocsin receive``: a local webhook receiver that verifies signatures and prints what arrives."""

from __future__ import annotations

import json
import sys
import time
from typing import TextIO

from aiohttp import web

from .intake import MAX_BODY, error, json_errors
from .signing import SignatureError, Verifier

#: Bodies over this are answered 413, as the gateway's intake does over its limit.
MAX_WEBHOOK = 1024**2


def receiver_app(verifier: Verifier | None, path: str, out: TextIO = sys.stdout) -> web.Application:
    seen: set[str] = set()

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        msg_id = request.headers.get("webhook-id", "-")
        if verifier is not None:
            try:
                verifier.verify(request.headers, body)
            except SignatureError as exc:
                print(f"REJECTED {msg_id}: {exc}", file=out, flush=True)
                # the gateway's own answer to a bad signature: one error shape everywhere
                return error(401, "bad_signature", str(exc))
        try:
            payload = json.loads(body)
            kind = payload.get("type") if isinstance(payload, dict) else None
            summary = kind if isinstance(kind, str) else '(no "type" field)'
        except ValueError:
            payload, summary = body.decode("utf-8", "replace"), "(not JSON)"
        repeat = " (repeat of a webhook-id already seen)" if msg_id in seen else ""
        seen.add(msg_id)
        stamp = time.strftime("%H:%M:%S")
        status = "verified" if verifier is not None else "UNVERIFIED"
        print(f"{stamp} {status} {msg_id} {summary}{repeat}", file=out)
        print(json.dumps(payload, indent=2, ensure_ascii=False), file=out, flush=True)
        return web.Response(status=204)

    app = web.Application(middlewares=[json_errors], client_max_size=MAX_WEBHOOK)
    app[MAX_BODY] = MAX_WEBHOOK
    app.router.add_post(path, handle)
    return app

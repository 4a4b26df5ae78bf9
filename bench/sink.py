"""The webhook sink: an aiohttp + uvloop server on 127.0.0.1 that counts what arrives.

``POST /hook``   count it; latency = receipt time - ``data.ts`` of the body; answer 200.
``GET /stats``   counts, duplicates (by ``webhook-id`` and by event ``id``), latency percentiles.
``GET /ids``     every event id received (the fault phase's loss check).
``POST /reset``  forget everything (between phases).

``--verify`` (secret in ``BENCH_HOOK_SECRET``) checks every Standard Webhooks signature
and answers 401 to a bad one; off by default, since it costs the sink CPU on a box
whose two cores everything shares.

    python -m bench.sink --port 8081 [--verify]
"""

from __future__ import annotations

import argparse
import os
import time

import msgspec
from aiohttp import web

from gateway.signing import SignatureError, Verifier

from .common import HOST, latency_summary_ms


class _Data(msgspec.Struct):
    ts: float | None = None


class _Body(msgspec.Struct):
    id: str | None = None
    data: _Data | None = None


_decoder = msgspec.json.Decoder(_Body)


class Sink:
    def __init__(self, verifier: Verifier | None) -> None:
        self.verifier = verifier
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self.first: float | None = None
        self.last: float | None = None
        #: When an event id was last seen for the first time (a re-send is not progress).
        self.last_new: float | None = None
        self.latencies: list[float] = []
        self.no_ts = 0
        self.bad_signature = 0
        self.webhook_ids: set[str] = set()
        self.event_ids: set[str] = set()
        self.duplicate_webhook_ids = 0
        self.duplicate_event_ids = 0

    async def hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        now = time.time()
        if self.verifier is not None:
            try:
                self.verifier.verify(request.headers, body)
            except SignatureError:
                self.bad_signature += 1
                return web.Response(status=401)
        self.count += 1
        if self.first is None:
            self.first = now
        self.last = now
        msg_id = request.headers.get("webhook-id")
        if msg_id is not None:
            if msg_id in self.webhook_ids:
                self.duplicate_webhook_ids += 1
            self.webhook_ids.add(msg_id)
        try:
            parsed = _decoder.decode(body)
        except msgspec.DecodeError:
            self.no_ts += 1
            return web.Response(status=200)
        if parsed.id is not None:
            if parsed.id in self.event_ids:
                self.duplicate_event_ids += 1
            else:
                self.last_new = now
            self.event_ids.add(parsed.id)
        if parsed.data is not None and parsed.data.ts is not None:
            self.latencies.append(now - parsed.data.ts)
        else:
            self.no_ts += 1
        return web.Response(status=200)

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "count": self.count,
                "first": self.first,
                "last": self.last,
                "last_new": self.last_new,
                "unique_webhook_ids": len(self.webhook_ids),
                "duplicate_webhook_ids": self.duplicate_webhook_ids,
                "unique_event_ids": len(self.event_ids),
                "duplicate_event_ids": self.duplicate_event_ids,
                "no_ts": self.no_ts,
                "bad_signature": self.bad_signature,
                "verifying": self.verifier is not None,
                "latency_ms": latency_summary_ms(self.latencies),
            }
        )

    async def ids(self, request: web.Request) -> web.Response:
        return web.json_response(sorted(self.event_ids))

    async def reset_handler(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"ok": True})


def app(sink: Sink) -> web.Application:
    application = web.Application(client_max_size=1 << 20)
    application.router.add_post("/hook", sink.hook)
    application.router.add_get("/stats", sink.stats)
    application.router.add_get("/ids", sink.ids)
    application.router.add_post("/reset", sink.reset_handler)
    return application


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--verify", action="store_true")
    args = parser.parse_args()
    verifier = None
    if args.verify:
        verifier = Verifier([os.environ["BENCH_HOOK_SECRET"]])
    import uvloop  # noqa: PLC0415

    web.run_app(
        app(Sink(verifier)),
        host=HOST,
        port=args.port,
        access_log=None,
        print=None,
        backlog=4096,
        shutdown_timeout=1,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()

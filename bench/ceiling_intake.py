"""Intake ceiling: the least an aiohttp endpoint must do to accept an event durably.

``POST /v1/events``: read the body, parse the JSON, check it is an object with an
``id``, XADD the raw body to a stream, answer 202 once Redis has replied. Concurrent
requests' XADDs go out as one pipeline per round trip (group commit) on one
connection; each request still awaits its own write. With ``appendfsync always`` the
server fsyncs the AOF before it replies, so a 202 means the same as Tocsin's.

No signature check, no schema, no dedupe: what Tocsin does on top of this is what the
ratio prices.

    python -m bench.ceiling_intake --port 8090 --redis-url redis://127.0.0.1:6390/0
"""

from __future__ import annotations

import argparse
import asyncio

import msgspec
from aiohttp import web
from redis.asyncio import Redis

from .common import HOST

_decode = msgspec.json.Decoder().decode


class GroupCommit:
    def __init__(self, redis: Redis, stream: str) -> None:
        self.redis = redis
        self.stream = stream
        self.pending: list[tuple[bytes, asyncio.Future[bytes]]] = []
        self.wakeup = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.batches = 0
        self.items = 0

    async def add(self, body: bytes) -> bytes:
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.pending.append((body, fut))
        self.wakeup.set()
        return await fut

    async def run(self) -> None:
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            batch, self.pending = self.pending, []
            if not batch:
                continue
            pipe = self.redis.pipeline(transaction=False)
            for body, _ in batch:
                pipe.xadd(self.stream, {"e": body})
            try:
                results = await pipe.execute()
            except Exception as exc:
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            self.batches += 1
            self.items += len(batch)
            for (_, fut), entry_id in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(entry_id)


def make_app(redis_url: str, stream: str) -> web.Application:
    redis = Redis.from_url(redis_url, single_connection_client=True)
    commit = GroupCommit(redis, stream)
    app = web.Application(client_max_size=256 * 1024)

    async def post(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            event = _decode(body)
        except msgspec.DecodeError:
            return web.json_response({"error": "invalid_json"}, status=400)
        if not isinstance(event, dict) or not isinstance(event.get("id"), str):
            return web.json_response({"error": "invalid_event"}, status=400)
        try:
            await commit.add(body)
        except Exception:
            return web.json_response({"error": "unavailable"}, status=503)
        return web.json_response({"id": event["id"], "duplicate": False}, status=202)

    async def healthz(request: web.Request) -> web.Response:
        await redis.ping()
        return web.json_response({"status": "ready"})

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({"batches": commit.batches, "items": commit.items})

    async def on_startup(app: web.Application) -> None:
        commit.task = asyncio.create_task(commit.run())

    async def on_cleanup(app: web.Application) -> None:
        if commit.task is not None:
            commit.task.cancel()
            await asyncio.gather(commit.task, return_exceptions=True)
        await redis.aclose()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    app.router.add_post("/v1/events", post)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/stats", stats)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--stream", default="bench:ceiling")
    args = parser.parse_args()
    import uvloop  # noqa: PLC0415

    web.run_app(
        make_app(args.redis_url, args.stream),
        host=HOST,
        port=args.port,
        access_log=None,
        print=None,
        backlog=1024,
        shutdown_timeout=1,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()

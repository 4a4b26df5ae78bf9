"""HTTP intake: authenticate, validate, and answer only once Redis holds the event.

Concurrent requests' writes are coalesced into one pipeline per round trip (group
commit): each request still waits for its own event to be written, and fsynced when
the server does so, before it gets its 202.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl

import msgspec
from aiohttp import web
from aiohttp.typedefs import Middleware
from redis.asyncio import Redis
from redis.exceptions import RedisError

from .catalog import TYPES, UnknownTypes, check_event, suggest_type
from .channel import Channel
from .event import Event, EventInvalid, encode_event
from .intake_guard import IntakeStats
from .keys import Keys, Layout, as_layout, ordering_key
from .logs import OURS
from .metrics.families import Metrics
from .openapi import serve_openapi
from .receipts import ReceiptRequest, Reply, record_receipt
from .scripts import ENQUEUE_MANY, is_noscript
from .signing import SignatureError
from .source import Source
from .streams import as_text
from .suppression.feed import feed_receipt

log = logging.getLogger("tocsin.intake")
#: One line per accepted event (``--no-log-traffic`` quiets it).
events_log = logging.getLogger("tocsin.events")

#: Longest a batch waits for ``WAITAOF`` (and ``WAIT``) before the requests in it get a
#: 503. Under ``appendfsync everysec`` a write waits up to a second for the next fsync
#: (measured on Redis 8.2.3: ~1,005 ms back to back); 3 s leaves room for a slow fsync,
#: and is still well under the timeouts providers give a webhook call.
WAITAOF_TIMEOUT_MS = 3000
#: Batches waiting for their fsync (or replicas) at once. Each waits on its own
#: connection, so the next batch is written meanwhile instead of after it: under
#: ``everysec`` a 202 waits for one fsync, not for the queue of batches before it.
CONCURRENT_WAITS = 16


class NotDurable(RedisError):
    """Redis took the write but could not confirm it reached the AOF on disk (or the
    replicas ``[redis] wait_replicas`` asks for)."""


#: event id, encoded event, ordering key, the future, then what the search indexes take:
#: customer id and invoice ref ('' for none).
Waiter = tuple[str, bytes, str, "asyncio.Future[str | None]", str, str]


class Enqueuer:
    """Group commit: one ``enqueue_many.lua`` call per shard carries every waiting request.

    With ``wait_aof`` (or ``wait_replicas``) each batch's pipeline ends with ``WAITAOF``
    (``WAIT``) on the connection that wrote it: Redis answers those for the writes *that
    connection* made (redis.io, WAITAOF: "all previous write commands sent by the current
    client"), so the wait must follow the write on the same connection. On a cluster the
    pipeline sends it to every master with the batch's writes to each (redis-py's cluster
    pipeline: one connection per node, commands in order).
    """

    def __init__(
        self,
        redis: Redis,
        keys: Keys | Layout,
        dedupe_window: float,
        *,
        retention: float = 30 * 86400,
        wait_aof: bool = False,
        wait_replicas: int = 0,
        index_retention: float | None = None,
    ) -> None:
        """``retention``: how long accepted events are kept (for replay); an event's
        dedupe key is kept as long, since replay finds the event through it.
        ``index_retention``: how long the search indexes (customer, invoice ref) keep an
        entry; ``None``: until the archiver archives its event (no TTL, no trimming
        here: the cheapest write)."""
        self.redis = redis
        self.layout = as_layout(keys)
        self.window = max(1, int(dedupe_window))
        self.keep = max(self.window, int(retention))
        self.index_keep = max(1, int(index_retention)) if index_retention else 0
        self.wait_aof = wait_aof
        self.wait_replicas = wait_replicas
        self._pending: list[Waiter] = []
        self._wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._waiting: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(CONCURRENT_WAITS)

    @property
    def waits(self) -> bool:
        return self.wait_aof or self.wait_replicas > 0

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run(), name="tocsin-enqueuer")]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._waiting:  # batches being confirmed: their requests get their answer
            await asyncio.gather(*self._waiting, return_exceptions=True)
        _fail([w[3] for w in self._pending], RedisError("gateway shutting down"))
        self._pending.clear()

    async def enqueue(
        self, event_id: str, payload: bytes, order: str | None = None, invoice: str | None = None
    ) -> str | None:
        """The stream entry id, or ``None`` if the id was seen within the dedupe window.
        ``order``: the event's ordering key (its customer id), which picks its shard;
        with ``invoice`` (its ``refs.invoice_ref``), what the search indexes take."""
        fut: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        key = ordering_key(order, event_id)
        self._pending.append((event_id, payload, key, fut, order or "", invoice or ""))
        self._wakeup.set()
        return await fut

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if self.waits:
                await self._slots.acquire()  # meanwhile, more requests join the batch
            batch, self._pending = self._pending, []
            if not batch:
                if self.waits:
                    self._slots.release()
                continue
            if not self.waits:
                await self._write(batch)
                continue
            task = asyncio.create_task(self._write(batch))
            self._waiting.add(task)
            task.add_done_callback(self._written)

    def _written(self, task: asyncio.Task[None]) -> None:
        self._waiting.discard(task)
        self._slots.release()

    async def _write(self, batch: list[Waiter]) -> None:
        try:
            entries = await self._flush(batch)
        except Exception as exc:  # RedisError, OSError...: every waiter gets a 503
            _fail([w[3] for w in batch], exc)
            return
        for (_, _, _, fut, *_), entry in zip(batch, entries, strict=True):
            if not fut.done():
                fut.set_result(entry)

    async def _flush(self, batch: list[Waiter]) -> list[str | None]:
        """Each event's new entry id, or ``None`` for a duplicate."""
        by_shard: dict[int, list[int]] = {}
        for i, (_, _, order, *_) in enumerate(batch):
            by_shard.setdefault(self.layout.shard(order).index, []).append(i)
        for attempt in range(2):  # a second pass only after NOSCRIPT (Redis restarted)
            pipe = self.redis.pipeline(transaction=False)
            for index, members in by_shard.items():
                shard = self.layout.shards[index]
                args: list[Any] = [self.window, self.keep, shard.dedupe(""), self.index_keep]
                for i in members:
                    event_id, payload, _, _, customer, invoice = batch[i]
                    args += [event_id, payload, customer, invoice]
                ENQUEUE_MANY.add_to(pipe, [shard.events, shard.search_index], args)
            where = self._written_nodes(by_shard)
            if self.wait_aof:
                pipe.execute_command("WAITAOF", 1, 0, WAITAOF_TIMEOUT_MS, **where)
            if self.wait_replicas:
                pipe.execute_command("WAIT", self.wait_replicas, WAITAOF_TIMEOUT_MS, **where)
            results = await pipe.execute(raise_on_error=False)
            scripts = results[: len(by_shard)]
            if any(is_noscript(r) for r in scripts) and attempt == 0:
                await ENQUEUE_MANY.load(self.redis)
                continue
            for result in results:
                if isinstance(result, Exception):
                    raise result
            self._check_durable(results[len(by_shard) :])
            out: list[str | None] = [None] * len(batch)
            for members, entries in zip(by_shard.values(), scripts, strict=True):
                for i, entry in zip(members, entries, strict=True):
                    out[i] = None if entry is None else as_text(entry)
            return out
        raise RedisError("enqueue script could not be loaded")

    def _written_nodes(self, by_shard: dict[int, list[int]]) -> dict[str, Any]:
        """On a cluster, the masters this batch wrote to: a wait sent to every master
        (redis-py's default for WAIT) would also fail the batch for a shard it did not
        write, e.g. one whose master has lost its replica."""
        if not self.layout.cluster:
            return {}
        cluster: Any = self.redis
        nodes = {
            node.name: node
            for index in by_shard
            if (node := cluster.get_node_from_key(self.layout.shards[index].events))
        }
        return {"target_nodes": list(nodes.values())} if nodes else {}

    def _check_durable(self, replies: list[Any]) -> None:
        replies = list(replies)
        if self.wait_aof:
            local = replies.pop(0)
            if not local or int(local[0]) < 1:
                raise NotDurable(f"WAITAOF did not confirm the write: {local!r}")
        if self.wait_replicas:
            acked = int(replies.pop(0))
            if acked < self.wait_replicas:
                raise NotDurable(
                    f"WAIT: {acked} of the {self.wait_replicas} replicas asked for "
                    f"([redis] wait_replicas) confirmed the write within {WAITAOF_TIMEOUT_MS} ms"
                )


def _order(event: Event) -> str | None:
    """The event's ordering key (``gateway.keys.ordering_key``): its customer."""
    return event.customer.id if event.customer is not None else None


def _invoice(event: Event) -> str | None:
    return event.refs.get("invoice_ref")


def _fail(futures: list[asyncio.Future[str | None]], exc: BaseException) -> None:
    error = exc if isinstance(exc, RedisError) else RedisError(exc)
    for fut in futures:
        if not fut.done():
            fut.set_exception(error)


_json = msgspec.json.Encoder()


def _answer(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status, body=_json.encode(body), content_type="application/json", headers=headers
    )


def error(status: int, code: str, message: str, **extra: Any) -> web.Response:
    return _answer(status, {"error": code, "message": message, **extra})


def invalid(exc: EventInvalid) -> web.Response:
    """``message``/``path`` name the first problem (as before), ``problems`` all of them."""
    problems = [{"path": path, "message": reason} for path, reason in exc.problems]
    del problems[MAX_PROBLEMS:]  # a 256 KiB body of unknown fields is not a 5 MB answer
    return error(400, "invalid_event", exc.reason, path=exc.path, problems=problems)


class BodyTimeout(Exception):
    """The client sent its headers but not its body within ``[intake] body_timeout``."""


def _timed_out(what: str) -> web.Response:
    # RFC 9110 15.5.9: a 408 closes the connection; the client may retry on a new one.
    message = f"the request's {what} did not arrive in time"
    return _answer(408, {"error": "request_timeout", "message": message}, {"Connection": "close"})


MAX_BODY = web.AppKey("max_body", int)
#: At most this many entries in an ``invalid_event`` answer's ``problems``.
MAX_PROBLEMS = 100
#: Distinct unknown types counted by name; past it they are counted under ``"(other)"``,
#: so senders cannot grow the counter (or a metrics label set) without bound.
MAX_UNKNOWN_TYPES = 1000
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error is a JSON body; a bug answers 500 without a traceback, and is logged."""
    try:
        return await handler(request)
    except web.HTTPRequestEntityTooLarge:
        return error(413, "too_large", f"body over the {request.app[MAX_BODY]}-byte limit")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = error(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
        if "Allow" in exc.headers:  # RFC 9110: a 405 names the allowed methods
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error(500, "internal", "internal error; the gateway logged it")


def _peer_allowed(remote: str | None, source: Source[Any]) -> bool:
    try:
        address = ipaddress.ip_address(remote or "")
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in source.allowed_networks)


def _mark_confirmation(event: Event, source: Source[Any]) -> None:
    """Only the intake says which events wait for their source's confirmation: a sender
    setting the mark itself could otherwise have any source fetch on its behalf."""
    if event.source.confirm_by is not None:
        raise EventInvalid("$.source.confirm_by", "set by the gateway, never by a sender")
    if source.confirms:
        event.source.confirm_by = source.name


class Intake:
    def __init__(
        self,
        enqueuer: Enqueuer,
        sources: dict[str, Source[Any]],
        events_source: str,
        max_body: int,
        unknown_types: UnknownTypes = "accept",
        *,
        channels: Mapping[str, Channel[Any]] | None = None,
        public_url: str = "",
        retention: float = 30 * 86400,
        body_timeout: float = 10.0,
        stats: IntakeStats | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.metrics = metrics
        #: ``[intake] body_timeout``: how long a request's body may take to arrive.
        self.body_timeout = body_timeout
        #: Counters for a metrics endpoint (unknown types, 408s, refused connections).
        self.stats = stats or IntakeStats()
        self.channels = channels or {}
        self.public_url = public_url
        self.retention = retention
        self.enqueuer = enqueuer
        self.sources = sources
        self.events_source = events_source
        self.max_body = max_body
        #: ``[intake] unknown_types``: what to do with types outside the catalog.
        self.unknown_types = unknown_types

    def app(self, *middlewares: Middleware) -> web.Application:
        app = web.Application(
            client_max_size=self.max_body, middlewares=[*middlewares, json_errors]
        )
        app[MAX_BODY] = self.max_body
        app.router.add_post("/v1/events", self.post_events)
        app.router.add_post("/v1/sources/{name}", self.post_source)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/openapi.json", serve_openapi)
        app.router.add_get("/v1/receipts/{channel}", self.receipt)
        app.router.add_post("/v1/receipts/{channel}", self.receipt)
        return app

    async def receipt(self, request: web.Request) -> web.StreamResponse:
        """A provider's delivery receipt for a message a channel sent (SMS status...)."""
        name = request.match_info["channel"]
        channel = self.channels.get(name)
        if channel is None:
            return error(404, "unknown_channel", f"no channel named {name!r}")
        if request.content_length is not None and request.content_length > self.max_body:
            return error(413, "too_large", f"body over the {self.max_body}-byte limit")
        try:
            body = await self._read_body(request)
        except BodyTimeout:
            return _timed_out("body")
        form: dict[str, str] = {}
        if request.content_type == "application/x-www-form-urlencoded":
            form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        url = str(request.url)
        if self.public_url:  # behind a proxy: the URL the provider called, and signed
            url = self.public_url.rstrip("/") + str(request.rel_url)
        call = ReceiptRequest(
            method=request.method,
            url=url,
            headers=request.headers,
            query=dict(request.query),
            body=body,
            form=form,
        )
        try:
            receipts = channel.parse_receipt(call)
        except NotImplementedError:
            return error(404, "no_receipts", f"channel {name!r} takes no receipts")
        except SignatureError as exc:
            return error(401, "bad_signature", str(exc))
        except ValueError as exc:
            return error(400, "invalid_receipt", str(exc))
        try:
            for item in receipts:
                item.at = round(time.time(), 3)
                redis, layout = self.enqueuer.redis, self.enqueuer.layout
                if isinstance(item, Reply) or item.suppress:
                    # A reply, or a receipt proving an address unusable.
                    await feed_receipt(redis, layout, item, channel=None)
                await record_receipt(redis, layout, item, self.retention)
        except RedisError as exc:
            log.warning("intake: Redis unavailable, answering 503: %s", exc)
            return _answer(
                503, {"error": "unavailable", "message": "retry later"}, {"Retry-After": "5"}
            )
        return _answer(200, {"received": len(receipts)})

    async def post_events(self, request: web.Request) -> web.StreamResponse:
        return await self._ingest(request, self.sources[self.events_source])

    async def post_source(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        source = self.sources.get(name) if name != self.events_source else None
        if source is None:
            return error(404, "unknown_source", f"no source named {name!r}")
        return await self._ingest(request, source)

    async def _ingest(self, request: web.Request, source: Source[Any]) -> web.StreamResponse:
        if request.content_type != "application/json":
            return error(415, "unsupported_media_type", "send Content-Type: application/json")
        if request.content_length is not None and request.content_length > self.max_body:
            return error(413, "too_large", f"body over the {self.max_body}-byte limit")
        if source.allowed_networks and not _peer_allowed(request.remote, source):
            return error(403, "forbidden", f"{request.remote} is not in this source's allow_from")
        try:
            body = await self._read_body(request)
        except BodyTimeout:
            return _timed_out("body")
        try:
            source.verify(request.headers, body)
        except SignatureError as exc:
            return error(401, "bad_signature", str(exc))
        try:
            events = source.parse(body)
            for event in events:
                _mark_confirmation(event, source)
                if not source.confirms:  # what is confirmed is checked once confirmed
                    check_event(event, self.unknown_types)  # required fields, field types
        except EventInvalid as exc:
            return invalid(exc)
        warnings = {e.id: w for e in events if not source.confirms and (w := self._unknown(e))}
        # The body's id is the dedupe key, whatever webhook-id says: one Tocsin feeding
        # another sends its delivery id there, one per rule that forwards the event.
        try:
            if len(events) == 1:  # the usual case: no Task and no gather per request
                event = events[0]
                payload = encode_event(event)
                order, invoice = _order(event), _invoice(event)
                results = [await self.enqueuer.enqueue(event.id, payload, order, invoice)]
            else:
                results = await asyncio.gather(
                    *(
                        self.enqueuer.enqueue(e.id, encode_event(e), _order(e), _invoice(e))
                        for e in events
                    )
                )
        except RedisError as exc:
            log.warning("intake: Redis unavailable, answering 503: %s", exc)
            return _answer(
                503,
                {"error": "unavailable", "message": "event store unavailable; retry later"},
                {"Retry-After": "5"},
            )
        if self.metrics is not None:
            self.metrics.received(
                source.name, ((e.type, r is None) for e, r in zip(events, results, strict=True))
            )
        if events_log.isEnabledFor(logging.INFO):
            _log_accepted(events, results, source.name)
        accepted = [
            {"id": e.id, "duplicate": r is None}
            | ({"warning": warnings[e.id]} if e.id in warnings else {})
            for e, r in zip(events, results, strict=True)
        ]
        if len(accepted) == 1:
            return _answer(200 if accepted[0]["duplicate"] else 202, accepted[0])
        status = 202 if any(not a["duplicate"] for a in accepted) else 200
        return _answer(status, {"events": accepted})

    async def _read_body(self, request: web.Request) -> bytes:
        try:
            # asyncio.timeout, not wait_for: no Task per request on the hot path.
            async with asyncio.timeout(self.body_timeout or None):
                return await request.read()
        except TimeoutError:
            self.stats.body_timeouts += 1
            log.info("intake: %s sent its body too slowly; answered 408", request.remote)
            raise BodyTimeout from None

    def _unknown(self, event: Event) -> str | None:
        """A warning for the 202 when the type is outside the catalog and close to one
        in it (``payment.succeded``): routed nowhere but by rules naming it exactly."""
        if event.type in TYPES:
            return None
        counted = self.stats.unknown_types
        if event.type in counted or len(counted) < MAX_UNKNOWN_TYPES:
            counted[event.type] += 1
        else:
            counted["(other)"] += 1
        hint = suggest_type(event.type)
        if hint is None:  # a provider's own type (stripe.customer.created): expected
            return None
        message = (
            f"unknown event type {event.type!r}, accepted; did you mean {hint!r}? "
            "Only rules that name this type exactly will see it"
        )
        log.warning("intake: event %s: %s", event.id, message)
        return message

    async def healthz(self, request: web.Request) -> web.StreamResponse:
        return _answer(200, {"status": "ok"})

    async def readyz(self, request: web.Request) -> web.StreamResponse:
        try:
            await self.enqueuer.redis.ping()
        except RedisError:
            return _answer(503, {"status": "redis unavailable"}, {"Retry-After": "5"})
        return _answer(200, {"status": "ready"})


def _log_accepted(events: Sequence[Event], results: Sequence[object], source: str) -> None:
    for event, result in zip(events, results, strict=True):
        if result is None:  # a duplicate
            continue
        # OURS: the id and type are checked patterns, the source a conf name.
        fields = {"event_id": event.id, "event_type": event.type, "source": source, **OURS}
        events_log.info("event %s accepted: %s from %s", event.id, event.type, source, extra=fields)

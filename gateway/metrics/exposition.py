"""``GET /metrics``, and prometheus-client's multiprocess mode for ``tocsin serve``.

``tocsin serve`` (the top process: the supervisor, or the lone gateway) empties
``<data_dir>/metrics`` and names it in ``PROMETHEUS_MULTIPROC_DIR``; its gateway
processes inherit it, each writes its samples to its own files there, and whichever
process answers a scrape adds them all up. A gateway run without that (tests, an
embedding program) keeps its metrics in memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector

from .families import OTHER, Metrics

ENV = "PROMETHEUS_MULTIPROC_DIR"
_active: Path | None = None


def prepare_directory(path: Path) -> None:
    """Empty ``path`` and name it for the gateway processes to come (the top process
    only, before they start: another run's files would add old counts)."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    os.environ[ENV] = str(path)


def multiprocess_dir() -> Path | None:
    """The shared directory, switching this process to multiprocess values on first use
    (whether prometheus_client was imported before the variable was set or not)."""
    global _active  # noqa: PLW0603 - one value class per process, chosen once
    if _active is None:
        named = os.environ.get(ENV)
        if not named or not Path(named).is_dir():
            return None
        values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
        _active = Path(named)
    return _active


class Exporter:
    """Renders the exposition: every process's samples in multiprocess mode."""

    def __init__(self, metrics: Metrics, directory: Path | None) -> None:
        self.metrics = metrics
        self.registry = metrics.registry
        if directory is not None:
            self.registry = CollectorRegistry()
            MultiProcessCollector(self.registry, str(directory))  # type: ignore[no-untyped-call]

    def render(self) -> bytes:
        return generate_latest(self.registry)

    async def handle(self, request: web.Request) -> web.Response:
        self.metrics.flush()  # this process's counts; the others' are at most 1 s old
        return web.Response(body=self.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    def app(self) -> web.Application:
        """A metrics-only application, for ``[metrics] port``."""
        app = web.Application()
        app.router.add_get("/metrics", self.handle)
        return app


def refusal_counter(metrics: Metrics, events_source: str) -> Middleware:
    """Counts the intake's refusals of events (its JSON ``error`` code is the reason).

    It wraps the intake's error-to-JSON middleware, so every refusal reaches it as an
    answer, whichever way it was made."""

    @web.middleware
    async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
        response: web.StreamResponse = await handler(request)
        if response.status < 400 or request.method != "POST":
            return response
        path = request.path
        if path == "/v1/events":
            source = events_source
        elif path.startswith("/v1/sources/"):
            source = request.match_info.get("name", OTHER)
        else:
            return response
        reason = OTHER
        body = getattr(response, "body", None)
        if isinstance(body, bytes):
            with contextlib.suppress(ValueError, AttributeError):
                reason = str(json.loads(body).get("error", OTHER))
        metrics.refuse(source, reason)
        return response

    return count


def conf_digest(files: Iterable[Path]) -> float:
    """52 bits of the SHA-256 of the conf files (name and content): exact as a float."""
    digest = hashlib.sha256()
    for path in sorted(set(files)):
        digest.update(str(path).encode() + b"\0")
        try:
            digest.update(path.read_bytes())
        except OSError:
            digest.update(b"\0unreadable")
    return float(int(digest.hexdigest()[:13], 16))

"""The HTTP API contract: ``gateway/openapi.json``, served at ``GET /openapi.json``.

The document is written by hand (it says what each answer means), except that its
canonical event schemas must agree with what msgspec derives from ``gateway.event``:
``tests/test_openapi.py`` compares them, and the paths with the intake's routes.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

import msgspec
from aiohttp import web

from .event import Event

#: Where the canonical event's schemas live in the document.
SCHEMA_REF = "#/components/schemas/{name}"


@functools.cache
def document_bytes() -> bytes:
    """The document as shipped in the package (read once)."""
    return resources.files("gateway").joinpath("openapi.json").read_bytes()


def document() -> dict[str, Any]:
    """The document, parsed (a fresh copy each call)."""
    doc: dict[str, Any] = json.loads(document_bytes())
    return doc


def event_schemas() -> dict[str, Any]:
    """``Event`` and the structs it uses, as JSON Schema components derived by msgspec."""
    _, components = msgspec.json.schema_components([Event], ref_template=SCHEMA_REF)
    return components


async def serve_openapi(request: web.Request) -> web.StreamResponse:
    return web.Response(body=document_bytes(), content_type="application/json")

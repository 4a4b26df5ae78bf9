"""The HTTP API contract (``gateway/openapi.json``) against the code and the live app.

- the document is valid OpenAPI 3.1, its examples fit its schemas, and its event schemas
  agree with what msgspec derives from ``gateway.event``;
- its paths and methods are exactly the intake app's routes, both ways;
- schemathesis fuzzes every operation on a live gateway (real socket, real Redis),
  unsigned and then correctly signed, checking each answer against the document and
  that no invalid request leaves anything in Redis.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema_rs
import pytest
import redis
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from redis.asyncio import Redis as AsyncRedis
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.intake import Enqueuer, Intake
from gateway.keys import Keys
from gateway.openapi import document, document_bytes, event_schemas
from gateway.signing import Signer

from .conftest import INTAKE_SECRET, RunningGateway, write_conf

EVENTS = "tocsin:events"
SEEN = "tocsin:seen:*"
SIGNATURE_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
#: Keywords the document may add to msgspec's schemas: they explain, they do not change
#: what is accepted (``format`` on ``occurred_at`` says what msgspec parses as a datetime).
ANNOTATIONS = {"description", "examples", "format"}

#: A second source, so the fuzzing reaches past ``/v1/sources/{name}``'s 404.
PARTNER = "partner"
PARTNER_SOURCE = f"""
[sources.{PARTNER}]
type = "standard_webhooks"
secrets = ["{INTAKE_SECRET}"]
"""

#: Examples per operation and generation mode: the whole file stays well under 30 s.
UNSIGNED_EXAMPLES = 40
SIGNED_EXAMPLES = 120


# -- the document itself --


def test_document_is_valid_openapi_3_1():
    doc = document()
    assert doc["openapi"].startswith("3.1.")
    schemathesis.openapi.from_dict(doc).validate()  # raises on any violation of the 3.1 schema
    assert doc["info"]["version"] == version("tocsin")


def _with_examples(node: Any, where: str = "#") -> Iterator[tuple[str, Any, Any]]:
    """Every ``(where, schema, example)`` the document states: media types, parameters, headers."""
    if isinstance(node, dict):
        if "schema" in node and "example" in node:
            yield where, node["schema"], node["example"]
        if "examples" in node and isinstance(node["examples"], list):
            for i, example in enumerate(node["examples"]):
                yield f"{where}/examples/{i}", node, example  # a schema's own examples
        for key, value in node.items():
            yield from _with_examples(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _with_examples(value, f"{where}/{i}")


def validator(schema: Any, doc: dict[str, Any]) -> jsonschema_rs.Validator:
    """A 2020-12 validator for a schema of the document, its ``#/components/...`` refs resolved."""
    root = {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
    root["components"] = doc["components"]
    return jsonschema_rs.validator_for(root)


def test_every_example_fits_its_schema():
    doc = document()
    checked = 0
    for where, schema, example in _with_examples(doc):
        errors = [e.message for e in validator(schema, doc).iter_errors(example)]
        assert not errors, f"{where}: {example!r}: {errors}"
        checked += 1
    assert checked > 20


def _disagreements(derived: Any, documented: Any, where: str) -> Iterator[str]:
    """Where the document's schema says something other than msgspec's (annotations aside)."""
    if isinstance(derived, dict):
        if not isinstance(documented, dict):
            yield f"{where}: documented {documented!r}, derived {derived!r}"
            return
        for key, value in derived.items():
            if key not in documented:
                yield f"{where}: {key!r} missing (derived: {value!r})"
            else:
                yield from _disagreements(value, documented[key], f"{where}.{key}")
        for key in documented.keys() - derived.keys() - ANNOTATIONS:
            yield f"{where}: {key!r} is not in the derived schema"
    elif isinstance(derived, list):
        if not isinstance(documented, list) or len(documented) != len(derived):
            yield f"{where}: documented {documented!r}, derived {derived!r}"
            return
        for i, (d, doc) in enumerate(zip(derived, documented, strict=True)):
            yield from _disagreements(d, doc, f"{where}[{i}]")
    elif derived != documented:
        yield f"{where}: documented {documented!r}, derived {derived!r}"


def test_event_schemas_agree_with_the_msgspec_structs():
    """A field added, removed or re-typed in ``gateway/event.py`` must reach the document."""
    documented = document()["components"]["schemas"]
    derived = event_schemas()
    assert {"Event", "EventSource", "Customer"} <= derived.keys()
    problems = [
        problem
        for name, schema in derived.items()
        for problem in _disagreements(schema, documented.get(name), name)
    ]
    assert not problems, (
        "gateway/openapi.json disagrees with gateway/event.py; msgspec derives:\n"
        + json.dumps(derived, indent=2)
        + "\n"
        + "\n".join(problems)
    )
    body = document()["paths"]["/v1/events"]["post"]["requestBody"]["content"]
    assert body["application/json"]["schema"] == {"$ref": "#/components/schemas/Event"}


# -- the document against the routes --


def documented_routes() -> set[tuple[str, str]]:
    return {
        (path, method)
        for path, item in document()["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


async def test_routes_and_document_agree():
    client = AsyncRedis()  # never connects: the app is only built, not served
    try:
        app = Intake(Enqueuer(client, Keys(), 60), {}, "events", 1024).app()
    finally:
        await client.aclose()
    served = {
        (route.resource.canonical, route.method.lower())
        for route in app.router.routes()
        if route.resource is not None
    }
    assert served, "the app has no routes?"
    assert sorted(served - documented_routes()) == [], "routes missing from gateway/openapi.json"
    assert sorted(documented_routes() - served) == [], "documented routes the app does not serve"


# -- the live app --


@pytest.fixture
async def gateway(tmp_path: Path, redis_url: str, start_gateway) -> RunningGateway:
    conf = write_conf(tmp_path, redis_url=redis_url, extra=PARTNER_SOURCE)
    return await start_gateway(conf, roles=("intake",))


async def test_served_document_is_the_shipped_file(gateway: RunningGateway):
    def fetch() -> tuple[requests.Response, requests.Response]:
        with requests.Session() as session:
            return session.get(gateway.url + "/openapi.json"), session.head(
                gateway.url + "/openapi.json"
            )

    got, head = await asyncio.to_thread(fetch)
    assert got.status_code == 200
    assert got.headers["Content-Type"] == "application/json"
    assert got.content == document_bytes()
    assert got.content == (Path(__file__).parents[1] / "gateway" / "openapi.json").read_bytes()
    assert head.status_code == 200 and head.content == b""


def operations(schema: Any) -> Iterator[Any]:
    for path, item in document()["paths"].items():
        for method in item:
            if method in HTTP_METHODS:
                yield schema[path][method.upper()]


def takes_input(operation: Any) -> bool:
    definition = operation.definition.raw
    return bool(definition.get("parameters") or definition.get("requestBody")) or bool(
        document()["paths"][operation.path].get("parameters")
    )


def run_examples(strategy: Any, examples: int, check: Callable[[Any], None]) -> None:
    """Run ``check`` on ``examples`` cases drawn by Hypothesis (in the caller's thread)."""

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,  # nothing written under the repository
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(case=strategy)
    def test(case: Any) -> None:
        check(case)

    test()


def enqueued(client: redis.Redis) -> tuple[int, int]:
    """What the intake has stored: stream entries and dedupe marks."""
    return client.xlen(EVENTS), sum(1 for _ in client.scan_iter(SEEN))


def assert_not_a_crash(response: Any) -> None:
    status = response.status_code
    assert status < 500 or status == 503, f"{status}: {response.text}"
    assert "Traceback" not in response.text and 'File "' not in response.text


async def test_fuzz_unsigned_requests(gateway: RunningGateway, redis_client: redis.Redis):
    """Whatever schemathesis sends without a signature: a documented answer, nothing stored."""
    schema = schemathesis.openapi.from_dict(document())

    def fuzz() -> int:
        seen = 0
        with requests.Session() as session:

            def check(case: Any) -> None:
                nonlocal seen
                seen += 1
                response = case.call(base_url=gateway.url, session=session)
                assert_not_a_crash(response)
                case.validate_response(response)  # schemathesis' default checks, all of them
                assert enqueued(redis_client) == (0, 0), case.as_curl_command()

            for operation in operations(schema):
                modes = [GenerationMode.POSITIVE]
                if takes_input(operation):
                    modes.append(GenerationMode.NEGATIVE)
                for mode in modes:
                    run_examples(
                        operation.as_strategy(generation_mode=mode), UNSIGNED_EXAMPLES, check
                    )
        return seen

    assert await asyncio.to_thread(fuzz) > 100
    assert enqueued(redis_client) == (0, 0)


RESPONSE_CHECKS = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def signed(case: Any) -> tuple[bytes, dict[str, str]]:
    """The exact bytes to send for ``case``, and Standard Webhooks headers signing them."""
    if isinstance(case.body, (dict, list, str, int, float, bool)) or case.body is None:
        body = json.dumps(case.body, ensure_ascii=False).encode()
    else:  # the body was left out (schemathesis' NOT_SET) or is not JSON at all
        body = b""
    return body, sign(body)


def sign(body: bytes, msg_id: str | None = None) -> dict[str, str]:
    headers = Signer([INTAKE_SECRET]).headers(msg_id or f"msg_{uuid.uuid4().hex}", body)
    headers["Content-Type"] = "application/json"
    return headers


MONEY_REASONS = (
    "amounts are integers in minor units (1250 = 12.50)",
    "currency must be an ISO-4217 code such as EUR",
)


def unstated_rule(body: Any, answer: dict[str, Any]) -> bool:
    """A refusal for a rule the ``Event`` schema does not state, on purpose.

    The money rule holds at any depth of ``data`` (the document says it in prose), and
    the event catalog's per-type fields (``required for payment.failed events``) are
    documented with the catalog, not as one JSON Schema per type. ``source.confirm_by``
    has the type msgspec derives, but only the gateway may set it.
    """
    if answer["message"] in MONEY_REASONS:
        return bool(answer["path"].startswith("$.data"))
    if answer["path"] == "$.source.confirm_by":  # the gateway's mark: its description says so
        return bool(answer["message"] == "set by the gateway, never by a sender")
    event_type = body.get("type") if isinstance(body, dict) else None
    return isinstance(event_type, str) and answer["message"].endswith(f" for {event_type} events")


async def test_fuzz_signed_requests(gateway: RunningGateway, redis_client: redis.Redis):
    """Correctly signed bodies reach validation: 400s name a path, 202s store exactly one event.

    Where the body is meant as a canonical event, the document is held to its word both
    ways: a body it says is an ``Event`` is taken (bar the rules only prose states), and
    a body it says is not one is never taken.
    """
    doc = document()
    schema = schemathesis.openapi.from_dict(doc)
    event_validator = validator({"$ref": "#/components/schemas/Event"}, doc)
    events, source = schema["/v1/events"]["POST"], schema["/v1/sources/{name}"]["POST"]
    # fixed, so never negated nor left out: ``signed`` replaces them
    placeholders = {"headers": dict.fromkeys(SIGNATURE_HEADERS, "0")}
    to_partner = {**placeholders, "path_parameters": {"name": PARTNER}}
    positive, negative = GenerationMode.POSITIVE, GenerationMode.NEGATIVE
    # (strategy, mode, whether the body is meant as a canonical event)
    targets = [
        (events.as_strategy(positive, **placeholders), positive, True),
        (events.as_strategy(negative, **placeholders), negative, True),
        # the partner source speaks canonical events too (a standard_webhooks source) ...
        (
            events.as_strategy(positive).flatmap(
                lambda case: source.as_strategy(positive, body=case.body, **to_partner)
            ),
            positive,
            True,
        ),
        # ... but the document lets a source take any JSON: nothing to negate there
        (source.as_strategy(positive, **to_partner), positive, False),
    ]
    counts = {"202": 0, "200": 0, "400": 0}

    def check(case: Any, mode: GenerationMode, canonical: bool) -> None:
        body, headers = signed(case)
        before = enqueued(redis_client)
        response = case.call(base_url=gateway.url, session=session, headers=headers, data=body)
        where = f"{case.path} {body[:300]!r} -> {response.status_code} {response.text}"
        assert_not_a_crash(response)
        case.validate_response(response, checks=RESPONSE_CHECKS)
        status = response.status_code
        assert status in (200, 202, 400), where
        counts[str(status)] += 1
        answer = response.json()
        if status == 202:  # one new entry and its dedupe mark, nothing else
            assert enqueued(redis_client) == (before[0] + 1, before[1] + 1), where
            assert redis_client.exists(f"tocsin:seen:{answer['id']}"), where
        else:
            assert enqueued(redis_client) == before, where
        if status == 400:
            assert answer["error"] == "invalid_event", where
            assert answer["path"].startswith("$"), where
        if not canonical:
            return
        if mode is positive and status == 400:
            assert unstated_rule(case.body, answer), f"refused a documented Event: {where}"
        if status in (200, 202):
            errors = [e.message for e in event_validator.iter_errors(case.body)]
            assert not errors, f"took a body the document refuses: {errors}: {where}"

    with requests.Session() as session:

        def fuzz() -> None:
            for strategy, mode, canonical in targets:
                run_examples(
                    strategy,
                    SIGNED_EXAMPLES,
                    lambda case, mode=mode, canonical=canonical: check(case, mode, canonical),
                )

        await asyncio.to_thread(fuzz)
    # the fuzzing did get past the signature, to both acceptance and refusal
    assert counts["202"] > 10 and counts["400"] > 10, counts


# -- found while writing these tests: requests the intake answers 500 ("internal") --


async def raw_exchange(gw: RunningGateway, request: bytes) -> bytes:
    """Send bytes no HTTP client library would produce; return the raw answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.gateway.bound_port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.mark.parametrize(
    ("header", "value"),
    # surrogates stand for raw bytes 0xff 0xfe on the wire (surrogateescape)
    [("webhook-id", "\udcff\udcfe"), ("webhook-signature", "v1,\udcff\udcfe")],
    ids=["webhook-id", "webhook-signature"],
)
async def test_non_utf8_signature_header_is_401(
    gateway: RunningGateway, redis_client: redis.Redis, header: str, value: str
):
    body = b"{}"
    headers = {**sign(body), header: value}
    head = "\r\n".join(
        [
            "POST /v1/events HTTP/1.1",
            "Host: x",
            "Connection: close",
            *(f"{k}: {v}" for k, v in headers.items()),
            f"Content-Length: {len(body)}",
            "",
            "",
        ]
    )
    answer = await raw_exchange(gateway, head.encode("utf-8", "surrogateescape") + body)
    assert enqueued(redis_client) == (0, 0)
    assert answer.startswith(b"HTTP/1.1 401 "), answer


async def test_deeply_nested_signed_body_is_400(gateway: RunningGateway, redis_client: redis.Redis):
    event = {
        "id": "evt_deep",
        "type": "payment.succeeded",
        "occurred_at": "2026-11-25T10:00:00Z",
        "source": {"provider": "test"},
    }
    body = json.dumps(event)[:-1].encode() + b', "data": {"a": ' + b"[" * 2000 + b"]" * 2000 + b"}}"
    response = await asyncio.to_thread(
        requests.post, gateway.url + "/v1/events", data=body, headers=sign(body), timeout=10
    )
    assert enqueued(redis_client) == (0, 0)
    assert response.status_code == 400, response.text


# -- README.md's "Bad input" table, row by row, against the live gateway --

README = Path(__file__).parents[1] / "README.md"
ELLIPSIS = "…"


def bad_input_rows() -> dict[str, tuple[int, dict[str, str], dict[str, Any]]]:
    """``{first cell: (status, headers, body)}`` from the README's table."""
    text = README.read_text()
    section = text.split("\n### Bad input\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        if not line.startswith("| ") or line.startswith(("| bad request ", "|---")):
            continue
        request, status_cell, body_cell = (cell.strip() for cell in line.strip("|").split(" | "))
        found = re.search(r"`(\d{3})`", status_cell)
        assert found, f"README.md, Bad input: no status in {line!r}"
        status = int(found[1])
        headers = dict(re.findall(r"`([A-Za-z-]+): ([^`]+)`", status_cell))
        code = body_cell.strip("`").strip()  # `...` or ``...`` (when the JSON holds backticks)
        rows[request] = (status, headers, json.loads(code))
    return rows


def matches(expected: Any, actual: Any) -> bool:
    """Equality, where ``…`` in an expected string stands for any text (in lists and
    objects too)."""
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(expected) == len(actual)
            and all(matches(e, a) for e, a in zip(expected, actual, strict=True))
        )
    if isinstance(expected, dict):
        return (
            isinstance(actual, dict)
            and expected.keys() == actual.keys()
            and all(matches(expected[k], actual[k]) for k in expected)
        )
    if isinstance(expected, str) and ELLIPSIS in expected:
        pattern = ".*".join(re.escape(part) for part in expected.split(ELLIPSIS))
        return isinstance(actual, str) and re.fullmatch(pattern, actual, re.DOTALL) is not None
    return bool(expected == actual)


@dataclass
class Sent:
    body: bytes | Callable[[], AsyncIterator[bytes]] = b""
    #: ``None``: signed with the intake secret, with ``Content-Type: application/json``.
    #: A callable is called when the request is sent: a signature made when the module
    #: was imported is past ``intake.tolerance`` once the suite has run five minutes.
    headers: dict[str, str] | Callable[[], dict[str, str]] | None = None
    method: str = "POST"
    path: str = "/v1/events"
    #: Fields of this request's answer that differ from the row's example.
    differs: dict[str, Any] = field(default_factory=dict)


def event_bytes(**overrides: Any) -> bytes:
    event = {
        "id": f"evt_{uuid.uuid4().hex}",
        "type": "payment.succeeded",
        "occurred_at": "2026-11-25T10:00:00Z",
        "source": {"provider": "test"},
        "data": {"amount": 1250, "currency": "EUR"},
        **overrides,
    }
    return json.dumps({k: v for k, v in event.items() if v is not None}).encode()


def resigned(body: bytes, **changes: str) -> dict[str, str]:
    return {**sign(body), **changes}


def other_versions(body: bytes) -> dict[str, str]:
    headers = sign(body)
    headers["webhook-signature"] = headers["webhook-signature"].replace("v1,", "v2,")
    return headers


def in_chunks(body: bytes) -> Callable[[], AsyncIterator[bytes]]:
    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 16384):
            yield body[start : start + 16384]

    return chunks


OTHER_SECRET = "whsec_" + "c29tZS1vdGhlci1zZWNyZXQtbm90LXRoZS1pbnRha2U="
BIG = event_bytes(data={"note": "x" * 262144})
PLAIN = event_bytes()

#: Each README row's first cell, and the requests that must get that row's answer.
BAD_INPUT: dict[str, list[Sent]] = {
    "malformed JSON, an empty body, bytes that are not UTF-8": [
        Sent(b'{"id": "evt_1", "type": '),
        Sent(b""),
        Sent(b"\xff\xfe{}"),
    ],
    'JSON that is not an object (`[]`, `"text"`, `null`)': [
        Sent(b"[]"),
        Sent(b'"text"', differs={"message": "Expected `object`, got `str`"}),
        Sent(b"null", differs={"message": "Expected `object`, got `null`"}),
    ],
    "a required field missing (`id`, `type`, `occurred_at`, `source`, `source.provider`)": [
        Sent(event_bytes(type=None)),
        Sent(event_bytes(id=None), differs={"message": "Object missing required field `id`"}),
        Sent(
            event_bytes(source={"livemode": False}),
            differs={"message": "Object missing required field `provider`", "path": "$.source"},
        ),
    ],
    "a field Tocsin does not know (the envelope, `source` and `customer` are closed; "
    "`refs` and `data` are free)": [
        Sent(event_bytes(colour="red")),
        Sent(
            event_bytes(customer={"id": "cus_1", "colour": "red"}),
            differs={"path": "$.customer"},
        ),
    ],
    "a field of the wrong type": [Sent(event_bytes(id=42))],
    "a field that breaks its pattern: undotted `type`, `.` in `id`, a phone not in E.164, "
    "an email that is not an address": [
        Sent(event_bytes(type="payment")),
        Sent(
            event_bytes(id="evt.1"),
            differs={
                "path": "$.id",
                "message": "id must be 1-128 letters, digits, '_', ':' or '-' (no '.'), e.g. evt_123",
            },
        ),
        Sent(
            event_bytes(customer={"phone": "06 12 34 56 78"}),
            differs={
                "path": "$.customer.phone",
                "message": "phone must be E.164, e.g. +33612345678",
            },
        ),
        Sent(
            event_bytes(customer={"email": "not-an-email"}),
            differs={"path": "$.customer.email", "message": "not an email address: …"},
        ),
    ],
    "`occurred_at` without a time zone": [Sent(event_bytes(occurred_at="2026-11-25T10:00:00"))],
    "an `amount` or `*_amount` that is not an integer, at any depth of `data`": [
        Sent(event_bytes(data={"lines": [{"unit_amount": 9.99}], "currency": "EUR"})),
        Sent(
            event_bytes(data={"amount": "1250", "currency": "EUR"}),
            differs={"path": "$.data.amount"},
        ),
    ],
    "a `currency` or `*_currency` that is not three upper-case letters": [
        Sent(event_bytes(data={"amount": 1250, "currency": "eur"})),
        Sent(
            event_bytes(data={"fee": {"fee_amount": 5, "fee_currency": "EURO"}}),
            differs={"path": "$.data.fee.fee_currency"},
        ),
    ],
    "no `webhook-*` headers": [Sent(PLAIN, {"Content-Type": "application/json"})],
    "no matching signature: wrong secret, body changed after signing, only non-`v1` signatures": [
        Sent(
            PLAIN,
            lambda: {
                **Signer([OTHER_SECRET]).headers("msg_1", PLAIN),
                "Content-Type": "application/json",
            },
        ),
        Sent(PLAIN, lambda: sign(PLAIN.replace(b"1250", b"1251"))),
        Sent(PLAIN, lambda: other_versions(PLAIN)),
    ],
    "`webhook-timestamp` older than `intake.tolerance` (5 min)": [
        Sent(PLAIN, {**sign(PLAIN), "webhook-timestamp": "1000000000"}),
    ],
    "`webhook-timestamp` further ahead than `intake.tolerance`": [
        Sent(PLAIN, {**sign(PLAIN), "webhook-timestamp": "99999999999"}),
    ],
    "`webhook-timestamp` not an integer": [
        Sent(PLAIN, {**sign(PLAIN), "webhook-timestamp": "yesterday"}),
    ],
    "`Content-Length` over `intake.max_body` (refused before reading)": [Sent(BIG)],
    "a chunked body that grows over `intake.max_body`": [Sent(in_chunks(BIG), sign(BIG))],
    "`Content-Type` missing or not `application/json` (`; charset=utf-8` is fine)": [
        Sent(PLAIN, lambda: {**sign(PLAIN), "Content-Type": "text/plain"}),
        Sent(PLAIN, {k: v for k, v in sign(PLAIN).items() if k != "Content-Type"}),
    ],
    "`POST /v1/sources/NAME` with no `[sources.NAME]` (`events` included)": [
        Sent(PLAIN, path="/v1/sources/nope"),
        Sent(
            PLAIN,
            path="/v1/sources/events",
            differs={"message": "no source named 'events'"},
        ),
    ],
    "a path no route serves": [Sent(PLAIN, path="/v1/event"), Sent(method="GET", path="/")],
    "a method the path does not take (`GET /v1/events`)": [Sent(method="GET", headers={})],
}


def test_bad_input_table_and_cases_name_the_same_rows():
    assert sorted(bad_input_rows()) == sorted(BAD_INPUT)


@pytest.mark.parametrize("row", list(BAD_INPUT))
async def test_bad_input_row(gateway: RunningGateway, redis_client: redis.Redis, row: str):
    status, headers, example = bad_input_rows()[row]
    for sent in BAD_INPUT[row]:
        data = sent.body() if callable(sent.body) else sent.body
        request_headers = sent.headers() if callable(sent.headers) else sent.headers
        if request_headers is None:
            assert isinstance(sent.body, bytes)
            request_headers = sign(sent.body)
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                sent.method,
                gateway.url + sent.path,
                data=data,
                headers=request_headers,
                skip_auto_headers=["Content-Type"],
            ) as response,
        ):
            answer = await response.json(content_type=None)
            got = (response.status, {k: response.headers.get(k) for k in headers}, answer)
        expected = {**example, **sent.differs}
        where = f"{row}: {sent.method} {sent.path} {str(sent.body)[:80]} -> {got}"
        assert got[:2] == (status, headers), where
        assert answer.keys() == expected.keys(), where
        assert all(matches(expected[k], answer[k]) for k in expected), where
        if "problems" in answer:  # the first problem is the one ``message`` and ``path`` name
            assert answer["problems"][0] == {"path": answer["path"], "message": answer["message"]}
    assert enqueued(redis_client) == (0, 0)

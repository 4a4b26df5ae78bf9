"""The admin API's contract (``gateway/adminapi/openapi.json``) against the code and
the live app: a valid OpenAPI 3.1 document, exactly the sub-app's routes, and
schemathesis fuzzing every operation with an ``operate`` token on a live gateway: bad
input is a documented 4xx naming what is wrong, never a 500.
"""

from __future__ import annotations

import asyncio
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from redis.asyncio import Redis as AsyncRedis
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from gateway.adminapi import AdminContext, Token, admin_app, document
from gateway.keys import Layout

from .conftest import RunningGateway, write_conf
from .test_openapi import HTTP_METHODS, assert_not_a_crash, run_examples

TOKEN = "f" * 40
ADMIN = f"""
[admin]
tokens = [{{ name = "fuzz", scope = "operate", token = "{TOKEN}" }}]
"""
#: Where a schema-valid request may still be refused, for rules the document states in
#: prose: a cursor must be one a page returned, a time one of the forms ``since`` lists,
#: a channel one of the conf, a replay filter not empty, a key not blank, an address a
#: real email or phone number, an expiry in the future, a search by address a privacy key
#: (this gateway has none).
PROSE_RULES = {"cursor", "since", "until", "channel", "filter", "body.key", "body.filter.status"}
PROSE_RULES |= {"to", "address", "body.address", "body.until", "customer_id"}
#: Examples per operation and generation mode: the file stays under ~20 s.
EXAMPLES = 15


def test_document_is_valid_openapi_3_1():
    doc = document()
    schemathesis.openapi.from_dict(doc).validate()
    assert doc["info"]["version"] == version("tocsin")


async def test_routes_and_document_agree():
    client = AsyncRedis()  # never connects: the app is only built
    try:
        ctx = AdminContext(client, Layout(), None, 60.0)
        app = admin_app(ctx, (Token("t", "read", b"x" * 40),))
    finally:
        await client.aclose()
    served = {
        (route.resource.canonical, route.method.lower())
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }
    documented = {
        (path, method)
        for path, item in document()["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }
    assert sorted(served - documented) == [], "routes missing from the admin document"
    assert sorted(documented - served) == [], "documented routes the app does not serve"


@pytest.fixture
async def gateway(tmp_path: Path, redis_url: str, start_gateway) -> RunningGateway:
    conf = write_conf(tmp_path, redis_url=redis_url, extra=ADMIN)
    return await start_gateway(conf, roles=("intake",))


async def test_fuzz(gateway: RunningGateway):
    doc = document()
    schema = schemathesis.openapi.from_dict(doc)
    base = gateway.url + "/admin/v1"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    statuses: dict[int, int] = {}

    def fuzz() -> None:
        with requests.Session() as session:

            def check(case: Any, mode: GenerationMode) -> None:
                response = case.call(base_url=base, session=session, headers=headers)
                assert_not_a_crash(response)
                assert response.status_code != 503, response.text
                case.validate_response(response, excluded_checks=[positive_data_acceptance])
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                if response.status_code == 400:
                    answer = response.json()
                    assert answer["message"] and answer["where"], case.as_curl_command()
                    if mode is GenerationMode.POSITIVE:
                        assert answer["where"] in PROSE_RULES, (answer, case.as_curl_command())

            for path, item in doc["paths"].items():
                for method in item:
                    if method not in HTTP_METHODS:
                        continue
                    operation = schema[path][method.upper()]
                    raw = operation.definition.raw
                    modes = [GenerationMode.POSITIVE]
                    if raw.get("parameters") or raw.get("requestBody"):
                        modes.append(GenerationMode.NEGATIVE)
                    for mode in modes:
                        run_examples(
                            operation.as_strategy(generation_mode=mode),
                            EXAMPLES,
                            lambda case, mode=mode: check(case, mode),
                        )

    await asyncio.to_thread(fuzz)
    # The fuzzing reached both answers and refusals.
    assert statuses.get(200, 0) > 50 and statuses.get(400, 0) > 50, statuses


async def test_the_longest_valid_url_gets_the_apis_answer(gateway: RunningGateway) -> None:
    """Every query parameter of each search at its maxLength, in 4-byte characters
    (percent-encoded: 12 bytes each): the answer is the API's JSON, never the HTTP
    parser's plain-text refusal of a long request line."""
    doc = document()
    longest = 0
    for path in ("/events", "/deliveries", "/dead-letters", "/scenarios", "/audit"):
        query = {}
        for param in doc["paths"][path]["get"].get("parameters", []):
            schema = param.get("schema", {})
            if param["in"] == "query" and schema.get("type") == "string":
                longest_value = "\U0001d11e" * schema.get("maxLength", 0)
                query[param["name"]] = schema["enum"][0] if "enum" in schema else longest_value
        url = requests.Request("GET", gateway.url + "/admin/v1" + path, params=query)
        prepared = url.prepare()
        assert prepared.url is not None
        longest = max(longest, len(prepared.url))

        def get(url: str = prepared.url) -> requests.Response:
            return requests.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)

        response = await asyncio.to_thread(get)
        assert response.headers["Content-Type"].startswith("application/json"), response.text
        assert response.status_code in (200, 400), response.text
    assert longest > 8190  # past aiohttp's default bound: the case this guards

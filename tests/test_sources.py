"""Event sources end to end: ``POST /v1/sources/NAME`` on a real gateway, real Redis.

Each provider's requests are signed the provider's way by an independent
implementation: Stripe's official ``stripe`` library, the ``standardwebhooks``
reference library, and for CentralPay the standard library's ``hmac``: CentralPay
publishes no signature scheme, so these sources use ``verify = "hmac"`` with a
configured header, the one mode whose refusals the intake itself decides (``verify =
"fetch"`` is tested against the API stand-in in test_centralpay.py). The payloads are
in ``tests/fixtures/<provider>/``: Stripe's from its API documentation, CentralPay's in
the ``{"type", "object"}`` shape a real integration reads, with the object fields
docs/sources.md cites. Each mapped event type is checked to come out as the expected
canonical event.

The gateway runs with the intake role only, so what the intake stores stays in the
events stream for the tests to read.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import math
import os
import re
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
import stripe
from click.testing import CliRunner
from gateway_centralpay import MAPPING as CENTRALPAY_MAPPING
from gateway_stripe import MAPPING as STRIPE_MAPPING
from gateway_stripe import StripeConfig, StripeSource
from standardwebhooks.webhooks import Webhook

from gateway import Secret, SignatureError, catalog
from gateway.cli import main

from .centralpay_standin import payment_request
from .conftest import RunningGateway, make_event, write_conf
from .test_intake import EVENTS, assert_error, assert_nothing_enqueued, send

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SOURCES_DOC = ROOT / "docs" / "sources.md"
GUIDE = ROOT / "docs" / "plugins.md"
EXAMPLE = ROOT / "docs" / "examples" / "tocsin-acme-source"

STRIPE_SECRET = "whsec_" + "test_9f2c4b7e1d8a3f6c0e5b2d9a7c4f1e8b"
CENTRALPAY_SECRET = "cpay_sk_test_5b2e8d1f4a7c0e3b6d9f2a5c8e1b4d7f"
PARTNER_SECRET = "whsec_" + "cGFydG5lci1zaWduaW5nLXNlY3JldC0wMTIzNDU2Nzg="
WRONG_STRIPE = "whsec_" + "test_0000000000000000000000000000000000"
WRONG_CENTRALPAY = "cpay_sk_test_00000000000000000000000000000000"
WRONG_PARTNER = "whsec_" + "c29tZS1vdGhlci1zZWNyZXQtbm90LXRoZS1pbnRha2U="
CENTRALPAY_HEADER = "X-CentralPay-Signature"

SOURCES = f"""
[sources.stripe]
type = "stripe"
secrets = ["{STRIPE_SECRET}"]

[sources.centralpay]
type = "centralpay"
verify = "hmac"
secrets = ["{CENTRALPAY_SECRET}"]
signature_header = "{CENTRALPAY_HEADER}"

[sources.partner]
type = "standard_webhooks"
secrets = ["{PARTNER_SECRET}"]

[sources.stripe-quiet]
type = "stripe"
secrets = ["{STRIPE_SECRET}"]
unmapped = "ignore"

[sources.centralpay-b64]
type = "centralpay"
verify = "hmac"
secrets = ["{CENTRALPAY_SECRET}"]
signature_header = "Signature"
signature_encoding = "base64"
signature_prefix = "sha256="
aliases = {{ "TRANSACTION_OK" = "TRANSACTION_SUCCEEDED" }}
"""


def fixture(provider: str, name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / provider / f"{name}.json").read_text())


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


# -- signing, each provider's way ------------------------------------------------------


def stripe_headers(
    body: bytes, secret: str = STRIPE_SECRET, timestamp: int | None = None
) -> dict[str, str]:
    """``Stripe-Signature`` as Stripe's own library computes it."""
    header = stripe.WebhookSignature.generate_signature_header(body.decode(), secret, timestamp)
    return {"Stripe-Signature": header, "Content-Type": "application/json"}


def centralpay_headers(
    body: bytes, secret: str = CENTRALPAY_SECRET, header: str = CENTRALPAY_HEADER
) -> dict[str, str]:
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {header: signature, "Content-Type": "application/json"}


def partner_headers(
    body: bytes, secret: str = PARTNER_SECRET, timestamp: int | None = None
) -> dict[str, str]:
    """Standard Webhooks headers from the reference library; ``webhook-id`` is the event's
    id, as the intake requires (a body with no id gets a fresh one)."""
    msg_id = f"msg_{uuid.uuid4().hex}"
    with contextlib.suppress(ValueError):
        parsed = json.loads(body)
        if isinstance(parsed, dict) and isinstance(parsed.get("id"), str):
            msg_id = parsed["id"]
    ts = int(time.time()) if timestamp is None else timestamp
    signature = Webhook(secret).sign(msg_id, datetime.fromtimestamp(ts, UTC), body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": signature,
        "Content-Type": "application/json",
    }


@dataclass
class Provider:
    """One source under test: how to make a valid request for it, and what it stores."""

    name: str
    sample: Callable[[], dict[str, Any]]
    sign: Callable[..., dict[str, str]]
    wrong_secret: str
    signature_header: str
    unknown: Callable[[], dict[str, Any]]
    unknown_type: str
    stored_id: Callable[[dict[str, Any]], str]

    @property
    def path(self) -> str:
        return f"/v1/sources/{self.name}"


def _partner_event() -> dict[str, Any]:
    return make_event(id=f"evt_{uuid.uuid4().hex}")


def _stripe_unknown() -> dict[str, Any]:
    payload = fixture("stripe", "payment_intent.succeeded")
    payload["type"] = "customer.created"
    payload["data"]["object"] = {"id": "cus_R4bUq7lJb2XkQe", "object": "customer"}
    return payload


def _centralpay_unknown() -> dict[str, Any]:
    return {
        "type": "ONBOARDING_ENROLLMENT_CREATED",
        "object": {"enrollmentId": "0a1b2c3d", "status": "PARTIAL"},
    }


def _centralpay_id(payload: dict[str, Any]) -> str:
    """CentralPay sends no event id: the key is the object's id and what the event means
    (the canonical type, or the name itself when unmapped)."""
    obj = payload["object"]
    if payload["type"] == "TRANSACTION_SUCCEEDED":
        return f"centralpay:{obj['transactionId']}:payment_succeeded"
    assert payload["type"] == "ONBOARDING_ENROLLMENT_CREATED"
    return f"centralpay:{obj['enrollmentId']}:ONBOARDING_ENROLLMENT_CREATED"


PROVIDERS = {
    "stripe": Provider(
        name="stripe",
        sample=lambda: fixture("stripe", "payment_intent.succeeded"),
        sign=stripe_headers,
        wrong_secret=WRONG_STRIPE,
        signature_header="Stripe-Signature",
        unknown=_stripe_unknown,
        unknown_type="stripe.customer.created",
        stored_id=lambda p: f"stripe:{p['id']}",
    ),
    "centralpay": Provider(
        name="centralpay",
        sample=lambda: fixture("centralpay", "TRANSACTION_SUCCEEDED"),
        sign=centralpay_headers,
        wrong_secret=WRONG_CENTRALPAY,
        signature_header=CENTRALPAY_HEADER,
        unknown=_centralpay_unknown,
        unknown_type="centralpay.onboarding_enrollment_created",
        stored_id=_centralpay_id,
    ),
    "standard_webhooks": Provider(
        name="partner",
        sample=_partner_event,
        sign=partner_headers,
        wrong_secret=WRONG_PARTNER,
        signature_header="webhook-signature",
        unknown=lambda: make_event(type="order.shipped", data={"carrier": "colissimo"}),
        unknown_type="order.shipped",
        stored_id=lambda p: p["id"],
    ),
}
ALL = pytest.mark.parametrize("provider", list(PROVIDERS.values()), ids=list(PROVIDERS))
TIMESTAMPED = pytest.mark.parametrize(
    "provider", [PROVIDERS["stripe"], PROVIDERS["standard_webhooks"]], ids=["stripe", "partner"]
)


def stored(client: redis.Redis) -> list[dict[str, Any]]:
    return [json.loads(fields[b"e"]) for _, fields in client.xrange(EVENTS)]


@pytest.fixture
async def gw(tmp_path: Path, redis_url: str, start_gateway) -> RunningGateway:
    conf = write_conf(tmp_path, redis_url=redis_url, extra=SOURCES)
    return await start_gateway(conf, roles=("intake",))


# -- authenticity: checked on the raw bytes, before anything parses them ---------------


@ALL
async def test_valid_signature_is_accepted_and_stored(gw, redis_client, provider):
    payload = provider.sample()
    body = encode(payload)
    answer = await send(gw, body, provider.sign(body), path=provider.path)
    assert answer.status == 202, answer.text
    assert answer.json == {"id": provider.stored_id(payload), "duplicate": False}
    [event] = stored(redis_client)
    assert event["id"] == provider.stored_id(payload)


@ALL
async def test_one_valid_signature_among_several_is_accepted(gw, redis_client, provider):
    payload = provider.sample()
    body = encode(payload)
    headers = provider.sign(body)
    name = provider.signature_header
    if provider.name == "stripe":
        # t=...,v1=<other secret's>,v1=<right one>: one timestamp, two signatures
        stamp, good = headers[name].split(",v1=")
        now = int(stamp.removeprefix("t="))
        bad = stripe_headers(body, WRONG_STRIPE, now)[name].split(",v1=")[1]
        headers[name] = f"{stamp},v1={bad},v1={good},v0=deadbeef"
    elif provider.name == "centralpay":
        wrong = centralpay_headers(body, WRONG_CENTRALPAY)[name]
        headers[name] = f"{wrong}, {headers[name]}"
    else:
        # same id and timestamp: the other secret's signature is a genuine mismatch
        wrong = Webhook(WRONG_PARTNER).sign(
            headers["webhook-id"],
            datetime.fromtimestamp(int(headers["webhook-timestamp"]), UTC),
            body.decode(),
        )
        headers[name] = f"{wrong} {headers[name]}"
    answer = await send(gw, body, headers, path=provider.path)
    assert answer.status == 202, answer.text
    assert [e["id"] for e in stored(redis_client)] == [provider.stored_id(payload)]


@ALL
async def test_tampered_body_is_401(gw, redis_client, provider):
    body = encode(provider.sample())
    headers = provider.sign(body)
    tampered = body.replace(b"EUR", b"USD").replace(b"eur", b"usd")
    assert tampered != body
    assert_error(await send(gw, tampered, headers, path=provider.path), 401, "bad_signature")
    assert_nothing_enqueued(redis_client)


@ALL
async def test_wrong_secret_is_401(gw, redis_client, provider):
    body = encode(provider.sample())
    headers = provider.sign(body, secret=provider.wrong_secret)
    error = assert_error(await send(gw, body, headers, path=provider.path), 401, "bad_signature")
    for secret in (STRIPE_SECRET, CENTRALPAY_SECRET, PARTNER_SECRET):
        assert secret not in error["message"]
    assert_nothing_enqueued(redis_client)


@ALL
async def test_missing_signature_header_is_401_naming_it(gw, redis_client, provider):
    body = encode(provider.sample())
    headers = provider.sign(body)
    del headers[provider.signature_header]
    error = assert_error(await send(gw, body, headers, path=provider.path), 401, "bad_signature")
    assert provider.signature_header in error["message"]
    assert_nothing_enqueued(redis_client)


@ALL
async def test_unsigned_garbage_is_401_not_400(gw, redis_client, provider):
    """The signature is checked first: a stranger learns nothing about the payload format."""
    answer = await send(gw, b"{not json", {"Content-Type": "application/json"}, path=provider.path)
    assert_error(answer, 401, "bad_signature")
    assert_nothing_enqueued(redis_client)


async def _raw_post(gw: RunningGateway, path: str, headers: dict[str, str], body: bytes) -> bytes:
    """One request written byte by byte: header values may carry non-UTF-8 bytes."""
    host, port = gw.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    lines = [f"POST {path} HTTP/1.1", "Host: x", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines += [f"Content-Length: {len(body)}", "", ""]
    writer.write("\r\n".join(lines).encode("utf-8", "surrogateescape") + body)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    return answer


@pytest.mark.parametrize(
    "provider", [PROVIDERS["stripe"], PROVIDERS["centralpay"]], ids=["stripe", "centralpay"]
)
async def test_non_utf8_signature_header_is_401_not_500(gw, redis_client, provider):
    body = encode(provider.sample())
    headers = provider.sign(body)
    name = provider.signature_header
    # surrogates stand for the raw bytes 0xff 0xfe on the wire
    headers[name] = headers[name][:-4] + "\udcff\udcfe"
    answer = await _raw_post(gw, provider.path, headers, body)
    assert answer.startswith(b"HTTP/1.1 401 "), answer
    assert_nothing_enqueued(redis_client)


@pytest.mark.parametrize(
    "provider", [PROVIDERS["stripe"], PROVIDERS["centralpay"]], ids=["stripe", "centralpay"]
)
async def test_deeply_nested_signed_body_is_400_not_500(gw, redis_client, provider):
    body = b'{"id": "evt_deep", "data": {"a": ' + b"[" * 2000 + b"]" * 2000 + b"}}"
    error = assert_error(
        await send(gw, body, provider.sign(body), path=provider.path), 400, "invalid_event"
    )
    assert error["path"] == "$"
    assert_nothing_enqueued(redis_client)


@TIMESTAMPED
async def test_timestamp_301s_too_old_is_401(gw, redis_client, provider):
    body = encode(provider.sample())
    headers = provider.sign(body, timestamp=math.floor(time.time()) - 301)
    error = assert_error(await send(gw, body, headers, path=provider.path), 401, "bad_signature")
    assert "too old" in error["message"]
    assert_nothing_enqueued(redis_client)


@TIMESTAMPED
async def test_timestamp_301s_too_new_is_401(gw, redis_client, provider):
    body = encode(provider.sample())
    headers = provider.sign(body, timestamp=math.ceil(time.time()) + 301)
    error = assert_error(await send(gw, body, headers, path=provider.path), 401, "bad_signature")
    assert "future" in error["message"]
    assert_nothing_enqueued(redis_client)


@TIMESTAMPED
async def test_timestamp_within_tolerance_is_accepted(gw, redis_client, provider):
    body = encode(provider.sample())
    headers = provider.sign(body, timestamp=int(time.time()) - 290)
    answer = await send(gw, body, headers, path=provider.path)
    assert answer.status == 202, answer.text


@ALL
async def test_malformed_json_correctly_signed_is_400(gw, redis_client, provider):
    body = b'{"id": "evt_1", "type": '
    error = assert_error(
        await send(gw, body, provider.sign(body), path=provider.path), 400, "invalid_event"
    )
    assert error["path"] == "$"
    assert "malformed JSON" in error["message"]
    assert_nothing_enqueued(redis_client)


# -- unknown event types ---------------------------------------------------------------


@ALL
async def test_unknown_event_type_is_forwarded_under_the_provider_name(gw, redis_client, provider):
    payload = provider.unknown()
    body = encode(payload)
    answer = await send(gw, body, provider.sign(body), path=provider.path)
    assert answer.status == 202, answer.text
    [event] = stored(redis_client)
    assert event["type"] == provider.unknown_type
    assert event["id"] == provider.stored_id(payload)
    if provider.name != "partner":
        assert event["source"]["payload"] == payload


async def test_a_status_the_mapping_leaves_out_is_forwarded_too(gw, redis_client):
    payload = fixture("stripe", "customer.subscription.created")
    payload["type"] = "customer.subscription.updated"  # status active: no canonical type
    body = encode(payload)
    assert (await send(gw, body, stripe_headers(body), path="/v1/sources/stripe")).status == 202
    [event] = stored(redis_client)
    assert event["type"] == "stripe.customer.subscription.updated"
    assert event["source"]["event_type"] == "customer.subscription.updated"


async def test_unmapped_events_can_be_ignored(gw, redis_client):
    payload = _stripe_unknown()
    body = encode(payload)
    answer = await send(gw, body, stripe_headers(body), path="/v1/sources/stripe-quiet")
    assert (answer.status, answer.json) == (200, {"events": []})
    assert_nothing_enqueued(redis_client)
    # mapped ones still go through
    body = encode(fixture("stripe", "payout.paid"))
    answer = await send(gw, body, stripe_headers(body), path="/v1/sources/stripe-quiet")
    assert answer.status == 202, answer.text


# -- CentralPay's configurable signature ---------------------------------------------------


async def test_centralpay_base64_signature_with_prefix_and_aliases(gw, redis_client):
    payload = fixture("centralpay", "TRANSACTION_SUCCEEDED")
    payload["type"] = "TRANSACTION_OK"  # this deployment's name, mapped in conf
    body = encode(payload)
    digest = hmac.new(CENTRALPAY_SECRET.encode(), body, hashlib.sha256).digest()
    headers = {
        "Signature": "sha256=" + base64.b64encode(digest).decode(),
        "Content-Type": "application/json",
    }
    answer = await send(gw, body, headers, path="/v1/sources/centralpay-b64")
    assert answer.status == 202, answer.text
    [event] = stored(redis_client)
    assert event["type"] == "payment.succeeded"
    assert event["id"] == f"centralpay:{TX}:payment_succeeded"
    assert event["source"]["event_type"] == "TRANSACTION_OK"
    # the hex signature in the other header is not what this source reads
    assert_error(
        await send(gw, body, centralpay_headers(body), path="/v1/sources/centralpay-b64"),
        401,
        "bad_signature",
    )


async def test_centralpay_dedupe_key_comes_from_the_object(gw, redis_client):
    """CentralPay sends no event id: the key is the object's id, what the event means and,
    for a payment request, how many payments it holds."""
    path = "/v1/sources/centralpay"

    async def post(payload: dict[str, Any], **dumps: Any) -> tuple[int, Any]:
        body = json.dumps(payload, **dumps).encode()
        answer = await send(gw, body, centralpay_headers(body), path=path)
        return answer.status, answer.json

    name = "PAYMENTREQUEST_TRANSACTION_SUCCEEDED"
    shares = (100000, 70000, 70000)
    one = {
        "type": name,
        "object": payment_request(PR, "FA-2026-0042", 240000, shares=shares, paid_shares=(0,)),
    }
    two = {
        "type": name,
        "object": payment_request(PR, "FA-2026-0042", 240000, shares=shares, paid_shares=(0, 1)),
    }
    partially_paid = f"centralpay:{PR}:payment_request_partially_paid"
    assert await post(one) == (202, {"id": f"{partially_paid}:1", "duplicate": False})
    # CentralPay's retry, re-serialised with another key order: the same event
    assert await post(one, sort_keys=True, indent=1) == (
        200,
        {"id": f"{partially_paid}:1", "duplicate": True},
    )
    # the next payment on the same request, with the same meaning: a new event
    assert await post(two) == (202, {"id": f"{partially_paid}:2", "duplicate": False})
    first, second = stored(redis_client)
    assert [first["data"]["paid_amount"], second["data"]["paid_amount"]] == [100000, 170000]
    # each names its own payment and what it brought
    assert [first["data"]["payment_id"], second["data"]["payment_id"]] == [f"{PR}-tx0", f"{PR}-tx1"]
    assert [first["data"]["payment_amount"], second["data"]["payment_amount"]] == [100000, 70000]

    # one transaction: CAPTURED after SUCCEEDED means the same (paid), SUCCESS does not
    transaction = fixture("centralpay", "TRANSACTION_SUCCEEDED")
    paid = f"centralpay:{TX}:payment_succeeded"
    assert await post(transaction) == (202, {"id": paid, "duplicate": False})
    transaction["type"] = "TRANSACTION_CAPTURED"
    assert await post(transaction) == (200, {"id": paid, "duplicate": True})
    transaction["type"] = "TRANSACTION_SUCCESS"
    assert await post(transaction) == (
        202,
        {"id": f"centralpay:{TX}:payment_authorized", "duplicate": False},
    )

    # an object of a kind with no id field at all: its content is the key
    anonymous = {"type": "ONBOARDING_ENROLLMENT_UPDATED", "object": {"status": "ACTIVE", "step": 2}}
    status, answer = await post(anonymous)
    assert status == 202, answer
    assert re.fullmatch(r"centralpay:ONBOARDING_ENROLLMENT_UPDATED:h_[0-9a-f]{32}", answer["id"])
    assert await post(anonymous, sort_keys=True, indent=1) == (
        200,
        {"id": answer["id"], "duplicate": True},
    )
    anonymous["object"]["step"] = 3
    status, other = await post(anonymous)
    assert (status, other["duplicate"]) == (202, False)
    assert other["id"] != answer["id"]
    assert len(stored(redis_client)) == 6


def test_centralpay_conf_mistakes_are_reported(tmp_path):
    extra = """
    [sources.cp]
    type = "centralpay"
    verify = "hmac"
    secrets = ["x"]
    signature_encoding = "hexadecimal"

    [sources.cp2]
    type = "centralpay"
    verify = "hmac"
    secrets = ["x"]
    aliases = { "FOO" = "NOT_A_MAPPED_EVENT" }

    [sources.cp3]
    type = "centralpay"
    verify = "none"
    allow_from = ["127.0.0.1"]
    unmapped = "ignore"
    """
    conf = write_conf(tmp_path, redis_url="redis://127.0.0.1:1/0", extra=extra)
    result = CliRunner().invoke(main, ["check", str(conf)])
    assert result.exit_code == 2
    err = result.stderr
    assert "sources.cp.signature_encoding: Invalid enum value 'hexadecimal'" in err
    assert (
        "sources.cp2: signature_header: name the header your deployment signs in; "
        "aliases: NOT_A_MAPPED_EVENT not in the mapping table"
    ) in err
    # unknown CentralPay names are always forwarded: the option is gone, not ignored
    assert "sources.cp3: Object contains unknown field `unmapped`" in err


# -- duplicates: the provider's event id is the dedupe key --------------------------------


@ALL
async def test_a_provider_retry_within_the_window_is_a_duplicate(gw, redis_client, provider):
    payload = provider.sample()
    body = encode(payload)
    first = await send(gw, body, provider.sign(body), path=provider.path)
    assert first.status == 202, first.text
    # a retry: signed again (new timestamp / message id), same event
    retry = await send(gw, body, provider.sign(body), path=provider.path)
    assert (retry.status, retry.json) == (
        200,
        {"id": provider.stored_id(payload), "duplicate": True},
    )
    assert len(stored(redis_client)) == 1


@ALL
async def test_the_same_event_after_the_window_is_accepted_again(
    tmp_path, redis_url, redis_client, start_gateway, provider
):
    conf = write_conf(
        tmp_path, redis_url=redis_url, extra=SOURCES, intake_extra='dedupe_window = "1s"'
    )
    gw = await start_gateway(conf, roles=("intake",))
    payload = provider.sample()
    body = encode(payload)
    assert (await send(gw, body, provider.sign(body), path=provider.path)).status == 202
    retry = await send(gw, body, provider.sign(body), path=provider.path)
    assert retry.json["duplicate"] is True
    await asyncio.sleep(2.1)
    later = await send(gw, body, provider.sign(body), path=provider.path)
    assert (later.status, later.json["duplicate"]) == (202, False)
    assert [e["id"] for e in stored(redis_client)] == [provider.stored_id(payload)] * 2


# -- each mapped provider event becomes the expected canonical event ----------------------


def _set(obj: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for part in parents:
        obj = obj.setdefault(part, {})
    if value is DELETE:
        obj.pop(last, None)
    else:
        obj[last] = value


DELETE = object()


@dataclass
class Case:
    fixture: str
    event: str
    canonical: str
    data: dict[str, Any]
    refs: dict[str, str] | None = None
    customer: dict[str, Any] | None = None
    patch: dict[str, Any] | None = None

    def payload(self, provider: str) -> dict[str, Any]:
        payload = fixture(provider, self.fixture)
        if provider == "stripe":
            payload["type"] = self.event
            target = payload["data"]["object"]
        else:
            payload["type"] = self.event
            target = payload["object"]
        for path, value in (self.patch or {}).items():
            _set(target, path, value)
        return payload


def ts(unix: int) -> str:
    return datetime.fromtimestamp(unix, UTC).isoformat().replace("+00:00", "Z")


PI = "pi_3QkT7d2eZvKYlo2C0xRnC9uL"
CUS = "cus_R4bUq7lJb2XkQe"
DUPONT = {"id": CUS, "email": "compta@atelier-dupont.fr"}
CHARGE_FAILED = {
    "status": "failed",
    "captured": False,
    "amount_captured": 0,
    "failure_code": "card_declined",
    "failure_message": "Your card was declined.",
    "outcome.type": "issuer_declined",
    "outcome.reason": "generic_decline",
}
INVOICE_PAID = {
    "amount_paid": 240000,
    "amount_remaining": 0,
    "paid": True,
    "status": "paid",
    "status_transitions.paid_at": 1795700000,
}
INVOICE_ADUP = {"payment_request_id": "in_1QkV4e2eZvKYlo2CsF6G3aWp", "invoice_ref": "ADUP-0042"}
SUB = "sub_1Pb2Zx2eZvKYlo2CmQh5S0vE"

STRIPE_CASES = [
    Case(
        "payment_intent.succeeded",
        "payment_intent.succeeded",
        "payment.succeeded",
        {"payment_id": PI, "amount": 125000, "currency": "EUR", "method": "card"},
        refs={"invoice_ref": "FA-2026-0042", "order_id": "4711"},
        customer=DUPONT,
    ),
    Case(
        "payment_intent.payment_failed",
        "payment_intent.payment_failed",
        "payment.failed",
        {
            "amount": 4200,
            "currency": "EUR",
            "failure_code": "insufficient_funds",
            "failure_message": "Your card has insufficient funds.",
        },
        customer={"id": CUS},
    ),
    Case(
        "payment_intent.payment_failed",
        "payment_intent.canceled",
        "payment.canceled",
        {"amount": 4200, "currency": "EUR", "reason": "abandoned"},
        patch={
            "status": "canceled",
            "cancellation_reason": "abandoned",
            "last_payment_error": None,
        },
    ),
    Case(
        "payment_intent.succeeded",
        "payment_intent.requires_action",
        "payment.action_required",
        {"amount": 125000, "action_url": "https://hooks.stripe.com/redirect/authenticate/src_1"},
        patch={
            "status": "requires_action",
            "next_action": {
                "type": "redirect_to_url",
                "redirect_to_url": {"url": "https://hooks.stripe.com/redirect/authenticate/src_1"},
            },
        },
    ),
    Case(
        "charge.succeeded",
        "charge.succeeded",
        "payment.succeeded",
        {
            "payment_id": PI,
            "charge_id": "ch_3QkT7d2eZvKYlo2C0pVh1Ewt",
            "amount": 125000,
            "currency": "EUR",
            "method": "card",
            "captured": True,
            "card": {"brand": "visa", "last4": "4242", "exp_month": 3, "exp_year": 2027},
        },
        refs={"invoice_ref": "FA-2026-0042"},
        customer={**DUPONT, "name": "Atelier Dupont SARL", "phone": "+33612345678"},
    ),
    Case(
        "charge.succeeded",
        "charge.failed",
        "payment.failed",
        {"amount": 125000, "failure_code": "card_declined", "reason": "generic_decline"},
        patch=CHARGE_FAILED,
    ),
    Case(
        "charge.succeeded",
        "charge.failed",
        "payment.blocked",
        {"amount": 125000, "currency": "EUR", "reason": "highest_risk_level"},
        patch={**CHARGE_FAILED, "outcome.type": "blocked", "outcome.reason": "highest_risk_level"},
    ),
    Case(
        "charge.succeeded",
        "charge.captured",
        "payment.captured",
        {"payment_id": PI, "amount": 125000, "captured_amount": 125000},
    ),
    Case(
        "charge.succeeded",
        "charge.expired",
        "payment.expired",
        {"payment_id": PI, "amount": 125000, "currency": "EUR", "captured": False},
        patch={"captured": False, "amount_captured": 0},
    ),
    Case(
        "refund.created",
        "refund.created",
        "refund.created",
        {
            "refund_id": "re_3QkT7d2eZvKYlo2C0Jd7wQ3c",
            "amount": 25000,
            "currency": "EUR",
            "payment_id": PI,
            "reason": "requested_by_customer",
        },
        refs={"invoice_ref": "FA-2026-0042"},
    ),
    Case(
        "refund.created",
        "refund.updated",
        "refund.succeeded",
        {"refund_id": "re_3QkT7d2eZvKYlo2C0Jd7wQ3c", "status": "succeeded"},
        patch={"status": "succeeded"},
    ),
    Case(
        "refund.created",
        "refund.updated",
        "refund.failed",
        {"amount": 25000, "failure_reason": "expired_or_canceled_card"},
        patch={"status": "failed", "failure_reason": "expired_or_canceled_card"},
    ),
    Case(
        "refund.created",
        "refund.failed",
        "refund.failed",
        {"amount": 25000, "failure_reason": "lost_or_stolen_card"},
        patch={"status": "failed", "failure_reason": "lost_or_stolen_card"},
    ),
    Case(
        "refund.created",
        "charge.refund.updated",
        "refund.succeeded",
        {"refund_id": "re_3QkT7d2eZvKYlo2C0Jd7wQ3c"},
        patch={"status": "succeeded"},
    ),
    Case(
        "refund.created",
        "charge.refund.updated",
        "refund.failed",
        {"failure_reason": "declined"},
        patch={"status": "failed", "failure_reason": "declined"},
    ),
    Case(
        "charge.dispute.created",
        "charge.dispute.created",
        "dispute.opened",
        {
            "dispute_id": "dp_1QlA9c2eZvKYlo2CwN3gP1yS",
            "amount": 125000,
            "currency": "EUR",
            "payment_id": PI,
            "reason": "product_not_received",
            "respond_by": ts(1797983999),
        },
    ),
    Case(
        "charge.dispute.created",
        "charge.dispute.created",
        "dispute.inquiry_opened",
        {"dispute_id": "dp_1QlA9c2eZvKYlo2CwN3gP1yS", "respond_by": ts(1797983999)},
        patch={"status": "warning_needs_response"},
    ),
    Case(
        "charge.dispute.created",
        "charge.dispute.closed",
        "dispute.won",
        {"dispute_id": "dp_1QlA9c2eZvKYlo2CwN3gP1yS", "amount": 125000},
        patch={"status": "won"},
    ),
    Case(
        "charge.dispute.created",
        "charge.dispute.closed",
        "dispute.lost",
        {"dispute_id": "dp_1QlA9c2eZvKYlo2CwN3gP1yS", "amount": 125000},
        patch={"status": "lost"},
    ),
    Case(
        "charge.dispute.created",
        "charge.dispute.closed",
        "dispute.won",
        {"dispute_id": "dp_1QlA9c2eZvKYlo2CwN3gP1yS", "status": "warning_closed"},
        patch={"status": "warning_closed"},
    ),
    Case(
        "invoice.finalized",
        "invoice.finalized",
        "payment_request.created",
        {
            "amount": 240000,
            "currency": "EUR",
            "paid_amount": 0,
            "remaining_amount": 240000,
            "due_at": ts(1798201999),
            "link_url": (
                "https://invoice.stripe.com/i/acct_1Nv0FGQ9RKHgCVdK/"
                "test_YWNjdF8xTnYwRkdROVJLSGdDVmRLLF9SZFdxZXZHbWJOZzRWRlFKbHl1UkJ0bmtw0100"
            ),
        },
        refs=INVOICE_ADUP,
        customer={**DUPONT, "name": "Atelier Dupont SARL"},
    ),
    Case(
        "invoice.finalized",
        "invoice.sent",
        "payment_request.created",
        {"amount": 240000, "due_at": ts(1798201999)},
        refs=INVOICE_ADUP,
    ),
    Case(
        "invoice.finalized",
        "invoice.paid",
        "payment_request.paid",
        {"amount": 240000, "paid_amount": 240000, "paid_at": ts(1795700000)},
        refs=INVOICE_ADUP,
        patch=INVOICE_PAID,
    ),
    Case(
        "invoice.finalized",
        "invoice.payment_failed",
        "payment.failed",
        {"amount": 240000, "currency": "EUR", "payment_id": "pi_3QkV4h2eZvKYlo2C1cVr8WnQ"},
        patch={"attempt_count": 1, "attempted": True},
    ),
    Case(
        "invoice.finalized",
        "invoice.overdue",
        "payment_request.overdue",
        {"amount": 240000, "remaining_amount": 240000, "due_at": ts(1798201999)},
        refs=INVOICE_ADUP,
    ),
    Case(
        "invoice.finalized",
        "invoice.voided",
        "payment_request.canceled",
        {"amount": 240000, "currency": "EUR"},
        refs=INVOICE_ADUP,
        patch={"status": "void", "status_transitions.voided_at": 1795800000},
    ),
    Case(
        "invoice.payment_failed",
        "invoice.payment_failed",
        "installment.failed",
        {
            "amount": 2900,
            "currency": "EUR",
            "attempt": 2,
            "final_attempt": False,
            "next_retry_at": ts(1795872800),
        },
        refs={"subscription_id": SUB, "invoice_ref": "HMAR-0007"},
        customer={"id": "cus_R4cVx8mKc3YlRf", "name": "Hélène Martin", "phone": "+33612345678"},
    ),
    Case(
        "invoice.payment_failed",
        "invoice.payment_failed",
        "installment.failed",
        {"attempt": 4, "final_attempt": True},
        patch={"attempt_count": 4, "next_payment_attempt": None},
    ),
    Case(
        "invoice.payment_failed",
        "invoice.paid",
        "installment.paid",
        {"amount": 2900, "currency": "EUR", "paid_amount": 2900},
        refs={"subscription_id": SUB},
        patch={"amount_paid": 2900, "amount_remaining": 0, "status": "paid", "paid": True},
    ),
    Case(
        "customer.subscription.created",
        "customer.subscription.created",
        "subscription.created",
        {
            "amount": 2900,
            "currency": "EUR",
            "interval": "month",
            "status": "active",
            "renews_at": ts(1797592000),
        },
        refs={"subscription_id": SUB, "contract": "CTR-2026-118"},
        customer={"id": "cus_R4cVx8mKc3YlRf"},
    ),
    Case(
        "customer.subscription.created",
        "customer.subscription.updated",
        "subscription.past_due",
        {"status": "past_due", "invoice_id": "in_1Pb2Zx2eZvKYlo2CbW0h7Lc4"},
        refs={"subscription_id": SUB},
        patch={"status": "past_due"},
    ),
    Case(
        "customer.subscription.created",
        "customer.subscription.deleted",
        "subscription.canceled",
        {"status": "canceled", "reason": "payment_failed"},
        refs={"subscription_id": SUB},
        patch={"status": "canceled", "cancellation_details.reason": "payment_failed"},
    ),
    Case(
        "payment_method.automatically_updated",
        "payment_method.automatically_updated",
        "payment_method.updated",
        {
            "payment_method_id": "pm_1Pb2Zv2eZvKYlo2CJ8qW3nXa",
            "type": "card",
            "card": {"brand": "mastercard", "last4": "5454", "exp_month": 11, "exp_year": 2029},
            "change": "automatically_updated",
        },
        customer={"id": "cus_R4cVx8mKc3YlRf", "name": "Hélène Martin"},
    ),
    Case(
        "payment_method.automatically_updated",
        "payment_method.attached",
        "payment_method.updated",
        {"payment_method_id": "pm_1Pb2Zv2eZvKYlo2CJ8qW3nXa", "change": "attached"},
    ),
    Case(
        "payment_method.automatically_updated",
        "payment_method.updated",
        "payment_method.updated",
        {"payment_method_id": "pm_1Pb2Zv2eZvKYlo2CJ8qW3nXa", "change": "updated"},
    ),
    Case(
        "mandate.updated",
        "mandate.updated",
        "mandate.activated",
        {"rum": "NXDSYREGC9PSMKWY", "signed_at": ts(1795699800), "status": "active"},
        refs={"mandate_id": "mandate_1QkY2a2eZvKYlo2CpW7sB3nE"},
    ),
    Case(
        "mandate.updated",
        "mandate.updated",
        "mandate.revoked",
        {"status": "inactive"},
        refs={"mandate_id": "mandate_1QkY2a2eZvKYlo2CpW7sB3nE"},
        patch={"status": "inactive"},
    ),
    Case(
        "payout.paid",
        "payout.paid",
        "payout.paid",
        {
            "payout_id": "po_1QkW9t2eZvKYlo2CnM4eG8Xy",
            "amount": 1118500,
            "currency": "EUR",
            "arrival_at": ts(1795737600),
        },
    ),
    Case(
        "payout.paid",
        "payout.failed",
        "payout.failed",
        {
            "payout_id": "po_1QkW9t2eZvKYlo2CnM4eG8Xy",
            "failure_code": "account_closed",
            "failure_message": "The bank account has been closed.",
        },
        patch={
            "status": "failed",
            "failure_code": "account_closed",
            "failure_message": "The bank account has been closed.",
        },
    ),
]

TX = "a3c2f1e0-7b6d-4c5e-9f8a-1b2c3d4e5f60"
PR = "7e6d5c4b-3a2f-4e1d-8c9b-0a1f2e3d4c5b"
CP_CUSTOMER = {
    "id": "c9d8e7f6-5a4b-3c2d-1e0f-9a8b7c6d5e4f",
    "email": "compta@atelier-dupont.fr",
    "phone": "+33612345678",
}
DISPUTE_ID = "e2f3a4b5-c6d7-4e8f-9a0b-1c2d3e4f5a6b"
MANDATE_ID = "b5c6d7e8-f9a0-4b1c-8d2e-4f5a6b7c8d9e"
CP_SUB = "c6d7e8f9-a0b1-4c2d-9e3f-5a6b7c8d9e0f"
PR_FIELDS = {
    "amount": 240000,
    "currency": "EUR",
    "due_at": "2026-12-25T22:59:59Z",
    "link_expires_at": "2027-01-24T22:59:59Z",
    "link_url": f"https://payment.centralpay.net/pr/{PR}/0",
}
PR_REFS = {"payment_request_id": PR, "invoice_ref": "FA-2026-0042"}
CP_CUSTOMER_NAMED = {**CP_CUSTOMER, "name": "Claire Dupont"}


def pr_breakdowns(paid: tuple[int, ...]) -> list[dict[str, Any]]:
    """The PAYMENTREQUEST_PARTIAL fixture's two shares, ``paid`` the indexes paid: each
    paid share holds its payment, as CentralPay's API records it."""
    shares = fixture("centralpay", "PAYMENTREQUEST_PARTIAL")["object"]["breakdowns"]
    for index, share in enumerate(shares):
        share["paid"] = index in paid
        share["payments"] = (
            [{"uuid": f"{PR}-tx{index}", "paymentMethod": "TRANSACTION"}] if index in paid else []
        )
    return list(shares)


@dataclass(frozen=True)
class days_from_now:
    """A timestamp ``days`` after the moment it is compared (the event's arrival), within a
    minute: dispute deadlines derived from a notice that carries no date of its own."""

    days: int

    def matches(self, actual: Any) -> bool:
        if not isinstance(actual, str):
            return False
        expected = datetime.now(UTC) + timedelta(days=self.days)
        when = datetime.fromisoformat(actual.replace("Z", "+00:00"))
        return abs((when - expected).total_seconds()) < 60


CENTRALPAY_CASES = [
    Case(
        "TRANSACTION_SUCCEEDED",
        "TRANSACTION_SUCCEEDED",
        "payment.succeeded",
        {
            "payment_id": TX,
            "amount": 125000,
            "currency": "EUR",
            "method": "card",
            "status": "SUCCESS",
            "card": {"brand": "visa", "last4": "4242", "exp_month": 3, "exp_year": 2027},
        },
        refs={"order_ref": "CMD-2026-11-0457", "payment_request_id": PR},
        customer=CP_CUSTOMER,
    ),
    Case(
        # SUCCESS is an authorisation: the money moves at capture (7 days at most)
        "TRANSACTION_SUCCEEDED",
        "TRANSACTION_SUCCESS",
        "payment.authorized",
        {"payment_id": TX, "amount": 125000, "currency": "EUR", "status": "SUCCESS"},
        refs={"order_ref": "CMD-2026-11-0457"},
    ),
    Case(
        # captured: sent to clearing, paid (doc-api.centralpay.net/en/transactions-status)
        "TRANSACTION_SUCCEEDED",
        "TRANSACTION_CAPTURED",
        "payment.succeeded",
        {"payment_id": TX, "amount": 125000, "status": "CAPTURED"},
        patch={"transactionStatus": "CAPTURED"},
    ),
    Case(
        "TRANSACTION_FAILED",
        "TRANSACTION_FAILED",
        "payment.failed",
        {
            "amount": 4200,
            "currency": "EUR",
            "failure_code": "51",
            "reason": "Insufficient funds",
            "card": {"brand": "mastercard", "last4": "4444", "exp_month": 12, "exp_year": 2026},
        },
    ),
    Case(
        "TRANSACTION_SUCCEEDED",
        "TRANSACTION_CANCELED",
        "payment.canceled",
        {"payment_id": TX, "status": "CANCELED"},
        patch={"transactionStatus": "CANCELED"},
    ),
    Case(
        "TRANSACTION_SUCCEEDED",
        "TRANSACTION_EXPIRED",
        "payment.expired",
        {"payment_id": TX, "amount": 125000, "currency": "EUR"},
    ),
    Case(
        "TRANSACTION_SUCCEEDED",
        "TRANSACTION_FRAUDULENT",
        "payment.blocked",
        {"payment_id": TX, "status": "FRAUD", "reason": "BLACKLIST_CARD"},
        patch={"transactionStatus": "FRAUD", "fraudReason": "BLACKLIST_CARD"},
    ),
    Case(
        "TRANSACTION_SUCCEEDED",
        "TRANSACTION_DISPUTED",
        "dispute.opened",
        {
            "dispute_id": DISPUTE_ID,
            "payment_id": TX,
            "amount": 125000,
            # no deadline in the transaction: the notice (its arrival) + 21 days
            "respond_by": days_from_now(21),
        },
        patch={"disputeId": DISPUTE_ID},
    ),
    Case(
        "REFUND_CREATED",
        "REFUND_CREATED",
        "refund.created",
        {
            "refund_id": "d1c2b3a4-9e8f-4a7b-b6c5-d4e3f2a1b0c9",
            "amount": 25000,
            "currency": "EUR",
            "payment_id": TX,
            "reason": "Retour partiel : 2 articles",
        },
    ),
    Case(
        "REFUND_CREATED",
        "REFUND_SUCCEEDED",
        "refund.succeeded",
        {"refund_id": "d1c2b3a4-9e8f-4a7b-b6c5-d4e3f2a1b0c9", "status": "SUCCEEDED"},
        patch={"refundStatus": "SUCCEEDED"},
    ),
    Case(
        "REFUND_CREATED",
        "REFUND_FAILED",
        "refund.failed",
        {"amount": 25000, "failure_reason": "Card expired"},
        patch={"refundStatus": "FAILED", "failureReason": "Card expired"},
    ),
    Case(
        "DISPUTE_CHARGEBACK_NOTICED",
        "DISPUTE_CHARGEBACK_NOTICED",
        "dispute.opened",
        {
            "dispute_id": DISPUTE_ID,
            "payment_id": TX,
            "amount": 125000,
            "currency": "EUR",
            "reason": "Merchandise/Services Not Received",
            "respond_by": "2026-12-24T22:59:59Z",
            "fee_amount": 1500,
        },
    ),
    Case(
        "DISPUTE_CHARGEBACK_NOTICED",
        "DISPUTE_RETRIEVAL_NOTICED",
        "dispute.inquiry_opened",
        # no deadline given: the notice (its arrival) + 7 days
        {"dispute_id": DISPUTE_ID, "respond_by": days_from_now(7)},
        patch={"disputeStatus": "RETRIEVAL_NOTICED", "responseDeadline": DELETE},
    ),
    Case(
        "DISPUTE_CHARGEBACK_NOTICED",
        "DISPUTE_RETRIEVAL_CLOSE",
        "dispute.won",
        {"dispute_id": DISPUTE_ID, "status": "RETRIEVAL_CLOSE"},
        patch={"disputeStatus": "RETRIEVAL_CLOSE"},
    ),
    Case(
        "DISPUTE_CHARGEBACK_NOTICED",
        "DISPUTE_CHARGEBACK_WON",
        "dispute.won",
        {"dispute_id": DISPUTE_ID, "amount": 125000},
        patch={"disputeStatus": "CHARGEBACK_WON"},
    ),
    Case(
        "DISPUTE_CHARGEBACK_NOTICED",
        "DISPUTE_CHARGEBACK_LOST",
        "dispute.lost",
        {"dispute_id": DISPUTE_ID, "amount": 125000},
        patch={"disputeStatus": "CHARGEBACK_LOST"},
    ),
    Case(
        "SCT_TRANSACTION_RECEIVED",
        "SCT_TRANSACTION_RECEIVED",
        "transfer.received",
        {
            "transfer_id": "f3a4b5c6-d7e8-4f9a-8b0c-2d3e4f5a6b7c",
            "amount": 240000,
            "currency": "EUR",
            "debtor_name": "ATELIER DUPONT SARL",
            "debtor_iban_masked": "FR76 •••• •••• 0189",
            "remittance_info": "FA-2026-0042 REGLEMENT",
            "sepa_reference": "CPY7K2M9Q",
        },
        refs={"payment_request_id": PR, "invoice_ref": "FA-2026-0042"},
    ),
    Case(
        "SCT_TRANSACTION_RECEIVED",
        "SCT_TRANSACTION_RETURNED",
        "transfer.returned",
        {"transfer_id": "f3a4b5c6-d7e8-4f9a-8b0c-2d3e4f5a6b7c", "reason": "AC04"},
        patch={"returnReason": "AC04"},
    ),
    Case(
        "SDD_TRANSACTION_RETURNED",
        "SDD_TRANSACTION_RETURNED",
        "payment.returned",
        {
            "payment_id": "a4b5c6d7-e8f9-4a0b-9c1d-3e4f5a6b7c8d",
            "amount": 2900,
            "currency": "EUR",
            "method": "sepa_debit",
            "r_code": "AM04",
            "r_type": "return",
        },
        refs={"mandate_id": MANDATE_ID, "subscription_id": CP_SUB},
        customer={"email": "helene.martin@example.fr"},
    ),
    Case(
        "SDD_TRANSACTION_RETURNED",
        "SDD_TRANSACTION_REJECTED",
        "payment.returned",
        {"r_code": "MD06", "r_type": "reject"},
        patch={"rCode": "MD06"},
    ),
    Case(
        "SDD_TRANSACTION_RETURNED",
        "SDD_TRANSACTION_REFUNDED",
        "payment.returned",
        {"r_code": "MD06", "r_type": "refund"},
        patch={"rCode": "MD06"},
    ),
    Case(
        "SDD_TRANSACTION_RETURNED",
        "SDD_TRANSACTION_SUCCEEDED",
        "payment.succeeded",
        {"amount": 2900, "method": "sepa_debit"},
        refs={"mandate_id": MANDATE_ID},
        patch={"rCode": DELETE, "status": "SUCCEEDED", "description": DELETE},
    ),
    Case(
        "SDD_TRANSACTION_RETURNED",
        "SDD_TRANSACTION_FAILED",
        "payment.failed",
        {"amount": 2900, "failure_code": "AC04"},
        patch={"rCode": "AC04", "status": "FAILED"},
    ),
    Case(
        "SDD_TRANSACTION_RETURNED",
        "SDD_TRANSACTION_CANCELED",
        "payment.canceled",
        {"amount": 2900, "method": "sepa_debit"},
        patch={"rCode": DELETE, "status": "CANCELED"},
    ),
    Case(
        "MANDATE_ACTIVE",
        "MANDATE_ACTIVE",
        "mandate.activated",
        {
            "rum": "RUM-CPY-000118",
            "scheme": "core",
            "iban_masked": "FR76 •••• •••• 0143",
            "signed_at": "2026-11-20T14:58:31Z",
        },
        refs={"mandate_id": MANDATE_ID},
    ),
    Case(
        "MANDATE_ACTIVE",
        "MANDATE_REVOKED",
        "mandate.revoked",
        {"reason": "Customer request"},
        refs={"mandate_id": MANDATE_ID},
        patch={"status": "REVOKED", "revocationReason": "Customer request"},
    ),
    Case(
        "MANDATE_ACTIVE",
        "MANDATE_CANCELED",
        "mandate.revoked",
        {"reason": "canceled"},
        refs={"mandate_id": MANDATE_ID},
    ),
    Case(
        "MANDATE_ACTIVE",
        "MANDATE_EXPIRED",
        "mandate.revoked",
        {"reason": "expired"},
        refs={"mandate_id": MANDATE_ID},
    ),
    Case(
        "SUBSCRIPTION_CREATED",
        "SUBSCRIPTION_CREATED",
        "subscription.created",
        {
            "amount": 2900,
            "currency": "EUR",
            "interval": "month",
            "status": "ACTIVE",
            "renews_at": "2026-12-19T23:00:00Z",
        },
        refs={"subscription_id": CP_SUB, "subscription_ref": "ABO-2026-0118"},
    ),
    Case(
        "SUBSCRIPTION_CREATED",
        "SUBSCRIPTION_UNPAID",
        "subscription.past_due",
        {"status": "UNPAID", "amount": 2900},
        refs={"subscription_id": CP_SUB},
        patch={"status": "UNPAID"},
    ),
    Case(
        "SUBSCRIPTION_CREATED",
        "SUBSCRIPTION_CANCELED",
        "subscription.canceled",
        {"reason": "CUSTOMER"},
        refs={"subscription_id": CP_SUB},
        patch={"status": "CANCELED", "cancellationReason": "CUSTOMER"},
    ),
    Case(
        "INSTALLMENT_FAILED",
        "INSTALLMENT_FAILED",
        "installment.failed",
        {
            "amount": 41700,
            "currency": "EUR",
            "attempt": 1,
            "final_attempt": False,
            "next_retry_at": "2026-12-08T05:00:00Z",
            "installment_no": 2,
            "installments_count": 3,
            "failure_code": "51",
        },
        refs={"installment_id": "f9a0b1c2-d3e4-4f5a-9b6c-8d9e0f1a2b3c"},
    ),
    Case(
        "INSTALLMENT_FAILED",
        "INSTALLMENT_FAILED",
        "installment.failed",
        {"attempt": 3, "final_attempt": True},
        patch={"attempt": 3, "nextAttemptDate": DELETE},
    ),
    Case(
        "INSTALLMENT_FAILED",
        "INSTALLMENT_SUCCEEDED",
        "installment.paid",
        {"amount": 41700, "installment_no": 2, "next_due_at": "2027-01-05T05:00:00Z"},
        patch={
            "attempt": 2,
            "bankCode": "0",
            "nextAttemptDate": DELETE,
            "nextInstallmentDate": "2027-01-05T06:00:00.000+01:00",
        },
    ),
    Case(
        "PAYMENTREQUEST_TRANSACTION_SUCCEEDED",
        "PAYMENTREQUEST_TRANSACTION_SUCCEEDED",
        "payment_request.paid",
        {
            "amount": 240000,  # totalAmount 240000.0: whole minor units
            "currency": "EUR",
            "paid_amount": 240000,
            "remaining_amount": 0,
            "status": "CLOSED",
            "payment_status": "PAID",
            "link_url": f"https://payment.centralpay.net/pr/{PR}/0",
            # this payment: the share paid last (lastPaymentAttempt), not the total
            "payment_id": "c5e4d3b2-1a0f-4e9d-8c7b-6a5f4e3d2c1b",
            "payment_amount": 140000,
        },
        refs=PR_REFS,
        customer={"email": "compta@atelier-dupont.fr", "name": "Claire Dupont"},
    ),
    Case(
        "PAYMENTREQUEST_PARTIAL",
        "PAYMENTREQUEST_TRANSACTION_SUCCEEDED",
        "payment_request.partially_paid",
        {
            **PR_FIELDS,
            "paid_amount": 100000,
            "remaining_amount": 140000,
            "payment_id": TX,
            "payment_amount": 100000,
        },
        refs=PR_REFS,
        customer=CP_CUSTOMER_NAMED,
    ),
    Case(
        "PAYMENTREQUEST_PARTIAL",
        "PAYMENTREQUEST_PARTIAL",
        "payment_request.partially_paid",
        {**PR_FIELDS, "paid_amount": 100000, "remaining_amount": 140000},
        refs=PR_REFS,
        customer=CP_CUSTOMER_NAMED,
    ),
    Case(
        "PAYMENTREQUEST_PARTIAL",
        "PAYMENTREQUEST_CREATED",
        "payment_request.created",
        {**PR_FIELDS, "paid_amount": 0, "remaining_amount": 240000},
        refs=PR_REFS,
        patch={"paymentStatus": "PENDING", "breakdowns": pr_breakdowns(paid=())},
    ),
    Case(
        "PAYMENTREQUEST_PARTIAL",
        "PAYMENTREQUEST_PENDING",
        "payment_request.created",
        {"amount": 240000, "paid_amount": 0, "payment_status": "PENDING"},
        refs=PR_REFS,
        patch={"paymentStatus": "PENDING", "breakdowns": pr_breakdowns(paid=())},
    ),
    Case(
        "PAYMENTREQUEST_PARTIAL",
        "PAYMENTREQUEST_PAID",
        "payment_request.paid",
        {"amount": 240000, "paid_amount": 240000, "remaining_amount": 0},
        refs=PR_REFS,
        patch={
            "paymentStatus": "PAID",
            "paymentRequestStatus": "CLOSED",
            "breakdowns": pr_breakdowns(paid=(0, 1)),
        },
    ),
    Case(
        # still due: the total less the shares paid
        "PAYMENTREQUEST_PARTIAL",
        "PAYMENTREQUEST_UNPAID",
        "payment_request.overdue",
        {"remaining_amount": 140000, "due_at": "2026-12-25T22:59:59Z"},
        refs=PR_REFS,
        patch={"paymentStatus": "UNPAID"},
    ),
    Case(
        "PAYMENTREQUEST_PARTIAL",
        "PAYMENTREQUEST_CANCELED",
        "payment_request.canceled",
        {"reason": "Duplicate request", "status": "CANCELED"},
        refs=PR_REFS,
        patch={"paymentRequestStatus": "CANCELED", "cancellationReason": "Duplicate request"},
    ),
    Case(
        "PAYMENTREQUEST_PARTIAL",
        "PAYMENTREQUEST_CLOSED",
        "payment_request.expired",
        {"status": "CLOSED", "link_expires_at": "2027-01-24T22:59:59Z"},
        refs=PR_REFS,
        patch={"paymentRequestStatus": "CLOSED"},
    ),
    Case(
        "PAYMENTREQUEST_PARTIAL",
        "PAYMENTREQUEST_EXPIRED",
        "payment_request.expired",
        {"amount": 240000},
        refs=PR_REFS,
        patch={"paymentRequestStatus": "CLOSED"},
    ),
    Case(
        "PAYOUT_SUCCEEDED",
        "PAYOUT_SUCCEEDED",
        "payout.paid",
        {
            "payout_id": "b1c2d3e4-f5a6-4b7c-9d8e-0f1a2b3c4d5e",
            "amount": 1118500,
            "currency": "EUR",
            "arrival_at": "2026-11-30T07:55:00Z",
        },
    ),
    Case(
        "PAYOUT_SUCCEEDED",
        "PAYOUT_FAILED",
        "payout.failed",
        {"payout_id": "b1c2d3e4-f5a6-4b7c-9d8e-0f1a2b3c4d5e", "failure_message": "Account closed"},
        patch={"status": "FAILED", "failureReason": "Account closed"},
    ),
    Case(
        "CARD_UPDATED",
        "CARD_UPDATED",
        "payment_method.updated",
        {
            "payment_method_id": "f1e2d3c4-b5a6-4978-8a9b-0c1d2e3f4a5b",
            "type": "card",
            "card": {"brand": "visa", "last4": "1881", "exp_month": 9, "exp_year": 2030},
            "change": "updated",
        },
        customer={"id": "c9d8e7f6-5a4b-3c2d-1e0f-9a8b7c6d5e4f"},
    ),
    Case(
        "CARD_UPDATED",
        "CARD_CREATED",
        "payment_method.updated",
        {"payment_method_id": "f1e2d3c4-b5a6-4978-8a9b-0c1d2e3f4a5b", "change": "created"},
    ),
]


def _subset(actual: Any, expected: Any) -> bool:
    if isinstance(expected, days_from_now):
        return expected.matches(actual)
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            k in actual and _subset(actual[k], v) for k, v in expected.items()
        )
    return bool(actual == expected) and type(actual) is type(expected)


#: Each CentralPay object's id field, by event-name prefix (longest first).
CP_ID_FIELDS = (
    ("PAYMENTREQUEST_", "paymentRequestId"),
    ("SCT_TRANSACTION_", "sctTransactionId"),
    ("SDD_TRANSACTION_", "sddTransactionId"),
    ("TRANSACTION_", "transactionId"),
    ("REFUND_", "refundId"),
    ("DISPUTE_", "disputeId"),
    ("MANDATE_", "mandateId"),
    ("SUBSCRIPTION_", "subscriptionId"),
    ("INSTALLMENT_", "installmentPaymentId"),
    ("PAYOUT_", "payoutId"),
    ("CARD_", "cardId"),
)


def centralpay_key(case: Case, payload: dict[str, Any]) -> str:
    """``<object id>:<canonical type, _ for .>``, and a payment request's payment count
    or an installment's attempt (its transaction)."""
    obj = payload["object"]
    field = next(f for prefix, f in CP_ID_FIELDS if case.event.startswith(prefix))
    key = f"{obj[field]}:{case.canonical.replace('.', '_')}"
    if case.event.startswith("PAYMENTREQUEST_"):
        key += f":{sum(len(b['payments']) for b in obj['breakdowns'])}"
    elif case.event.startswith("INSTALLMENT_"):
        key += f":{obj.get('transactionId') or obj['attempt']}"
    return key


def _case_id(case: Case) -> str:
    return f"{case.event}->{case.canonical}"


@pytest.mark.parametrize(
    ("provider", "case"),
    [pytest.param("stripe", c, id=f"stripe:{_case_id(c)}") for c in STRIPE_CASES]
    + [pytest.param("centralpay", c, id=f"centralpay:{_case_id(c)}") for c in CENTRALPAY_CASES],
)
async def test_mapped_event_becomes_the_expected_canonical_event(gw, redis_client, provider, case):
    payload = case.payload(provider)
    body = encode(payload)
    sign = stripe_headers if provider == "stripe" else centralpay_headers
    answer = await send(gw, body, sign(body), path=f"/v1/sources/{provider}")
    assert answer.status == 202, answer.text
    [event] = stored(redis_client)
    assert event["type"] == case.canonical
    event_id = payload["id"] if provider == "stripe" else centralpay_key(case, payload)
    assert event["id"] == f"{provider}:{event_id}"
    assert _subset(event["data"], case.data), event["data"]
    assert _subset(event.get("refs", {}), case.refs or {}), event.get("refs")
    assert _subset(event.get("customer", {}), case.customer or {}), event.get("customer")
    source = event["source"]
    assert source["provider"] == provider
    assert source["event_id"] == event_id
    assert source["event_type"] == case.event
    assert source["payload"] == payload  # the provider's original, untouched
    # Stripe's fixtures are test-mode events; the CentralPay source is set to live
    assert source.get("livemode", True) is (provider != "stripe")
    # money is canonical: integer minor units, upper-case ISO-4217
    if "currency" in event["data"]:
        assert re.fullmatch(r"[A-Z]{3}", event["data"]["currency"])
    # and every field the catalog guarantees for the type is there
    for path in catalog.required_paths(case.canonical):
        node: Any = event
        for part in path.split("."):
            node = node[part]


@pytest.mark.parametrize(
    ("mapping", "cases"),
    [(STRIPE_MAPPING, STRIPE_CASES), (CENTRALPAY_MAPPING, CENTRALPAY_CASES)],
    ids=["stripe", "centralpay"],
)
def test_every_mapped_route_has_a_case(mapping, cases):
    routes = {(r.event, r.canonical) for r in mapping.routes if r.canonical is not None}
    tested = {(c.event, c.canonical) for c in cases}
    assert routes - tested == set(), "mapped but never tested"
    assert tested - routes == set(), "tested but not in the table"


@pytest.mark.parametrize("mapping", [STRIPE_MAPPING, CENTRALPAY_MAPPING], ids=["stripe", "cp"])
def test_the_mapping_table_covers_what_the_catalog_requires(mapping):
    assert mapping.problems() == []


# -- Stripe's scheme, as Stripe's library reads it ---------------------------------------


def test_stripe_source_accepts_exactly_what_stripes_library_accepts():
    source = StripeSource("s", StripeConfig(secrets=[Secret(STRIPE_SECRET)]))
    body = encode(fixture("stripe", "payout.paid"))
    now = int(time.time())
    headers = {
        "fresh": stripe_headers(body)["Stripe-Signature"],
        "wrong secret": stripe_headers(body, WRONG_STRIPE)["Stripe-Signature"],
        "old": stripe_headers(body, timestamp=now - 301)["Stripe-Signature"],
        "no v1": f"t={now},v0=abc",
        "no t": stripe_headers(body)["Stripe-Signature"].split(",", 1)[1],
    }
    for name, header in headers.items():
        try:
            stripe.WebhookSignature.verify_header(body, header, STRIPE_SECRET, tolerance=300)
            theirs = True
        except stripe.SignatureVerificationError:
            theirs = False
        try:
            source.verify({"Stripe-Signature": header}, body)
            ours = True
        except SignatureError:
            ours = False
        assert ours is theirs, name
    # and Stripe's own event constructor reads the payload we stored as the source payload
    event = stripe.Webhook.construct_event(body, headers["fresh"], STRIPE_SECRET)
    assert event.id == json.loads(body)["id"]


async def test_stripe_livemode_can_be_pinned(tmp_path, redis_url, redis_client, start_gateway):
    extra = f"""
    [sources.stripe-live]
    type = "stripe"
    secrets = ["{STRIPE_SECRET}"]
    livemode = true
    """
    gw = await start_gateway(
        write_conf(tmp_path, redis_url=redis_url, extra=textwrap.dedent(extra)), roles=("intake",)
    )
    body = encode(fixture("stripe", "payout.paid"))  # a test-mode event
    answer = await send(gw, body, stripe_headers(body), path="/v1/sources/stripe-live")
    error = assert_error(answer, 400, "invalid_event")
    assert error["path"] == "$.livemode"
    assert_nothing_enqueued(redis_client)


async def test_a_mapped_event_missing_what_its_type_requires_is_400_naming_it(gw, redis_client):
    """A Stripe invoice.overdue without a due date cannot be an overdue payment request."""
    payload = fixture("stripe", "invoice.finalized")
    payload["type"] = "invoice.overdue"
    payload["data"]["object"]["due_date"] = None
    body = encode(payload)
    error = assert_error(
        await send(gw, body, stripe_headers(body), path="/v1/sources/stripe"),
        400,
        "invalid_event",
    )
    assert error["path"] == "$.data.due_at"
    assert_nothing_enqueued(redis_client)


def test_provider_event_ids_become_valid_deterministic_dedupe_keys():
    assert catalog.canonical_id("stripe", "evt_1") == "stripe:evt_1"
    odd = "evt.with.dots/and spaces"
    assert catalog.canonical_id("x", odd) == catalog.canonical_id("x", odd)
    assert re.fullmatch(r"x:h_[0-9a-f]{40}", catalog.canonical_id("x", odd))
    assert catalog.provider_type("centralpay", "TRANSACTION_UPDATED") == (
        "centralpay.transaction_updated"
    )
    assert catalog.provider_type("stripe", "issuing_card.created") == "stripe.issuing_card.created"


# -- docs/sources.md shows the tables the code uses -----------------------------------------


@pytest.mark.parametrize(
    ("name", "mapping"), [("stripe", STRIPE_MAPPING), ("centralpay", CENTRALPAY_MAPPING)]
)
def test_sources_doc_shows_the_mapping_table_as_the_code_has_it(name, mapping):
    text = SOURCES_DOC.read_text()
    begin, end = f"<!-- BEGIN mapping {name} -->", f"<!-- END mapping {name} -->"
    assert begin in text and end in text, f"docs/sources.md lacks the {name} markers"
    shown = text.split(begin, 1)[1].split(end, 1)[0]
    assert shown == f"\n{mapping.markdown()}\n", (
        f"docs/sources.md's {name} table is stale: run `python docs/generate.py`"
    )


# -- the plugin guide's example source ------------------------------------------------------


def test_guide_shows_the_example_source_as_it_is():
    guide = GUIDE.read_text()
    for path in (
        EXAMPLE / "pyproject.toml",
        EXAMPLE / "tocsin_acme_source" / "__init__.py",
        EXAMPLE / "test_acme_source.py",
    ):
        assert path.read_text().strip() in guide, f"{path} differs from what the guide shows"


@pytest.fixture
def acme_source(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    yield
    for name in list(sys.modules):
        if name.startswith("tocsin_acme_source"):
            del sys.modules[name]


async def test_guide_example_source_works_in_a_real_gateway(
    tmp_path, redis_url, redis_client, start_gateway, acme_source
):
    extra = """
    [plugins]
    modules = ["tocsin_acme_source"]

    [sources.acme]
    type = "acme"
    secret = "acme-demo-secret"
    """
    gw = await start_gateway(
        write_conf(tmp_path, redis_url=redis_url, extra=textwrap.dedent(extra)),
        roles=("intake",),
    )
    body = json.dumps(
        {"id": "n_1", "kind": "payment.ok", "at": 1795602900, "cents": 990, "cur": "eur"}
    ).encode()
    signature = hmac.new(b"acme-demo-secret", body, hashlib.sha256).hexdigest()
    headers = {"X-Acme-Signature": signature, "Content-Type": "application/json"}
    answer = await send(gw, body, headers, path="/v1/sources/acme")
    assert (answer.status, answer.json) == (202, {"id": "acme:n_1", "duplicate": False})
    [event] = stored(redis_client)
    assert event["type"] == "payment.succeeded"
    assert event["data"] == {"amount": 990, "currency": "EUR"}
    tampered = body.replace(b"990", b"9")
    assert_error(await send(gw, tampered, headers, path="/v1/sources/acme"), 401, "bad_signature")


def test_guide_example_test_passes(tmp_path):
    """The test the guide shows, run the way the guide says: pytest in the example's folder."""
    env = {**os.environ, "PYTHONPATH": str(EXAMPLE)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_acme_source.py"],
        cwd=EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 passed" in result.stdout, result.stdout

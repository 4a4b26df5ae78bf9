"""The example source's tests: ``pytest test_acme_source.py`` in this folder."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
from tocsin_acme_source import AcmeConfig, AcmeSource

from gateway import EventInvalid, Secret, SignatureError

SECRET = "acme-demo-secret"
BODY = json.dumps(
    {"id": "n_1", "kind": "payment.ok", "at": 1795602900, "cents": 990, "cur": "eur"}
).encode()


def sign(body: bytes, secret: str = SECRET) -> dict[str, str]:
    return {"X-Acme-Signature": hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()}


@pytest.fixture
def source() -> AcmeSource:
    return AcmeSource("acme", AcmeConfig(secret=Secret(SECRET)))


def test_a_signed_notification_becomes_a_canonical_event(source: AcmeSource) -> None:
    source.verify(sign(BODY), BODY)
    [event] = source.parse(BODY)
    assert event.id == "acme:n_1"  # Acme's own id: its retries are duplicates
    assert event.type == "payment.succeeded"
    assert event.data == {"amount": 990, "currency": "EUR"}
    assert event.source.payload == json.loads(BODY)


@pytest.mark.parametrize("headers", [{}, sign(BODY, "not-the-secret"), sign(BODY + b" ")])
def test_anything_acme_did_not_sign_is_refused(source: AcmeSource, headers: dict[str, str]) -> None:
    with pytest.raises(SignatureError):
        source.verify(headers, BODY)


def test_unknown_kinds_keep_acme_s_name(source: AcmeSource) -> None:
    [event] = source.parse(BODY.replace(b"payment.ok", b"payout.sent"))
    assert event.type == "acme.payout.sent"


def test_a_float_amount_is_refused_naming_the_field(source: AcmeSource) -> None:
    with pytest.raises(EventInvalid) as info:
        source.parse(BODY.replace(b"990", b"9.90"))
    assert "$.cents" in info.value.reason

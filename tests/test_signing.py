"""Standard Webhooks signatures, checked against the ``standardwebhooks`` reference library."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from gateway.errors import ConfError
from gateway.signing import (
    DEFAULT_TOLERANCE,
    SignatureError,
    Signer,
    Verifier,
    decode_secret,
    generate_secret,
)

from .conftest import load_plan, make_event, write_conf

OLD = "whsec_" + base64.b64encode(b"old-secret-0123456789abcdefghij").decode()
NEW = "whsec_" + base64.b64encode(b"new-secret-0123456789abcdefghij").decode()
STRANGER = "whsec_" + base64.b64encode(b"someone-else-0123456789abcdefgh").decode()
RAW = "a raw secret, not base64"
MSG_ID = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"
TS = 1_700_000_000


def body() -> bytes:
    return json.dumps(make_event()).encode()


def headers_for(msg_id: str, timestamp: int, signature: str) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }


# -- interoperability with the reference library, both ways --


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [pytest.param(OLD, OLD, id="whsec"), pytest.param(RAW, RAW.encode(), id="raw")],
)
def test_our_signature_verifies_with_the_reference_library(ours, theirs):
    payload = body()
    headers = Signer([ours]).headers(MSG_ID, payload)
    assert headers["webhook-id"] == MSG_ID
    assert Webhook(theirs).verify(payload, headers) == json.loads(payload)


def test_reference_library_rejects_our_signature_of_another_body():
    payload = body()
    headers = Signer([OLD]).headers(MSG_ID, payload)
    with pytest.raises(WebhookVerificationError):
        Webhook(OLD).verify(payload.replace(b"1250", b"1251"), headers)


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [pytest.param(OLD, OLD, id="whsec"), pytest.param(RAW, RAW.encode(), id="raw")],
)
def test_reference_signature_verifies_with_ours(ours, theirs):
    payload = body()
    when = datetime.now(UTC)
    signature = Webhook(theirs).sign(MSG_ID, when, payload.decode())
    headers = headers_for(MSG_ID, int(when.timestamp()), signature)
    assert Verifier([ours]).verify(headers, payload) == MSG_ID


def test_reference_signature_of_another_body_fails_with_ours():
    payload = body()
    when = datetime.now(UTC)
    signature = Webhook(OLD).sign(MSG_ID, when, payload.decode())
    headers = headers_for(MSG_ID, int(when.timestamp()), signature)
    with pytest.raises(SignatureError, match="no valid v1 signature"):
        Verifier([OLD]).verify(headers, payload + b" ")


def test_same_inputs_sign_the_same_as_the_reference():
    payload = body()
    when = datetime.fromtimestamp(TS, UTC)
    assert Signer([OLD]).signature(MSG_ID, TS, payload) == Webhook(OLD).sign(
        MSG_ID, when, payload.decode()
    )


def test_headers_carry_the_given_timestamp():
    headers = Signer([OLD]).headers(MSG_ID, b"{}", timestamp=TS)
    assert headers["webhook-timestamp"] == str(TS)
    assert Verifier([OLD]).verify(headers, b"{}", now=TS) == MSG_ID


# -- key rotation --


def test_rotation_signs_with_both_keys_and_either_verifier_accepts():
    payload = body()
    headers = Signer([NEW, OLD]).headers(MSG_ID, payload)
    entries = headers["webhook-signature"].split(" ")
    assert len(entries) == 2
    assert all(entry.startswith("v1,") for entry in entries)
    assert entries[0] != entries[1]
    for secret in (OLD, NEW):
        assert Verifier([secret]).verify(headers, payload) == MSG_ID
        Webhook(secret).verify(payload, headers)
    with pytest.raises(SignatureError):
        Verifier([STRANGER]).verify(headers, payload)
    with pytest.raises(WebhookVerificationError):
        Webhook(STRANGER).verify(payload, headers)


@pytest.mark.parametrize("signed_with", [OLD, NEW])
def test_verifier_knowing_both_keys_accepts_either(signed_with):
    payload = body()
    headers = Signer([signed_with]).headers(MSG_ID, payload)
    assert Verifier([OLD, NEW]).verify(headers, payload) == MSG_ID


def test_signer_needs_a_secret():
    with pytest.raises(ValueError, match="at least one secret"):
        Signer([])


def test_verifier_without_secrets_accepts_nothing():
    headers = Signer([OLD]).headers(MSG_ID, b"{}")
    with pytest.raises(SignatureError):
        Verifier([]).verify(headers, b"{}")


# -- the signature header --


def test_valid_signature_among_unknown_versions_and_garbage_is_found():
    good = Signer([OLD]).signature(MSG_ID, TS, b"{}")
    bad = Signer([STRANGER]).signature(MSG_ID, TS, b"{}")
    header = f"v2,abc {bad} garbage v1, v1a,xyz {good}"
    assert Verifier([OLD]).verify(headers_for(MSG_ID, TS, header), b"{}", now=TS) == MSG_ID


def test_right_hmac_under_another_version_is_refused():
    good = Signer([OLD]).signature(MSG_ID, TS, b"{}")
    header = good.replace("v1,", "v1a,")
    with pytest.raises(SignatureError, match="no valid v1 signature"):
        Verifier([OLD]).verify(headers_for(MSG_ID, TS, header), b"{}", now=TS)


def test_signature_is_bound_to_the_message_id_and_timestamp():
    signature = Signer([OLD]).signature(MSG_ID, TS, b"{}")
    verifier = Verifier([OLD])
    with pytest.raises(SignatureError):
        verifier.verify(headers_for("msg_other", TS, signature), b"{}", now=TS)
    with pytest.raises(SignatureError):
        verifier.verify(headers_for(MSG_ID, TS + 1, signature), b"{}", now=TS)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_or_empty_header_is_named(missing):
    headers = Signer([OLD]).headers(MSG_ID, b"{}", timestamp=TS)
    verifier = Verifier([OLD])
    with pytest.raises(SignatureError, match=f"missing header.*{missing}"):
        verifier.verify({k: v for k, v in headers.items() if k != missing}, b"{}", now=TS)
    with pytest.raises(SignatureError, match=f"missing header.*{missing}"):
        verifier.verify({**headers, missing: ""}, b"{}", now=TS)


@pytest.mark.parametrize("timestamp", ["soon", "1700000000.5", "0x6553f100", "1.7e9"])
def test_malformed_timestamp_is_refused(timestamp):
    headers = Signer([OLD]).headers(MSG_ID, b"{}", timestamp=TS)
    headers["webhook-timestamp"] = timestamp
    with pytest.raises(SignatureError, match="webhook-timestamp is not an integer"):
        Verifier([OLD]).verify(headers, b"{}", now=TS)


# -- tolerance --


@pytest.mark.parametrize(
    ("now", "accepted"),
    [
        (TS, True),
        (TS + DEFAULT_TOLERANCE, True),
        (TS - DEFAULT_TOLERANCE, True),
        (TS + DEFAULT_TOLERANCE + 0.001, False),
        (TS - DEFAULT_TOLERANCE - 0.001, False),
        (TS + 301, False),
        (TS - 301, False),
    ],
)
def test_default_tolerance_is_five_minutes_either_way(now, accepted):
    headers = Signer([OLD]).headers(MSG_ID, b"{}", timestamp=TS)
    verifier = Verifier([OLD])
    if accepted:
        assert verifier.verify(headers, b"{}", now=now) == MSG_ID
    else:
        reason = "too old" if now > TS else "too far in the future"
        with pytest.raises(SignatureError, match=reason):
            verifier.verify(headers, b"{}", now=now)


def test_custom_tolerance():
    headers = Signer([OLD]).headers(MSG_ID, b"{}", timestamp=TS)
    verifier = Verifier([OLD], tolerance=30)
    assert verifier.verify(headers, b"{}", now=TS + 30) == MSG_ID
    with pytest.raises(SignatureError, match="too old"):
        verifier.verify(headers, b"{}", now=TS + 31)
    with pytest.raises(SignatureError, match="future"):
        verifier.verify(headers, b"{}", now=TS - 31)


def test_stale_message_is_refused_even_with_a_valid_signature():
    """The clock check does not depend on the signature being right, and vice versa."""
    stale = int(time.time()) - 3600
    headers = Signer([OLD]).headers(MSG_ID, b"{}", timestamp=stale)
    with pytest.raises(SignatureError, match="too old"):
        Verifier([OLD]).verify(headers, b"{}")
    assert Verifier([OLD]).verify(headers, b"{}", now=stale) == MSG_ID


# -- secrets --


def test_decode_whsec_secret_is_base64():
    assert decode_secret(OLD) == b"old-secret-0123456789abcdefghij"


def test_decode_raw_secret_is_its_utf8_bytes():
    assert decode_secret(RAW) == RAW.encode()
    assert decode_secret("clé") == "clé".encode()


@pytest.mark.parametrize("secret", ["whsec_not base64!", "whsec_%%%%", "whsec_abc"])
def test_decode_malformed_whsec_secret_says_so(secret):
    with pytest.raises(ValueError, match="base64"):
        decode_secret(secret)


def test_empty_whsec_secret_is_refused():
    """An empty HMAC key lets anyone sign; the reference library refuses it too."""
    with pytest.raises(Exception, match="empty"):
        Webhook("whsec_")
    with pytest.raises(ValueError):
        decode_secret("whsec_")


def test_generated_secret_is_a_fresh_32_byte_whsec():
    first, second = generate_secret(), generate_secret()
    assert first.startswith("whsec_") and second.startswith("whsec_")
    assert first != second
    assert len(decode_secret(first)) == 32
    payload = body()
    Webhook(first).verify(payload, Signer([first]).headers(MSG_ID, payload))


def test_malformed_intake_secret_is_a_conf_error(tmp_path: Path):
    conf = write_conf(tmp_path, redis_url="redis://127.0.0.1:1/0")
    text = conf.read_text().replace('secrets = ["whsec_', 'secrets = ["whsec_!!', 1)
    conf.write_text(text)
    with pytest.raises(ConfError) as caught:
        load_plan(conf)
    assert any("intake.secrets" in problem for problem in caught.value.problems)
    assert "!!" not in str(caught.value)  # the secret is never echoed

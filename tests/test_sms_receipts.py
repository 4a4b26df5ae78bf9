"""Delivery receipts for the sms channel: Twilio status callbacks and Vonage DLRs.

Each test runs the real gateway on a real Redis: an event becomes an SMS accepted by a
provider stand-in, the stand-in calls ``/v1/receipts/<channel>`` back as the provider
does (signed the provider's way), and ``tocsin deliveries show`` lists the receipt.
The signing schemes are checked against the providers' own libraries (``twilio``'s
``RequestValidator``, ``vonage_http_client``'s ``Auth``) and Twilio's published example.
Nothing is mocked.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import aiohttp
import pytest
import redis
from click.testing import CliRunner, Result
from gateway_sms.config import TwilioOptions
from gateway_sms.providers import twilio as twilio_adapter
from gateway_sms.providers import vonage as vonage_adapter

from gateway import ConfError, OutboundPolicy, Receipt, ReceiptRequest, Secret, SignatureError
from gateway.cli import main
from gateway.conf import load_conf
from gateway.redis_server import free_port
from gateway.service import Gateway

from .conftest import RunningGateway, load_plan, make_event, write_conf
from .sms_standins import (
    TWILIO_SID,
    TWILIO_TOKEN,
    VONAGE_KEY,
    VONAGE_SECRET,
    TwilioStandIn,
    VonageStandIn,
    delivery_of,
    twilio_signature,
    vonage_signature,
)

PUBLIC = "https://hooks.acme.example"
SIGNATURE_SECRET = "vonage-signature-secret-0123456789abcdef"
TEMPLATES = {
    "paid/sms.j2": "Paiement {{ refs.invoice_ref }} bien enregistré. Merci !\n",
    "long/sms.j2": "{{ data.text }}\n",
}
RULES = """
[rules.texts]
events = ["payment.*"]
[[rules.texts.actions]]
channel = "sms"
template = "{template}"
to = ["customer"]
"""


# --- helpers ------------------------------------------------------------------------------


def twilio_channel(standin: TwilioStandIn, status_callback: str) -> str:
    return f"""
    [channels.sms]
    type = "sms"
    provider = "twilio"
    sender = "MaBoutique"
    default_region = "FR"
    timeout = "5s"
    [channels.sms.twilio]
    account_sid = "{TWILIO_SID}"
    auth_token = "{TWILIO_TOKEN}"
    base_url = "{standin.base_url}"
    status_callback = "{status_callback}"
    """


def vonage_channel(standin: VonageStandIn, more: str = "") -> str:
    return f"""
    [channels.sms]
    type = "sms"
    provider = "vonage"
    sender = "MaBoutique"
    default_region = "FR"
    max_segments = 5
    timeout = "5s"
    [channels.sms.vonage]
    api_key = "{VONAGE_KEY}"
    api_secret = "{VONAGE_SECRET}"
    base_url = "{standin.base_url}"
    {textwrap.dedent(more).strip()}
    """


def conf_with(
    tmp_path: Path,
    redis_url: str,
    channel: str,
    *,
    public_url: bool = False,
    template: str = "paid",
) -> Path:
    return write_conf(
        tmp_path,
        redis_url=redis_url,
        rules=RULES.format(template=template),
        extra=textwrap.dedent(channel),
        templates=TEMPLATES,
        intake_extra=f'public_url = "{PUBLIC}"' if public_url else "",
    )


@pytest.fixture
async def gateway_at() -> AsyncIterator[Callable[..., Any]]:
    """``await gateway_at(conf, port)``: a gateway whose intake listens on a chosen port,
    for callback URLs that must name it before it starts."""
    running: list[RunningGateway] = []

    async def start(conf_path: Path, port: int) -> RunningGateway:
        gateway = Gateway(load_plan(conf_path), load_conf(conf_path).redis.url, port=port)
        stopping = asyncio.Event()
        task = asyncio.create_task(gateway.run(stopping))
        await asyncio.wait_for(gateway.ready.wait(), 10)
        rg = RunningGateway(gateway, stopping, task)
        running.append(rg)
        return rg

    yield start
    for rg in running:
        await rg.stop()


async def post_payment(gw: RunningGateway, text: str | None = None) -> None:
    data: dict[str, Any] = {"amount": 1250, "currency": "EUR"}
    if text is not None:
        data["text"] = text
    event = make_event(
        customer={"id": "cus_1", "phone": "+33612345678", "locale": "fr", "kind": "b2c"},
        refs={"invoice_ref": "FA-2026-0042"},
        data=data,
    )
    status, body = await gw.post(event)
    assert status == 202, body


async def cli(*args: str) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, main, list(args))


async def shown(conf: Path, delivery_id: str, *expected: str, timeout: float = 10.0) -> str:
    """``tocsin deliveries show`` once the delivery is recorded and shows ``expected``."""
    deadline = time.monotonic() + timeout
    while True:
        result = await cli("deliveries", "show", delivery_id, "--conf", str(conf))
        if result.exit_code == 0 and all(e in result.output for e in expected):
            return result.output
        if time.monotonic() > deadline:
            raise AssertionError(f"expected {expected} in:\n{result.output}")
        await asyncio.sleep(0.05)


def receipt_lines(output: str) -> list[str]:
    """The receipts ``tocsin deliveries show`` lists, as ``status  detail``, without times."""
    listed = output.split("\nreceipts\n", 1)[1].splitlines()
    stamp = re.compile(r" +\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC  ")
    assert all(stamp.match(line) for line in listed), listed
    return [stamp.sub("", line, count=1) for line in listed]


def receipt_keys(client: redis.Redis) -> list[bytes]:
    return list(client.scan_iter(match="*:receipts:*"))


async def call(gw: RunningGateway, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, gw.url + path, **kwargs) as response,
    ):
        return response.status, await response.json()


# --- Twilio, end to end -------------------------------------------------------------------


async def test_twilio_receipts_through_a_proxy_show_sent_then_delivered(
    tmp_path, redis_url, start_gateway, twilio
):
    """Twilio calls the public URL; the proxy hands it to the gateway, which checks the
    signature against ``[intake] public_url`` + the path it was called on."""
    conf = conf_with(
        tmp_path,
        redis_url,
        twilio_channel(twilio, f"{PUBLIC}/v1/receipts/sms"),
        public_url=True,
    )
    gw = await start_gateway(conf)
    await post_payment(gw)
    [message] = await twilio.wait_for(1)
    delivery_id = delivery_of(message)
    assert message["StatusCallback"] == f"{PUBLIC}/v1/receipts/sms?delivery={delivery_id}"

    assert await twilio.send_receipt(message, "sent", via=gw.url) == (200, {"received": 1})
    assert await twilio.send_receipt(message, "delivered", via=gw.url) == (200, {"received": 1})

    output = await shown(conf, delivery_id, "receipts", "delivered")
    sid = message["sid"]
    assert "status    delivered" in output  # the send itself
    assert receipt_lines(output) == [
        f"pending  twilio {sid}: sent",
        f"delivered  twilio {sid}: delivered",
    ]

    as_json = await cli("deliveries", "show", delivery_id, "--conf", str(conf), "--json")
    assert '"provider_id":"' + sid + '"' in as_json.output.replace(" ", "")
    # The send's own attempt names the provider's message id too.
    assert f"twilio {sid}" in output.split("receipts")[0]


async def test_twilio_undelivered_receipt_shows_failed_with_the_error_code(
    tmp_path, redis_url, gateway_at, twilio
):
    """No proxy: Twilio calls the gateway's own address, the URL the gateway sees."""
    port = free_port()
    callback = f"http://127.0.0.1:{port}/v1/receipts/sms"
    conf = conf_with(tmp_path, redis_url, twilio_channel(twilio, callback))
    gw = await gateway_at(conf, port)
    await post_payment(gw)
    [message] = await twilio.wait_for(1)

    status, body = await twilio.send_receipt(message, "undelivered", error_code=30003)
    assert (status, body) == (200, {"received": 1})

    output = await shown(conf, delivery_of(message), "receipts")
    assert receipt_lines(output) == [
        f"failed  twilio {message['sid']}: undelivered "
        "(error 30003: unreachable destination handset)"
    ]


async def test_twilio_forged_and_unsigned_receipts_get_401_and_record_nothing(
    tmp_path, redis_url, start_gateway, twilio, redis_client
):
    conf = conf_with(
        tmp_path,
        redis_url,
        twilio_channel(twilio, f"{PUBLIC}/v1/receipts/sms"),
        public_url=True,
    )
    gw = await start_gateway(conf)
    await post_payment(gw)
    [message] = await twilio.wait_for(1)

    unsigned = twilio.receipt(message, "delivered")
    del unsigned.headers["X-Twilio-Signature"]
    wrong_token = twilio.receipt(message, "delivered", auth_token="not-the-auth-token")
    tampered = twilio.receipt(message, "undelivered", error_code=30003)
    tampered.params["MessageStatus"] = tampered.params["SmsStatus"] = "delivered"
    other_delivery = twilio.receipt(message, "delivered")
    other_delivery.url = other_delivery.url.replace("delivery=msg_", "delivery=msg_0")

    for forged in (unsigned, wrong_token, tampered, other_delivery):
        status, body = await forged.send(via=gw.url)
        assert status == 401, body
        assert body["error"] == "bad_signature"
    _, body = await unsigned.send(via=gw.url)
    assert "no X-Twilio-Signature" in body["message"]

    assert receipt_keys(redis_client) == []
    output = await shown(conf, delivery_of(message), "status    delivered")
    assert "receipts" not in output


async def test_twilio_receipt_without_the_public_url_set_is_refused(
    tmp_path, redis_url, start_gateway, twilio, redis_client
):
    """Behind a proxy without ``public_url`` the gateway sees another URL than Twilio
    signed: refused, and the reason says what to set."""
    conf = conf_with(tmp_path, redis_url, twilio_channel(twilio, f"{PUBLIC}/v1/receipts/sms"))
    gw = await start_gateway(conf)
    await post_payment(gw)
    [message] = await twilio.wait_for(1)
    status, body = await twilio.send_receipt(message, "delivered", via=gw.url)
    assert status == 401
    assert "public_url" in body["message"]
    assert receipt_keys(redis_client) == []


async def test_twilio_malformed_receipt_gets_400(
    tmp_path, redis_url, start_gateway, twilio, redis_client
):
    conf = conf_with(
        tmp_path,
        redis_url,
        twilio_channel(twilio, f"{PUBLIC}/v1/receipts/sms"),
        public_url=True,
    )
    gw = await start_gateway(conf)
    await post_payment(gw)
    [message] = await twilio.wait_for(1)

    receipt = twilio.receipt(message, "delivered")
    for name in ("MessageStatus", "SmsStatus"):
        del receipt.params[name]
    receipt.headers["X-Twilio-Signature"] = twilio_signature(
        TWILIO_TOKEN, receipt.url, receipt.params
    )  # genuine, but no status
    status, body = await receipt.send(via=gw.url)
    assert (status, body["error"]) == (400, "invalid_receipt")
    assert "MessageStatus" in body["message"]
    assert receipt_keys(redis_client) == []


async def test_twilio_receipt_for_a_message_tocsin_did_not_send_is_acknowledged(
    tmp_path, redis_url, start_gateway, twilio, redis_client
):
    """A Messaging Service whose own callback points here: genuine, names no delivery."""
    conf = conf_with(
        tmp_path,
        redis_url,
        twilio_channel(twilio, f"{PUBLIC}/v1/receipts/sms"),
        public_url=True,
    )
    gw = await start_gateway(conf)
    message = {"sid": "SM" + "ab" * 16, "To": "+33612345678", "From": "Other"}
    message["StatusCallback"] = f"{PUBLIC}/v1/receipts/sms"
    assert await twilio.send_receipt(message, "delivered", via=gw.url) == (200, {"received": 0})
    assert receipt_keys(redis_client) == []


# --- Vonage, end to end -------------------------------------------------------------------


@pytest.mark.parametrize("method", ["md5hash", "sha256"])
async def test_vonage_signed_receipt_shows_delivered(
    tmp_path, redis_url, start_gateway, vonage, method
):
    vonage.signature_secret, vonage.signature_method = SIGNATURE_SECRET, method
    more = f"""
    signature_secret = "{SIGNATURE_SECRET}"
    signature_method = "{method}"
    """
    conf = conf_with(tmp_path, redis_url, vonage_channel(vonage, more))
    gw = await start_gateway(conf)
    vonage.dlr_url = f"{gw.url}/v1/receipts/sms"  # the dashboard's receipt URL
    await post_payment(gw)
    [message] = await vonage.wait_for(1)
    delivery_id = message["client-ref"]

    assert await vonage.send_receipts(message, "delivered") == [(200, {"received": 1})]
    output = await shown(conf, delivery_id, "receipts")
    [message_id] = message["message-ids"]
    assert receipt_lines(output) == [f"delivered  vonage {message_id}: delivered"]


@pytest.mark.parametrize("dlr_method", ["GET", "POST", "POST-JSON"])
async def test_vonage_failed_receipt_of_each_segment_shows_the_err_code(
    tmp_path, redis_url, start_gateway, vonage, dlr_method
):
    """A 2-segment message: one receipt per segment, each recorded."""
    vonage.signature_secret, vonage.dlr_method = SIGNATURE_SECRET, dlr_method
    more = f'signature_secret = "{SIGNATURE_SECRET}"'
    conf = conf_with(tmp_path, redis_url, vonage_channel(vonage, more), template="long")
    gw = await start_gateway(conf)
    vonage.dlr_url = f"{gw.url}/v1/receipts/sms"
    await post_payment(gw, "Rappel : facture FA-2026-0042 échue, " + "merci de régler " * 12)
    [second] = await vonage.wait_for(1)
    assert len(second["message-ids"]) == 2
    delivery_id = second["client-ref"]

    answers = await vonage.send_receipts(second, "failed", err_code=6)
    assert answers == [(200, {"received": 1})] * 2
    output = await shown(conf, delivery_id, "receipts")
    assert receipt_lines(output) == [
        f"failed  vonage {message_id}: failed (err-code 6: anti-spam rejection)"
        for message_id in second["message-ids"]
    ]


@pytest.mark.parametrize(
    ("state", "err_code", "status"),
    [
        ("expired", 2, "failed"),
        ("rejected", 11, "failed"),
        ("accepted", 0, "pending"),
        ("buffered", 0, "pending"),
        ("unknown", 0, "pending"),
    ],
)
async def test_vonage_status_mapping(
    tmp_path, redis_url, start_gateway, vonage, state, err_code, status
):
    conf = conf_with(tmp_path, redis_url, vonage_channel(vonage))  # no signature_secret
    gw = await start_gateway(conf)
    vonage.dlr_url, vonage.dlr_method = f"{gw.url}/v1/receipts/sms", "GET"
    await post_payment(gw)
    [message] = await vonage.wait_for(1)
    assert await vonage.send_receipts(message, state, err_code=err_code) == [(200, {"received": 1})]
    output = await shown(conf, message["client-ref"], "receipts")
    detail = f" (err-code {err_code}: " if err_code else ""
    [line] = receipt_lines(output)
    assert line.startswith(f"{status}  vonage {message['message-ids'][0]}: {state}{detail}")


async def test_vonage_unsigned_or_forged_receipts_get_401_when_a_secret_is_set(
    tmp_path, redis_url, start_gateway, vonage, redis_client
):
    vonage.signature_secret = SIGNATURE_SECRET
    conf = conf_with(
        tmp_path, redis_url, vonage_channel(vonage, f'signature_secret = "{SIGNATURE_SECRET}"')
    )
    gw = await start_gateway(conf)
    vonage.dlr_url = f"{gw.url}/v1/receipts/sms"
    await post_payment(gw)
    [message] = await vonage.wait_for(1)

    [unsigned] = vonage.receipts(message, "delivered")
    del unsigned.params["sig"]
    [forged] = vonage.receipts(message, "delivered", secret="a-guessed-secret")
    [tampered] = vonage.receipts(message, "failed", err_code=6)
    tampered.params["status"], tampered.params["err-code"] = "delivered", "0"
    [other_delivery] = vonage.receipts(message, "delivered")
    other_delivery.params["client-ref"] = "msg_" + "0" * 24

    for call_ in (unsigned, forged, tampered, other_delivery):
        status, body = await call_.send()
        assert (status, body["error"]) == (401, "bad_signature"), body
    assert "no 'sig'" in (await unsigned.send())[1]["message"]
    assert receipt_keys(redis_client) == []


async def test_vonage_unsigned_receipts_are_taken_without_a_secret(
    tmp_path, redis_url, start_gateway, vonage
):
    conf = conf_with(tmp_path, redis_url, vonage_channel(vonage))
    gw = await start_gateway(conf)
    vonage.dlr_url, vonage.dlr_method = f"{gw.url}/v1/receipts/sms", "POST"
    await post_payment(gw)
    [message] = await vonage.wait_for(1)
    [receipt] = vonage.receipts(message, "delivered")
    assert "sig" not in receipt.params
    assert await receipt.send() == (200, {"received": 1})
    await shown(conf, message["client-ref"], "receipts", "delivered  vonage")


async def test_vonage_malformed_receipts_get_400(
    tmp_path, redis_url, start_gateway, vonage, redis_client
):
    conf = conf_with(tmp_path, redis_url, vonage_channel(vonage))
    gw = await start_gateway(conf)
    vonage.dlr_url = f"{gw.url}/v1/receipts/sms"
    await post_payment(gw)
    [message] = await vonage.wait_for(1)

    path = "/v1/receipts/sms"
    json_headers = {"Content-Type": "application/json"}
    cases: list[tuple[str, dict[str, Any]]] = [
        ("POST", {"data": b"{not json", "headers": json_headers}),
        ("POST", {"data": b"[1, 2]", "headers": json_headers}),
        ("POST", {"data": b"status=delivered", "headers": {"Content-Type": "text/plain"}}),
        ("GET", {"params": {"status": "delivered", "client-ref": message["client-ref"]}}),
        ("POST", {"json": {"messageId": "0A01", "client-ref": message["client-ref"]}}),
        ("POST", {"json": {"messageId": "0A01", "status": {"nested": True}}}),
    ]
    for method, kwargs in cases:
        status, body = await call(gw, method, path, **kwargs)
        assert (status, body["error"]) == (400, "invalid_receipt"), (kwargs, body)
    [other_account] = vonage.receipts(message, "delivered")
    other_account.params["api-key"] = "ffff0000"
    status, body = await other_account.send()
    assert status == 400 and "api_key" in body["message"]
    assert receipt_keys(redis_client) == []


async def test_vonage_receipt_for_a_message_tocsin_did_not_send_is_acknowledged(
    tmp_path, redis_url, start_gateway, vonage, redis_client
):
    conf = conf_with(tmp_path, redis_url, vonage_channel(vonage))
    gw = await start_gateway(conf)
    vonage.dlr_url, vonage.dlr_method = f"{gw.url}/v1/receipts/sms", "GET"
    message = {"to": "33612345678", "from": "Other", "message-ids": ["0B0000000000000A"]}
    assert await vonage.send_receipts(message, "delivered") == [(200, {"received": 0})]
    assert receipt_keys(redis_client) == []


def test_vonage_signature_options_are_checked_with_the_conf(tmp_path):
    vonage = VonageStandIn()
    for more, problem in [
        ('signature_secret = "  "', "vonage.signature_secret: must not be empty"),
        ('signature_secret = ""', "signature_secret"),
        ('signature_secret = "s"\n    signature_method = "sha384"', "signature_method"),
    ]:
        conf = conf_with(tmp_path, "redis://127.0.0.1:1/0", vonage_channel(vonage, more))
        with pytest.raises(ConfError) as caught:
            load_plan(conf)
        assert any(problem in p for p in caught.value.problems), caught.value.problems


# --- channels without receipts ------------------------------------------------------------


async def test_unknown_channels_and_channels_without_receipts_get_404(
    tmp_path, redis_url, start_gateway, redis_client
):
    outbox = """
    [channels.sms]
    type = "sms"
    sender = "MaBoutique"
    """
    conf = conf_with(tmp_path, redis_url, outbox)
    gw = await start_gateway(conf)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    body = b"MessageSid=SM1&MessageStatus=delivered"
    for path, error in [
        ("/v1/receipts/nope", "unknown_channel"),
        ("/v1/receipts/sms", "no_receipts"),  # the outbox
        ("/v1/receipts/hook", "no_receipts"),  # json_hook
    ]:
        for method in ("GET", "POST"):
            status, answer = await call(gw, method, path, data=body, headers=form)
            assert (status, answer["error"]) == (404, error), (path, method, answer)
    assert receipt_keys(redis_client) == []


# --- the signing schemes, against the providers' own code ----------------------------------


def request(url: str, body: bytes = b"", method: str = "POST", **headers: str) -> ReceiptRequest:
    return ReceiptRequest(
        method=method,
        url=url,
        headers={"Content-Type": "application/x-www-form-urlencoded", **headers},
        query=dict(parse_qsl(urlsplit(url).query)),
        body=body,
        form=dict(parse_qsl(body.decode())),
    )


def test_twilio_signature_matches_twilios_published_example():
    """The example of Twilio's webhook-security guide and twilio-python's tests."""
    uri = "https://mycompany.com/myapp.php?foo=1&bar=2"
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Caller": "+14158675309",
        "Digits": "1234",
        "From": "+14158675309",
        "To": "+18005551212",
    }
    expected = "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    assert twilio_adapter.signature("12345", uri, params.items()) == expected
    assert twilio_signature("12345", uri, params) == expected  # the stand-in's


def test_twilio_signatures_agree_with_the_twilio_library():
    from twilio.request_validator import RequestValidator  # noqa: PLC0415

    validator = RequestValidator(TWILIO_TOKEN)
    url = f"{PUBLIC}/v1/receipts/sms?delivery=msg_0123456789abcdef01234567"
    params = {
        "MessageSid": "SM" + "0f" * 16,
        "MessageStatus": "undelivered",
        "ErrorCode": "30003",
        "To": "+33612345678",
        "From": "MaBoutique",
        "Body": "a&b=c é",  # characters that need encoding
    }
    official = validator.compute_signature(url, params)
    assert twilio_signature(TWILIO_TOKEN, url, params) == official
    assert validator.validate(url, params, twilio_signature(TWILIO_TOKEN, url, params))

    body = urlencode(params).encode()
    [receipt] = twilio_adapter_parse(request(url, body, **{"X-Twilio-Signature": official}))
    assert receipt.status == "failed"
    assert receipt.detail == (
        f"twilio {params['MessageSid']}: undelivered (error 30003: unreachable destination handset)"
    )
    # Twilio signs some URLs with the default port written out: accepted like its library does
    with_port = validator.compute_signature(url.replace(".example/", ".example:443/"), params)
    assert twilio_adapter_parse(request(url, body, **{"X-Twilio-Signature": with_port}))
    with pytest.raises(SignatureError):
        twilio_adapter_parse(request(url, body + b"&x=1", **{"X-Twilio-Signature": official}))
    with pytest.raises(SignatureError, match="Webhooks Rule"):
        twilio_adapter_parse(
            request(
                url,
                body,
                **{
                    "X-Twilio-Signature": official,
                    "X-Twilio-Webhooks-Signature-Settings": "key=KS1,algorithm=HMAC_SHA256",
                },
            )
        )


def twilio_adapter_parse(call: ReceiptRequest) -> list[Receipt]:
    options = TwilioOptions(account_sid=TWILIO_SID, auth_token=Secret(TWILIO_TOKEN))
    return twilio_adapter.Twilio(options, 5.0, OutboundPolicy()).parse_receipt(call)


@pytest.mark.parametrize("method", ["md5", "sha1", "sha256", "sha512"])
def test_vonage_hmac_signatures_agree_with_vonages_library(method):
    from vonage_http_client.auth import Auth  # noqa: PLC0415

    params = {
        "messageId": "0A0000000123ABCD1",
        "status": "delivered",
        "err-code": "0",
        "client-ref": "msg_0123456789abcdef01234567",
        "message-timestamp": "2026-11-25 10:15:02",
        "to": "Ma&Bou=tique",  # & and = are replaced by _ before signing
        "timestamp": "1795600000",
        "nonce": "5f2e8a56-0000-4000-8000-000000000001",
    }
    official = Auth(api_key=VONAGE_KEY, signature_secret=SIGNATURE_SECRET, signature_method=method)
    expected = official.sign_params(dict(params))
    assert vonage_signature(SIGNATURE_SECRET, method, params) == expected  # the stand-in's
    assert vonage_adapter.signature(SIGNATURE_SECRET, method, params) == expected
    assert official.check_signature({**params, "sig": expected.upper()})
    # and the adapter takes what Vonage's library signs, upper or lower case
    for sig in (expected, expected.upper()):
        vonage_adapter.verify_signature(SIGNATURE_SECRET, method, {**params, "sig": sig})
    with pytest.raises(SignatureError):
        vonage_adapter.verify_signature(
            SIGNATURE_SECRET, method, {**params, "status": "failed", "sig": expected}
        )


def test_vonage_md5_hash_signature_follows_the_documented_steps():
    """ "Signing messages", manual steps: ``&key=value`` pairs by key with ``&``/``=`` in
    values made ``_``, the secret appended, MD5 in hexadecimal (no library implements
    this mode any more, so it is spelled out here)."""
    params = {"b": "x=y", "a": "1&2", "timestamp": "1795600000"}
    spelled = "&a=1_2&b=x_y&timestamp=1795600000" + "s3cret"
    expected = hashlib.md5(spelled.encode()).hexdigest()
    assert vonage_adapter.signature("s3cret", "md5hash", params) == expected
    assert vonage_signature("s3cret", "md5hash", params) == expected

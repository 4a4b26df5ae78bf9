"""``POST /v1/events`` end to end: what each bad request is answered, and that it leaves no trace.

The gateway runs with the intake role only, so whatever the intake writes stays in the
events stream where the tests can see it (no router to consume it).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis
from redis.asyncio import Redis as AsyncRedis

from gateway.intake import Enqueuer
from gateway.keys import Keys
from gateway.redis_server import RedisServer, free_port
from gateway.signing import Signer

from .conftest import INTAKE_SECRET, RunningGateway, make_event, signed_headers, write_conf

MAX_BODY = 2048
EVENTS = "tocsin:events"
OTHER_SECRET = "whsec_" + "c29tZS1vdGhlci1zZWNyZXQtbm90LXRoZS1pbnRha2U="


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    text: str

    @property
    def json(self) -> Any:
        return json.loads(self.text)


async def send(
    gw: RunningGateway,
    body: bytes | Callable[[], AsyncIterator[bytes]] = b"",
    headers: dict[str, str] | None = None,
    *,
    method: str = "POST",
    path: str = "/v1/events",
    **kwargs: Any,
) -> Answer:
    """Send a raw request; ``headers=None`` signs ``body`` with the intake secret."""
    if headers is None:
        assert isinstance(body, bytes)
        headers = signed_headers(body)
    data = body() if callable(body) else body
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, gw.url + path, data=data, headers=headers, **kwargs) as resp,
    ):
        answer = Answer(resp.status, dict(resp.headers), await resp.text())
    # Whatever went wrong, the client never sees the gateway's insides.
    assert "Traceback" not in answer.text
    assert 'File "' not in answer.text
    return answer


def encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode()


def assert_error(answer: Answer, status: int, code: str) -> dict[str, Any]:
    assert answer.status == status, answer.text
    assert answer.headers["Content-Type"].startswith("application/json")
    body = answer.json
    assert body["error"] == code
    assert isinstance(body["message"], str) and body["message"]
    return body


def seen_keys(client: redis.Redis) -> list[bytes]:
    return sorted(client.scan_iter("tocsin:seen:*"))


def assert_nothing_enqueued(client: redis.Redis) -> None:
    assert client.xlen(EVENTS) == 0
    assert seen_keys(client) == []


def stored_ids(client: redis.Redis) -> list[str]:
    return [json.loads(fields[b"e"])["id"] for _, fields in client.xrange(EVENTS)]


@pytest.fixture
async def intake(tmp_path: Path, redis_url: str, start_gateway) -> RunningGateway:
    conf = write_conf(tmp_path, redis_url=redis_url, intake_extra=f"max_body = {MAX_BODY}")
    return await start_gateway(conf, roles=("intake",))


# -- the control: a good event is stored, so "nothing enqueued" below means something --


async def test_valid_event_is_stored_once(intake, redis_client: redis.Redis):
    event = make_event()
    answer = await send(intake, encode(event))
    assert answer.status == 202
    assert answer.json == {"id": event["id"], "duplicate": False}
    [(_, fields)] = redis_client.xrange(EVENTS)
    stored = json.loads(fields[b"e"])
    assert stored["id"] == event["id"]
    assert stored["data"] == {"amount": 1250, "currency": "EUR"}
    assert seen_keys(redis_client) == [f"tocsin:seen:{event['id']}".encode()]


# -- 400 invalid_event: the path names the offending field --


def _without(field: str) -> bytes:
    event = make_event()
    del event[field]
    return encode(event)


INVALID: list[tuple[str, Callable[[], bytes], str, str]] = [
    ("missing type", lambda: _without("type"), "$", "`type`"),
    ("missing id", lambda: _without("id"), "$", "`id`"),
    (
        "amount as float",
        lambda: encode(make_event(data={"amount": 12.5, "currency": "EUR"})),
        "$.data.amount",
        "integer",
    ),
    (
        "amount as string",
        lambda: encode(make_event(data={"amount": "1250", "currency": "EUR"})),
        "$.data.amount",
        "integer",
    ),
    (
        "nested amount as float",
        lambda: encode(make_event(data={"lines": [{"unit_amount": 9.99}], "currency": "EUR"})),
        "$.data.lines[0].unit_amount",
        "integer",
    ),
    (
        "lower-case currency",
        lambda: encode(make_event(data={"amount": 1250, "currency": "eur"})),
        "$.data.currency",
        "ISO-4217",
    ),
    (
        "undotted type",
        lambda: encode(make_event(type="payment")),
        "$.type",
        "type must be dotted lower case, e.g. payment.succeeded",
    ),
    (
        "naive occurred_at",
        lambda: encode(make_event(occurred_at="2024-05-01T10:00:00")),
        "$.occurred_at",
        "time zone",
    ),
    ("unknown top-level field", lambda: encode(make_event(colour="red")), "$", "`colour`"),
    (
        "phone not E.164",
        lambda: encode(make_event(customer={"id": "cus_1", "phone": "06 12 34 56 78"})),
        "$.customer.phone",
        "E.164, e.g. +33612345678",
    ),
    (
        "email not an address",
        lambda: encode(make_event(customer={"id": "cus_1", "email": "not-an-email"})),
        "$.customer.email",
        "not an email address",
    ),
    ("dot in id", lambda: encode(make_event(id="evt.1")), "$.id", "no '.'"),
    ("id not a string", lambda: encode(make_event(id=42)), "$.id", "`str`"),
    ("array body", lambda: b"[]", "$", "`object`"),
    ("malformed JSON", lambda: b'{"id": "evt_1", "type": ', "$", "malformed JSON"),
    ("not UTF-8", lambda: b"\xff\xfe{}", "$", "malformed JSON"),
    ("empty body", lambda: b"", "$", "malformed JSON"),
]


@pytest.mark.parametrize(
    ("body", "path", "says"),
    [pytest.param(make, path, says, id=name) for name, make, path, says in INVALID],
)
async def test_invalid_event_is_400_naming_the_field(
    intake, redis_client: redis.Redis, body, path, says
):
    answer = await send(intake, body())
    error = assert_error(answer, 400, "invalid_event")
    assert set(error) == {"error", "message", "path", "problems"}
    assert error["path"] == path
    assert says in error["message"]
    assert "regex" not in error["message"]
    assert error["problems"][0] == {"path": path, "message": error["message"]}
    assert_nothing_enqueued(redis_client)


async def test_every_problem_is_named_not_only_the_first(intake, redis_client: redis.Redis):
    event = make_event(customer={"id": "cus_1", "phone": "06", "email": "a@b@"})
    del event["type"], event["occurred_at"]
    error = assert_error(await send(intake, encode(event)), 400, "invalid_event")
    problems = {(p["path"], p["message"]) for p in error["problems"]}
    assert ("$", "Object missing required field `type`") in problems
    assert ("$", "Object missing required field `occurred_at`") in problems
    assert ("$.customer.phone", "phone must be E.164, e.g. +33612345678") in problems
    assert_nothing_enqueued(redis_client)


async def test_every_missing_catalog_field_is_named(intake, redis_client: redis.Redis):
    event = make_event(
        type="payment_request.partially_paid",
        customer={"id": "cus_1", "email": "not-an-email"},
        data={"amount": 1250, "currency": "EUR"},
    )
    error = assert_error(await send(intake, encode(event)), 400, "invalid_event")
    paths = [p["path"] for p in error["problems"]]
    assert paths == [
        "$.customer.email",
        "$.refs.payment_request_id",
        "$.data.paid_amount",
        "$.data.remaining_amount",
    ]
    assert_nothing_enqueued(redis_client)


async def test_a_good_email_with_an_idn_domain_is_accepted(intake, redis_client: redis.Redis):
    event = make_event(customer={"id": "cus_1", "email": "jean.dupont+pay@exemple-café.fr"})
    assert (await send(intake, encode(event))).status == 202


# -- the body's id, not webhook-id, is the dedupe key (json_hook sends its delivery id) --


async def test_webhook_id_other_than_the_event_id_is_accepted_and_dedupe_uses_the_body_id(
    intake, redis_client: redis.Redis
):
    event = make_event()
    body = encode(event)
    first = await send(intake, body, signed_headers(body, "msg_delivery_a"))
    assert first.status == 202
    # the same event forwarded as another message (another rule's delivery): a duplicate
    again = await send(intake, body, signed_headers(body, "msg_delivery_b"))
    assert (again.status, again.json) == (200, {"id": event["id"], "duplicate": True})
    # a new event under a webhook-id already seen: new
    other = make_event()
    other_body = encode(other)
    third = await send(intake, other_body, signed_headers(other_body, "msg_delivery_a"))
    assert third.status == 202
    assert stored_ids(redis_client) == [event["id"], other["id"]]


# -- unknown types: accepted, but a typo is pointed out --


async def test_a_typo_in_the_type_is_accepted_with_a_warning(
    intake, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
):
    event = make_event(type="payment.succeded")
    answer = await send(intake, encode(event))
    assert answer.status == 202
    assert "did you mean 'payment.succeeded'?" in answer.json["warning"]
    assert stored_ids(redis_client) == [event["id"]]
    assert any(
        r.levelname == "WARNING" and "payment.succeeded" in r.getMessage() for r in caplog.records
    )
    assert intake.gateway.intake.stats.unknown_types["payment.succeded"] == 1


async def test_a_providers_own_type_gets_no_warning_but_is_counted(intake, redis_client):
    event = make_event(type="stripe.customer.created")
    answer = await send(intake, encode(event))
    assert answer.status == 202
    assert answer.json == {"id": event["id"], "duplicate": False}
    assert intake.gateway.intake.stats.unknown_types["stripe.customer.created"] == 1


# -- 401 bad_signature --


@pytest.mark.parametrize("header", ["webhook-id", "webhook-timestamp", "webhook-signature"])
async def test_missing_webhook_header_is_401_naming_it(intake, redis_client, header):
    body = encode(make_event())
    headers = signed_headers(body)
    del headers[header]
    error = assert_error(await send(intake, body, headers), 401, "bad_signature")
    assert header in error["message"]
    others = {"webhook-id", "webhook-timestamp", "webhook-signature"} - {header}
    assert not any(other in error["message"] for other in others)
    assert_nothing_enqueued(redis_client)


async def test_no_webhook_headers_at_all_names_all_three(intake, redis_client):
    answer = await send(intake, encode(make_event()), {"Content-Type": "application/json"})
    error = assert_error(answer, 401, "bad_signature")
    for header in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        assert header in error["message"]
    assert_nothing_enqueued(redis_client)


async def test_tampered_body_is_401(intake, redis_client):
    event = make_event()
    headers = signed_headers(encode(event))
    event["data"]["amount"] = 125000
    assert_error(await send(intake, encode(event), headers), 401, "bad_signature")
    assert_nothing_enqueued(redis_client)


async def test_wrong_secret_is_401_without_revealing_the_secret(intake, redis_client):
    body = encode(make_event())
    answer = await send(intake, body, signed_headers(body, secret=OTHER_SECRET))
    assert_error(answer, 401, "bad_signature")
    assert INTAKE_SECRET not in answer.text and OTHER_SECRET not in answer.text
    assert INTAKE_SECRET.removeprefix("whsec_") not in answer.text
    assert_nothing_enqueued(redis_client)


async def test_timestamp_301s_too_old_is_401(intake, redis_client):
    body = encode(make_event())
    headers = signed_headers(body, timestamp=math.floor(time.time()) - 301)
    error = assert_error(await send(intake, body, headers), 401, "bad_signature")
    assert "too old" in error["message"]
    assert_nothing_enqueued(redis_client)


async def test_timestamp_301s_too_new_is_401(intake, redis_client):
    body = encode(make_event())
    headers = signed_headers(body, timestamp=math.ceil(time.time()) + 301)
    error = assert_error(await send(intake, body, headers), 401, "bad_signature")
    assert "future" in error["message"]
    assert_nothing_enqueued(redis_client)


async def test_one_valid_signature_among_several_is_accepted(intake, redis_client):
    event = make_event()
    body = encode(event)
    headers = signed_headers(body)
    wrong = Signer([OTHER_SECRET]).signature(
        headers["webhook-id"], int(headers["webhook-timestamp"]), body
    )
    headers["webhook-signature"] = f"{wrong} v1,bm90LWEtc2ln {headers['webhook-signature']} v1"
    answer = await send(intake, body, headers)
    assert (answer.status, answer.json) == (202, {"id": event["id"], "duplicate": False})
    assert stored_ids(redis_client) == [event["id"]]


@pytest.mark.parametrize("version", ["v2", "v1a", "V1", "v1a2"])
async def test_valid_hmac_under_another_version_is_401(intake, redis_client, version):
    body = encode(make_event())
    headers = signed_headers(body)
    # the right HMAC, but labelled with a scheme this gateway does not speak
    headers["webhook-signature"] = headers["webhook-signature"].replace("v1,", f"{version},", 1)
    error = assert_error(await send(intake, body, headers), 401, "bad_signature")
    assert "v1" in error["message"]
    assert_nothing_enqueued(redis_client)


async def test_non_integer_timestamp_is_401(intake, redis_client):
    body = encode(make_event())
    headers = signed_headers(body)
    headers["webhook-timestamp"] = "yesterday"
    error = assert_error(await send(intake, body, headers), 401, "bad_signature")
    assert "webhook-timestamp" in error["message"]
    assert_nothing_enqueued(redis_client)


async def test_signature_is_checked_before_the_body_is_parsed(intake, redis_client):
    """An unsigned bad body says 401, not 400: strangers learn nothing about the schema."""
    body = b'{"id": 1}'
    answer = await send(intake, body, {"Content-Type": "application/json"})
    assert_error(answer, 401, "bad_signature")
    assert "path" not in answer.json
    assert_nothing_enqueued(redis_client)


# -- 413 too_large --


def padded_event(size: int) -> bytes:
    """A valid event whose encoding is exactly ``size`` bytes."""
    event = make_event(data={"amount": 1250, "currency": "EUR", "note": ""})
    base = len(encode(event))
    event["data"]["note"] = "x" * (size - base)
    body = encode(event)
    assert len(body) == size
    return body


async def test_body_at_max_body_is_accepted(intake, redis_client):
    answer = await send(intake, padded_event(MAX_BODY))
    assert answer.status == 202, answer.text
    assert redis_client.xlen(EVENTS) == 1


async def test_content_length_over_max_body_is_413(intake, redis_client):
    body = padded_event(MAX_BODY + 1)
    error = assert_error(await send(intake, body), 413, "too_large")
    assert str(MAX_BODY) in error["message"]
    assert_nothing_enqueued(redis_client)


def chunks(body: bytes, size: int = 256) -> Callable[[], AsyncIterator[bytes]]:
    async def gen() -> AsyncIterator[bytes]:
        for start in range(0, len(body), size):
            yield body[start : start + size]

    return gen


async def test_chunked_body_over_max_body_is_413(intake, redis_client):
    body = padded_event(MAX_BODY * 3)
    answer = await send(intake, chunks(body), signed_headers(body))
    error = assert_error(answer, 413, "too_large")
    assert str(MAX_BODY) in error["message"]
    assert_nothing_enqueued(redis_client)


async def test_chunked_body_under_max_body_is_accepted(intake, redis_client):
    event = make_event()
    body = encode(event)
    answer = await send(intake, chunks(body, 64), signed_headers(body))
    assert (answer.status, answer.json) == (202, {"id": event["id"], "duplicate": False})
    assert stored_ids(redis_client) == [event["id"]]


# -- 415, 404, 405 --


async def test_text_plain_is_415(intake, redis_client):
    body = encode(make_event())
    headers = signed_headers(body)
    headers["Content-Type"] = "text/plain"
    error = assert_error(await send(intake, body, headers), 415, "unsupported_media_type")
    assert "application/json" in error["message"]
    assert_nothing_enqueued(redis_client)


async def test_missing_content_type_is_415(intake, redis_client):
    body = encode(make_event())
    headers = signed_headers(body)
    del headers["Content-Type"]
    answer = await send(intake, body, headers, skip_auto_headers=["Content-Type"])
    assert_error(answer, 415, "unsupported_media_type")
    assert_nothing_enqueued(redis_client)


async def test_json_with_charset_is_accepted(intake, redis_client):
    body = encode(make_event())
    headers = signed_headers(body)
    headers["Content-Type"] = "application/json; charset=utf-8"
    assert (await send(intake, body, headers)).status == 202


@pytest.mark.parametrize("name", ["nope", "events"])
async def test_unknown_source_is_404(intake, redis_client, name):
    body = encode(make_event())
    answer = await send(intake, body, path=f"/v1/sources/{name}")
    error = assert_error(answer, 404, "unknown_source")
    assert repr(name) in error["message"]
    assert_nothing_enqueued(redis_client)


async def test_unknown_path_is_404_json(intake, redis_client):
    assert_error(await send(intake, encode(make_event()), path="/v1/event"), 404, "not_found")
    assert_nothing_enqueued(redis_client)


async def test_wrong_method_is_405_json_with_allow(intake):
    answer = await send(intake, b"", {}, method="GET")
    assert_error(answer, 405, "method_not_allowed")
    # RFC 9110 15.5.6: a 405 must say which methods the resource does allow.
    assert answer.headers.get("Allow") == "POST"


async def test_hostile_bodies_get_json_4xx(intake, redis_client):
    bodies = [
        b"null",
        b'"payment.succeeded"',
        b"1e999999",
        b"{" * 1500,
        json.dumps(
            {"data": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}
        ).encode(),
        encode(make_event(data=["not", "a", "mapping"])),
        encode(make_event(customer={"kind": "b2x"})),
        encode(make_event(source={"provider": ""})),
        '{"id": "\u00e9v\u00e9nement"}'.encode(),
    ]
    for body in bodies:
        answer = await send(intake, body)
        assert 400 <= answer.status < 500, (body[:60], answer.status, answer.text)
        assert answer.json["error"] == "invalid_event"
    assert_nothing_enqueued(redis_client)


# -- health --


async def test_health_endpoints(intake):
    healthz = await send(intake, method="GET", path="/healthz", headers={})
    readyz = await send(intake, method="GET", path="/readyz", headers={})
    assert (healthz.status, healthz.json) == (200, {"status": "ok"})
    assert (readyz.status, readyz.json) == (200, {"status": "ready"})


# -- Redis down: 503 with Retry-After, and nothing half-written --


async def test_redis_down_is_503_and_leaves_nothing_behind(tmp_path: Path, start_gateway):
    data_dir = tmp_path / "redis"
    port = free_port()
    server = RedisServer(data_dir, port=port)
    await asyncio.to_thread(server.start)
    restarted: RedisServer | None = None
    try:
        conf = write_conf(tmp_path / "conf", redis_url=server.url)
        gw = await start_gateway(conf, roles=("intake",))
        first, lost, after = make_event(), make_event(), make_event()

        assert (await send(gw, encode(first))).status == 202

        await asyncio.to_thread(server.stop)
        answer = await send(gw, encode(lost))
        assert_error(answer, 503, "unavailable")
        assert answer.headers["Retry-After"].isdigit()
        readyz = await send(gw, method="GET", path="/readyz", headers={})
        assert readyz.status == 503
        assert "Retry-After" in readyz.headers

        restarted = RedisServer(data_dir, port=port)
        await asyncio.to_thread(restarted.start)
        answer = await send(gw, encode(after))
        assert (answer.status, answer.json) == (202, {"id": after["id"], "duplicate": False})
        assert (await send(gw, method="GET", path="/readyz", headers={})).status == 200

        client = redis.Redis.from_url(restarted.url)
        try:
            # the first event survived the restart (AOF); the refused one left no trace
            assert stored_ids(client) == [first["id"], after["id"]]
            assert client.exists(f"tocsin:seen:{first['id']}")
            assert not client.exists(f"tocsin:seen:{lost['id']}")
            # so the sender's retry of the refused event is taken as new, not a duplicate
            answer = await send(gw, encode(lost))
            assert (answer.status, answer.json) == (202, {"id": lost["id"], "duplicate": False})
            assert stored_ids(client) == [first["id"], after["id"], lost["id"]]
            again = await send(gw, encode(first))
            assert (again.status, again.json) == (200, {"id": first["id"], "duplicate": True})
        finally:
            client.close()
    finally:
        await asyncio.to_thread(server.stop)
        if restarted is not None:
            await asyncio.to_thread(restarted.stop)


async def test_an_id_is_a_duplicate_within_the_window_and_new_after_it(redis_url):
    """The dedupe key outlives the window (replay finds the event through it for the
    whole retention): whether an id is a duplicate is read from when it was accepted."""
    keys = Keys()
    client = AsyncRedis.from_url(redis_url)
    enqueuer = Enqueuer(client, keys, dedupe_window=3600, retention=7200)
    enqueuer.start()
    try:
        first = await enqueuer.enqueue("evt_a", b"{}")
        assert first is not None
        assert await client.get(keys.dedupe("evt_a")) == first.encode()
        assert 3600 < await client.ttl(keys.dedupe("evt_a")) <= 7200
        assert await enqueuer.enqueue("evt_a", b"{}") is None

        # The same id, accepted longer ago than the window: it is an event again.
        await client.set(keys.dedupe("evt_b"), f"{int((time.time() - 3700) * 1000)}-0")
        again = await enqueuer.enqueue("evt_b", b"{}")
        assert again is not None
        assert await client.get(keys.dedupe("evt_b")) == again.encode()
        # A mark that is not an entry id (written by hand): refused, to be safe.
        await client.set(keys.dedupe("evt_c"), "seen")
        assert await enqueuer.enqueue("evt_c", b"{}") is None
        assert await client.xlen(keys.events) == 2
    finally:
        await enqueuer.stop()
        await client.aclose()


async def test_problems_are_capped_so_a_body_of_junk_gets_a_short_answer(intake, redis_client):
    event = make_event(**{f"j{i}": 0 for i in range(150)})
    error = assert_error(await send(intake, encode(event)), 400, "invalid_event")
    assert len(error["problems"]) == 100
    assert error["problems"][0]["message"].startswith("Object contains unknown field `j")


@pytest.fixture
async def everysec_redis(tmp_path: Path) -> AsyncIterator[AsyncRedis]:
    """An external-style Redis on ``appendfsync everysec``, new enough for WAITAOF."""
    server = RedisServer(tmp_path / "everysec", port=free_port(), appendfsync="everysec")
    client = AsyncRedis.from_url(server.start())
    try:
        version = tuple(int(p) for p in (await client.info("server"))["redis_version"].split("."))
        if version < (7, 2):
            pytest.skip(f"WAITAOF needs Redis >= 7.2; the embedded server is {version}")
        yield client
    finally:
        await client.aclose()
        server.stop()


async def test_waitaof_under_everysec_answers_within_one_fsync_not_two(everysec_redis):
    """With an external Redis on ``appendfsync everysec`` intake confirms each batch
    with WAITAOF, which waits for the next once-a-second fsync. A batch formed while
    another waits goes out at once and shares that fsync: each 202 takes one fsync
    interval at most, not two (and never the 503 of a WAITAOF timing out)."""
    enqueuer = Enqueuer(everysec_redis, Keys(), 60, wait_aof=True)
    enqueuer.start()

    async def wave(n: int) -> float:
        started = time.monotonic()
        ids = await asyncio.gather(*(enqueuer.enqueue(f"evt_w{n}_{i}", b"{}") for i in range(20)))
        assert all(ids), "every event stored"
        return time.monotonic() - started

    waves = []
    for n in range(6):  # a new wave every 0.3 s, while earlier ones wait for the fsync
        waves.append(asyncio.create_task(wave(n)))
        await asyncio.sleep(0.3)
    took = sorted(await asyncio.gather(*waves))
    await enqueuer.stop()
    assert took[-1] < 1.6, f"a 202 waited {took[-1]:.2f}s: two fsync intervals"
    assert took[len(took) // 2] < 1.1, took


async def test_a_write_redis_cannot_confirm_on_disk_is_not_acknowledged(everysec_redis):
    """WAITAOF refused (here: AOF switched off under the gateway's feet) fails the
    request with a RedisError, which the intake answers 503: never a 202 for an event
    that may not survive a crash."""
    enqueuer = Enqueuer(everysec_redis, Keys(), 60, wait_aof=True)
    enqueuer.start()
    assert await enqueuer.enqueue("evt_before", b"{}")
    await everysec_redis.config_set("appendonly", "no")
    with pytest.raises(redis.exceptions.RedisError, match="appendonly"):
        await enqueuer.enqueue("evt_after", b"{}")
    await enqueuer.stop()

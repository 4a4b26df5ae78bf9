"""The SSRF guard: what outbound HTTP may reach, checked on the address actually used."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from click.testing import CliRunner

from gateway import OutboundPolicy, OutboundRefused, PermanentError, outbound_error
from gateway.cli import main

from .conftest import Receiver, make_event, write_conf

REFUSED = {
    "127.0.0.1": "loopback",
    "127.8.9.10": "loopback",
    "::1": "loopback",
    "10.1.2.3": "private or reserved",
    "172.16.0.1": "private or reserved",
    "192.168.1.1": "private or reserved",
    "100.64.0.1": "private or reserved",  # CGNAT
    "fd12:3456::1": "private or reserved",
    "169.254.10.20": "link-local",
    "fe80::1": "link-local",
    "0.0.0.0": "unspecified",
    "::": "unspecified",
    "224.0.0.1": "multicast",
    "ff02::1": "multicast",
    "::ffff:127.0.0.1": "loopback",  # IPv4-mapped IPv6
    "2002:7f00:1::": "loopback",  # 6to4 wrapping 127.0.0.1
    "169.254.169.254": "cloud metadata",
    "fd00:ec2::254": "cloud metadata",
}


@pytest.mark.parametrize(("address", "kind"), sorted(REFUSED.items()))
def test_non_public_addresses_are_refused(address: str, kind: str):
    reason = OutboundPolicy().refusal(address)
    assert reason is not None and kind in reason


@pytest.mark.parametrize("address", ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"])
def test_public_addresses_pass(address: str):
    assert OutboundPolicy().refusal(address) is None


def test_allow_list_admits_private_networks_but_never_metadata():
    policy = OutboundPolicy(["10.0.0.0/8", "169.254.0.0/16", "::ffff:0:0/96"])
    assert policy.refusal("10.20.30.40") is None
    assert policy.refusal("169.254.1.1") is None
    assert "metadata" in (policy.refusal("169.254.169.254") or "")
    assert policy.refusal("192.168.0.1") is not None


def test_allow_list_entries_must_be_networks():
    with pytest.raises(ValueError, match="'intranet' is not a network"):
        OutboundPolicy(["intranet"])


async def _dead_reason(redis_client, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dead = redis_client.xrange("tocsin:dead")
        if dead:
            return dead[0][1][b"reason"].decode()
        await asyncio.sleep(0.05)
    raise AssertionError("no dead letter")


def _without_allow_list(conf) -> None:
    conf.write_text(conf.read_text().replace('allow = ["127.0.0.0/8"]', "allow = []"))


def test_loopback_webhook_url_is_refused_at_check_without_the_allow_list(
    tmp_path, redis_url, receiver: Receiver
):
    conf = write_conf(tmp_path, redis_url=redis_url, hook_url=receiver.url)
    _without_allow_list(conf)
    result = CliRunner().invoke(main, ["check", str(conf)])
    assert result.exit_code == 2
    assert (
        f"{conf}:16: channels.hook: url: refused to connect to 127.0.0.1: "
        "127.0.0.1 is a loopback address (allow it with [outbound] allow = [...])"
    ) in result.output


@pytest.mark.parametrize(
    "host",
    [
        "2130706433",  # 127.0.0.1 as one number
        "0251.0376.0251.0376",  # 169.254.169.254 in octal
        "127.1",  # 127.0.0.1, short form
        "169.254.169.254.",  # the metadata address, with the root's dot
        "0x7f.1",  # 127.0.0.1 in hex
    ],
)
def test_non_canonical_ipv4_host_is_refused_at_check(tmp_path, redis_url, host):
    """Forms an IPv4 parser maps onto an address the guard never saw written: refused by
    `tocsin check` in the words the worker (and aiohttp) would use at send time, even
    where the allow-list covers the address they stand for."""
    conf = write_conf(tmp_path, redis_url=redis_url, hook_url=f"http://{host}/hook")
    result = CliRunner().invoke(main, ["check", str(conf)])
    assert result.exit_code == 2
    lines = conf.read_text().splitlines()
    line = next(i for i, t in enumerate(lines, 1) if t.startswith(f'url = "http://{host}/'))
    assert (
        f"{conf}:{line}: channels.hook: url: invalid URL: {host} - is not a canonical IPv4 address"
    ) in result.output


async def test_name_resolving_to_loopback_is_refused(
    tmp_path, redis_url, receiver: Receiver, start_gateway, redis_client
):
    conf = write_conf(
        tmp_path, redis_url=redis_url, hook_url=receiver.url.replace("127.0.0.1", "localhost")
    )
    _without_allow_list(conf)
    gw = await start_gateway(conf)
    assert (await gw.post(make_event()))[0] == 202
    reason = await _dead_reason(redis_client)
    assert "refused to connect to localhost" in reason and "loopback" in reason
    assert receiver.received == []


def test_refusal_is_a_permanent_failure_with_its_reason():
    error = outbound_error(OutboundRefused("refused to connect to x: 10.0.0.1 is private"))
    assert isinstance(error, PermanentError)
    assert json.dumps(error.reason).count("10.0.0.1") == 1

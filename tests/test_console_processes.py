"""The console's process table with real processes: ``tocsin serve --processes 2`` (a
supervisor and two gateway children) and a third gateway on the same Redis running an
edited conf. The overview lists the three, each with its pid and conf hash, and warns
that they run two different confs; the admin API's ``/processes`` agrees."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp

from gateway.redis_server import free_port

from .conftest import write_conf
from .console_stack import login
from .procs import serving

TOKEN = "p" * 40
ADMIN = f"""
[admin]
tokens = [{{ name = "oncall", scope = "read", token = "{TOKEN}" }}]
"""


async def _processes(url: str) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as s, s.get(url, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        items: list[dict[str, Any]] = (await resp.json())["items"]
        return items


async def test_the_console_lists_every_process_and_warns_of_differing_confs(
    tmp_path: Path, redis_url: str
) -> None:
    conf_a = write_conf(tmp_path / "a", redis_url=redis_url, extra=ADMIN)
    conf_b = write_conf(tmp_path / "b", redis_url=redis_url, extra=ADMIN + "# edited\n")
    async with (
        serving(conf_a, free_port(), tmp_path, "a", "--processes", "2") as a,
        serving(conf_b, free_port(), tmp_path, "b", "--processes", "1") as b,
    ):
        api = a.url + "/admin/v1/processes"
        deadline = time.monotonic() + 20
        while len(found := await _processes(api)) < 3:
            assert time.monotonic() < deadline, found
            await asyncio.sleep(0.1)
        jar = aiohttp.CookieJar(unsafe=True)  # the console is at an IP address
        async with aiohttp.ClientSession(cookie_jar=jar) as s:
            await login(s, SimpleNamespace(console=b.url + "/console"), TOKEN)  # type: ignore[arg-type]
            async with s.get(b.url + "/console/") as resp:
                assert resp.status == 200
                page = await resp.text()
    rows = re.findall(r"<tr[^>]*><td>[^<]*</td><td>(\d+)</td><td><code>([0-9a-f]+)</code>", page)
    assert sorted(int(pid) for pid, _ in rows) == sorted(p["pid"] for p in found)
    assert len({pid for pid, _ in rows}) == 3
    hashes = [h for _, h in rows]
    assert len(set(hashes)) == 2 and sorted(hashes.count(h) for h in set(hashes)) == [1, 2]
    assert 'id="conf-mismatch"' in page and "run 2 different confs" in page

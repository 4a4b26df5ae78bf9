"""The console's overview at production size (issue #17: under 200 ms with 1,000,000
deliveries in history).

    .venv/bin/python -m bench.console                   # 1,000,000 deliveries, ~1 min
    .venv/bin/python -m bench.console --history 100000  # quicker

Processes (children, stopped by PID): a redis-server and ``tocsin serve --processes 1``
with ``bench.scrape``'s conf (8 json_hook channels, a scenario) and an ``[admin]`` token.
The history is written by ``bench.scrape.fill``: one record and one history entry per
delivery, plus dead letters (all within the last hour, so the page's dead-letter count
walks them) and parked retries.

Figures: ``GET /console/`` logged in, ``--pages`` sequential requests, p50/p99/max in ms
and the page's size, with the history empty and filled.
"""

from __future__ import annotations

import argparse
import asyncio
import http.cookiejar
import json
import re
import shutil
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

from gateway.redis_server import RedisServer, free_port

from .common import latency_summary_ms
from .procs import REPO, Procs, wait_http
from .scrape import conf_text, fill, redis_memory

TOKEN = "b" * 40
TARGET_MS = 200.0
ADMIN = f'\n[admin]\ntokens = [{{ name = "bench", scope = "read", token = "{TOKEN}" }}]\n'


def logged_in(url: str) -> urllib.request.OpenerDirector:
    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
    )
    with opener.open(url + "/console/login", timeout=10) as response:
        csrf = re.search(r'name="csrf" value="([^"]+)"', response.read().decode())
    assert csrf is not None
    form = urllib.parse.urlencode({"csrf": csrf.group(1), "token": TOKEN, "next": "/console/"})
    with opener.open(url + "/console/login", data=form.encode(), timeout=10) as response:
        assert response.url.endswith("/console/"), response.url
    return opener


def pages(
    opener: urllib.request.OpenerDirector, url: str, count: int
) -> tuple[dict[str, Any], int]:
    took = []
    size = 0
    for _ in range(count):
        started = time.perf_counter()
        with opener.open(url + "/console/", timeout=10) as response:
            body = response.read()
            assert response.status == 200
        took.append(time.perf_counter() - started)
        size = len(body)
    return latency_summary_ms(took), size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.console", description=__doc__)
    parser.add_argument("--history", type=int, default=1_000_000)
    parser.add_argument("--extra", type=int, default=10_000, help="dead letters and retries")
    parser.add_argument("--pages", type=int, default=50)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="tocsin-console-"))
    procs = Procs()
    server = RedisServer(tmp / "redis", port=free_port())
    result: dict[str, Any] = {"history": args.history, "extra": args.extra}
    try:
        redis_url = server.start()
        (tmp / "tocsin.toml").write_text(conf_text(redis_url) + ADMIN)
        port = free_port()
        log = tmp / "tocsin.log"
        gw = procs.start(
            "tocsin",
            [sys.executable, "-m", "gateway.cli", "serve", "--conf", str(tmp / "tocsin.toml"),
             "--port", str(port), "--processes", "1", "--log-level", "warning"],
            log=log,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/healthz", gw, log=log)
        time.sleep(2.5)  # a snapshot taken, a watch round done
        opener = logged_in(url)
        result["empty"], result["bytes_empty"] = pages(opener, url, args.pages)
        result["fill_s"] = round(asyncio.run(fill(redis_url, args.history, args.extra)), 1)
        result["redis_used_mb"] = round(asyncio.run(redis_memory(redis_url)) / 1e6, 1)
        time.sleep(2.5)  # snapshots of the filled data set
        result["filled"], result["bytes_filled"] = pages(opener, url, args.pages)
        procs.stop(gw)
    finally:
        procs.stop_all()
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    report(result)
    out = args.out or REPO / "bench" / "results" / f"console-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return 0 if result["filled"]["p99"] < TARGET_MS else 1


def report(r: dict[str, Any]) -> None:
    print(f"console overview, GET /console/ (target: under {TARGET_MS:.0f} ms)")
    for state in ("empty", "filled"):
        s = r[state]
        label = "empty history" if state == "empty" else f"{r['history']:,} deliveries"
        print(
            f"  {label:>22}: p50 {s['p50']:.1f} ms, p99 {s['p99']:.1f} ms, "
            f"max {s['max']:.1f} ms, {r['bytes_' + state]:,} bytes"
        )
    print(
        f"  fill {r['fill_s']} s, Redis used {r['redis_used_mb']} MB, {r['extra']:,} dead letters"
    )


if __name__ == "__main__":
    raise SystemExit(main())

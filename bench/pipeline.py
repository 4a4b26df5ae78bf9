"""The whole pipeline at once (intake, router, workers, sink), per process layout.

``python -m bench`` measures intake and delivery one after the other; this runs them
together, as production does, to choose how ``tocsin serve`` spreads its roles over
processes (docs/deployment.md has the figures):

- ``single``  ``tocsin serve --processes 1``: one process, every role
- ``all``     ``tocsin serve --processes N``: N processes, each with every role
- ``split``   ``tocsin serve --processes N --spread split``: 1 intake, N-1 router+worker
- ``roles``   two ``--processes 1`` commands: ``--role intake`` and ``--role router
  --role worker`` (what a user had to find out before the supervisor)

Per layout and repetition: the closed-loop load generator posts N events over C
connections while the gateway routes and delivers them to the sink. *accepted/s* =
N / (last answer - first request); *delivered/s* = N / (sink's last receipt - first
request). The sink must end with N distinct event ids.

    .venv/bin/python -m bench.pipeline -n 20000 --reps 3
    .venv/bin/python -m bench.pipeline -n 20000 --reps 3 --appendfsync everysec --wait-aof never
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from typing import Any

from gateway.redis_server import free_port

from .args import parse_args
from .common import HOST
from .fullpipe import write_requests
from .run import READY_LINE, Bench

LAYOUTS = ("single", "all", "split", "roles")


def layout_commands(layout: str, processes: int) -> list[list[str]]:
    """``tocsin serve`` arguments of each command a layout starts (the first has the port)."""
    if layout == "single":
        return [["--processes", "1"]]
    if layout == "all":
        return [["--processes", str(processes)]]
    if layout == "split":
        return [["--processes", str(processes), "--spread", "split"]]
    if layout == "roles":
        return [
            ["--processes", "1", "--role", "intake"],
            ["--processes", "1", "--role", "router", "--role", "worker"],
        ]
    raise ValueError(layout)


class Pipeline(Bench):
    #: ``redis.wait_aof`` in the generated conf (``None``: Tocsin's default).
    wait_aof: str | None = None

    def write_conf(self, redis_url: str) -> None:
        super().write_conf(redis_url)
        if self.wait_aof is not None:
            text = self.conf.read_text()
            self.conf.write_text(
                text.replace("[redis]\n", f'[redis]\nwait_aof = "{self.wait_aof}"\n')
            )

    def run_layout(self, layout: str, rep: int, processes: int) -> dict[str, Any]:
        self.compact_aof()
        self.sink_reset()
        port = free_port()
        started = []
        for i, extra in enumerate(layout_commands(layout, processes)):
            log = self.tmp / f"{layout}-{rep}-{i}.log"
            argv = ["serve", "--conf", str(self.conf), "--log-level", "info", *extra]
            if "--role" not in extra or "intake" in extra:
                argv += ["--port", str(port)]
            started.append((self.procs.python(f"{layout}-{i}", "gateway.cli", *argv, log=log), log))
        expected = processes if layout in ("all", "split") else 1
        for proc, log in started:
            deadline = time.monotonic() + 30
            while log.read_text(errors="replace").count(READY_LINE) < expected:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{layout}: not ready\n{log.read_text()[-2000:]}")
                time.sleep(0.05)
        url = f"http://{HOST}:{port}/v1/events"
        prefix = f"p{rep}{layout}_"
        if self.wrk_seconds:
            load = self.wrk(url, prefix)
        else:
            args = ("-n", str(self.n), "-c", str(self.args.concurrency), "--id-prefix", prefix)
            load = self.loadgen(url, "closed", *args)
        deadline = time.monotonic() + self.load_timeout
        while (stats := self.sink_stats())["unique_event_ids"] < load["accepted"]:
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        for proc, _ in started:
            self.procs.stop(proc, timeout=30.0)
        delivered = stats["unique_event_ids"]
        return {
            "layout": layout,
            "accepted": load["accepted"],
            "accepted_per_s": load["rate"],
            "delivered": delivered,
            "delivered_per_s": round(delivered / (stats["last"] - load["t_start"]), 1),
            "duplicates": stats["duplicate_webhook_ids"],
            # wrk does not count the requests in flight when it stops (at most C).
            "ok": load["accepted"] <= delivered <= load["accepted"] + self.args.concurrency
            and not stats["duplicate_webhook_ids"],
        }

    #: ``--wrk SECONDS``: load with wrk (C, a fraction of the Python generator's CPU).
    wrk_seconds: float = 0.0

    def wrk(self, url: str, prefix: str) -> dict[str, Any]:
        """wrk -t1 -c C for ``wrk_seconds``, each request a distinct pre-signed event."""
        raw = self.tmp / "wrk-requests.bin"
        write_requests(self, raw, prefix, self.n)
        script = self.tmp / "wrk.lua"
        script.write_text(WRK_SCRIPT.replace("REQUESTS", str(raw)))
        argv = ["wrk", "-t1", f"-c{self.args.concurrency}", f"-d{self.wrk_seconds:g}s"]
        started = time.time()
        done = subprocess.run(
            [*argv, "-s", str(script), url], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"wrk exited with {done.returncode}: {done.stdout}{done.stderr}")
        found = re.search(r"(\d+) requests in ([\d.]+)s", done.stdout)
        if found is None or "Non-2xx" in done.stdout or int(found.group(1)) > self.n:
            raise RuntimeError(
                f"wrk: refused answers or events reused (-n too small):\n{done.stdout}"
            )
        accepted, seconds = int(found.group(1)), float(found.group(2))
        return {"accepted": accepted, "rate": round(accepted / seconds, 1), "t_start": started}


#: Sends each request of the file once, in order (they are NUL-separated).
WRK_SCRIPT = """
local requests, i = {}, 0
init = function(args)
  local data = io.open("REQUESTS", "rb"):read("*a")
  for one in string.gmatch(data, "([^%z]+)%z") do requests[#requests + 1] = one end
end
request = function()
  i = i + 1
  return requests[i] or requests[#requests]
end
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__)
    parser.add_argument("--layouts", default=",".join(LAYOUTS), help="comma-separated")
    parser.add_argument("--processes", type=int, default=2, help="N for all and split")
    parser.add_argument(
        "--wrk",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="load with wrk for that long instead of bench.loadgen (-n: events prepared)",
    )
    parser.add_argument(
        "--wait-aof",
        default=None,
        help="redis.wait_aof in the conf: 'never' with --appendfsync everysec is a Redis "
        "without WAITAOF (< 7.2); under everysec WAITAOF holds each batch up to a second",
    )
    known, rest = parser.parse_known_args(argv)
    args = parse_args(rest)
    bench = Pipeline(args)
    bench.wait_aof = known.wait_aof
    bench.wrk_seconds = known.wrk
    runs: list[dict[str, Any]] = []
    try:
        bench.start_infra()
        for rep in range(args.reps):
            for layout in known.layouts.split(","):
                run = bench.run_layout(layout, rep, known.processes)
                print(json.dumps(run), file=sys.stderr)
                runs.append(run)
    finally:
        bench.stop_infra()
    head = f"{'layout':8} {'accepted/s':>22} {'delivered/s':>22}"
    print(f"{head}  (median [min-max], N={args.events})")
    for layout in known.layouts.split(","):
        mine = [r for r in runs if r["layout"] == layout]
        cells = []
        for key in ("accepted_per_s", "delivered_per_s"):
            values = [r[key] for r in mine]
            cells.append(f"{statistics.median(values):7.0f} [{min(values):.0f}-{max(values):.0f}]")
        print(f"{layout:8} {cells[0]:>22} {cells[1]:>22}")
    return 0 if all(r["ok"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Email at SMTP speed (issue #15): customer emails through the whole pipeline, beside the
aiosmtplib ceiling, in the same run, to the same SMTP sink.

    .venv/bin/python -m bench.mail             # N=3000
    .venv/bin/python -m bench.mail --quick     # N=1000
    .venv/bin/python -m bench.mail -n 5000 --reps 3

Processes (children, stopped by PID; every loop bounded by a count and a timeout):

- ``sink``: aiosmtpd on 127.0.0.1 accepting every message (kept: only its size, arrival
  time and Message-ID), with ``GET /stats`` and ``POST /reset`` over HTTP;
- ``ceiling``: aiosmtplib, ``--pool-size`` connections (8), sending N copies of the very
  message Tocsin sends for the bench event (the shipped ``payment_receipt``, fr, [brand]
  of the shipped conf), built *before* the timed loop with a unique Message-ID each: the
  transport alone, no rendering;
- Tocsin: ``tocsin serve --processes 1``, every role in one process (its CPU is what
  the per-email figures divide), an SMTP ``customer_email`` channel (``pool_size`` = the ceiling's
  connections) and one rule ``payment.succeeded`` -> customer; ``bench.loadgen closed``
  posts N signed events over 64 connections.

Figures: *emails/s* = N / (sink's last arrival - first request) for Tocsin, and
N / (last arrival - first send) for the ceiling; *CPU µs/email* of the sending process.
The sink must end with N distinct Message-IDs for each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import signal
import sys
import tempfile
import textwrap
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from .common import HOST, box_busy_seconds, emit_result, make_event, run_loop
from .procs import REPO, Procs, cpu_seconds, http_json, wait_http

SHIPPED_CONF = REPO / "conf" / "tocsin.toml"
CHANNEL = "customer_email"
FROM = "paiements@example.com"
_MESSAGE_ID = re.compile(rb"^Message-ID: [^\r\n]*", re.MULTILINE)


# -- the SMTP sink -------------------------------------------------------------------------


class _Counter:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self.bytes = 0
        self.first: float | None = None
        self.last: float | None = None
        self.ids: set[bytes] = set()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        now = time.time()
        data: bytes = envelope.original_content or b""
        self.count += 1
        self.bytes += len(data)
        self.first = self.first or now
        self.last = now
        found = _MESSAGE_ID.search(data)
        if found is not None:
            self.ids.add(found.group())
        return "250 OK"

    def stats(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "distinct": len(self.ids),
            "avg_bytes": round(self.bytes / self.count) if self.count else 0,
            "first": self.first,
            "last": self.last,
        }


async def _sink(port: int, stats_port: int) -> None:
    from aiohttp import web  # noqa: PLC0415 - only the sink process needs these
    from aiosmtpd.smtp import SMTP  # noqa: PLC0415

    counter = _Counter()
    loop = asyncio.get_running_loop()
    # hostname given: aiosmtpd would otherwise resolve this machine's name per connection.
    server = await loop.create_server(
        lambda: SMTP(counter, hostname="sink.bench", auth_require_tls=False),
        HOST,
        port,
        backlog=1024,
    )

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(counter.stats())

    async def reset(request: web.Request) -> web.Response:
        counter.reset()
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/stats", stats)
    app.router.add_post("/reset", reset)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, HOST, stats_port).start()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    server.close()
    await runner.cleanup()


# -- the ceiling: aiosmtplib alone ---------------------------------------------------------


async def _ceiling(port: int, n: int, conc: int, message: bytes, recipient: str) -> dict:
    import aiosmtplib  # noqa: PLC0415

    bodies = [
        _MESSAGE_ID.sub(f"Message-ID: <ceiling{i:08d}@example.com>".encode(), message, count=1)
        for i in range(n)
    ]
    connections = [aiosmtplib.SMTP(hostname=HOST, port=port) for _ in range(conc)]
    await asyncio.gather(*(smtp.connect() for smtp in connections))
    next_index = 0
    refused = 0

    async def worker(smtp: aiosmtplib.SMTP) -> None:
        nonlocal next_index, refused
        while next_index < n:
            body = bodies[next_index]
            next_index += 1
            errors, _ = await smtp.sendmail(FROM, [recipient], body)
            refused += len(errors)

    cpu0, box0 = time.process_time(), box_busy_seconds()
    wall_start = time.time()
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(smtp) for smtp in connections))
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    box = box_busy_seconds() - box0
    await asyncio.gather(*(smtp.quit() for smtp in connections))
    return {
        "n": n,
        "connections": conc,
        "refused": refused,
        "t_start": wall_start,
        "elapsed_s": round(elapsed, 4),
        "rate": round(n / elapsed, 1),
        "cpu_s": round(cpu, 3),
        "box_busy_s": round(box, 3),
    }


# -- the orchestrator ----------------------------------------------------------------------


def _brand_section() -> str:
    """The shipped conf's [brand] tables, as written there: the receipt shows them."""
    lines, inside = [], False
    for line in SHIPPED_CONF.read_text().splitlines():
        if line.startswith("["):
            inside = line.startswith("[brand")
        elif line.startswith("# --"):
            inside = False
        if inside:
            lines.append(line)
    return "\n".join(lines)


class MailBench:
    def __init__(self, args: argparse.Namespace) -> None:
        from gateway.redis_server import free_port  # noqa: PLC0415
        from gateway.signing import generate_secret  # noqa: PLC0415

        self.args = args
        self.n: int = args.events
        self.procs = Procs()
        self.tmp = Path(tempfile.mkdtemp(prefix="tocsin-bench-mail-"))
        self.secret = generate_secret()
        self.env = {"BENCH_INTAKE_SECRET": self.secret}
        self.smtp_port, self.stats_port = free_port(), free_port()
        self.conf = self.tmp / "tocsin.toml"
        self.timeout = max(60.0, self.n / 50)
        self.redis_server: Any = None
        self.sink: Any = None

    def stats_url(self, path: str) -> str:
        return f"http://{HOST}:{self.stats_port}{path}"

    def start(self) -> None:
        from gateway.redis_server import RedisServer, free_port  # noqa: PLC0415

        self.redis_server = RedisServer(self.tmp / "redis", port=free_port())
        redis_url = self.redis_server.start()
        sink_args = ["sink", "--port", str(self.smtp_port), "--stats-port", str(self.stats_port)]
        log = self.tmp / "sink.log"
        self.sink = self.procs.python("smtp sink", "bench.mail", *sink_args, log=log)
        wait_http(self.stats_url("/stats"), self.sink, log=log)
        self.conf.write_text(
            textwrap.dedent(
                f"""\
                # Generated by python -m bench.mail
                [gateway]
                data_dir = "var"
                templates = "{REPO / "conf" / "templates"}"

                [intake]
                host = "{HOST}"
                secrets = ["{self.secret}"]

                [redis]
                url = "{redis_url}"

                [worker]
                shutdown_grace = "5s"

                [channels.{CHANNEL}]
                type = "email"
                backend = "smtp"
                from_address = "{FROM}"
                from_name = "ACME Paiements"
                host = "{HOST}"
                port = {self.smtp_port}
                security = "none"
                pool_size = {self.args.pool_size}

                [rules.receipt]
                events = ["payment.succeeded"]
                [[rules.receipt.actions]]
                channel = "{CHANNEL}"
                template = "payment_receipt"
                to = ["customer"]

                """
            )
            + _brand_section()
            + "\n"
        )

    def sample_message(self) -> tuple[bytes, str]:
        """The bytes Tocsin's channel sends for the bench event, and the recipient."""
        from email.policy import SMTP  # noqa: PLC0415

        from gateway_email import Email  # noqa: PLC0415

        from gateway.conf import load_conf  # noqa: PLC0415
        from gateway.event import decode_event, encode_event  # noqa: PLC0415
        from gateway.plan import build_plan  # noqa: PLC0415
        from gateway.plugins import load_registry  # noqa: PLC0415
        from gateway.render import make_delivery  # noqa: PLC0415

        plan = build_plan(load_conf(self.conf), load_registry())
        event = decode_event(json.dumps(make_event("evt_sample_00000001", time.time(), 1)).encode())
        raw = encode_event(event)
        delivery = make_delivery(event, raw, "payment_receipt", CHANNEL, None)
        channel = plan.channels[CHANNEL]
        assert isinstance(channel, Email)
        # What send writes, byte for byte (tests/test_email_bytes.py), from the object.
        data = channel.message(delivery).as_bytes(policy=SMTP)
        assert event.customer is not None and event.customer.email is not None
        return data, event.customer.email

    def wait_sink(self, count: int, proc: Any = None) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        stats: dict[str, Any] = http_json(self.stats_url("/stats"))[1]
        while stats["count"] < count and time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                break
            time.sleep(0.05)
            stats = http_json(self.stats_url("/stats"))[1]
        time.sleep(0.5)  # a duplicate would arrive now
        return http_json(self.stats_url("/stats"))[1]  # type: ignore[no-any-return]

    def phase_ceiling(self) -> dict[str, Any]:
        message, recipient = self.sample_message()
        path = self.tmp / "message.eml"
        path.write_bytes(message)
        http_json(self.stats_url("/reset"), method="POST")
        sink0 = cpu_seconds(self.sink.pid)
        argv = ["ceiling", "--port", str(self.smtp_port), "-n", str(self.n)]
        argv += ["-c", str(self.args.pool_size), "--message", str(path), "--to", recipient]
        proc = self.procs.python("ceiling", "bench.mail", *argv, capture=True)
        result = self.procs.result(proc, self.timeout)
        stats = self.wait_sink(self.n)
        sink_cpu = _delta(sink0, cpu_seconds(self.sink.pid))
        rate = _rate(self.n, stats, result["t_start"])
        return {
            "emails_per_s": rate,
            "client_rate": result["rate"],
            "cpu_us_per_email": _per(result["cpu_s"], self.n),
            "sink_cpu_us_per_email": _per(sink_cpu, self.n),
            "message_bytes": len(message),
            "sink": stats,
            "ok": stats["distinct"] == self.n and result["refused"] == 0,
        }

    def phase_tocsin(self, rep: int) -> dict[str, Any]:
        from gateway.redis_server import free_port  # noqa: PLC0415

        http_json(self.stats_url("/reset"), method="POST")
        port = free_port()
        log = self.tmp / f"gateway-{rep}.log"
        argv = ["serve", "--conf", str(self.conf), "--port", str(port), "--log-level", "warning"]
        argv += ["--processes", "1"]  # one process: its CPU is what the figures divide
        proc = self.procs.python(f"gateway {rep}", "gateway.cli", *argv, log=log)
        try:
            wait_http(f"http://{HOST}:{port}/readyz", proc, log=log)
            spy = self.profiler(proc, f"gateway-{rep}")
            redis_pid = self.redis_server.process.pid
            cpu0, sink0 = cpu_seconds(proc.pid), cpu_seconds(self.sink.pid)
            redis0 = cpu_seconds(redis_pid)
            box0, window0 = box_busy_seconds(), time.monotonic()
            posted = self.loadgen(port, f"evt_mail{rep}_")
            stats = self.wait_sink(self.n, proc)
            if spy is not None:
                self.procs.stop(spy, timeout=30.0, sig=signal.SIGINT)  # SIGINT: write, exit
            cpu = _delta(cpu0, cpu_seconds(proc.pid))
            sink_cpu = _delta(sink0, cpu_seconds(self.sink.pid))
            redis_cpu = _delta(redis0, cpu_seconds(redis_pid))
            box, window = box_busy_seconds() - box0, time.monotonic() - window0
        finally:
            self.procs.stop(proc)
        ours = (cpu or 0) + (sink_cpu or 0) + (redis_cpu or 0) + posted["cpu_s"]
        return {
            "emails_per_s": _rate(self.n, stats, posted["t_start"]),
            "intake_per_s": posted["rate"],
            "accepted": posted["accepted"],
            # Every answer the intake gave (a status, or the client error): what was
            # refused, when not all were accepted.
            "answers": posted["statuses"],
            # Why, when something was refused: the gateway's own words.
            "gateway_warnings": [
                line
                for line in (log.read_text(errors="replace").splitlines() if log.exists() else [])
                if " WARNING " in line or " ERROR " in line
            ][-5:],
            "cpu_us_per_email": _per(cpu, self.n),
            "sink_cpu_us_per_email": _per(sink_cpu, self.n),
            "redis_cpu_us_per_email": _per(redis_cpu, self.n),
            "not_ours_cores": round(max(0.0, box - ours) / window, 2),
            "sink": stats,
            "ok": posted["accepted"] == self.n and stats["distinct"] == self.n,
        }

    def profiler(self, proc: Any, name: str) -> Any:
        """``py-spy record`` on ``proc`` (``--profile DIR``): collapsed stacks, DIR/name.txt."""
        if self.args.profile is None:
            return None
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.args.profile.mkdir(parents=True, exist_ok=True)
        out = self.args.profile.resolve() / f"{name}.txt"
        argv = [py_spy, "record", "--pid", str(proc.pid), "--rate", "250", "--format", "raw"]
        spy = self.procs.start(f"py-spy {name}", [*argv, "--output", str(out)])
        time.sleep(0.3)  # attached before the load starts
        return spy

    def phase_drain(self, rep: int) -> dict[str, Any]:
        """Email alone: N events queued by ``--role intake`` first, then ``--role router
        --role worker`` drains them; start = the time its log says its roles run."""
        from gateway.redis_server import free_port  # noqa: PLC0415

        http_json(self.stats_url("/reset"), method="POST")
        port = free_port()
        log = self.tmp / f"intake-{rep}.log"
        argv = ["serve", "--conf", str(self.conf), "--log-level", "info", "--processes", "1"]
        proc = self.procs.python(
            "intake", "gateway.cli", *argv, "--port", str(port), "--role", "intake", log=log
        )
        try:
            wait_http(f"http://{HOST}:{port}/readyz", proc, log=log)
            posted = self.loadgen(port, f"evt_drain{rep}_")
        finally:
            self.procs.stop(proc)
        log = self.tmp / f"drain-{rep}.log"
        proc = self.procs.python(
            "drain",
            "gateway.cli",
            *argv,
            "--port",
            str(free_port()),
            "--role",
            "router",
            "--role",
            "worker",
            log=log,
        )
        try:
            ready = _ready_time(proc, log)
            cpu0 = cpu_seconds(proc.pid)
            stats = self.wait_sink(self.n, proc)
            cpu = _delta(cpu0, cpu_seconds(proc.pid))
        finally:
            self.procs.stop(proc)
        return {
            "emails_per_s": _rate(self.n, stats, ready),
            "cpu_us_per_email": _per(cpu, self.n),
            "sink": stats,
            "ok": posted["accepted"] == self.n and stats["distinct"] == self.n,
        }

    def loadgen(self, port: int, prefix: str) -> dict[str, Any]:
        load = self.procs.python(
            "loadgen",
            "bench.loadgen",
            "closed",
            "-n",
            str(self.n),
            "-c",
            str(self.args.concurrency),
            "--url",
            f"http://{HOST}:{port}/v1/events",
            "--id-prefix",
            prefix,
            "--max-seconds",
            str(self.timeout),
            env=self.env,
            log=self.tmp / "loadgen.log",
            capture=True,
        )
        return self.procs.result(load, self.timeout + 30)

    def stop(self) -> None:
        self.procs.stop_all()
        if self.redis_server is not None:
            self.redis_server.stop()
        if self.args.keep:
            print(f"kept {self.tmp}", file=sys.stderr)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def _ready_time(proc: Any, log: Path, timeout: float = 20.0) -> float:
    """When ``tocsin serve`` logged that its roles run (its own timestamp)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"tocsin serve exited with {proc.returncode}: see {log}")
        for line in log.read_text(errors="replace").splitlines() if log.exists() else []:
            if "running roles:" in line:
                return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        time.sleep(0.005)
    raise RuntimeError(f"tocsin serve not running within {timeout:.0f}s: see {log}")


def _delta(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


def _per(cpu_s: float | None, n: int) -> float | None:
    return None if cpu_s is None else round(cpu_s / n * 1e6)


def _rate(n: int, stats: dict[str, Any], start: float) -> float | None:
    last = stats.get("last")
    if not last or stats["count"] < n:
        return None
    return round(n / (last - start), 1)


def _ratio(ours: float | None, theirs: float | None) -> float | None:
    return round(ours / theirs, 2) if ours and theirs else None


def _table(result: dict[str, Any]) -> str:
    ceiling, tocsin, drain = result["ceiling"], result["tocsin"], result["drain"]
    rows = [
        ("", "Tocsin (1 process)", "drain (router+worker)", "aiosmtplib ceiling"),
        ("emails/s", tocsin["emails_per_s"], drain["emails_per_s"], ceiling["emails_per_s"]),
        (
            "sender CPU µs/email",
            tocsin["cpu_us_per_email"],
            drain["cpu_us_per_email"],
            ceiling["cpu_us_per_email"],
        ),
        (
            "sink CPU µs/email",
            tocsin["sink_cpu_us_per_email"],
            "",
            ceiling["sink_cpu_us_per_email"],
        ),
        ("intake events/s (same run)", tocsin["intake_per_s"], "", ""),
        ("all delivered once", tocsin["ok"], drain["ok"], ceiling["ok"]),
    ]
    out = [f"{a:<28} {b!s:>19} {c!s:>22} {d!s:>19}" for a, b, c, d in rows]
    out.append(
        f"ratio Tocsin / ceiling: {result['ratio']} end to end, {result['drain_ratio']} "
        f"drain, {result['cpu_ratio']} CPU (target >= 0.8 with --processes auto, not "
        "implemented yet)"
    )
    out.append(
        f"N={result['n']}, message {ceiling['message_bytes']} bytes, "
        f"{result['pool_size']} SMTP connections, busy elsewhere: "
        f"{tocsin['not_ours_cores']} cores"
    )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.mail", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    s = sub.add_parser("sink", help="(child) the SMTP sink")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--stats-port", type=int, required=True)
    c = sub.add_parser("ceiling", help="(child) aiosmtplib alone")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("-n", type=int, required=True)
    c.add_argument("-c", type=int, default=8)
    c.add_argument("--message", type=Path, required=True)
    c.add_argument("--to", required=True)
    c.add_argument("--max-seconds", type=float, default=300.0)
    parser.add_argument("-n", "--events", type=int, default=3000)
    parser.add_argument("--quick", action="store_true", help="N=1000")
    parser.add_argument("--reps", type=int, default=1, help="Tocsin runs; the median is shown")
    parser.add_argument("--pool-size", type=int, default=8, help="SMTP connections, both sides")
    parser.add_argument("--concurrency", type=int, default=64, help="load generator connections")
    parser.add_argument("--out", type=Path, help="JSON result (default bench/results/)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--profile", type=Path, help="py-spy the gateway; stacks in this folder")
    args = parser.parse_args(argv)
    if args.command == "sink":
        run_loop(_sink(args.port, args.stats_port))
        return 0
    if args.command == "ceiling":
        work = _ceiling(args.port, args.n, args.c, args.message.read_bytes(), args.to)
        emit_result(run_loop(asyncio.wait_for(work, args.max_seconds)))
        return 0
    if args.quick:
        args.events = 1000
    if min(args.events, args.reps, args.pool_size, args.concurrency) < 1:
        parser.error("-n, --reps, --pool-size and --concurrency must be positive")
    bench = MailBench(args)
    try:
        bench.start()
        ceiling = bench.phase_ceiling()
        runs = [bench.phase_tocsin(rep) for rep in range(args.reps)]
        drains = [bench.phase_drain(rep) for rep in range(args.reps)]
    finally:
        bench.stop()
    runs.sort(key=lambda r: r["emails_per_s"] or 0)
    tocsin = runs[len(runs) // 2]
    drains.sort(key=lambda r: r["emails_per_s"] or 0)
    drain = drains[len(drains) // 2]
    ratio = _ratio(tocsin["emails_per_s"], ceiling["emails_per_s"])
    result = {
        "n": args.events,
        "pool_size": args.pool_size,
        "ceiling": ceiling,
        "tocsin": tocsin,
        "tocsin_runs": runs,
        "drain": drain,
        "drain_runs": drains,
        "ratio": ratio,
        "drain_ratio": _ratio(drain["emails_per_s"], ceiling["emails_per_s"]),
        "cpu_ratio": _ratio(ceiling["cpu_us_per_email"], tocsin["cpu_us_per_email"]),
    }
    print(_table(result))
    out = args.out or REPO / "bench" / "results" / f"mail-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"written to {out}")
    return 0 if ceiling["ok"] and all(r["ok"] for r in runs + drains) else 1


if __name__ == "__main__":
    sys.exit(main())

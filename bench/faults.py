"""The fault phase (``--faults``): recovery under a paced load, next to a fault-free drain.

1. ``tocsin serve`` (all roles) under ``bench.loadgen retrying`` at R events/s for D
   seconds: a producer that posts each event again until it is acknowledged.
2. Meanwhile: the gateway is SIGKILLed at 0.1 D and at 0.25 D, and started again on the
   same port each time (a new consumer: the dead one's unsettled jobs wait for the
   visibility timeout, then are taken over and sent again); redis-server is SIGKILLed
   ``REDIS_DOWN`` seconds before D and started again at D (AOF, fsync always): the
   last fault. The producers keep retrying what they could not post meanwhile.
3. *backlog* = events acknowledged by the end minus those the sink had at the last
   fault: mostly what the producers held back while Redis was down, plus what was
   accepted and not yet delivered. *drain* = last fault -> the sink has every
   acknowledged event: reconnecting, taking the held-back posts, delivering.
4. The same backlog without faults: that many events posted at once (closed loop, C=64)
   to a running gateway; first post -> the sink has them all.

Figures: lost (acknowledged, never delivered: must be 0), webhooks sent twice (the
in-flight jobs of each killed process, same ``webhook-id``), drain vs fault-free drain
(target: at most 2x). The fault conf's send timeout is 2 s, so the visibility timeout is
7 s: with D >= 14 s the killed processes' jobs are taken over before the last fault.
With a shorter load they are taken over after it, and the phase waits for that before
it counts what is left in Redis (see ``_wait_settled``).
"""

from __future__ import annotations

import argparse
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis

from gateway.redis_server import free_port
from gateway.worker import RECLAIM_INTERVAL

from .common import HOST
from .procs import http_json, wait_http

if TYPE_CHECKING:
    from .run import Bench

#: How long redis-server stays down.
REDIS_DOWN = 2.0
#: When the gateway is SIGKILLed (and started again), as fractions of the load's duration.
KILLS = (0.1, 0.25)
#: The send timeout in the fault conf (visibility timeout: this + 5 s).
SEND_TIMEOUT = "2s"
#: The worker's default visibility timeout for that conf: the send timeout + 5 s.
VISIBILITY = float(SEND_TIMEOUT.removesuffix("s")) + 5.0
#: After the visibility timeout, how long a takeover may take: the reclaim loop's
#: interval, its reconnect backoff after the Redis outage (attempts at 0.05 s doubling:
#: up to 3.2 s after a 2 s outage) and the send itself.
TAKEOVER_SLACK = RECLAIM_INTERVAL + 5.0
DRAIN_TARGET = 2.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--faults", action="store_true", help="add the fault phase (bench/faults.py, ~30 s)"
    )
    parser.add_argument("--faults-only", action="store_true", help="run only the fault phase")
    parser.add_argument("--fault-rate", type=float, default=500.0, help="fault phase events/s")
    parser.add_argument(
        "--fault-seconds", type=float, default=16.0, help="fault phase load duration (>= 14)"
    )


def _conf(bench: Bench) -> Path:
    text = bench.conf.read_text().replace('timeout = "10s"', f'timeout = "{SEND_TIMEOUT}"', 1)
    assert SEND_TIMEOUT in text, "the bench conf's channel timeout moved"
    path = bench.tmp / "faults.toml"
    path.write_text(text)
    return path


def _serve(bench: Bench, conf: Path, name: str, port: int, *roles: str) -> tuple[Any, Path]:
    log = bench.tmp / f"{name}.log"
    argv = ["serve", "--conf", str(conf), "--port", str(port), "--log-level", "info"]
    argv += ["--processes", bench.args.processes]
    for role in roles:
        argv += ["--role", role]
    return bench.procs.python(name, "gateway.cli", *argv, log=log), log


def _sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


def _wait_ids(bench: Bench, count: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    stats = bench.sink_stats()
    while stats["unique_event_ids"] < count and time.monotonic() < deadline:
        time.sleep(0.02)
        stats = bench.sink_stats()
    return stats


def _redis_back(bench: Bench, timeout: float = 30.0) -> None:
    """The orchestrator's own client reconnects (its pooled connection died)."""
    assert bench.redis is not None
    deadline = time.monotonic() + timeout
    while True:
        try:
            bench.redis.ping()
            return
        except (redis.RedisError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _left(bench: Bench) -> dict[str, int]:
    """What is still in Redis: unrouted events, delivery jobs, retries, dead letters."""
    assert bench.redis is not None
    from .run import CHANNEL, PREFIX  # noqa: PLC0415 - run imports this module

    return {
        "events": bench.unrouted(),
        "deliveries": bench.redis.xlen(f"{PREFIX}:deliveries:{CHANNEL}"),
        "retries": bench.redis.zcard(f"{PREFIX}:retries"),
        "dead": bench.redis.xlen(f"{PREFIX}:dead"),
    }


def _wait_settled(bench: Bench, deadline: float) -> float:
    """Wait until no event waits for routing and no delivery job for settling, or until
    ``deadline`` (monotonic); returns how long that took.

    Every acknowledged event has reached the sink by now, but a job a SIGKILLed gateway
    had sent and not yet settled (its batched acknowledgement never written) stays
    pending under the dead consumer's name until a live worker takes it over, once it
    has been idle for the visibility timeout: it is then sent again (same webhook-id,
    counted as sent twice) and settled. With a short load that takeover comes after the
    drain, so counting at once would report such a job as left behind. The deadline is
    the takeover's own bound, so a job that is really stuck is still counted."""
    start = time.monotonic()
    while time.monotonic() < deadline:
        left = _left(bench)
        if not left["events"] and not left["deliveries"]:
            break
        time.sleep(0.1)
    return round(time.monotonic() - start, 3)


def phase_faults(bench: Bench, rate: float, seconds: float) -> dict[str, Any]:
    assert bench.redis_server is not None and bench.redis is not None
    conf = _conf(bench)
    bench.sink_reset()
    port = free_port()
    url = f"http://{HOST}:{port}"
    gateway, log = _serve(bench, conf, "faults-gateway-0", port)
    wait_http(f"{url}/readyz", gateway, log=log)
    logs = [log]
    acks_file = bench.tmp / "fault-acks.txt"
    load = bench.procs.python(
        "loadgen-faults",
        "bench.loadgen",
        "retrying",
        *("--url", f"{url}/v1/events", "--rate", str(rate), "--duration", str(seconds)),
        *("--id-prefix", "fault_", "--max-seconds", str(bench.load_timeout)),
        *("--acks", str(acks_file)),
        env=bench.env,
        log=bench.tmp / "loadgen-faults.log",
        capture=True,
    )
    t0 = time.monotonic()
    timeline: list[tuple[str, float]] = []
    for k, at in enumerate(KILLS, start=1):
        _sleep_until(t0 + at * seconds)
        bench.procs.stop(gateway, sig=signal.SIGKILL)
        killed = time.monotonic()
        timeline.append(("gateway SIGKILL", round(killed - t0, 3)))
        gateway, log = _serve(bench, conf, f"faults-gateway-{k}", port)
        logs.append(log)
    _sleep_until(t0 + seconds - REDIS_DOWN)
    bench.redis_server.kill()
    timeline.append(("redis SIGKILL", round(time.monotonic() - t0, 3)))
    time.sleep(REDIS_DOWN)
    bench.redis_server.start(timeout=30)
    last_fault = time.time()
    timeline.append(("redis started", round(time.monotonic() - t0, 3)))
    at_last_fault = bench.sink_stats()["unique_event_ids"]
    produced = bench.procs.result(load, bench.load_timeout + 30)
    acked = {line.split()[0] for line in acks_file.read_text().splitlines() if line}
    stats = _wait_ids(bench, len(acked), bench.load_timeout)
    _redis_back(bench)
    takeover_wait = _wait_settled(bench, killed + VISIBILITY + TAKEOVER_SLACK)
    time.sleep(1.0)  # a late re-send would show up now
    stats = bench.sink_stats()
    received = set(http_json(f"http://{HOST}:{bench.sink_port}/ids")[1])
    bench.procs.stop(gateway)
    left = _left(bench)
    backlog = len(acked) - at_last_fault
    drain = round(stats["last_new"] - last_fault, 3) if stats["last_new"] else None
    log_text = "".join(p.read_text(errors="replace") for p in logs if p.exists())
    reference = _fault_free_drain(bench, conf, backlog) if backlog > 0 else None
    ref = reference["drain_s"] if reference else None
    return {
        "rate": rate,
        "seconds": seconds,
        "redis_down_s": REDIS_DOWN,
        "timeline": timeline,
        "load": produced,
        "acknowledged": len(acked),
        "lost": len(acked - received),
        "lost_sample": sorted(acked - received)[:5],
        "sent_twice": stats["duplicate_webhook_ids"],
        "events_received_twice": stats["duplicate_event_ids"],
        "bad_signature": stats["bad_signature"],
        "jobs_taken_over": log_text.count("took over job"),
        "takeover_wait_s": takeover_wait,
        "left_in_redis": left,
        "backlog_at_last_fault": backlog,
        "drain_s": drain,
        "fault_free": reference,
        "drain_ratio": round(drain / ref, 2) if drain is not None and ref else None,
    }


def _fault_free_drain(bench: Bench, conf: Path, n: int) -> dict[str, Any]:
    """The same backlog without faults: ``n`` events posted at once (closed loop, C=64)
    to a running gateway, as the producers' held-back events come in once Redis is back;
    first post -> the sink has them all."""
    bench.sink_reset()
    port = free_port()
    gateway, log = _serve(bench, conf, "faults-reference", port)
    wait_http(f"http://{HOST}:{port}/readyz", gateway, log=log)
    posted = bench.loadgen(
        f"http://{HOST}:{port}/v1/events", "closed", "-n", str(n), "-c", "64", "--id-prefix", "ref_"
    )
    stats = _wait_ids(bench, n, bench.load_timeout)
    bench.procs.stop(gateway)
    last = stats["last_new"]
    complete = last is not None and stats["unique_event_ids"] >= n
    return {
        "events": n,
        "accepted": posted["accepted"],
        "delivered": stats["unique_event_ids"],
        "drain_s": round(last - posted["t_start"], 3) if complete else None,
    }

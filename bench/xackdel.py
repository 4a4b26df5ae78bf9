"""Settling a job: ``XACK`` + ``XDEL`` (any Redis) vs ``XACKDEL`` (Redis >= 8.2), in isolation.

    .venv/bin/python -m bench.xackdel [--redis-server PATH] [--jobs N]

Each round fills a stream with N ~1 KB jobs, reads them all into a consumer group, then
settles them in batches of B the way the worker does (one Lua call per batch, as in
gateway/lua/settle.lua, and one pipelined MULTI per job, as for a cancelled job), timing
only the settling. Prints µs per job, median of the rounds. Redis runs like the
embedded one: AOF on, ``appendfsync always``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from gateway.redis_server import RedisServer, free_port

STREAM, GROUP = "jobs", "workers"
TWO_CALLS = """
redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 2))
return redis.call('XDEL', KEYS[1], unpack(ARGV, 2))
"""
ONE_CALL = """
return redis.call('XACKDEL', KEYS[1], ARGV[1], 'IDS', #ARGV - 1, unpack(ARGV, 2))
"""


def fill(client: redis.Redis, n: int) -> list[bytes]:
    client.delete(STREAM)
    client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        pipe.xadd(STREAM, {"job": f"{i:08d}".ljust(1024, "x")})
    pipe.execute()
    read = client.xreadgroup(GROUP, "c1", {STREAM: ">"}, count=n)
    return [entry_id for entry_id, _ in read[0][1]]


def settle_lua(client: redis.Redis, script: str, ids: list[bytes], batch: int) -> float:
    sha = client.script_load(script)
    start = time.perf_counter()
    for i in range(0, len(ids), batch):
        client.evalsha(sha, 1, STREAM, GROUP, *ids[i : i + batch])
    return time.perf_counter() - start


def settle_multi(client: redis.Redis, ids: list[bytes], one_call: bool) -> float:
    start = time.perf_counter()
    for entry_id in ids:
        with client.pipeline(transaction=True) as pipe:
            if one_call:
                pipe.execute_command("XACKDEL", STREAM, GROUP, "IDS", 1, entry_id)
            else:
                pipe.xack(STREAM, GROUP, entry_id)
                pipe.xdel(STREAM, entry_id)
            pipe.execute()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--redis-server", default="auto")
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp), port=free_port(), server=args.redis_server)
        client = redis.Redis.from_url(server.start())
        try:
            print(f"Redis {server.version}, {args.jobs} jobs, median of {args.rounds} rounds")
            cases: list[tuple[str, tuple[str, Any, int]]] = []
            for batch in (1, 16, 128, 500):
                cases.append((f"Lua, batch {batch}: XACK+XDEL", ("lua", TWO_CALLS, batch)))
                cases.append((f"Lua, batch {batch}: XACKDEL", ("lua", ONE_CALL, batch)))
            cases.append(("MULTI per job: XACK+XDEL", ("multi", False, 0)))
            cases.append(("MULTI per job: XACKDEL", ("multi", True, 0)))
            for name, (kind, what, batch) in cases:
                times = []
                for _ in range(args.rounds):
                    ids = fill(client, args.jobs)
                    if kind == "lua":
                        spent = settle_lua(client, what, ids, batch)
                    else:
                        spent = settle_multi(client, ids, what)
                    assert (
                        client.xlen(STREAM) == 0 and client.xpending(STREAM, GROUP)["pending"] == 0
                    )
                    times.append(spent)
                print(f"  {name:34} {statistics.median(times) / args.jobs * 1e6:8.1f} µs/job")
        finally:
            client.close()
            server.stop()


if __name__ == "__main__":
    main()

"""``python -m bench``'s command line (shared by ``bench.pipeline``)."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from . import archive, faults, fullpipe


def find_py_spy() -> str | None:
    """py-spy on PATH, else beside this Python (pip installs it into the venv)."""
    found = shutil.which("py-spy")
    beside = Path(sys.executable).parent / "py-spy"
    return found or (str(beside) if beside.exists() else None)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Tocsin throughput and latency vs same-box ceilings."
    )
    parser.add_argument("--events", "-n", type=int, default=None, help="N (default 20000)")
    parser.add_argument("--quick", action="store_true", help="smoke run: N=3000, 2 s latency phase")
    parser.add_argument("--concurrency", "-c", type=int, default=64)
    parser.add_argument("--rate", type=float, default=1000.0, help="latency phase events/s")
    parser.add_argument("--latency-seconds", type=float, default=None, help="default 5 (quick 2)")
    parser.add_argument(
        "--reps", type=int, default=1, help="repeat intake+delivery K times; report the median"
    )
    faults.add_arguments(parser)
    archive.add_arguments(parser)
    fullpipe.add_arguments(parser)
    parser.add_argument(
        "--latency-only", action="store_true", help="run only the latency phase (fast iteration)"
    )
    parser.add_argument(
        "--appendfsync",
        choices=["always", "everysec", "no"],
        default="always",
        help="redis-server AOF fsync policy (default always: the embedded Redis's own)",
    )
    parser.add_argument(
        "--redis-server",
        default="auto",
        help="redis-server binary (default auto: the embedded Redis's own choice)",
    )
    parser.add_argument(
        "--worker-concurrency",
        type=int,
        default=None,
        help="set [worker] concurrency in the generated conf (default: Tocsin's default)",
    )
    parser.add_argument(
        "--delivery-procs",
        type=int,
        default=1,
        help="delivery phase: 1 router+worker process plus K-1 worker-only processes",
    )
    parser.add_argument(
        "--processes",
        default="1",
        help="each tocsin serve's --processes (default 1: the figures below are per process; "
        "CPU columns count the supervisor only when >1). bench.pipeline compares layouts",
    )
    parser.add_argument("--verify", action="store_true", help="sink verifies every signature")
    parser.add_argument("--out", type=Path, default=None, help="JSON result file")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, conf)")
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="attach py-spy to each Tocsin process during its phase; collapsed stacks to DIR",
    )
    args = parser.parse_args(argv)
    if args.events is None:
        args.events = 3000 if args.quick else 20000
    if args.latency_seconds is None:
        args.latency_seconds = 2.0 if args.quick else 5.0
    if min(args.events, args.concurrency, args.reps, args.delivery_procs) < 1 or args.rate <= 0:
        parser.error("--events, --concurrency, --reps, --delivery-procs, --rate must be positive")
    if args.fault_rate <= 0 or args.fault_seconds < 4:
        parser.error("--fault-rate must be positive, --fault-seconds at least 4")
    if args.pipeline_cluster and not (args.pipeline or args.pipeline_only):
        parser.error("--pipeline-cluster adds to the full pipeline: with --pipeline[-only]")
    if not args.cluster_replicas or min(args.cluster_replicas) < 0:
        parser.error("--cluster-replicas: replicas per master, 0 or more, comma-separated")
    if args.profile is not None and find_py_spy() is None:
        parser.error("--profile needs py-spy: pip install py-spy")
    return args

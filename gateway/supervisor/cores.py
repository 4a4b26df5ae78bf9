"""How many cores this process may really use."""

from __future__ import annotations

import math
import os
from pathlib import Path

#: cgroup v2 CPU quota of this process's group (containers, systemd CPUQuota=).
CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def _cgroup_limit(path: Path = CPU_MAX) -> int | None:
    """``ceil(quota / period)`` from ``cpu.max`` (``"200000 100000"``), or None (no quota)."""
    try:
        quota, period = path.read_text().split()[:2]
        return max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):  # no cgroup v2 here, or "max" (no quota)
        return None


def usable_cores() -> int:
    """CPUs this process may run on (affinity, e.g. ``taskset``), capped by a cgroup quota:
    ``os.cpu_count()`` counts the machine's, which a container does not get."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    limit = _cgroup_limit()
    return min(cores, limit) if limit is not None else max(1, cores)

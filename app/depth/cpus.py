"""How many CPUs this process may really use, and how to split them into server workers and torch threads.

A container's CPU limit (``docker run --cpus``, compose ``cpus:``, a Kubernetes limit) is a CFS quota in
its cgroup, which neither ``os.cpu_count()`` nor the affinity mask shows: a process that counted the
host's cores would start a torch thread per core and the quota would throttle them all. The rule and its
measurements are in docs/self-hosting.md ("Workers and threads").
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional, Tuple

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
# MiDaS small at 256 px stops gaining from more torch threads past about this many (docs/self-hosting.md):
# the default gives each server worker this many and adds workers for the rest of the CPUs
THREADS_PER_WORKER = 4


def _read(path: Path) -> Optional[str]:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _v2_limit(folder: Path) -> Optional[float]:
    """``cpu.max`` of one cgroup v2 folder: "QUOTA PERIOD" or "max PERIOD"."""
    text = _read(folder / "cpu.max")
    if not text:
        return None
    parts = text.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    quota, period = int(parts[0]), int(parts[1])
    return quota / period if quota > 0 and period > 0 else None


def _v1_limit(folder: Path) -> Optional[float]:
    """``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` of one cgroup v1 cpu folder (-1: no limit)."""
    quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
    if not quota or not period:
        return None
    q, p = int(quota), int(period)
    return q / p if q > 0 and p > 0 else None


def _own_paths(proc_cgroup: Path) -> Tuple[Optional[str], Optional[str]]:
    """This process's cgroup v2 path and v1 cpu-controller path, from /proc/self/cgroup."""
    v2 = v1 = None
    for line in (_read(proc_cgroup) or "").splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            v2 = path
        elif "cpu" in controllers.split(","):
            v1 = path
    return v2, v1


def _walk(base: Path, own: Optional[str]) -> list[Path]:
    """``base`` joined with ``own`` and each of its parents up to ``base`` (a limit anywhere above
    applies); just ``base`` when the path is unknown or not visible (a cgroup namespace shows the
    container's own cgroup at the root)."""
    folders = [base]
    if own and own != "/":
        here = base / own.lstrip("/")
        while here != base and base in here.parents:
            if here.is_dir():
                folders.append(here)
            here = here.parent
    return folders


def cgroup_cpu_limit(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> Optional[float]:
    """The CPU quota of this process's cgroup (v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``, the smallest
    on its path) in CPUs, e.g. 1.5; None without a limit."""
    v2_path, v1_path = _own_paths(proc_cgroup)
    limits = [x for x in (_v2_limit(f) for f in _walk(root, v2_path)) if x is not None]
    if not limits:  # cgroup v1: the cpu controller's own tree
        for base in (root / "cpu", root / "cpu,cpuacct", root / "cpuacct,cpu"):
            if base.is_dir():
                limits = [x for x in (_v1_limit(f) for f in _walk(base, v1_path)) if x is not None]
                break
    return min(limits) if limits else None


def usable_cpus(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP,
                affinity: Optional[int] = None) -> int:
    """CPUs this process may use: the cores it may run on (``sched_getaffinity``), fewer under a cgroup
    quota (rounded up: a quota of 1.5 CPUs keeps two threads busy part of the time)."""
    cores = affinity if affinity is not None else len(os.sched_getaffinity(0))
    limit = cgroup_cpu_limit(root, proc_cgroup)
    if limit is not None:
        cores = min(cores, max(1, math.ceil(limit)))
    return max(1, cores)


def plan(cpus: int, workers: Optional[int] = None, threads: Optional[int] = None) -> Tuple[int, int]:
    """(server workers, torch threads per worker) for ``cpus`` usable CPUs. Explicit values win; a
    missing one is derived: workers = ceil(cpus / THREADS_PER_WORKER), threads = cpus // workers
    (at least 1)."""
    if workers is None:
        workers = max(1, math.ceil(cpus / THREADS_PER_WORKER))
    if threads is None:
        threads = max(1, cpus // workers)
    return workers, threads

"""The usable-CPU count and the workers x threads rule (app/depth/cpus.py) on cgroup files written to a temp
dir the way the kernel lays them out (v2 unified, v1 cpu controller), read for real."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.depth.cpus import cgroup_cpu_limit, plan, usable_cpus


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


@pytest.fixture()
def v2(tmp_path) -> tuple[Path, Path]:
    """A cgroup v2 tree: the process in /system.slice/app.serving.service (/proc/self/cgroup says so)."""
    root = tmp_path / "cgroup"
    proc = tmp_path / "proc-self-cgroup"
    write(proc, "0::/system.slice/app.serving.service")
    write(root / "cpu.max", "max 100000")  # the root cgroup: no limit
    (root / "system.slice" / "app.serving.service").mkdir(parents=True)
    return root, proc


def test_v2_quota_of_the_process_own_cgroup(v2) -> None:
    root, proc = v2
    assert cgroup_cpu_limit(root, proc) is None
    write(root / "system.slice" / "app.serving.service" / "cpu.max", "150000 100000")  # docker --cpus 1.5
    assert cgroup_cpu_limit(root, proc) == 1.5
    assert usable_cpus(root, proc, affinity=16) == 2  # rounded up
    assert usable_cpus(root, proc, affinity=1) == 1  # the affinity mask is smaller


def test_v2_the_smallest_limit_on_the_path_counts(v2) -> None:
    root, proc = v2
    write(root / "system.slice" / "cpu.max", "300000 100000")
    write(root / "system.slice" / "app.serving.service" / "cpu.max", "max 100000")
    assert cgroup_cpu_limit(root, proc) == 3.0 and usable_cpus(root, proc, affinity=64) == 3


def test_v2_inside_a_container_namespace(tmp_path) -> None:
    # a cgroup namespace: /proc/self/cgroup says "/", the container's own cgroup is the root
    root, proc = tmp_path / "cgroup", tmp_path / "proc"
    write(proc, "0::/")
    write(root / "cpu.max", "50000 100000")  # --cpus 0.5
    assert cgroup_cpu_limit(root, proc) == 0.5 and usable_cpus(root, proc, affinity=8) == 1


def test_v1_cfs_quota(tmp_path) -> None:
    root, proc = tmp_path / "cgroup", tmp_path / "proc"
    write(proc, "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc")
    base = root / "cpu,cpuacct"
    write(base / "cpu.cfs_quota_us", "-1")
    write(base / "cpu.cfs_period_us", "100000")
    write(base / "docker" / "abc" / "cpu.cfs_quota_us", "200000")
    write(base / "docker" / "abc" / "cpu.cfs_period_us", "100000")
    assert cgroup_cpu_limit(root, proc) == 2.0 and usable_cpus(root, proc, affinity=32) == 2
    write(base / "docker" / "abc" / "cpu.cfs_quota_us", "-1")
    assert cgroup_cpu_limit(root, proc) is None and usable_cpus(root, proc, affinity=32) == 32


def test_no_cgroup_files_at_all(tmp_path) -> None:
    assert cgroup_cpu_limit(tmp_path / "none", tmp_path / "none-either") is None
    assert usable_cpus(tmp_path / "none", tmp_path / "none-either") == len(os.sched_getaffinity(0))


def test_this_machine() -> None:
    # whatever the machine, the count is within the affinity mask and at least 1
    assert 1 <= usable_cpus() <= len(os.sched_getaffinity(0))


@pytest.mark.parametrize("cpus,workers,threads,expected", [
    (1, None, None, (1, 1)),
    (2, None, None, (1, 2)),
    (4, None, None, (1, 4)),
    (6, None, None, (2, 3)),
    (16, None, None, (4, 4)),
    (64, None, None, (16, 4)),
    (16, 1, None, (1, 16)),  # an explicit worker count gets all the CPUs
    (16, None, 2, (4, 2)),  # explicit threads: the workers still follow the rule
    (2, 3, None, (3, 1)),  # more workers than CPUs: one thread each
    (16, 2, 3, (2, 3)),  # both explicit: as given
])
def test_plan(cpus, workers, threads, expected) -> None:
    assert plan(cpus, workers, threads) == expected

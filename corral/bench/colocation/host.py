"""What the host offers the benchmark, installing the Debian packages it needs, steal time."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from corral.errors import CorralError

PACKAGES = {"memcached": "memcached", "stress-ng": "stress-ng", "gcc": "gcc"}
USER_HZ = 100  # /proc/stat ticks per second (sysconf(_SC_CLK_TCK) on Linux)


@dataclass(frozen=True, slots=True)
class HostCheck:
    """Why the benchmark cannot run here (empty: it can)."""

    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """True when nothing is missing."""
        return not self.problems


def check_host(cgroup_root: Path) -> HostCheck:
    """Root, the binaries, and the v1 cpu, cpuacct, cpuset, memory, freezer hierarchies."""
    problems: list[str] = []
    if os.geteuid() != 0:
        problems.append("needs root (it creates cgroups)")
    for binary, package in PACKAGES.items():
        if shutil.which(binary) is None:
            problems.append(f"{binary} is not installed (apt-get install {package})")
    for controller, probe in (
        ("cpu", "cpu.shares"),
        ("cpuacct", "cpuacct.usage"),
        ("cpuset", "cpuset.cpus"),
        ("memory", "memory.limit_in_bytes"),
        ("freezer", "cgroup.procs"),
    ):
        if not (cgroup_root / controller / probe).exists():
            problems.append(f"no cgroup v1 {controller} hierarchy at {cgroup_root / controller}")
    return HostCheck(tuple(problems))


def ensure_packages() -> None:
    """Install memcached, stress-ng and gcc from Debian when missing (root only)."""
    missing = [PACKAGES[b] for b in PACKAGES if shutil.which(b) is None]
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise CorralError(f"missing packages {', '.join(missing)}: install them as root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *missing]):
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if result.returncode != 0:
            raise CorralError(f"{' '.join(cmd)} failed: {result.stderr.strip()[-500:]}")


def steal_ticks(proc_root: Path = Path("/proc")) -> int:
    """Cumulative steal time of all CPUs in USER_HZ ticks (/proc/stat, 8th field)."""
    with open(proc_root / "stat", encoding="ascii") as handle:
        fields = handle.readline().split()
    return int(fields[8]) if len(fields) > 8 else 0


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port

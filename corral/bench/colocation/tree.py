"""The benchmark's own cgroups and the processes placed in them; clean-up always runs.

Under ``corral-bench-<pid>`` in each v1 hierarchy (and the v2 mount, for PSI):

The tree's top group gets a high ``cpu.shares`` (`TREE_SHARES`).

* ``lc`` - memcached;  ``client`` - the load generator, at a high ``cpu.shares`` so a
  heavy BE cannot delay the client itself (it stands for a client on another machine);
* ``control`` - this process (the orchestrator and the controller), at LC's weight
  (`CONTROL_SHARES`);
* ``be`` - the BE box (memory limit, freezer), with one child per BE workload.

`BenchTree.close` thaws, kills every process found in the tree, waits for them, reclaims
page cache and removes the groups children first. Trees left by a benchmark that was
killed (its pid gone) are removed by `remove_stale_trees`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from corral.enforce.cgroupfs import (
    CgroupFsError,
    child_dirs,
    list_pids,
    make_dir,
    read_file,
    remove_dir,
    write_file,
)
from corral.errors import CorralError
from corral.topology.cpuset import CpuSet

logger = logging.getLogger(__name__)

PREFIX = "corral-bench-"
V1 = ("cpu", "cpuacct", "cpuset", "memory", "freezer")
CLIENT_SHARES = 8192
CONTROL_SHARES = 1024
"""LC's weight: the controller must not outrank the LC it protects (its ticks take a few
ms of CPU), and BE at ``cpu.idle`` or its own 1024 cannot starve a group that needs 1% of
a CPU."""
TREE_SHARES = 8192
"""The tree stands for a dedicated machine: on v1 every task of the root cgroup weighs as
much as a whole 1024-share group, so on a host shared with other work the tree would get
a sliver of the CPUs and measure the neighbours instead of the policies."""
_ADOPTED = ("cpu", "cpuacct")
"""Where this process joins ``control``: cpu for its weight, cpuacct to count its CPU."""
_SPAWN = 'for f in $CORRAL_CGROUP_PROCS; do echo $$ > "$f" || exit 111; done; exec "$@"'


class BenchTree:
    """Creates the tree on construction; use as a context manager so it is removed."""

    def __init__(self, cgroup_root: Path, *, cpus: CpuSet, mems: str) -> None:
        self.root = cgroup_root
        self.name = f"{PREFIX}{os.getpid()}"
        self.cpus = cpus
        self.mems = mems
        self.processes: list[subprocess.Popen[bytes]] = []
        self._made: list[Path] = []
        self._adopted = False
        try:
            for group in ("", "lc", "client", "control", "be"):
                self.make(group)
            write_file(self.file("cpu", "", "cpu.shares"), str(TREE_SHARES))
            write_file(self.file("cpu", "client", "cpu.shares"), str(CLIENT_SHARES))
            write_file(self.file("cpu", "control", "cpu.shares"), str(CONTROL_SHARES))
            # This process (the orchestrator and the corral controller) joins ``control``,
            # a group of its own beside BE, LC and the client.
            for controller in _ADOPTED:
                if (self.root / controller).is_dir():
                    write_file(self.file(controller, "control", "cgroup.procs"), str(os.getpid()))
            self._adopted = True
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> BenchTree:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def group(self, sub: str) -> str:
        """The group path relative to a hierarchy root."""
        return f"{self.name}/{sub}" if sub else self.name

    def file(self, controller: str, sub: str, name: str) -> str:
        """An interface file of group ``sub`` in ``controller``."""
        return f"{self.root}/{controller}/{self.group(sub)}/{name}"

    def make(self, sub: str) -> None:
        """Create ``sub`` in every hierarchy (cpuset inherits the tree's CPUs and mems)."""
        for controller in (*V1, "unified"):
            path = self.root / controller / self.group(sub)
            if not (self.root / controller).is_dir():
                continue
            if make_dir(path):
                self._made.append(path)
            if controller == "cpuset":
                # A child starts with its parent's CPUs: v1 refuses a child wider than it.
                parent = path.parent
                cpus = (read_file(f"{parent}/cpuset.cpus") or "").strip() if sub else ""
                write_file(f"{path}/cpuset.mems", self.mems)
                write_file(f"{path}/cpuset.cpus", cpus or str(self.cpus))

    def procs_files(self, sub: str, *, cpuacct_sub: str | None = None) -> list[str]:
        """The ``cgroup.procs`` files a process of ``sub`` joins (cpuacct: ``cpuacct_sub``)."""
        files = []
        for controller in (*V1, "unified"):
            group = cpuacct_sub if controller == "cpuacct" and cpuacct_sub else sub
            path = f"{self.root}/{controller}/{self.group(group)}/cgroup.procs"
            if os.path.exists(path):
                files.append(path)
        return files

    def spawn(
        self,
        argv: Sequence[str],
        sub: str,
        *,
        stdout: IO[bytes] | int | None = subprocess.DEVNULL,
        stderr: IO[bytes] | int | None = subprocess.DEVNULL,
        cpuacct_sub: str | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` already inside group ``sub`` (a shell joins the groups, then execs)."""
        env = {
            **os.environ,
            "CORRAL_CGROUP_PROCS": " ".join(self.procs_files(sub, cpuacct_sub=cpuacct_sub)),
        }
        proc = subprocess.Popen(
            ["sh", "-c", _SPAWN, "sh", *argv], stdout=stdout, stderr=stderr, env=env
        )
        self.processes.append(proc)
        return proc

    def cpu_usage_s(self, sub: str) -> float:
        """CPU seconds used by group ``sub`` (cpuacct.usage)."""
        text = read_file(self.file("cpuacct", sub, "cpuacct.usage"))
        return int(text) / 1e9 if text else 0.0

    def close(self) -> None:
        """Kill everything in the tree and remove it (safe to call twice)."""
        if self._adopted:
            for controller in _ADOPTED:
                if (self.root / controller).is_dir():
                    write_file(f"{self.root}/{controller}/cgroup.procs", str(os.getpid()))
            self._adopted = False
        remove_tree(self.root, self.name)
        for proc in self.processes:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self.processes.clear()


def remove_tree(root: Path, name: str) -> None:
    """Thaw, kill and remove ``name`` in every hierarchy, deepest groups first."""
    freezer = root / "freezer" / name
    for directory in sorted(_walk(freezer), key=lambda p: -len(p.parts)):
        with contextlib.suppress(CgroupFsError):
            write_file(f"{directory}/freezer.state", "THAWED")
    deadline = time.monotonic() + 10
    while True:
        pids = {
            pid for c in (*V1, "unified") for d in _walk(root / c / name) for pid in list_pids(d)
        }
        pids.discard(os.getpid())  # never this process, whatever group it is left in
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise CorralError(f"processes {sorted(pids)} in {name} would not die")
        time.sleep(0.05)
    for controller in (*V1, "unified"):
        for directory in sorted(_walk(root / controller / name), key=lambda p: -len(p.parts)):
            if controller == "memory":
                with contextlib.suppress(CgroupFsError):
                    write_file(f"{directory}/memory.force_empty", "0")
            for _ in range(50):
                try:
                    remove_dir(directory)
                    break
                except CgroupFsError:
                    time.sleep(0.05)  # exiting tasks still leaving the group


def remove_stale_trees(root: Path) -> list[str]:
    """Remove trees of benchmarks whose process no longer exists; their names."""
    removed = []
    for name in child_dirs(root / "cpu"):
        if not name.startswith(PREFIX):
            continue
        pid = name.removeprefix(PREFIX)
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            remove_tree(root, name)
            removed.append(name)
    return removed


def _walk(top: Path) -> list[Path]:
    if not top.is_dir():
        return []
    out = [top]
    for name in child_dirs(top):
        out.extend(_walk(top / name))
    return out

"""The real agent enforcing on this host's cgroup v1 hierarchy: drift written behind its
back is found and repaired by reconcile, and a real process is confined."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from corral.bench.agent_process import AgentProcess

CGROUP_ROOT = Path("/sys/fs/cgroup")
CPUSET = CGROUP_ROOT / "cpuset"


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root to write cgroups"
    if not (CPUSET / "cpuset.cpus").exists():
        return "no cgroup v1 cpuset hierarchy at /sys/fs/cgroup/cpuset"
    if not os.access(CPUSET, os.W_OK):
        return "the cpuset hierarchy is not writable"
    return None


pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason())),
]


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in metrics")


def test_reconcile_repairs_a_cpuset_written_behind_the_agents_back(
    tmp_path: Path, parent: str
) -> None:
    settings = {
        "topology": "sysfs",
        "cgroup_parent": parent,
        "coalesce_window_s": 0.01,
        "sample_period_s": 0.2,
        "downsample_s": 0.5,
    }
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        with AgentProcess(tmp_path, settings) as agent, httpx.Client(base_url=agent.url) as http:
            status = http.get("/status").json()
            assert status["dry_run"] is False, status["enforcer"]
            online = status["online"]
            placed = http.put(
                "/workloads/web?wait=true", json={"qos": "LC", "cpus": 1, "policy": "exclusive"}
            ).json()
            cpus_file = CPUSET / parent / "web" / "cpuset.cpus"
            assert cpus_file.read_text().strip() == placed["cpuset"]
            (CPUSET / parent / "web" / "cgroup.procs").write_text(str(sleeper.pid))
            status_file = Path(f"/proc/{sleeper.pid}/status")
            allowed = [
                line.split()[1]
                for line in status_file.read_text().splitlines()
                if line.startswith("Cpus_allowed_list")
            ]
            assert allowed == [placed["cpuset"]]

            cpus_file.write_text(online)  # drift: someone widened it
            report = http.post("/reconcile").json()
            assert report["found_total"] >= 1
            assert any(d["file"].endswith("web/cpuset.cpus") for d in report["found"])
            assert report["repaired"] >= 1
            assert cpus_file.read_text().strip() == placed["cpuset"]
            assert _metric(http.get("/metrics").text, "corral_drift_repaired_total") >= 1
            assert http.get("/status").json()["drift"]["outstanding"] == []

            # Usage sampling reads the cgroup's cpuacct.usage while a busy process runs. Here
            # cpuacct is a hierarchy of its own that corral does not manage: the test creates
            # the workload's cgroup there, as a container runtime would.
            busy = subprocess.Popen(["sh", "-c", "while :; do :; done"])
            try:
                (CPUSET / parent / "web" / "cgroup.procs").write_text(str(busy.pid))
                acct = CGROUP_ROOT / "cpuacct" / parent / "web"
                acct.mkdir(parents=True, exist_ok=True)
                (acct / "cgroup.procs").write_text(str(busy.pid))
                deadline = time.monotonic() + 10
                utilisation = None
                while time.monotonic() < deadline:
                    utilisation = http.get("/workloads/web").json()["utilisation"]
                    if utilisation is not None and utilisation > 0.3:
                        break
                    time.sleep(0.1)
                assert utilisation is not None and utilisation > 0.3
                time.sleep(1.0)  # let a downsampling window (0.5 s) close and be stored
            finally:
                busy.kill()
                busy.wait()
        with closing(sqlite3.connect(tmp_path / "state.db")) as db:
            rows = db.execute(
                "SELECT usage_cores, capacity_cores FROM usage WHERE workload_id = 'web'"
            ).fetchall()
        assert rows and max(r[0] for r in rows) > 0.3 and rows[0][1] == 1.0
    finally:
        sleeper.kill()
        sleeper.wait()

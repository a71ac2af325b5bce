"""Cgroup faults on this host's real v1 hierarchies: the agent killed while BE is throttled,
and a workload's cgroup removed under the running agent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

import httpx
import pytest

from corral.bench.agent_process import AgentProcess
from corral.errors import CorralError
from tests.real_cgroups import CGROUP_ROOT, v1_skip_reason

HIERARCHIES = ("cpuset", "cpu", "memory")
SKIP = v1_skip_reason((*HIERARCHIES, "freezer"))

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(SKIP is not None, reason=str(SKIP)),
]


def _wait(what: str, probe: Callable[[], Any], timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        with suppress(OSError, httpx.HTTPError):
            last = probe()
            if last:
                return last
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def _read(hierarchy: str, cgroup: str, name: str) -> str:
    return (CGROUP_ROOT / hierarchy / cgroup / name).read_text().strip()


def _pids(hierarchy: str, cgroup: str) -> set[int]:
    return {int(p) for p in _read(hierarchy, cgroup, "cgroup.procs").split()}


def _attach(cgroup: str, pid: int) -> None:
    for hierarchy in HIERARCHIES:
        (CGROUP_ROOT / hierarchy / cgroup / "cgroup.procs").write_text(str(pid))


def _settings(tmp_path: Path, parent: str) -> dict[str, Any]:
    latency = tmp_path / "lat.json"
    latency.write_text(json.dumps({"p99_ms": 0.97, "rps": 20000}))  # slack 0.03: shrink
    return {
        "topology": "sysfs",
        "cgroup_parent": parent,
        "coalesce_window_s": 0.01,
        "reconcile_period_s": 3600,
        "control": {
            "top": {"period_s": 0.2, "cooldown_s": 1.0},
            "trial": {"settle_s": 0.2, "hold_s": 5.0},
            "sub_period_s": 0.2,
            "workloads": [
                {
                    "name": "web",
                    "slo": {"percentile": 99, "target_ms": 1.0, "window_s": 1.0},
                    "peak_rps": 100000,
                    "latency": {"kind": "file", "path": str(latency), "stale_s": 3600},
                }
            ],
        },
    }


def test_an_agent_killed_while_be_is_throttled_leaves_be_in_its_box_and_lc_protected(
    tmp_path: Path, parent: str
) -> None:
    box = f"{parent}/be"
    busy = subprocess.Popen(["python3", "-c", "while True: pass"])
    sleeper = subprocess.Popen(["sleep", "300"])
    try:
        agent = AgentProcess(tmp_path / "agent", _settings(tmp_path, parent)).start()
        try:
            with httpx.Client(base_url=agent.url, timeout=10) as http:
                for wid, body in (("web", {"qos": "LC", "cpus": 1}), ("batch", {"qos": "BE"})):
                    put = http.put(f"/workloads/{wid}?wait=true", json={"cpus": 1, **body})
                    assert put.status_code == 201, put.text
                _attach(f"{parent}/web", sleeper.pid)
                _attach(f"{box}/batch", busy.pid)
                _wait("a BE quota", lambda: _read("cpu", box, "cpu.cfs_quota_us") != "-1")
                before = {
                    name: _read(h, box, name)
                    for h, name in (
                        ("cpu", "cpu.cfs_quota_us"),
                        ("cpu", "cpu.idle"),
                        ("cpuset", "cpuset.cpus"),
                    )
                }
                lc_cpus = _read("cpuset", f"{parent}/web", "cpuset.cpus")
        finally:
            agent.kill()  # SIGKILL: no shutdown path runs
        # The kernel keeps what the agent wrote: BE stays boxed and throttled, LC keeps its CPUs.
        for hierarchy in HIERARCHIES:
            assert busy.pid in _pids(hierarchy, f"{box}/batch")
            assert sleeper.pid in _pids(hierarchy, f"{parent}/web")
        for name, value in before.items():
            hierarchy = "cpuset" if name.startswith("cpuset") else "cpu"
            assert _read(hierarchy, box, name) == value, name
        assert _read("cpuset", f"{parent}/web", "cpuset.cpus") == lc_cpus

        # A restarted agent adopts the same tree; its controller starts BE again from its
        # baseline (issue 16: the static-idle configuration), not where the killed one was.
        with (
            AgentProcess(tmp_path / "agent", _settings(tmp_path, parent)) as again,
            httpx.Client(base_url=again.url, timeout=10) as http,
        ):
            views = {w["id"]: w for w in http.get("/workloads").json()["workloads"]}
            assert views["web"]["status"] == views["batch"]["status"] == "placed"
            control = _wait("the controller", lambda: http.get("/status").json()["control"])
            assert control["be"]["cores"] == control["baseline"]["cores"]
            assert busy.pid in _pids("cpu", f"{box}/batch")
            assert _read("cpu", box, "cpu.idle") == "1"
            assert again.terminate() == 0
    finally:
        for proc in (busy, sleeper):
            proc.kill()
            proc.wait()


def test_a_cgroup_removed_under_the_agent_is_noticed_and_recreated_by_reconcile(
    tmp_path: Path, parent: str
) -> None:
    settings = {"topology": "sysfs", "cgroup_parent": parent, "coalesce_window_s": 0.01}
    with (
        AgentProcess(tmp_path / "agent", settings) as agent,
        httpx.Client(base_url=agent.url, timeout=10) as http,
    ):
        put = http.put("/workloads/web?wait=true", json={"qos": "LC", "cpus": 1})
        assert put.status_code == 201, put.text
        cpus = _read("cpuset", f"{parent}/web", "cpuset.cpus")
        for hierarchy in HIERARCHIES:
            (CGROUP_ROOT / hierarchy / parent / "web").rmdir()
        report = http.post("/reconcile").json()
        missing = [d for d in report["found"] if d["want"] == "exists"]
        assert missing and all(d["workload_id"] == "web" for d in missing), report
        assert report["repaired"] >= len(missing)
        for hierarchy in HIERARCHIES:
            assert (CGROUP_ROOT / hierarchy / parent / "web").is_dir()
        assert _read("cpuset", f"{parent}/web", "cpuset.cpus") == cpus
        assert report["recreated_empty"] == ["web"]  # its processes went with it
        assert http.get("/status").json()["drift"]["outstanding"] == []

        # Removed from one hierarchy while its process lives on in the others: the
        # recreated cgroup gets the process back.
        sleeper = subprocess.Popen(["sleep", "120"])
        try:
            _attach(f"{parent}/web", sleeper.pid)
            (CGROUP_ROOT / "cpuset" / "cgroup.procs").write_text(str(sleeper.pid))
            (CGROUP_ROOT / "cpuset" / parent / "web").rmdir()
            report = http.post("/reconcile").json()
            assert report["recreated_empty"] == [], report
            for hierarchy in HIERARCHIES:
                assert sleeper.pid in _pids(hierarchy, f"{parent}/web"), hierarchy
            assert http.get("/status").json()["drift"]["outstanding"] == []
        finally:
            sleeper.kill()
            sleeper.wait()
        assert agent.terminate() == 0


def test_a_second_agent_and_corral_apply_refuse_a_tree_a_live_agent_owns(
    tmp_path: Path, parent: str
) -> None:
    settings = {"topology": "sysfs", "cgroup_parent": parent, "coalesce_window_s": 0.01}
    with AgentProcess(tmp_path / "first", settings) as first:
        mark = os.getxattr(CGROUP_ROOT / "cpuset" / parent, "trusted.corral.owner")
        assert json.loads(mark)["pid"] == first.pid
        second = AgentProcess(tmp_path / "second", settings)
        with pytest.raises(CorralError):
            second.start(timeout_s=20)
        assert f"pid {first.pid}" in second.log_tail()
        workloads = tmp_path / "w.yaml"
        workloads.write_text("workloads:\n  - {id: web, qos: LC, cpus: 1, policy: shared}\n")
        applied = subprocess.run(
            [sys.executable, "-m", "corral.cli", "apply", "--workloads", str(workloads),
             "--parent", parent],
            capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip
        assert applied.returncode == 2, applied.stderr
        assert f"the agent pid {first.pid}" in applied.stderr
        assert "Traceback" not in applied.stderr
        assert first.terminate() == 0
    # Its owner gone, the tree is taken over by the next agent, which says so.
    with AgentProcess(tmp_path / "third", settings) as third:
        assert httpx.get(f"{third.url}/status", timeout=10).json()["dry_run"] is False
        assert third.terminate() == 0
        assert "agent.took_over_tree" in third.log_tail()


def test_removing_a_workload_removes_its_freezer_and_psi_groups_too(
    tmp_path: Path, parent: str
) -> None:
    settings = {"topology": "sysfs", "cgroup_parent": parent, "coalesce_window_s": 0.01}
    with (
        AgentProcess(tmp_path / "agent", settings) as agent,
        httpx.Client(base_url=agent.url, timeout=10) as http,
    ):
        put = http.put("/workloads/batch?wait=true", json={"qos": "BE", "cpus": 1})
        assert put.status_code == 201, put.text
        extra = [CGROUP_ROOT / "freezer" / parent / "be" / "batch"]
        if (CGROUP_ROOT / "unified" / "cgroup.procs").exists():
            extra.append(CGROUP_ROOT / "unified" / parent / "be" / "batch")
        for directory in extra:  # what the controller makes for a BE workload
            directory.mkdir(parents=True, exist_ok=True)
        assert http.delete("/workloads/batch").status_code == 204
        for hierarchy in (*HIERARCHIES, "cpuacct"):
            assert not (CGROUP_ROOT / hierarchy / parent / "be" / "batch").exists()
        for directory in extra:
            assert not directory.exists(), directory
        assert agent.terminate() == 0


def test_a_memory_limit_the_kernel_refuses_shows_the_workload_as_not_enforced_until_fixed(
    tmp_path: Path, parent: str
) -> None:
    settings = {"topology": "sysfs", "cgroup_parent": parent, "coalesce_window_s": 0.01}
    # It allocates once it is in the workload's cgroup (memory is charged where it is
    # touched), when told to on stdin.
    hog = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; sys.stdin.readline(); "
         "b = b'x' * (96 << 20); time.sleep(120)"],
        stdin=subprocess.PIPE,
    )  # fmt: skip
    try:
        with (
            AgentProcess(tmp_path / "agent", settings) as agent,
            httpx.Client(base_url=agent.url, timeout=30) as http,
        ):
            body = {"qos": "LC", "cpus": 1, "memory_limit": "1Gi"}
            assert http.put("/workloads/web?wait=true", json=body).status_code == 201
            _attach(f"{parent}/web", hog.pid)
            assert hog.stdin is not None
            hog.stdin.write(b"go\n")
            hog.stdin.flush()
            _wait("the hog's memory", lambda: int(_read("memory", f"{parent}/web",
                  "memory.usage_in_bytes")) > 80 << 20)  # fmt: skip
            body["memory_limit"] = "16Mi"  # far below what it uses: the kernel refuses
            response = http.put("/workloads/web?wait=true", json=body)
            assert response.status_code == 200, response.text
            enforcement = response.json()["enforcement"]
            assert enforcement["state"] == "refused", enforcement
            assert any("memory.limit_in_bytes" in e and "EBUSY" in e for e in enforcement["errors"])
            status = http.get("/status").json()
            assert any("memory.limit_in_bytes" in e for e in status["enforcement_errors"])
            body["memory_limit"] = "1Gi"
            fixed = http.put("/workloads/web?wait=true", json=body).json()["enforcement"]
            assert fixed == {"state": "enforced", "errors": []}
            assert http.get("/status").json()["enforcement_errors"] == []
            assert agent.terminate() == 0
    finally:
        hog.kill()
        hog.wait()
        if hog.stdin is not None:
            hog.stdin.close()

"""Durability of the real agent: kill -9 in the middle of a burst, restart, nothing
acknowledged is lost, nothing is given twice; a CPU that went offline is re-placed."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import httpx
import pytest

from corral.bench.agent_process import AgentProcess
from corral.topology.cpuset import CpuSet
from corral.topology.presets import toy_16
from tests.sysfs_tree import write_sysfs_tree

BASE = {"topology": "r4.16xlarge", "dry_run": True, "coalesce_window_s": 0.02}


def _writer(
    url: str,
    prefix: str,
    *,
    acked: dict[str, str],
    deleted: set[str],
    stop: threading.Event,
    lock: threading.Lock,
) -> None:
    """PUT workloads (alternating wait modes, some exclusive) and delete some acknowledged
    ones, recording every 2xx until the agent dies."""
    with httpx.Client(base_url=url, timeout=10) as client:
        i = 0
        while not stop.is_set():
            wid = f"{prefix}-{i}"
            exclusive = i % 5 == 0
            body = {"cpus": 1, "policy": "exclusive"} if exclusive else {"cpus": 0.5}
            try:
                response = client.put(
                    f"/workloads/{wid}?wait={'true' if i % 2 else 'false'}", json=body
                )
                if response.status_code in (200, 201, 202):
                    with lock:
                        acked[wid] = "exclusive" if exclusive else "shared"
                if i % 7 == 3:
                    victim = f"{prefix}-{i - 1}"
                    if client.delete(f"/workloads/{victim}").status_code == 204:
                        with lock:
                            deleted.add(victim)
            except httpx.TransportError:
                return
            i += 1


@pytest.mark.slow
def test_kill_9_mid_burst_loses_no_acknowledged_workload(tmp_path: Path) -> None:
    acked: dict[str, str] = {}
    deleted: set[str] = set()
    lock = threading.Lock()
    stop = threading.Event()
    proc = AgentProcess(tmp_path, BASE).start()
    try:
        threads = [
            threading.Thread(
                target=_writer,
                args=(proc.url, f"t{n}"),
                kwargs={"acked": acked, "deleted": deleted, "stop": stop, "lock": lock},
            )
            for n in range(4)
        ]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 20
        while len(acked) < 120 and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.kill()  # kill -9 while the writers are still sending
        stop.set()
        for thread in threads:
            thread.join(timeout=15)
    finally:
        proc.kill()
    assert len(acked) >= 120, proc.log_tail()

    with AgentProcess(tmp_path, BASE) as again, httpx.Client(base_url=again.url) as http:
        items = {w["id"]: w for w in http.get("/workloads").json()["workloads"]}
        missing = [wid for wid in acked if wid not in deleted and wid not in items]
        assert not missing, missing
        resurrected = [wid for wid in deleted if wid in items]
        assert not resurrected, resurrected
        assert all(w["status"] == "placed" for w in items.values())
        exclusive = [
            CpuSet.parse(w["cpuset"]) for w in items.values() if w["spec"]["policy"] == "exclusive"
        ]
        assert sum(len(c) for c in exclusive) == len(CpuSet().union(*exclusive))
        assignments = http.get("/assignments").json()["assignments"]
        assert set(assignments) == set(items)


@pytest.mark.slow
def test_restart_re_places_workloads_whose_cpus_went_offline(tmp_path: Path) -> None:
    sysfs = tmp_path / "sys"
    topo = toy_16()
    write_sysfs_tree(sysfs, topo)
    settings = {**BASE, "topology": "sysfs", "sysfs_root": str(sysfs)}
    with AgentProcess(tmp_path, settings) as proc, httpx.Client(base_url=proc.url) as http:
        first = http.put(
            "/workloads/lc?wait=true", json={"qos": "LC", "cpus": 4, "policy": "exclusive"}
        )
        assert first.status_code == 201
        other = http.put(
            "/workloads/lc2?wait=true", json={"qos": "LC", "cpus": 2, "policy": "exclusive"}
        )
        kept = CpuSet.parse(other.json()["cpuset"])
        before = CpuSet.parse(first.json()["cpuset"])
        assert proc.terminate() == 0
    gone = CpuSet([before.ids()[0]])
    assert gone.isdisjoint(kept)
    shutil.rmtree(sysfs)
    write_sysfs_tree(sysfs, topo, offline=gone)
    with AgentProcess(tmp_path, settings) as proc, httpx.Client(base_url=proc.url) as http:
        status = http.get("/status").json()
        assert status["online"] == str(topo.all_cpus - gone)
        after = CpuSet.parse(http.get("/workloads/lc").json()["cpuset"])
        assert len(after) == 4
        assert after.isdisjoint(gone)
        assert CpuSet.parse(http.get("/workloads/lc2").json()["cpuset"]) == kept  # not moved
        kinds = [e["kind"] for e in status["recent_events"]]
        assert "topology-changed" in kinds

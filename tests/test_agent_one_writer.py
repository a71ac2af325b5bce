"""One owner per cgroup file, on this host's real cgroup v1 hierarchies.

The controller and the agent's reconcile run together for a minute while the test injects
drift into files of both owners. Every write is attributed to its writer (the enforcer or
the controller's actuator) by the code that made it: each file must have exactly one
writer, the enforcer must never touch the BE box's controlled knobs (so a quota the
controller set can never be lifted by it), and drift is repaired by the file's owner
without flapping.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from corral.agent.config import settings_from
from corral.agent.run import open_service
from corral.control.ownership import CONTROLLED_FILES
from corral.enforce import cgroupfs
from corral.placement.workload import Workload
from tests.real_cgroups import CGROUP_ROOT, v1_skip_reason

RUN_S = 60.0
SKIP = v1_skip_reason(("cpuset", "cpu", "memory", "freezer"))


def _owner(frame: FrameType | None) -> str:
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module.startswith("corral.control."):
            return "controller"
        if module in ("corral.enforce.enforcer", "corral.agent.cgroups", "corral.enforce.hygiene"):
            return "enforcer"
        frame = frame.f_back
    return "other"


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str, str]]]:
    """Every cgroupfs write of corral's code, as (owner, path, value)."""
    real = cgroupfs.write_file
    log: list[tuple[str, str, str]] = []

    def recording(path: Any, value: str, *args: Any, **kwargs: Any) -> Any:
        log.append((_owner(sys._getframe(1)), str(path), value))
        return real(path, value, *args, **kwargs)

    for name, module in list(sys.modules.items()):
        if name.startswith("corral.") and getattr(module, "write_file", None) is real:
            monkeypatch.setattr(module, "write_file", recording)
    yield log


def _attach(cgroup: str, pid: int) -> None:
    for hierarchy in ("cpuset", "cpu", "memory", "cpuacct"):
        procs = CGROUP_ROOT / hierarchy / cgroup / "cgroup.procs"
        if procs.exists():
            procs.write_text(str(pid))


async def _until(what: str, probe: Callable[[], Any], timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.root
@pytest.mark.slow
@pytest.mark.skipif(SKIP is not None, reason=str(SKIP))
def test_controller_and_reconcile_for_a_minute_each_file_has_one_writer_and_quota_holds(
    tmp_path: Path, parent: str, writes: list[tuple[str, str, str]]
) -> None:
    latency = tmp_path / "lat.json"
    # slack 0.03 < 0.05: the controller shrinks BE to its floors and then sets the quota.
    latency.write_text(json.dumps({"p99_ms": 0.97, "rps": 20000}))
    control = {
        "top": {"period_s": 0.3, "cooldown_s": 1.0},
        "trial": {"settle_s": 0.3, "hold_s": 5.0},
        "sub_period_s": 0.3,
        "workloads": [
            {
                "name": "web",
                "slo": {"percentile": 99, "target_ms": 1.0, "window_s": 1.0},
                "peak_rps": 100000,
                "latency": {"kind": "file", "path": str(latency), "stale_s": 3600},
            }
        ],
    }
    settings = settings_from(
        {
            "topology": "sysfs",
            "state_path": str(tmp_path / "state.db"),
            "cgroup_parent": parent,
            "coalesce_window_s": 0.01,
            "reconcile_period_s": 2.0,
            "sample_period_s": 1.0,
            "control": control,
        }
    )
    box = f"{parent}/be"
    quota_file = CGROUP_ROOT / "cpu" / box / "cpu.cfs_quota_us"
    web_shares = CGROUP_ROOT / "cpu" / parent / "web" / "cpu.shares"
    sleepers = [subprocess.Popen(["sleep", "300"]) for _ in range(2)]
    injected: Counter[str] = Counter()

    async def main() -> dict[str, Any]:
        service, _ = await open_service(settings)
        try:
            await service.start()
            runner = asyncio.create_task(service.run())
            await service.put(Workload(id="web", qos="LC", cpus=1), wait=True)
            await service.put(Workload(id="batch", qos="BE", cpus=1), wait=True)
            _attach(f"{parent}/web", sleepers[0].pid)
            _attach(f"{box}/batch", sleepers[1].pid)
            control_state = service.control
            assert control_state is not None

            def quota_set() -> bool:
                text = quota_file.read_text().strip()
                return text != "-1"

            await _until("the controller to set a BE quota", quota_set)
            started = time.monotonic()
            while time.monotonic() - started < RUN_S:
                await asyncio.sleep(6.0)
                # Drift in a file of each owner: an LC weight (the enforcer's) and the BE
                # quota lifted behind the controller's back (the controller's).
                web_shares.write_text("3")
                injected[str(web_shares)] += 1
                quota_file.write_text("-1")
                injected[str(quota_file)] += 1
            await service.reconcile()
            await asyncio.sleep(1.0)
            status = service.status()
            runner.cancel()
            with suppress(asyncio.CancelledError):
                await runner
            return status
        finally:
            service.close()

    try:
        status = asyncio.run(main())
    finally:
        for sleeper in sleepers:
            sleeper.kill()
            sleeper.wait()

    owners: dict[str, set[str]] = defaultdict(set)
    counts: Counter[tuple[str, str]] = Counter()
    for owner, path, _ in writes:
        owners[path].add(owner)
        counts[(owner, path)] += 1
    shared = {path: who for path, who in owners.items() if len(who) > 1}
    assert shared == {}, f"files with two writers: {shared}"
    assert "other" not in {o for who in owners.values() for o in who}

    box_dirs = {str(CGROUP_ROOT / h / box) for h in ("cpu", "cpuset", "memory")}
    enforcer_on_box = [
        path
        for (owner, path) in counts
        if owner == "enforcer"
        and str(Path(path).parent) in box_dirs
        and Path(path).name in CONTROLLED_FILES
    ]
    assert enforcer_on_box == [], "the enforcer wrote the controller's BE knobs"
    be_child_cpus = str(CGROUP_ROOT / "cpuset" / box / "batch" / "cpuset.cpus")
    assert owners.get(be_child_cpus, {"controller"}) == {"controller"}

    # Drift was repaired by its owner: the LC weight by the enforcer, at most once per
    # injection (plus its first write): no flapping between two writers.
    assert owners[str(web_shares)] == {"enforcer"}
    assert counts[("enforcer", str(web_shares))] <= injected[str(web_shares)] + 1
    assert web_shares.read_text().strip() != "3"
    # ... and the quota by the controller: the file holds the controller's choice again.
    assert owners[str(quota_file)] == {"controller"}
    quota_cpus = status["control"]["be"]["quota_cpus"]
    want = "-1" if quota_cpus is None else str(max(1000, int(quota_cpus * 100_000)))
    assert quota_file.read_text().strip() == want, [v for _, p, v in writes if p == str(quota_file)]
    assert status["enforcement_errors"] == []
    print(
        f"\nwrites per owner: {Counter(o for o, _, _ in writes)}; files: {len(owners)}; "
        f"drift injected: {sum(injected.values())}; "
        f"controller quota writes: {counts[('controller', str(quota_file))]}"
    )

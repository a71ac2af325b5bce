"""The colocation controller inside `corral agent`: configured from the agent's YAML, shown
in /status and /metrics, every action stored as an event with its reason, and the agent's
own enforcement and reconcile never undoing the controller's BE cores."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from collections.abc import Callable
from contextlib import closing, suppress
from pathlib import Path
from typing import Any

import httpx
import pytest

from corral.agent.config import settings_from
from corral.bench.agent_process import AgentProcess
from corral.control.ownership import CONTROLLED_FILES, be_pool_cores
from corral.enforce.desired import EnforceSettings, desired_states
from corral.errors import InputError
from corral.placement.assignment import Assignment, Placement
from corral.placement.workload import Workload
from corral.topology.cpuset import CpuSet
from corral.topology.presets import toy_16
from tests.fixtures.cgroup_trees import add_v1_cgroup, write_v1_root
from tests.polling import wait_for
from tests.real_cgroups import CGROUP_ROOT, v1_skip_reason

FAST = {
    "top": {"period_s": 0.2, "cooldown_s": 1.0},
    "trial": {"settle_s": 0.2, "hold_s": 5.0},
    "sub_period_s": 0.2,
}


def _control(latency: Path, **extra: Any) -> dict[str, Any]:
    return {
        **FAST,
        "workloads": [
            {
                "name": "cache",
                "slo": {"percentile": 99, "target_ms": 1.0, "window_s": 1.0},
                "peak_rps": 100000,
                "latency": {"kind": "file", "path": str(latency), "stale_s": 3600},
            }
        ],
        **extra,
    }


def _write_latency(path: Path, p99_ms: float) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"p99_ms": p99_ms, "rps": 20000}))
    tmp.replace(path)  # the controller never reads a half-written record


def _wait(what: str, probe: Callable[[], Any], timeout_s: float = 20.0) -> Any:
    return wait_for(what, probe, timeout_s=timeout_s, interval_s=0.05)


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics:\n{text}")


# --- the ownership rule, as pure functions ---------------------------------------------


def test_the_controller_only_gets_whole_cores_of_the_shared_pool() -> None:
    topo = toy_16()  # 8 cores of 2 threads: (0,8), (1,9), ...
    exclusive = CpuSet([6, 14, 7, 15])
    placement = Placement(
        assignments={"lc": Assignment("lc", exclusive, "exclusive")},
        pools={"exclusive": exclusive, "shared": topo.all_cpus - exclusive},
    )
    cores = be_pool_cores(topo, placement)
    assert len(cores) == 6
    assert all(core.isdisjoint(exclusive) for core in cores)


def test_the_enforcer_leaves_the_controllers_files_to_the_controller() -> None:
    topo = toy_16()
    shared = CpuSet.range(0, 16)
    placement = Placement(
        assignments={
            "batch": Assignment("batch", shared, "shared"),
            "web": Assignment("web", shared, "shared"),
        },
        pools={"shared": shared},
    )
    workloads = [Workload(id="batch", qos="BE", cpus=1), Workload(id="web", qos="LC", cpus=2)]
    owned = EnforceSettings(controlled_be_files=CONTROLLED_FILES)
    states = {s.cgroup: s for s in desired_states(topo, workloads, placement, settings=owned)}
    assert states["corral/be"].foreign_files == CONTROLLED_FILES
    assert states["corral/be/batch"].foreign_files == {"cpuset.cpus"}
    assert states["corral/web"].foreign_files == frozenset()
    alone = desired_states(topo, workloads, placement, settings=EnforceSettings())
    assert all(not s.foreign_files for s in alone)  # without a controller: all the enforcer's


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"top": {"period_s": 0}}, "control.top.period_s"),
        ({"cores": {"shrink_stp": 1}}, "control.cores.shrink_stp"),
        ({"cgroups": {"be": "/abs/be"}}, "control.cgroups.be"),
        ({"workloads": [{"name": "x", "latency": {"kind": "file"}}]},
         "control.workloads[0].latency.path"),
        ({"workloads": [{"name": "x", "latency": {"kind": "probe", "port": 0}}]},
         "control.workloads[0].latency.port"),
    ],
)  # fmt: skip
def test_a_bad_control_section_names_the_field_and_the_fix(
    tmp_path: Path, patch: dict[str, Any], field: str
) -> None:
    control = _control(tmp_path / "lat.json")
    control.update(patch)
    with pytest.raises(InputError) as err:
        settings_from({"control": control})
    assert err.value.field == f"config.{field}"
    assert err.value.fix


def test_the_agent_refuses_to_start_with_a_bad_control_section(tmp_path: Path) -> None:
    proc = AgentProcess(tmp_path, {"topology": "toy-16", "dry_run": True, "control": {"top": 1}})
    with pytest.raises(Exception, match="control"):
        proc.start(timeout_s=20)
    assert "control" in proc.log_tail()


# --- a real agent on a cgroup tree in a temporary directory ----------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = write_v1_root(tmp_path / "cgroup", cpus="0-15", mems="0-1")
    for cgroup in ("corral", "corral/be", "corral/be/batch", "corral/be/more"):
        add_v1_cgroup(root, cgroup)
    return root


def _cpus(root: Path, cgroup: str) -> CpuSet:
    return CpuSet.parse((root / "cpuset" / cgroup / "cpuset.cpus").read_text().strip())


def test_a_slack_drop_shrinks_be_with_a_reason_in_status_metrics_and_the_event_log(
    tmp_path: Path, tree: Path
) -> None:
    latency = tmp_path / "lat.json"
    _write_latency(latency, 0.2)  # slack 0.8: BE may grow
    settings = {
        "topology": "toy-16",
        "cgroup_root": str(tree),
        "coalesce_window_s": 0.01,
        "control": _control(latency),
    }
    with (
        AgentProcess(tmp_path / "agent", settings) as agent,
        httpx.Client(base_url=agent.url, timeout=10) as http,
    ):
        assert http.get("/status").json()["dry_run"] is False
        put = http.put("/workloads/batch?wait=true", json={"qos": "BE", "cpus": 1})
        assert put.status_code == 201, put.text

        def grown() -> dict[str, Any] | None:
            control = http.get("/status").json()["control"]
            return control if control["be"]["cores"] >= 3 else None

        control = _wait("BE to grow to 3 cores", grown)
        assert control["be_cgroup"] == "corral/be"
        assert control["lc"][0]["name"] == "cache"
        assert control["lc"][0]["slack"] == pytest.approx(0.8)

        # The agent's enforcement follows the controller: a new decision (another BE
        # workload) and a reconcile both leave BE on the controller's CPUs.
        put = http.put("/workloads/more?wait=true", json={"qos": "BE", "cpus": 1})
        assert put.status_code == 201, put.text
        report = http.post("/reconcile").json()
        assert not [d for d in report["found"] if "/corral/be/" in d["file"] + "/"], report
        be_cpus = CpuSet.parse(http.get("/status").json()["control"]["be"]["cpus"])
        assert _cpus(tree, "corral/be") == be_cpus
        assert _cpus(tree, "corral/be/batch") == be_cpus
        assert _cpus(tree, "corral/be/more") == be_cpus
        assert len(be_cpus) < 16  # not the shared pool the placement gave BE
        assert http.get("/status").json()["enforcement_errors"] == []

        # Slack falls to 3%: shrink mode takes cores from BE (after rolling back a growth
        # step still on trial, and taking back the weight first).
        before = http.get("/status").json()["control"]["be"]["cores"]
        _write_latency(latency, 0.97)

        def shrunk() -> dict[str, Any] | None:
            control = http.get("/status").json()["control"]
            shrinks = [r for r in control["recent"] if "shrink cores" in r["reason"]]
            return control if shrinks else None

        control = _wait("a shrink of BE cores", shrunk)
        shrink = [r for r in control["recent"] if "shrink cores" in r["reason"]][-1]
        assert shrink["kind"] == "SetCpus" and "slack 0.03 < 0.05" in shrink["reason"]
        assert control["mode"] == "shrink"
        assert control["be"]["cores"] < before
        be_cpus = CpuSet.parse(control["be"]["cpus"])
        assert _cpus(tree, "corral/be") == be_cpus
        assert _cpus(tree, "corral/be/batch") == be_cpus

        metrics = http.get("/metrics").text
        assert _metric(metrics, "corral_control_slack") == pytest.approx(0.03)
        assert _metric(metrics, "corral_control_be_cores") == control["be"]["cores"]
        assert _metric(metrics, "corral_control_be_idle") == 1.0
        assert 'corral_control_actions_total{kind="SetCpus"}' in metrics
        assert _metric(metrics, "corral_control_action_failures_total") == 0.0
        events = http.get("/status").json()["recent_events"]
        assert any(e["kind"] == "control" and "shrink cores" in e["detail"] for e in events)
        assert agent.terminate() == 0
    with closing(sqlite3.connect(tmp_path / "agent" / "state.db")) as db:
        rows = db.execute("SELECT kind, detail FROM events WHERE kind LIKE 'control%'").fetchall()
    assert any(k == "control" and "shrink cores" in d and "slack" in d for k, d in rows)
    assert any(k == "control-mode" and "mode shrink" in d for k, d in rows)


def test_a_dry_run_agent_runs_the_controller_without_writing(tmp_path: Path) -> None:
    latency = tmp_path / "lat.json"
    _write_latency(latency, 5.0)  # slack -4: BE disabled
    settings = {"topology": "toy-16", "dry_run": True, "control": _control(latency)}
    with (
        AgentProcess(tmp_path / "agent", settings) as agent,
        httpx.Client(base_url=agent.url, timeout=10) as http,
    ):

        def disabled() -> dict[str, Any] | None:
            control = http.get("/status").json()["control"]
            return control if control["mode"] == "disable" else None

        control = _wait("BE to be disabled", disabled)
        assert "slack -4.00 < 0" in control["reason"]
        assert _metric(http.get("/metrics").text, 'corral_control_mode{mode="disable"}') == 1.0


# --- the real cgroup v1 hierarchy of this host -----------------------------------------

REAL_SKIP = v1_skip_reason(("cpuset", "cpu", "freezer"))


@pytest.mark.root
@pytest.mark.skipif(REAL_SKIP is not None, reason=str(REAL_SKIP))
def test_on_real_cgroups_a_violation_floors_be_freezes_it_and_stopping_thaws_it(
    tmp_path: Path, parent: str
) -> None:
    latency = tmp_path / "lat.json"
    _write_latency(latency, 0.2)
    control = _control(latency, evict={"freeze_after_periods": 1, "thaw_interval_s": 0.2})
    settings = {
        "topology": "sysfs",
        "cgroup_parent": parent,
        "coalesce_window_s": 0.01,
        "control": control,
    }
    sleeper = subprocess.Popen(["sleep", "120"])
    try:
        with (
            AgentProcess(tmp_path / "agent", settings) as agent,
            httpx.Client(base_url=agent.url, timeout=10) as http,
        ):
            assert http.get("/status").json()["dry_run"] is False
            put = http.put("/workloads/batch?wait=true", json={"qos": "BE", "cpus": 0.5})
            assert put.status_code == 201, put.text
            box = f"{parent}/be"
            for hierarchy in ("cpuset", "cpu"):
                procs = CGROUP_ROOT / hierarchy / box / "batch" / "cgroup.procs"
                procs.write_text(str(sleeper.pid))
            _write_latency(latency, 3.0)  # slack -2: BE to its floor, then frozen

            freezer = CGROUP_ROOT / "freezer" / box / "batch" / "freezer.state"

            def frozen() -> bool:
                with suppress(OSError):
                    return freezer.read_text().strip() == "FROZEN"
                return False

            _wait("the BE workload to be frozen", frozen)
            status = http.get("/status").json()["control"]
            assert status["mode"] == "disable" and status["frozen"] == ["batch"]
            assert (CGROUP_ROOT / "cpu" / box / "cpu.idle").read_text().strip() == "1"
            be_cpus = (CGROUP_ROOT / "cpuset" / box / "cpuset.cpus").read_text().strip()
            assert be_cpus == status["be"]["cpus"]
            assert agent.terminate() == 0
        assert freezer.read_text().strip() == "THAWED"  # stopping the agent thaws BE
    finally:
        sleeper.kill()
        sleeper.wait()


CRASH_SKIP = v1_skip_reason(("cpuset", "cpu", "freezer", "memory"))


@pytest.mark.root
@pytest.mark.skipif(CRASH_SKIP is not None, reason=str(CRASH_SKIP))
def test_on_real_cgroups_an_oom_looping_be_workload_is_held_and_shown(
    tmp_path: Path, parent: str
) -> None:
    """A BE workload with a 64 MiB limit runs a stress-ng worker asking 256 MiB: the
    kernel kills it, stress-ng restarts it; with LC inside its SLO the agent's crash-loop
    rule freezes that workload alone, and /status, /metrics and the event log say why."""
    latency = tmp_path / "lat.json"
    _write_latency(latency, 0.2)  # LC is fine: only the crash-loop rule acts
    control = _control(latency, crash_loop={"kills": 3, "window_s": 30, "hold_s": 60})
    settings = {
        "topology": "sysfs",
        "cgroup_parent": parent,
        "coalesce_window_s": 0.01,
        "control": control,
    }
    looper: subprocess.Popen[bytes] | None = None
    try:
        with (
            AgentProcess(tmp_path / "agent", settings) as agent,
            httpx.Client(base_url=agent.url, timeout=10) as http,
        ):
            body = {"qos": "BE", "cpus": 0.5, "memory_limit": "64Mi"}
            put = http.put("/workloads/loop?wait=true", json=body)
            assert put.status_code == 201, put.text
            box = f"{parent}/be"
            procs = " ".join(
                str(CGROUP_ROOT / h / box / "loop" / "cgroup.procs")
                for h in ("memory", "freezer", "cpuset", "cpu")
            )
            # Join the workload's cgroups before exec: stress-ng forks its worker at once.
            looper = subprocess.Popen(
                ["sh", "-c", 'for f in $PROCS; do echo $$ > "$f"; done; exec "$@"', "sh",
                 "stress-ng", "--vm", "1", "--vm-bytes", "256M", "--vm-keep", "--timeout", "60s"],
                env={**os.environ, "PROCS": procs},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip

            def held() -> list[dict[str, Any]]:
                return http.get("/status").json()["control"]["crash_loop"]["held"]

            assert http.get("/status").json()["control"]["crash_loop"]["enabled"] is True
            holds = _wait("the looping workload to be held", held)
            assert [h["workload"] for h in holds] == ["loop"]
            freezer = CGROUP_ROOT / "freezer" / box / "loop" / "freezer.state"
            assert freezer.read_text().strip() in ("FROZEN", "FREEZING")
            metrics = http.get("/metrics").text
            assert _metric(metrics, "corral_control_crash_loop_held_workloads") == 1.0
            events = http.get("/status").json()["recent_events"]
            assert any("crash loop" in e["detail"] for e in events if e["kind"] == "control")
            assert agent.terminate() == 0
        assert freezer.read_text().strip() == "THAWED"  # stopping the agent thaws it
    finally:
        if looper is not None:
            with suppress(ProcessLookupError):
                os.killpg(looper.pid, 9)
            looper.wait()

"""The agent's parts on their own: coalescing, the SQLite store, sampling, settings, auth,
decisions and the dry-run enforcer."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from corral.agent.api import WorkloadSpec, create_app
from corral.agent.cgroups import make_enforcer
from corral.agent.config import AgentSettings, load_settings, parse_listen
from corral.agent.decide import decide
from corral.agent.enforcer import DryRunEnforcer
from corral.agent.events import CoalescingQueue, Event, EventKind
from corral.agent.sampler import UsageSampler
from corral.agent.service import AgentService
from corral.agent.state import LoggedEvent, StateStore, Status, StoredWorkload, UsageRow
from corral.enforce.usage import CpuUsage, UsageReader
from corral.errors import InputError
from corral.placement.assignment import Assignment
from corral.placement.workload import Policy, Qos, Workload
from corral.topology.cpuset import CpuSet
from corral.topology.presets import r4_16xlarge, toy_16
from tests.fixtures.cgroup_trees import add_v1_cgroup, add_v2_cgroup, write_v1_root, write_v2_root


# --- coalescing ----------------------------------------------------------------------------
class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_queued_before_the_consumer_runs_is_one_batch() -> None:
    async def main() -> list[list[Event]]:
        queue = CoalescingQueue(window_s=0.0, max_s=0.0)
        for i in range(200):
            queue.put(Event(EventKind.ADD, f"w{i}"))
        first = await queue.next_batch()
        queue.put(Event(EventKind.REMOVE, "w0"))
        return [first, await queue.next_batch()]

    first, second = asyncio.run(main())
    assert len(first) == 200
    assert [e.workload_id for e in second] == ["w0"]


def test_coalescing_stops_at_max_even_while_events_keep_coming() -> None:
    clock = FakeClock()

    async def main() -> int:
        queue = CoalescingQueue(window_s=10.0, max_s=5.0, clock=clock)
        queue.put(Event(EventKind.ADD, "a"))
        clock.now = 6.0  # past max_s since the first event: no more waiting
        queue.put(Event(EventKind.ADD, "b"))
        return len(await asyncio.wait_for(queue.next_batch(), timeout=1.0))

    assert asyncio.run(main()) == 2


# --- store ---------------------------------------------------------------------------------
def _stored(wid: str, revision: int, cpus: float = 1.0) -> StoredWorkload:
    return StoredWorkload(Workload(id=wid, cpus=cpus), Status.PENDING, "", revision, 1.0, 1.0)


def test_store_is_wal_and_reloads_what_was_committed(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s.db")
    store.put_pending(_stored("a", 1), event=LoggedEvent("queued", "a"))
    store.commit_decision(
        at_s=2.0,
        trigger="add",
        events=[LoggedEvent("add", "a")],
        workloads=[StoredWorkload(Workload(id="a", cpus=1), Status.PLACED, "", 1, 1.0, 2.0)],
        removed={},
        assignments={"a": Assignment("a", CpuSet.parse("0-3"), "shared")},
        duration_ms=1.0,
        allocator="greedy",
        moves=0,
        detail={},
    )
    store.add_usage([UsageRow("a", 3.0, 0.5, 1.0)])
    with closing(sqlite3.connect(tmp_path / "s.db")) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        columns = [row[1] for row in db.execute("PRAGMA table_info(usage)")]
    assert columns == ["workload_id", "timestamp_s", "usage_cores", "capacity_cores"]
    store.close()
    again = StateStore(tmp_path / "s.db")
    assert again.load_workloads()["a"].status is Status.PLACED
    assert again.load_assignments()["a"].cpuset == CpuSet.parse("0-3")
    assert again.usage_of("a") == [UsageRow("a", 3.0, 0.5, 1.0)]
    assert again.decision_count() == 1
    again.close()


def test_a_late_decision_never_overwrites_a_newer_acknowledged_spec(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s.db")
    store.put_pending(_stored("a", 5, cpus=3), event=LoggedEvent("queued", "a"))
    store.commit_decision(
        at_s=2.0,
        trigger="add",
        events=[],
        workloads=[_stored("a", 4, cpus=1)],
        removed={"b": 4},
        assignments={},
        duration_ms=1.0,
        allocator="greedy",
        moves=0,
        detail={},
    )
    assert store.load_workloads()["a"].workload.cpus == 3
    store.close()


# --- sampling ------------------------------------------------------------------------------
def test_the_usage_reader_follows_the_detected_layout_not_fixed_paths(tmp_path: Path) -> None:
    # Split v1 (this VM's shape) under one root, and a pure v2 mount under another; the
    # layout-specific cases are in tests/test_usage_sampling.py.
    write_v1_root(tmp_path / "v1")
    add_v1_cgroup(tmp_path / "v1", "corral/a")
    (tmp_path / "v1/cpuacct/corral/a/cpuacct.usage").write_text("1500000000\n")
    write_v2_root(tmp_path / "v2")
    add_v2_cgroup(tmp_path / "v2", "corral/b")
    (tmp_path / "v2/corral/b/cpu.stat").write_text("usage_usec 2500\nuser_usec 1\n")

    def ns(root: Path, cgroup: str) -> int | None:
        result = UsageReader.at(root).read(cgroup)
        return result.ns if isinstance(result, CpuUsage) else None

    assert ns(tmp_path / "v1", "corral/a") == 1_500_000_000
    assert ns(tmp_path / "v2", "/corral/b") == 2_500_000
    assert ns(tmp_path / "v1", "corral/missing") is None
    assert ns(tmp_path / "nothing", "corral/a") is None


@given(st.lists(st.floats(min_value=0, max_value=8), min_size=2, max_size=30))
def test_sampled_utilisation_is_the_mean_rate_over_each_window(rates: list[float]) -> None:
    sampler = UsageSampler(downsample_s=10.0)
    usage = 0
    rows = sampler.observe(0.0, {"w": (0, 2.0)})
    for step, rate in enumerate(rates, start=1):
        usage += int(rate * 5 * 1e9)  # 5 s per sample
        rows += sampler.observe(step * 5.0, {"w": (usage, 2.0)})
        assert sampler.latest["w"] == pytest.approx(rate, abs=1e-6)
    for row, pair in zip(rows, zip(rates[::2], rates[1::2], strict=False), strict=False):
        assert row.usage_cores == pytest.approx(sum(pair) / 2, abs=1e-6)
        assert row.capacity_cores == 2.0


def test_a_counter_that_goes_back_restarts_the_series() -> None:
    sampler = UsageSampler(downsample_s=1.0)
    sampler.observe(0.0, {"w": (10**9, 1.0)})
    assert sampler.observe(1.0, {"w": (5, 1.0)}) == []
    assert "w" not in sampler.latest
    sampler.observe(2.0, {})
    assert sampler.latest == {}


# --- settings ------------------------------------------------------------------------------
def test_settings_name_the_bad_field(tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text("listen: nowhere\n")
    with pytest.raises(InputError) as err:
        load_settings(config, {})
    assert "listen" in err.value.field
    config.write_text("rebalance_period: 3\n")
    with pytest.raises(InputError) as err:
        load_settings(config, {})
    assert "allowed keys" in err.value.fix
    config.write_text("allocator: magic\n")
    with pytest.raises(InputError, match="optimal"):
        load_settings(config, {})


def test_flags_override_the_file_and_remote_listeners_need_a_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CORRAL_AGENT_TOKEN", raising=False)
    config = tmp_path / "agent.yaml"
    config.write_text("listen: 127.0.0.1:9000\nrebalance_period_s: 60\n")
    settings = load_settings(config, {"listen": "127.0.0.2:9001", "topology": None})
    assert settings.listen_address == ("127.0.0.2", 9001)
    assert settings.rebalance_period_s == 60
    with pytest.raises(InputError, match="token"):
        load_settings(None, {"listen": "10.0.0.1:9000"})
    monkeypatch.setenv("CORRAL_AGENT_TOKEN", "t")
    assert load_settings(None, {"listen": "[::]:9000"}).needs_token()
    assert parse_listen("[::1]:80") == ("::1", 80)


# --- API auth and schema -------------------------------------------------------------------
def test_a_token_guards_every_route_but_healthz(tmp_path: Path) -> None:
    settings = AgentSettings(state_path=tmp_path / "s.db", topology="toy-16", dry_run=True)
    store = StateStore(settings.state_path)
    service = AgentService(
        settings=settings, topology=toy_16(), store=store, enforcer=DryRunEnforcer(toy_16())
    )
    app = create_app(service, registry=CollectorRegistry(), token="s3cret")

    async def main() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://agent") as client:
            return [
                (await client.get("/healthz")).status_code,
                (await client.get("/status")).status_code,
                (await client.get("/status", headers={"Authorization": "Bearer no"})).status_code,
                (
                    await client.get("/status", headers={"Authorization": "Bearer s3cret"})
                ).status_code,
            ]

    assert asyncio.run(main()) == [200, 401, 401, 200]
    store.close()


def test_the_documented_body_has_the_fields_of_a_workload() -> None:
    assert set(WorkloadSpec.model_fields) == set(Workload.model_fields)


# --- decisions and the dry-run enforcer ----------------------------------------------------
def test_placed_exclusive_workloads_keep_their_cpus_when_others_arrive() -> None:
    topo = r4_16xlarge()
    first = [Workload(id="a", cpus=2, policy="exclusive")]
    placed = decide(topo, first, {}, allocator="greedy", budget_ms=20, rebalance=False)
    previous = dict(placed.placement.assignments)
    more = [*first, Workload(id="b", cpus=8, policy="exclusive")]
    for allocator in ("greedy", "optimal"):
        again = decide(topo, more, previous, allocator=allocator, budget_ms=20, rebalance=False)
        assert again.placement.cpuset_of("a") == previous["a"].cpuset
        assert again.placement.cpuset_of("b").isdisjoint(previous["a"].cpuset)
        assert again.moves == 0


def test_the_dry_run_enforcer_records_writes_and_reports_drift() -> None:
    topo = toy_16()
    enforcer = DryRunEnforcer(topo)
    workloads = [Workload(id="a", cpus=2, policy="exclusive")]
    made = decide(topo, workloads, {}, allocator="greedy", budget_ms=20, rebalance=False)
    report = enforcer.apply(workloads, made.placement)
    assert report.written == 2
    assert enforcer.apply(workloads, made.placement).written == 0
    enforcer.files["a"]["cpuset.cpus"] = "0-15"
    drift = enforcer.drift(workloads, made.placement)
    assert [(d.workload_id, d.file, d.got) for d in drift] == [("a", "cpuset.cpus", "0-15")]
    enforcer.repair(workloads, made.placement)
    assert enforcer.drift(workloads, made.placement) == []


def test_the_documented_choices_are_the_workload_enums() -> None:
    schema = WorkloadSpec.model_json_schema()
    assert "$defs" not in schema
    assert schema["properties"]["qos"]["enum"] == [q.value for q in Qos]
    assert schema["properties"]["policy"]["enum"] == [p.value for p in Policy]


def test_without_a_writable_cpuset_hierarchy_the_agent_runs_a_dry_run_that_says_why(
    tmp_path: Path,
) -> None:
    enforcer = make_enforcer(
        toy_16(), dry_run=None, cgroup_root=tmp_path, proc_root=tmp_path, parent="corral"
    )
    assert enforcer.dry_run
    assert "no cpuset controller" in enforcer.describe()
    with pytest.raises(InputError, match="cannot enforce: no cpuset controller") as err:
        make_enforcer(
            toy_16(), dry_run=False, cgroup_root=tmp_path, proc_root=tmp_path, parent="corral"
        )
    assert "--enforce" in err.value.fix
    forced = make_enforcer(
        toy_16(), dry_run=True, cgroup_root=tmp_path, proc_root=tmp_path, parent="corral"
    )
    assert "--dry-run" in forced.describe()

"""Desired state per workload, weight conversions, and the v1/v2 file mapping."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.enforce.desired import CpuMax, DesiredState, EnforceSettings, Kind, desired_states
from corral.enforce.detect import Version
from corral.enforce.files import canonical, cpu_files, memory_files
from corral.enforce.weights import (
    Conversion,
    quota_from_cores,
    shares_from_cores,
    shares_to_weight,
    weight_to_shares,
)
from corral.errors import InputError
from corral.placement.allocate import allocate
from corral.placement.workload import parse_workloads_document
from corral.topology.cpuset import CpuSet
from corral.topology.model import Cpu, Topology


def two_node_topology() -> Topology:
    return Topology.from_records(
        [Cpu(id=i, core=i, socket=i // 4, numa=i // 4, l3=i // 4) for i in range(8)], name="2x4"
    )


def test_kubelet_shares_and_quota_from_cores() -> None:
    assert shares_from_cores(1) == 1024
    assert shares_from_cores(0.25) == 256
    assert shares_from_cores(0.001) == 2  # kubelet's MinShares
    assert shares_from_cores(1000) == 262144  # MaxShares
    assert quota_from_cores(0.5) == 50_000
    assert quota_from_cores(0.001) == 1_000  # MinQuotaPeriod


def test_shares_to_weight_matches_runc_at_the_fixed_points() -> None:
    assert shares_to_weight(1024, Conversion.LINEAR) == 39
    assert shares_to_weight(1024, Conversion.QUADRATIC) == 100
    for conv in Conversion:
        assert shares_to_weight(2, conv) == 1
        assert shares_to_weight(262144, conv) == 10000
        assert weight_to_shares(1, conv) == 2
        assert weight_to_shares(10000, conv) == 262144
    assert weight_to_shares(100, Conversion.QUADRATIC) == 1024


@given(st.integers(2, 262144), st.integers(2, 262144), st.sampled_from(list(Conversion)))
def test_weight_conversion_keeps_the_order_of_shares(a: int, b: int, conv: Conversion) -> None:
    if a <= b:
        assert shares_to_weight(a, conv) <= shares_to_weight(b, conv)


@given(st.integers(1, 10000), st.sampled_from(list(Conversion)))
def test_weight_round_trips_through_shares(weight: int, conv: Conversion) -> None:
    assert abs(shares_to_weight(weight_to_shares(weight, conv), conv) - weight) <= max(
        1, weight // 50
    )


def placed(
    doc: list[dict[str, object]], settings: EnforceSettings | None = None
) -> dict[str, DesiredState]:
    topo = two_node_topology()
    workloads = parse_workloads_document({"workloads": doc})
    placement = allocate(topo, workloads)
    return {s.name: s for s in desired_states(topo, workloads, placement, settings=settings)}


def test_workload_states_follow_the_rules() -> None:
    states = placed(
        [
            {"id": "web", "qos": "LC", "cpus": 4, "policy": "exclusive", "memory_limit": "1Gi"},
            {
                "id": "agent",
                "qos": "system",
                "cpus": 0.5,
                "memory_request": "100Mi",
                "memory_limit": "200Mi",
            },
            {"id": "batch", "qos": "BE", "cpus": 2, "memory_limit": "2Gi"},
        ]
    )
    web, agent, batch = states["web"], states["agent"], states["batch"]
    assert web.cgroup == "corral/web" and web.exclusive and web.create
    assert web.cpus is not None and len(web.cpus) == 4 and web.mems == (0,)
    assert web.shares == 4096 and web.idle is False
    assert web.cpu_max == CpuMax(quota_us=None)  # exclusive: never a quota
    assert web.memory is not None and web.memory.max == 1 << 30 and web.memory.high is None
    assert agent.cpu_max == CpuMax(quota_us=50_000)  # system agents are capped
    assert agent.memory is not None
    assert agent.memory.high == (100 * 2**20 + int(0.9 * 100 * 2**20)) // 4096 * 4096
    assert batch.cgroup == "corral/be/batch" and batch.idle is True and batch.shares == 2
    box = states["corral/be"]
    assert box.kind is Kind.BE_BOX and box.idle and box.cpus == batch.cpus
    assert box.memory is not None and box.memory.max == 2 << 30
    parent = states["corral"]
    assert parent.kind is Kind.PARENT and parent.cpus == CpuSet.range(0, 8)
    assert parent.mems == (0, 1) and parent.shares is None and parent.memory is None


def test_be_box_memory_max_can_be_set_and_is_page_aligned() -> None:
    states = placed(
        [{"id": "batch", "qos": "BE", "cpus": 1}],
        EnforceSettings(be_memory_max=10_000_000),
    )
    memory = states["corral/be"].memory
    assert memory is not None and memory.max == 10_000_000 // 4096 * 4096


def test_a_located_workload_keeps_its_cgroup_and_is_not_created() -> None:
    topo = two_node_topology()
    workloads = parse_workloads_document(
        {"workloads": [{"id": "web", "qos": "LC", "cpus": 1, "container_id": "ab" * 32}]}
    )
    placement = allocate(topo, workloads)
    with pytest.raises(InputError, match="not located"):
        desired_states(topo, workloads, placement)
    states = desired_states(topo, workloads, placement, locations={"web": "docker/" + "ab" * 32})
    web = states[-1]
    assert web.cgroup == "docker/" + "ab" * 32 and not web.create


def test_bad_settings_name_the_field() -> None:
    with pytest.raises(InputError, match="period_us"):
        EnforceSettings(period_us=10)
    with pytest.raises(InputError, match="parent"):
        EnforceSettings(parent="../escape")


def test_idle_groups_write_only_cpu_idle_and_others_reset_it_before_the_weight() -> None:
    be = DesiredState(name="b", cgroup="c/b", shares=2, idle=True)
    assert [(f.file, f.value) for f in cpu_files(be, Version.V1, has_idle=True)] == [
        ("cpu.idle", "1")
    ]
    assert [(f.file, f.value) for f in cpu_files(be, Version.V1, has_idle=False)] == [
        ("cpu.shares", "2")
    ]
    lc = DesiredState(name="w", cgroup="c/w", shares=1024, idle=False, cpu_max=CpuMax(50_000))
    assert [(f.file, f.value) for f in cpu_files(lc, Version.V1, has_idle=True)] == [
        ("cpu.idle", "0"),
        ("cpu.shares", "1024"),
        ("cpu.cfs_period_us", "100000"),
        ("cpu.cfs_quota_us", "50000"),
    ]
    assert [(f.file, f.value) for f in cpu_files(lc, Version.V2, has_idle=True)] == [
        ("cpu.idle", "0"),
        ("cpu.weight", "100"),
        ("cpu.max", "50000 100000"),
    ]
    unlimited = DesiredState(name="w", cgroup="c/w", cpu_max=CpuMax(None, 200_000))
    assert [(f.file, f.value) for f in cpu_files(unlimited, Version.V1, has_idle=True)] == [
        ("cpu.cfs_quota_us", "-1"),  # the quota goes first when it becomes unlimited
        ("cpu.cfs_period_us", "200000"),
    ]


def test_memory_files_write_the_soft_limit_before_the_hard_one() -> None:
    from corral.enforce.desired import MemoryLimits

    state = DesiredState(name="w", cgroup="c/w", memory=MemoryLimits(high=4096, max=8192))
    assert [(f.file, f.value) for f in memory_files(state, Version.V1)] == [
        ("memory.soft_limit_in_bytes", "4096"),
        ("memory.limit_in_bytes", "8192"),
    ]
    assert [(f.file, f.value) for f in memory_files(state, Version.V2)] == [
        ("memory.high", "4096"),
        ("memory.max", "8192"),
    ]


def test_canonical_forms_ignore_how_the_kernel_spells_a_value() -> None:
    assert canonical("memory.limit_in_bytes", "9223372036854771712\n") == "max"
    assert canonical("memory.limit_in_bytes", "-1") == "max"
    assert canonical("memory.max", "max\n") == "max"
    assert canonical("cpuset.cpus", "3,0-1,2\n") == "0-3"
    assert canonical("cpu.cfs_quota_us", "-1\n") == "-1"
    assert canonical("cpu.max", "max  100000\n") == "max 100000"
    assert canonical("cpu.shares", "1024\n") == "1024"

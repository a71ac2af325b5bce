"""Reserved CPUs (kubelet's --reserved-cpus): never given to exclusive workloads, kept in
the shared pool for the system and the BE box."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from corral.agent.config import AgentSettings
from corral.agent.enforcer import DryRunEnforcer
from corral.agent.reserved import RESERVED_ID, reserved_set
from corral.agent.service import AgentService
from corral.agent.state import StateStore
from corral.errors import InputError, PlacementError
from corral.placement.workload import Workload
from corral.topology.cpuset import CpuSet
from corral.topology.presets import toy_16


def _service(tmp_path: Path, reserved: int | str) -> AgentService:
    settings = AgentSettings(
        state_path=tmp_path / "state.db",
        topology="toy-16",
        dry_run=True,
        coalesce_window_s=0.005,
        reserved_cpus=reserved,
    )
    return AgentService(
        settings=settings,
        topology=toy_16(),
        store=StateStore(settings.state_path),
        enforcer=DryRunEnforcer(toy_16()),
    )


def test_a_count_is_taken_like_kubelet_and_a_list_must_be_online() -> None:
    topo = toy_16()  # cores (0,8), (1,9), ...
    assert reserved_set(topo, 1) == CpuSet([0])
    assert reserved_set(topo, 2) == CpuSet([0, 8])  # a whole core first
    assert reserved_set(topo, 0) == CpuSet()
    assert reserved_set(topo, "3,11") == CpuSet([3, 11])
    with pytest.raises(InputError, match="not online"):
        reserved_set(topo, "40")
    with pytest.raises(InputError, match="leaves none"):
        reserved_set(topo, 16)


def test_exclusive_workloads_never_get_reserved_cpus_and_the_shared_pool_keeps_them(
    tmp_path: Path,
) -> None:
    service = _service(tmp_path, "0,8")

    async def main() -> tuple[str, str, str]:
        await service.start()
        runner = asyncio.create_task(service.run())
        try:
            with pytest.raises(PlacementError, match="only 14 of 14"):
                await service.put(Workload(id="all", cpus=16, policy="exclusive"), wait=True)
            placed = await service.put(Workload(id="big", cpus=14, policy="exclusive"), wait=True)
            shared = await service.put(Workload(id="web", cpus=1), wait=True)
            with pytest.raises(InputError, match="reserved CPUs"):
                await service.put(Workload(id=RESERVED_ID, cpus=1), wait=True)
            status = service.status()
        finally:
            runner.cancel()
            with pytest.raises(asyncio.CancelledError):
                await runner
        assert RESERVED_ID not in service.placement.assignments
        return (
            str(placed.view.assignment.cpuset),
            str(shared.view.assignment.cpuset),
            str(status["reserved_cpus"]),
        )

    try:
        big, web, reserved = asyncio.run(main())
    finally:
        service.close()
    assert CpuSet.parse(big).isdisjoint(CpuSet([0, 8]))
    assert CpuSet.parse(web) == CpuSet([0, 8])  # the shared pool is what is left: reserved
    assert reserved == "0,8"

"""Start the agent in Kubernetes mode: read kubelet's settings, decide what to honour, and
make the companion task `corral.agent.run.serve` runs beside the agent core."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from corral.agent.config import AgentSettings
from corral.agent.reserved import reserved_set
from corral.agent.service import AgentService
from corral.errors import InputError
from corral.kube.client import KubeClient, KubeConfig, in_cluster_config, load_kubeconfig
from corral.kube.config import KubeSettings, StaticCpuManager
from corral.kube.kubelet import (
    CONFIG_FILE,
    STATE_FILE,
    STATIC,
    STATIC_AVOIDED,
    STATIC_REFUSED,
    read_cpu_manager_state,
    read_kubelet_config,
    reserved_from,
)
from corral.kube.node import NodeAgent, read_environment
from corral.topology.cpuset import CpuSet
from corral.topology.source import load_topology

log = logging.getLogger(__name__)

Companion = Callable[[AgentService], Coroutine[Any, Any, None]]


@dataclass(frozen=True, slots=True)
class Prepared:
    """The agent's settings with kubelet's reservation wired in, and what the node agent
    needs of kubelet."""

    agent: AgentSettings
    kube: KubeSettings
    kubelet_held: CpuSet
    policy: str
    notes: tuple[str, ...]


def prepare(
    agent: AgentSettings, kube: KubeSettings, env: Mapping[str, str] | None = None
) -> Prepared:
    """Check kubelet's CPU manager and reservation. Raises `InputError` when no node name is
    known, or kubelet runs the static CPU manager and ``static_cpu_manager`` is refuse."""
    env = os.environ if env is None else env
    if not kube.node_name:
        name = env.get("NODE_NAME", "")
        if not name:
            raise InputError(
                "node_name",
                "no node name",
                "give --node-name, or set NODE_NAME from the downward API (spec.nodeName)",
            )
        kube = kube.model_copy(update={"node_name": name})
    config_path = kube.kubelet_config or kube.kubelet_root / CONFIG_FILE
    kubelet = read_kubelet_config(config_path)
    state = read_cpu_manager_state(kube.kubelet_root)
    static = (state is not None and state.policy == STATIC) or (
        kubelet is not None and kubelet.cpu_manager_policy == STATIC
    )
    notes: list[str] = []
    held = CpuSet()
    if static:
        where = kube.kubelet_root / STATE_FILE
        if kube.static_cpu_manager is StaticCpuManager.REFUSE:
            raise InputError("kube.static_cpu_manager", STATIC_REFUSED.format(path=where))
        held = state.exclusive_cpus if state is not None else CpuSet()
        notes.append(STATIC_AVOIDED.format(count=len(held), cpus=held or "none"))
    else:
        notes.append(
            "kubelet's CPU manager policy is none: corral alone writes pod cpusets"
            if state is not None or kubelet is not None
            else f"no kubelet CPU manager state or config under {kube.kubelet_root}: "
            "corral assumes --cpu-manager-policy=none"
        )
    reserved = reserved_from(
        kubelet,
        reserved_cpus=kube.reserved_cpus,
        kube_reserved_cpu=kube.kube_reserved_cpu,
        system_reserved_cpu=kube.system_reserved_cpu,
    )
    updates: dict[str, Any] = {}
    if reserved is not None or held:
        topology = load_topology(agent.topology, sysfs_root=agent.sysfs_root)
        base = reserved_set(topology, agent.reserved_cpus if reserved is None else reserved)
        updates["reserved_cpus"] = str(base | (held & topology.all_cpus))
        notes.append(
            f"reserved CPUs (kubelet's reservation and held CPUs): {updates['reserved_cpus']}"
        )
    policy = kube.topology_manager_policy or (
        kubelet.topology_manager_policy if kubelet is not None else "none"
    )
    return Prepared(
        agent=agent.model_copy(update=updates) if updates else agent,
        kube=kube,
        kubelet_held=held,
        policy=policy,
        notes=tuple(notes),
    )


def client_config(kube: KubeSettings, env: Mapping[str, str] | None = None) -> KubeConfig:
    """The kubeconfig file's settings, or the in-cluster service account's."""
    if kube.kubeconfig is not None:
        return load_kubeconfig(kube.kubeconfig)
    return in_cluster_config(env)


def companion(prepared: Prepared, config: KubeConfig) -> Companion:
    """The task that runs the node agent beside the agent core."""

    async def run(service: AgentService) -> None:
        logging.getLogger("httpx").setLevel(logging.WARNING)  # else one line per request
        for note in prepared.notes:
            log.warning("kube.kubelet", extra={"note": note})
        async with KubeClient(config) as client:
            env = await service.effects.run(
                functools.partial(
                    read_environment,
                    service,
                    prepared.kube,
                    kubelet_held=prepared.kubelet_held,
                    policy=prepared.policy,
                )
            )
            agent = NodeAgent(service, client, prepared.kube, env)
            log.info("kube.started", extra={"node": prepared.kube.node_name})
            await agent.run()

    return run

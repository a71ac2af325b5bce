"""Write directory trees shaped like the kernel's sysfs CPU and node topology."""

from __future__ import annotations

from pathlib import Path

from corral.topology.cpuset import CpuSet
from corral.topology.model import Topology


def write_sysfs_tree(
    root: Path,
    topology: Topology,
    *,
    offline: CpuSet | None = None,
    with_l3: bool = True,
    with_nodes: bool = True,
) -> Path:
    """Write ``devices/system/{cpu,node}`` for ``topology`` under ``root``.

    Core ids are written per socket (0.. within each socket) as the kernel does; L3 ids are
    the topology's; offline CPUs keep a directory without ``topology/`` files, as on a real
    host where a CPU was taken offline.
    """
    offline = offline or CpuSet()
    cpu_dir = root / "devices/system/cpu"
    cpu_dir.mkdir(parents=True, exist_ok=True)
    online = topology.all_cpus - offline
    (cpu_dir / "online").write_text(f"{online}\n")
    (cpu_dir / "possible").write_text(f"{topology.all_cpus}\n")
    (cpu_dir / "offline").write_text(f"{offline}\n")
    first_core_in_socket = {
        s: min(c.id for c in topology.cores if c.socket == s) for s in topology.sockets
    }
    for cpu in topology.cpus:
        base = cpu_dir / f"cpu{cpu.id}"
        base.mkdir(exist_ok=True)
        (base / "online").write_text("0\n" if cpu.id in offline else "1\n")
        if cpu.id in offline:
            continue
        topo = base / "topology"
        topo.mkdir()
        (topo / "physical_package_id").write_text(f"{cpu.socket}\n")
        (topo / "core_id").write_text(f"{cpu.core - first_core_in_socket[cpu.socket]}\n")
        (topo / "thread_siblings_list").write_text(f"{topology.siblings(cpu.id) - offline}\n")
        levels = [(0, 1, "Data"), (1, 1, "Instruction"), (2, 2, "Unified")]
        if with_l3:
            levels.append((3, 3, "Unified"))
        for index, level, kind in levels:
            cache = base / "cache" / f"index{index}"
            cache.mkdir(parents=True)
            (cache / "level").write_text(f"{level}\n")
            (cache / "type").write_text(f"{kind}\n")
            ident = cpu.l3 if level == 3 else cpu.core
            (cache / "id").write_text(f"{ident}\n")
    if with_nodes:
        node_dir = root / "devices/system/node"
        node_dir.mkdir(parents=True, exist_ok=True)
        (node_dir / "online").write_text(f"{CpuSet(topology.numa_nodes)}\n")
        for numa in topology.numa_nodes:
            node = node_dir / f"node{numa}"
            node.mkdir()
            (node / "cpulist").write_text(f"{topology.cpus_in_numa(numa) - offline}\n")
    return root

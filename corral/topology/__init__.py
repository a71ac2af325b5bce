"""Host topology: CPU sets, the topology model and its loaders (sysfs, lscpu, file, presets)."""

from corral.topology.cpuset import CpuSet
from corral.topology.model import Core, Cpu, FreeCounts, Topology

__all__ = ["Core", "Cpu", "CpuSet", "FreeCounts", "Topology"]

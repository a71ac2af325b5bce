"""GPU pods that corral does not otherwise place: prefer the node whose best device is left
with the least free memory (binpack across nodes, as on one node)."""

from __future__ import annotations

from corral.kube.extender.gpu import choose_device
from corral.kube.extender.score.common import MAX_EXTENDER_PRIORITY
from corral.kube.extender.topo import NodeTopo


def score(node: NodeTopo, need_mib: int) -> int:
    """0-10: 10 when the chosen device is filled exactly, 0 when none fits."""
    device = choose_device(node.gpus, need_mib)
    if device is None or device.memory_total <= 0:
        return 0
    free_after = device.memory_available - need_mib
    return MAX_EXTENDER_PRIORITY - (free_after * MAX_EXTENDER_PRIORITY) // device.memory_total

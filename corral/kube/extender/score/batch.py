"""BE pods: prefer the node with the most ``corral.io/batch-cpu`` left."""

from __future__ import annotations

from collections.abc import Mapping

from corral.kube.extender.score.common import MAX_EXTENDER_PRIORITY


def scores(batch_left: Mapping[str, int]) -> dict[str, int]:
    """0-10 per node, proportional to its batch-cpu left (milli-CPUs) over the most any
    candidate has; all 0 when none has any."""
    most = max(batch_left.values(), default=0)
    if most <= 0:
        return dict.fromkeys(batch_left, 0)
    return {n: max(0, left) * MAX_EXTENDER_PRIORITY // most for n, left in batch_left.items()}

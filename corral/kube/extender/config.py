"""The extender's settings (``--config FILE``, YAML), each with its unit and why."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from corral.errors import InputError
from corral.kube.extender.reserve import CacheKind
from corral.kube.extender.score import Strategy
from corral.kube.extender.score.common import Weights


class ExtenderSettings(BaseModel):
    """How the extender filters, scores and books."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    scoring_strategy: Strategy = Field(
        default=Strategy.LEAST_ALLOCATED,
        description="Score of managed pods: LeastAllocated (spread, upstream's default), "
        "MostAllocated (pack), BalancedAllocation or LeastNUMANodes.",
    )
    resource_weights: dict[str, int] = Field(
        default_factory=lambda: {"cpu": 1, "memory": 1},
        description="Weights of cpu and memory in the allocation strategies (below 1 -> 1).",
    )
    cache: CacheKind = Field(
        default=CacheKind.OVERRESERVE,
        description="overreserve (keep bind reservations until the node's NRT fingerprint "
        "shows them) or passthrough (trust the published numbers).",
    )
    max_body_bytes: int = Field(
        default=64 * 2**20,
        gt=0,
        description="Largest request body, bytes (a Nodes list of 5000 nodes is ~40 MiB).",
    )
    watch_timeout_s: int = Field(
        default=300, gt=0, description="Seconds a watch stays open before it is resumed."
    )

    @property
    def weights(self) -> Weights:
        """The resource weights as the scorers take them."""
        return Weights(dict(self.resource_weights))


def load_settings(path: Path | None) -> ExtenderSettings:
    """The settings in ``path`` (YAML mapping; None: defaults). `InputError` names the bad
    field."""
    if path is None:
        return ExtenderSettings()
    try:
        data: Any = yaml.safe_load(path.read_text()) or {}
    except OSError as err:
        raise InputError(str(path), f"cannot read: {err.strerror}", "check the path") from err
    except yaml.YAMLError as err:
        raise InputError(str(path), f"not YAML: {err}", "fix the syntax") from err
    if not isinstance(data, dict):
        raise InputError(str(path), "must be a mapping of settings")
    try:
        return ExtenderSettings.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InputError(f"{path}: {where}", first["msg"]) from None

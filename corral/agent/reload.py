"""Config reload on SIGHUP: what may change in a running agent, and what needs a restart.

On SIGHUP the agent reads its config again (`ConfigSource`: the same ``--config`` file, or
the same search, with the same CLI flags on top) and compares it with what it loaded last:

* an invalid file (bad YAML, an unknown key, a value out of range) is refused whole: the
  running settings stay, one ``agent.reload_refused`` line names the field and the fix;
* a change of a field in `LIVE_FIELDS` is applied at once (periods restart their wait
  with the new value; limits hold for the next request);
* a change of any other field is not applied: one ``agent.reload_needs_restart`` line per
  field says a restart is needed (it keeps being said on later reloads until the agent
  is restarted with it). They are the listeners, the state file and its durability, the
  topology and cgroup roots, the dry-run choice, the token, the reserved CPUs, the
  predictor, the controller and the Kubernetes section: each is wired into objects built
  once at start (a socket, an open database, the enforcer's tree, a placement).

The last result is in ``/status`` (``config.last_reload``) and in the metrics
(``corral_config_reloads_total{result}``, ``corral_config_last_reload_success``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from corral.agent.config import AgentSettings
from corral.agent.metrics import ReloadSeries

LIVE_FIELDS: Final = frozenset(
    {
        "log_level",
        "allocator",
        "budget_ms",
        "coalesce_window_s",
        "coalesce_burst_gap_s",
        "coalesce_max_s",
        "rebalance_period_s",
        "rebalance_jitter",
        "reconcile_period_s",
        "sample_period_s",
        "downsample_s",
        "usage_retention_s",
        "event_log_keep",
        "max_queued_requests",
        "max_concurrent_requests",
        "max_loop_lag_s",
    }
)
"""Settings a running agent takes from a reloaded config without a restart."""


class ReloadOutcome(StrEnum):
    """What one reload did."""

    APPLIED = "applied"  # every change applied
    PARTIAL = "partial"  # live changes applied, some fields need a restart
    RESTART = "restart-needed"  # only fields that need a restart changed
    UNCHANGED = "unchanged"  # the file says what the agent runs
    INVALID = "invalid"  # refused whole: the running settings stay


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    """The difference between the loaded config and a new one: ``live`` (field -> new
    value) applied now, ``restart`` (field names) refused until a restart."""

    live: Mapping[str, Any]
    restart: tuple[str, ...]

    @property
    def outcome(self) -> ReloadOutcome:
        """The outcome of applying this plan."""
        if self.live and self.restart:
            return ReloadOutcome.PARTIAL
        if self.live:
            return ReloadOutcome.APPLIED
        if self.restart:
            return ReloadOutcome.RESTART
        return ReloadOutcome.UNCHANGED


def plan_reload(loaded: Mapping[str, Any], new: AgentSettings) -> ReloadPlan:
    """Compare ``loaded`` (field -> value, as `ConfigSource.loaded`) with ``new``: pure."""
    fresh = new.model_dump()
    live: dict[str, Any] = {}
    restart: list[str] = []
    for name in AgentSettings.model_fields:
        if fresh.get(name) == loaded.get(name):
            continue
        if name in LIVE_FIELDS:
            live[name] = getattr(new, name)
        else:
            restart.append(name)
    return ReloadPlan(live, tuple(restart))


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """One reload: when, of which file, its outcome, the fields applied and those that
    need a restart, and the error of a refused file (with its field and fix)."""

    at_s: float
    outcome: ReloadOutcome
    path: Path | None
    applied: tuple[str, ...] = ()
    restart: tuple[str, ...] = ()
    error: str | None = None
    field: str | None = None
    fix: str | None = None

    @property
    def ok(self) -> bool:
        """False when the new config was refused whole."""
        return self.outcome is not ReloadOutcome.INVALID

    def to_json(self) -> dict[str, Any]:
        """JSON for /status."""
        return {
            "at_s": self.at_s,
            "outcome": str(self.outcome),
            "ok": self.ok,
            "path": None if self.path is None else str(self.path),
            "applied": list(self.applied),
            "restart_needed": list(self.restart),
            "error": self.error,
            "field": self.field,
            "fix": self.fix,
        }


@dataclass
class ReloadLog:
    """The reloads of one agent run, for /status and the metrics."""

    last: ReloadResult | None = None
    counts: Counter[str] = field(default_factory=Counter)

    def record(self, result: ReloadResult) -> None:
        """Remember ``result`` as the last reload and count it."""
        self.last = result
        self.counts[str(result.outcome)] += 1

    def series(self) -> ReloadSeries:
        """What the reload metrics show now."""
        last = self.last
        return ReloadSeries(
            counts=dict(self.counts),
            last_ok=None if last is None else last.ok,
            last_at_s=None if last is None else last.at_s,
        )

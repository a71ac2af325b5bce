"""What the kernel holds for each workload, from the enforcer's reports: enforced, or
refused with each refused write (file and errno). An error clears as soon as a later apply
writes the workload's files; a workload that is gone is forgotten."""

from __future__ import annotations

from collections.abc import Collection

from corral.agent.enforcer import ApplyReport
from corral.agent.views import NOT_APPLIED, Enforcement, EnforcementState


class EnforcementLedger:
    """Per-workload enforcement state (used from the event loop only)."""

    def __init__(self, *, dry_run: bool) -> None:
        self._dry_run = dry_run
        self._refused: dict[str, tuple[str, ...]] = {}
        self._enforced: set[str] = set()
        self.release_errors: tuple[str, ...] = ()
        """Errors of the last release (cgroups of removed workloads left behind)."""

    def account(self, report: ApplyReport, known: Collection[str]) -> None:
        """Fold in one apply or repair report; ``known`` are the workloads that exist."""
        for wid in report.covered:
            refused = report.refused.get(wid)
            if refused:
                self._refused[wid] = refused
                self._enforced.discard(wid)
            else:
                self._refused.pop(wid, None)
                self._enforced.add(wid)
        for wid in (set(self._refused) | self._enforced) - set(known):
            self._refused.pop(wid, None)
            self._enforced.discard(wid)

    def of(self, workload_id: str, *, placed: bool) -> Enforcement:
        """The enforcement state of one workload (``placed``: placement gave it CPUs)."""
        if self._dry_run:
            return Enforcement(EnforcementState.DRY_RUN)
        errors = self._refused.get(workload_id)
        if errors:
            return Enforcement(EnforcementState.REFUSED, errors)
        if placed and workload_id in self._enforced:
            return Enforcement(EnforcementState.ENFORCED)
        return NOT_APPLIED

    def errors(self) -> list[str]:
        """Every error that holds now: the last release's, then each workload's."""
        return [
            *self.release_errors,
            *(f"{wid}: {e}" for wid, errs in sorted(self._refused.items()) for e in errs),
        ]

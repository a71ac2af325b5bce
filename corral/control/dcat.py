"""A dCat-style per-workload LLC manager, as a pure step.

After dCat (Xu et al., "dCat: Dynamic Cache Management for Efficient, Performance-sensitive
Infrastructure-as-a-Service", EuroSys 2018): each workload starts from a *baseline* share
of the ways it may use, and its measured performance decides its category:

* ``reclaim`` - a new workload, a changed budget or a phase change: back to the baseline,
  measure a reference there, then try one way more (free ways) or one way less (none free);
* ``receiver`` - the last way it got raised its performance by ``gain`` or more: it keeps
  it and gets another while free ways remain;
* ``keeper`` - the last way it got did not help (it is given back), or the last way it gave
  cost it more than ``loss_tolerance`` (it takes it back, and tries one way more once free
  ways appear): it keeps what it has until a phase change;
* ``donor`` - giving a way cost it less than ``loss_tolerance`` (against its reference): it
  gives another, down to ``min_ways``;
* ``streaming`` - one more way did not help *and* its cache misses did not fall although it
  misses a lot (``streaming_mpki``): more cache cannot help it, so it drops to ``min_ways``.

A phase change (performance at an unchanged allocation off its reference by more than
``phase_change``, or a streaming workload's misses falling by as much) sends the workload
back to ``reclaim``. Every change waits ``settle_periods`` before it is judged.

The budget is the ways the Heracles ladder gives the class (e.g. BE's ways of
`corral.control.cache.masks`); the ways handed out never exceed it. Allocations are laid
out contiguously in workload-id order from ``offset`` and never overlap; when the budget
cannot give every workload ``min_ways`` they all share the whole budget (``shared``, said
in the reason). `grants` turns an allocation into the masks the resctrl actuator writes
(`corral.control.actions.SetWorkloadWays`).

The performance signal (`PerfSample`, higher is better) is IPC from hardware counters
(``from_counters``: instructions / cycles, misses per kilo-instruction) where the host has
them (`corral.enforce.perf`), else the signal the controller already has: BE throughput
(``from_throughput``) or LC latency (``from_latency``); without misses a workload can
never be called streaming. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

from corral.control.actions import SetWorkloadWays, WayGrant
from corral.errors import InputError


class Category(StrEnum):
    """dCat's workload categories."""

    RECLAIM = "reclaim"
    RECEIVER = "receiver"
    KEEPER = "keeper"
    DONOR = "donor"
    STREAMING = "streaming"


@dataclass(frozen=True, slots=True)
class DcatSettings:
    """Thresholds of the categories (fractions are relative to the reference)."""

    min_ways: int = 1
    """Fewest ways (capacity-bitmask bits) a workload keeps; the runtime raises it to the
    host's ``info/L3/min_cbm_bits`` (``cache.min_ways``), the narrowest mask CAT takes."""
    gain: float = 0.05
    """Fraction of its reference performance a new way must add for the workload to be a
    receiver (5%: above the period-to-period noise of IPC or throughput)."""
    loss_tolerance: float = 0.03
    """Fraction of its reference performance a donor may lose and still donate (3%: a
    cost a best-effort workload can pay for a way another one needs)."""
    streaming_mpki: float = 5.0
    """LLC misses per kilo-instruction above which a workload whose misses do not fall with
    one more way is streaming (5: a working set far larger than the cache)."""
    miss_fall: float = 0.05
    """Relative fall of the misses (fraction) that counts as "more ways helped the misses"."""
    phase_change: float = 0.25
    """Relative performance change (fraction) at an unchanged allocation that means a new
    phase (25%: far beyond what one way moves)."""
    settle_periods: int = 1
    """Sub-controller periods after a change before it is judged (one to let the cache
    refill)."""

    def __post_init__(self) -> None:
        if self.min_ways < 1:
            raise InputError("dcat.min_ways", "must be at least 1", "use min_cbm_bits")
        for name in ("gain", "loss_tolerance", "miss_fall", "phase_change"):
            if not 0 < getattr(self, name) < 1:
                raise InputError(f"dcat.{name}", "must be in (0, 1)", "e.g. 0.05")
        if self.settle_periods < 0:
            raise InputError("dcat.settle_periods", "is negative", "use 0 or more")


@dataclass(frozen=True, slots=True)
class PerfSample:
    """One period's performance of a workload: ``perf`` higher is better; ``mpki`` cache
    misses per kilo-instruction (None without counters)."""

    perf: float
    mpki: float | None = None


def from_counters(cycles: int, instructions: int, llc_misses: int) -> PerfSample | None:
    """IPC and LLC MPKI from counter deltas (None when the workload did not run)."""
    if cycles <= 0 or instructions <= 0:
        return None
    return PerfSample(instructions / cycles, llc_misses * 1000 / instructions)


def from_throughput(rate: float | None) -> PerfSample | None:
    """BE work per second as the performance (None without a reading)."""
    return None if rate is None or rate <= 0 else PerfSample(rate)


def from_latency(latency_ms: float | None) -> PerfSample | None:
    """LC tail latency as the performance (its inverse: lower latency is better)."""
    return None if latency_ms is None or latency_ms <= 0 else PerfSample(1.0 / latency_ms)


@dataclass(frozen=True, slots=True)
class WorkloadCache:
    """One workload's place in the state machine."""

    category: Category
    ways: int
    reference: PerfSample | None = None
    """Performance at the allocation the last change started from (None: measure next)."""
    change: int = 0
    """The change waiting to be judged: +1, -1 or 0."""
    wait: int = 0
    reason: str = "new workload"
    probed_up: bool = False
    """A way more was tried at this allocation and did not help (a keeper then stays)."""


@dataclass(frozen=True, slots=True)
class DcatState:
    """Every workload's state and the budget they were laid out in."""

    workloads: tuple[tuple[str, WorkloadCache], ...] = ()
    budget: int = 0


@dataclass(frozen=True, slots=True)
class Allocation:
    """Ways per workload: ``(workload, first way, number of ways)``, contiguous."""

    spans: tuple[tuple[str, int, int], ...]
    shared: bool = False
    reason: str = ""

    def masks(self) -> dict[str, int]:
        """Workload -> capacity bitmask."""
        return {w: ((1 << n) - 1) << first for w, first, n in self.spans}


def grants(allocation: Allocation) -> tuple[WayGrant, ...]:
    """The allocation as the resctrl actuator's grants."""
    return tuple(WayGrant(w, mask) for w, mask in allocation.masks().items())


def baseline(settings: DcatSettings, budget: int, count: int) -> int:
    """Each workload's fair share of ``budget`` ways (at least ``min_ways``)."""
    return max(settings.min_ways, budget // max(1, count))


def dcat_step(
    settings: DcatSettings,
    state: DcatState,
    *,
    budget: int,
    samples: Mapping[str, PerfSample | None],
    offset: int = 0,
) -> tuple[DcatState, Allocation]:
    """One period: judge each workload's last change on its sample, take the next step,
    lay the ways out. ``samples`` names every workload now present (None: no reading this
    period, nothing moves for it)."""
    ids = sorted(samples)
    base = baseline(settings, budget, len(ids))
    old = dict(state.workloads)
    reset = budget != state.budget or set(old) != set(ids)
    current: dict[str, WorkloadCache] = {}
    for wid in ids:
        known = old.get(wid)
        if known is None or reset:
            why = "new workload" if known is None else "budget or workloads changed"
            current[wid] = _reclaim(settings, base, why)
        else:
            current[wid] = known
    for wid in ids:
        # A way a donor gives on trial is not free until the donation is kept.
        lent = sum(1 for w in current.values() if w.change < 0)
        free = budget - sum(w.ways for w in current.values()) - lent
        current[wid] = _advance(settings, current[wid], samples[wid], base=base, free=free)
    current = _fit(settings, current, budget, base)
    new_state = DcatState(tuple(sorted(current.items())), budget)
    return new_state, _layout(settings, current, budget, offset)


def _reclaim(settings: DcatSettings, base: int, why: str) -> WorkloadCache:
    return WorkloadCache(Category.RECLAIM, base, None, 0, settings.settle_periods, why)


def _advance(
    s: DcatSettings, w: WorkloadCache, sample: PerfSample | None, *, base: int, free: int
) -> WorkloadCache:
    if sample is None:
        return w
    if w.wait > 0:
        return replace(w, wait=w.wait - 1)
    if w.reference is None:
        w = replace(w, reference=sample)
        if w.category is not Category.RECLAIM:
            return w  # a reference measured: judge from the next period on
    ref = w.reference if w.reference is not None else sample
    if w.change == 0:
        if w.category is not Category.RECLAIM and _phase_changed(s, w, ref, sample):
            return _reclaim(s, base, f"phase change in {w.category}: performance moved")
        return _next_move(s, w, ref, free)
    relative = (sample.perf - ref.perf) / ref.perf
    if w.change > 0:
        if relative >= s.gain:
            w = replace(w, category=Category.RECEIVER, reference=sample, change=0)
            return _next_move(
                s, replace(w, reason=f"one more way gave {relative:+.0%}"), sample, free
            )
        if _streaming(s, ref, sample):
            return WorkloadCache(
                Category.STREAMING,
                s.min_ways,
                None,
                0,
                s.settle_periods,
                f"one more way gave {relative:+.0%} and misses stayed at {sample.mpki:.1f} MPKI",
            )
        why = f"one more way gave only {relative:+.0%}"
        return WorkloadCache(Category.KEEPER, w.ways - 1, ref, 0, 0, why, probed_up=True)
    if -relative <= s.loss_tolerance:
        w = replace(
            w, category=Category.DONOR, change=0, reason=f"giving a way cost {relative:+.0%}"
        )
        return _next_move(s, w, ref, free)
    return WorkloadCache(
        Category.KEEPER, w.ways + 1, None, 0, s.settle_periods, f"giving a way cost {relative:+.0%}"
    )


def _next_move(s: DcatSettings, w: WorkloadCache, ref: PerfSample, free: int) -> WorkloadCache:
    """From a judged position: reclaim tries up or down, a receiver asks for more, a donor
    gives more; keepers and streaming workloads stay."""
    grow = free > 0
    if w.category is Category.RECLAIM:
        if grow:
            return replace(w, ways=w.ways + 1, change=1, wait=s.settle_periods, reason="probe up")
        if w.ways > s.min_ways:
            return replace(
                w, ways=w.ways - 1, change=-1, wait=s.settle_periods, reason="probe down"
            )
        return replace(w, category=Category.KEEPER, reason="at min_ways with no free ways")
    if w.category is Category.RECEIVER and grow:
        return replace(w, ways=w.ways + 1, change=1, wait=s.settle_periods)
    if w.category is Category.KEEPER and grow and not w.probed_up:
        # A keeper that could not give a way may gain from one: try once, when free.
        return replace(w, ways=w.ways + 1, change=1, wait=s.settle_periods, reason="probe up")
    if w.category is Category.DONOR and w.ways > s.min_ways:
        return replace(w, ways=w.ways - 1, change=-1, wait=s.settle_periods)
    return w


def _streaming(s: DcatSettings, ref: PerfSample, sample: PerfSample) -> bool:
    if ref.mpki is None or sample.mpki is None:
        return False
    return sample.mpki >= s.streaming_mpki and sample.mpki > ref.mpki * (1 - s.miss_fall)


def _phase_changed(s: DcatSettings, w: WorkloadCache, ref: PerfSample, sample: PerfSample) -> bool:
    if abs(sample.perf - ref.perf) > s.phase_change * ref.perf:
        return True
    return (
        w.category is Category.STREAMING
        and ref.mpki is not None
        and sample.mpki is not None
        and sample.mpki < ref.mpki * (1 - s.phase_change)
    )


def _fit(
    s: DcatSettings, current: dict[str, WorkloadCache], budget: int, base: int
) -> dict[str, WorkloadCache]:
    """Take ways back (largest surplus above the baseline first) until the total fits."""
    out = dict(current)
    while sum(w.ways for w in out.values()) > budget:
        wid, w = max(out.items(), key=lambda kv: (kv[1].ways - base, kv[0]))
        if w.ways <= s.min_ways:
            break  # nothing left to take: the layout shares
        out[wid] = replace(
            w,
            category=Category.RECLAIM,
            ways=w.ways - 1,
            reference=None,
            change=0,
            reason="ways taken back for the baseline of another workload",
        )
    return out


def _layout(
    s: DcatSettings, current: dict[str, WorkloadCache], budget: int, offset: int
) -> Allocation:
    if not current:
        return Allocation(())
    if budget < s.min_ways * len(current) or sum(w.ways for w in current.values()) > budget:
        spans = tuple((wid, offset, budget) for wid in sorted(current))
        why = f"{budget} ways cannot give {len(current)} workloads {s.min_ways} each: shared"
        return Allocation(spans, shared=True, reason=why)
    spans_list = []
    first = offset
    for wid in sorted(current):
        spans_list.append((wid, first, current[wid].ways))
        first += current[wid].ways
    return Allocation(tuple(spans_list))


def layout(settings: DcatSettings, state: DcatState, offset: int = 0) -> Allocation:
    """The allocation ``state`` stands for (what `dcat_step` returned with it)."""
    return _layout(settings, dict(state.workloads), state.budget, offset)


def dcat_actions(
    settings: DcatSettings,
    state: DcatState,
    *,
    budget: int,
    samples: Mapping[str, PerfSample | None],
    offset: int = 0,
    written: Mapping[str, int] | None = None,
) -> tuple[DcatState, SetWorkloadWays | None]:
    """`dcat_step`, and the `SetWorkloadWays` for the resctrl actuator when any mask
    changed (None otherwise); its reason names each workload's category and why.

    ``written`` is what the actuator last wrote (workload -> mask): the action is due
    whenever the new masks differ from it, so a refused write is retried and the groups
    of workloads that left are dropped (an action with no grants). None compares with the
    masks of ``state`` instead (and never returns an action without grants)."""
    before = layout(settings, state, offset).masks() if written is None else dict(written)
    new_state, allocation = dcat_step(
        settings, state, budget=budget, samples=samples, offset=offset
    )
    if allocation.masks() == before or (written is None and not allocation.spans):
        return new_state, None
    if not allocation.spans:
        return new_state, SetWorkloadWays((), "dcat: no BE workloads left")
    parts = [f"{wid} {w.category} {w.ways} ways ({w.reason})" for wid, w in new_state.workloads]
    if allocation.shared:
        parts.append(allocation.reason)
    return new_state, SetWorkloadWays(grants(allocation), "dcat: " + "; ".join(parts))

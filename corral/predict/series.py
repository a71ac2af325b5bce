"""Usage series on a regular time grid, and the report of what regularising them changed.

Every loader ends here: a long table ``id, timestamp_s, usage_cores, capacity_cores`` becomes
one regular grid per series. Nothing is dropped silently: duplicate timestamps are merged
(mean), steps that are off by a little are snapped to the grid, missing samples stay missing
(NaN) and usage above capacity is clipped; the `LoadReport` counts each.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pandas as pd

from corral.errors import InputError

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Columns of the long table every loader produces (corral's trace format, design.md §2).
COLUMNS = ("id", "timestamp_s", "usage_cores", "capacity_cores")

#: A series whose own median step differs from the trace step by more than this share is
#: refused rather than snapped: snapping it would invent or merge a large share of samples.
STEP_TOLERANCE = 0.1


@dataclass(frozen=True)
class LoadReport:
    """What loading and regularising a trace found and changed (counts of samples)."""

    source: str
    format: str
    rows: int
    series: int
    step_s: float
    duplicate_samples: int = 0
    """Samples merged into another one (same timestamp, or closer than half a step)."""
    off_grid_steps: int = 0
    """Steps that were not exactly one grid step (e.g. 299 or 301 s) and were snapped."""
    gaps: int = 0
    """Places where at least one whole step had no sample; the samples stay missing."""
    missing_samples: int = 0
    longest_gap_s: float = 0.0
    above_capacity: int = 0
    """Samples whose usage exceeded capacity and were clipped to it."""
    max_over_capacity: float = 0.0
    """Largest usage / capacity ratio seen before clipping (0 when none exceeded it)."""
    capacity_changes: int = 0
    """Series whose capacity changed during the trace (each sample keeps its own)."""
    notes: tuple[str, ...] = field(default_factory=tuple)

    def lines(self) -> list[str]:
        """The report as short human-readable lines."""
        out = [
            f"{self.source} ({self.format}): {self.rows} rows, {self.series} series, "
            f"step {self.step_s:g} s",
            f"duplicates merged: {self.duplicate_samples}; off-grid steps snapped: "
            f"{self.off_grid_steps}",
            f"gaps: {self.gaps} ({self.missing_samples} missing samples, longest "
            f"{self.longest_gap_s:g} s), left missing",
            f"usage above capacity: {self.above_capacity} samples (max "
            f"{self.max_over_capacity:.3f}x), clipped to capacity",
            f"series with a capacity change: {self.capacity_changes}",
        ]
        out.extend(self.notes)
        return out

    def as_dict(self) -> dict[str, object]:
        """The report as a JSON-ready mapping."""
        return {
            "source": self.source,
            "format": self.format,
            "rows": self.rows,
            "series": self.series,
            "step_s": self.step_s,
            "duplicate_samples": self.duplicate_samples,
            "off_grid_steps": self.off_grid_steps,
            "gaps": self.gaps,
            "missing_samples": self.missing_samples,
            "longest_gap_s": self.longest_gap_s,
            "above_capacity": self.above_capacity,
            "max_over_capacity": self.max_over_capacity,
            "capacity_changes": self.capacity_changes,
            "notes": list(self.notes),
        }


@dataclass(frozen=True, eq=False)
class Trace:
    """Series on one regular grid, stored flat: series ``s`` owns ``[offsets[s], offsets[s+1])``.

    ``usage`` is NaN where a sample is missing; ``capacity`` is always set (carried over
    gaps). The timestamp of flat index ``i`` of series ``s`` is
    ``start_s[s] + (i - offsets[s]) * step_s``.
    """

    ids: tuple[str, ...]
    step_s: float
    offsets: IntArray
    start_s: FloatArray
    usage: FloatArray
    capacity: FloatArray
    report: LoadReport

    @property
    def series_of(self) -> IntArray:
        """Series index of every flat sample."""
        return np.repeat(np.arange(len(self.ids), dtype=np.int64), np.diff(self.offsets))

    @property
    def timestamps(self) -> FloatArray:
        """Timestamp (s) of every flat sample."""
        series = self.series_of
        local = np.arange(self.usage.size, dtype=np.int64) - self.offsets[series]
        return self.start_s[series] + local * self.step_s

    def windows(self, anchors: IntArray, before: int, after: int = 0) -> FloatArray:
        """Usage around each anchor: columns are offsets ``-before+1 .. after`` (NaN outside).

        Column ``before - 1`` is the anchor itself; positions outside the anchor's series
        (before its start or after its end) are NaN, so windows never mix series.
        """
        series = self.series_of[anchors]
        lo = self.offsets[series]
        hi = self.offsets[series + 1]
        positions = anchors[:, None] + np.arange(-before + 1, after + 1, dtype=np.int64)
        inside = (positions >= lo[:, None]) & (positions < hi[:, None])
        values = self.usage[np.clip(positions, 0, max(self.usage.size - 1, 0))]
        return np.where(inside, values, np.nan)


def native_step(frame: pd.DataFrame) -> float:
    """The trace's sampling step (s): the most common of the series' median steps.

    Each series votes once, so one densely sampled series cannot impose its step on the
    others (it is then refused by name); ties go to the shorter step.
    """
    diffs = frame.groupby("id", sort=False)["timestamp_s"].diff()
    positive = diffs > 0
    if not positive.any():
        raise InputError(
            "timestamp_s",
            "no series has two samples with different timestamps: the step is unknown",
            "give at least two samples per series",
        )
    medians = diffs[positive].groupby(frame["id"][positive], sort=False).median()
    counts = medians.round(3).value_counts()
    return float(min(counts.index[counts == counts.max()]))


def build_trace(
    frame: pd.DataFrame,
    *,
    source: str,
    fmt: str,
    step_s: float | None = None,
    notes: tuple[str, ...] = (),
) -> Trace:
    """Put a long table (`COLUMNS`) on a regular grid per series and report what changed.

    Without ``step_s`` the trace keeps its native step and each series is snapped to it
    sample by sample (a 301 s step is one step, a 600 s step leaves one sample missing).
    With ``step_s`` the samples are averaged into bins of that width (resampling, e.g. the
    agent's few-second samples into the model's 300 s step). Raises `InputError` when a
    series' own step is far from the trace's (without ``step_s``) or the table is empty.
    """
    if frame.empty:
        raise InputError("", "the trace has no samples", "check the file is the right one")
    frame = frame.sort_values(["id", "timestamp_s"], kind="stable").reset_index(drop=True)
    resample = step_s is not None
    step = float(step_s) if step_s is not None else native_step(frame)
    if not step > 0:
        raise InputError("step_s", f"must be positive, got {step:g}")
    ids_col = frame["id"].to_numpy()
    t = frame["timestamp_s"].to_numpy(dtype=np.float64)
    usage = frame["usage_cores"].to_numpy(dtype=np.float64)
    capacity = frame["capacity_cores"].to_numpy(dtype=np.float64)
    new_series = np.ones(len(frame), dtype=bool)
    new_series[1:] = ids_col[1:] != ids_col[:-1]
    series = np.cumsum(new_series) - 1
    firsts = np.flatnonzero(new_series)
    t0 = t[firsts]
    off_grid = 0
    if resample:
        slot = np.floor((t - t0[series]) / step).astype(np.int64)
    else:
        diff = np.diff(t, prepend=t[0])
        diff[new_series] = 0.0
        steps = np.rint(diff / step).astype(np.int64)
        off_grid = int(np.count_nonzero((steps >= 1) & (diff != steps * step)))
        _check_series_steps(frame, diff, series, new_series, step)
        starts = np.cumsum(steps)
        slot = starts - starts[firsts][series]
    key = pd.MultiIndex.from_arrays([series, slot])
    merged = (
        pd.DataFrame({"usage": usage, "capacity": capacity}, index=key)
        .groupby(level=[0, 1], sort=True)
        .agg(usage=("usage", "mean"), capacity=("capacity", "max"), n=("usage", "size"))
    )
    duplicates = int(len(frame) - len(merged))
    m_series = merged.index.get_level_values(0).to_numpy().astype(np.int64)
    m_slot = merged.index.get_level_values(1).to_numpy().astype(np.int64)
    n_series = len(firsts)
    lengths = np.zeros(n_series, dtype=np.int64)
    np.maximum.at(lengths, m_series, m_slot + 1)
    offsets = np.zeros(n_series + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(lengths)
    flat_usage = np.full(int(offsets[-1]), np.nan)
    flat_cap = np.full(int(offsets[-1]), np.nan)
    flat_index = offsets[m_series] + m_slot
    flat_usage[flat_index] = merged["usage"].to_numpy()
    flat_cap[flat_index] = merged["capacity"].to_numpy()
    # Capacity is a property of the series, not of a sample: carry it over missing samples.
    flat_cap = pd.Series(flat_cap).ffill().to_numpy()
    # Gaps: runs of missing grid slots between observed samples.
    slot_gap = np.diff(m_slot) - 1
    same = m_series[1:] == m_series[:-1]
    gap_sizes = slot_gap[same & (slot_gap > 0)]
    over = flat_usage > flat_cap
    ratio = np.divide(flat_usage, flat_cap, out=np.zeros_like(flat_usage), where=flat_cap > 0)
    max_over = float(np.nanmax(ratio[over])) if over.any() else 0.0
    flat_usage = np.where(over, flat_cap, flat_usage)
    cap_frame = pd.DataFrame({"s": series, "c": capacity})
    capacity_changes = int((cap_frame.groupby("s")["c"].nunique() > 1).sum())
    ids = tuple(str(i) for i in ids_col[firsts])
    report = LoadReport(
        source=source,
        format=fmt,
        rows=len(frame),
        series=n_series,
        step_s=step,
        duplicate_samples=duplicates,
        off_grid_steps=off_grid,
        gaps=int(gap_sizes.size),
        missing_samples=int(gap_sizes.sum()),
        longest_gap_s=float(gap_sizes.max() + 1) * step if gap_sizes.size else 0.0,
        above_capacity=int(np.count_nonzero(over)),
        max_over_capacity=max_over,
        capacity_changes=capacity_changes,
        notes=notes,
    )
    log.info(
        "predict.trace_loaded",
        extra={"source": source, "rows": report.rows, "series": report.series},
    )
    return Trace(
        ids=ids,
        step_s=step,
        offsets=offsets,
        start_s=t0.astype(np.float64),
        usage=flat_usage,
        capacity=flat_cap,
        report=report,
    )


def _check_series_steps(
    frame: pd.DataFrame,
    diff: FloatArray,
    series: IntArray,
    new_series: npt.NDArray[np.bool_],
    step: float,
) -> None:
    """Refuse a series sampled at a clearly different step than the rest of the trace."""
    positive = (~new_series) & (diff > 0)
    if not positive.any():
        return
    medians = pd.Series(diff[positive]).groupby(series[positive]).median()
    bad = medians[(medians - step).abs() > STEP_TOLERANCE * step]
    if not bad.empty:
        first = int(bad.index[0])
        series_id = frame["id"].to_numpy()[np.flatnonzero(new_series)[first]]
        raise InputError(
            f"id {series_id}",
            f"samples every {bad.iloc[0]:g} s while the trace's step is {step:g} s "
            f"({len(bad)} series differ)",
            "resample to one step (--step-s) or split the trace by step",
        )

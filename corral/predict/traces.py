"""Loaders for CPU-usage traces: corral's own format, Bitbrains and the Google-derived set.

Each loader validates its input (errors name the file, the line and the field), converts it
to corral's long format (`series.COLUMNS`, cores) and hands it to `series.build_trace`, which
regularises it and reports what it changed.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pandas as pd

from corral.errors import InputError
from corral.predict.formats import TraceFormat as TraceFormat  # noqa: PLC0414 - re-exported: older imports name this module
from corral.predict.history import read_usage_frame
from corral.predict.series import COLUMNS, Trace, build_trace

#: Bitbrains columns of the shipped subset (../shared/traces/README.md).
BITBRAINS_COLUMNS = (
    "vm_id",
    "timestamp_s",
    "cpu_cores",
    "cpu_capacity_mhz",
    "cpu_usage_mhz",
)
#: The Google-derived set has no timestamps: one line every 5 minutes.
GOOGLE_STEP_S = 300.0


def load_trace(
    path: Path,
    fmt: TraceFormat | str = TraceFormat.CORRAL,
    *,
    step_s: float | None = None,
    google_capacity_cores: float = 1.0,
) -> Trace:
    """Load a trace file of the given format onto a regular grid (see `build_trace`).

    ``step_s`` resamples to that step (bin means); without it the native step is kept.
    """
    try:
        kind = TraceFormat(fmt)
    except ValueError as err:
        raise InputError(
            "--format", f"unknown trace format {fmt!r}", "use corral, bitbrains, google or sqlite"
        ) from err
    if not path.exists():
        raise InputError(str(path), "no such file", "check the path")
    if kind is TraceFormat.CORRAL:
        frame = read_corral_csv(path)
        notes: tuple[str, ...] = ()
    elif kind is TraceFormat.BITBRAINS:
        frame = read_bitbrains_csv(path)
        notes = ("usage_cores = cpu_usage_mhz / (cpu_capacity_mhz / cpu_cores)",)
    elif kind is TraceFormat.GOOGLE:
        frame = read_google(path, capacity_cores=google_capacity_cores)
        notes = (
            f"no timestamps: samples assumed every {GOOGLE_STEP_S:g} s from t=0",
            f"no capacity: cpu_pct taken as percent of {google_capacity_cores:g} core(s)",
        )
    else:
        frame = read_usage_frame(path)
        notes = ()
    return build_trace(frame, source=str(path), fmt=kind.value, step_s=step_s, notes=notes)


def _read_csv(path: Path, *, usecols: tuple[str, ...]) -> pd.DataFrame:
    """Read a CSV with a header; errors name the file, the line and the missing columns."""
    try:
        header = pd.read_csv(path, nrows=0)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as err:
        raise InputError(str(path), f"not a readable CSV file: {err}") from err
    missing = [c for c in usecols if c not in header.columns]
    if missing:
        raise InputError(
            f"{path}: header",
            f"missing column(s) {', '.join(missing)}",
            f"the header must contain {','.join(usecols)}",
        )
    try:
        # Without usecols, so that a row with extra fields is an error rather than ignored.
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
        return frame[list(usecols)]
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as err:
        raise InputError(str(path), f"malformed CSV: {err}", "every row needs all fields") from err


def _numeric(path: Path, frame: pd.DataFrame, column: str) -> pd.Series:
    """A column as floats; the first non-number is reported with its line (header = line 1)."""
    raw = frame[column]
    values = pd.to_numeric(raw, errors="coerce")
    bad = values.isna() | ~np.isfinite(values.to_numpy(dtype=np.float64))
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(
            f"{path}: line {row + 2}, field {column}",
            f"{raw.iloc[row]!r} is not a finite number",
            "fix or remove the line",
        )
    return values.astype(np.float64)


def _check_range(path: Path, values: pd.Series, column: str, *, positive: bool) -> None:
    bad = (values <= 0) if positive else (values < 0)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        need = "positive" if positive else "non-negative"
        raise InputError(
            f"{path}: line {row + 2}, field {column}",
            f"must be {need}, got {values.iloc[row]:g}",
            "fix or remove the line",
        )


def read_corral_csv(path: Path) -> pd.DataFrame:
    """Read corral's trace CSV ``id,timestamp_s,usage_cores,capacity_cores`` (validated)."""
    raw = _read_csv(path, usecols=COLUMNS)
    empty = raw["id"].str.strip() == ""
    if empty.any():
        row = int(np.flatnonzero(empty.to_numpy())[0])
        raise InputError(f"{path}: line {row + 2}, field id", "is empty", "give every row an id")
    out = pd.DataFrame({"id": raw["id"].str.strip()})
    for column in COLUMNS[1:]:
        out[column] = _numeric(path, raw, column)
    _check_range(path, out["usage_cores"], "usage_cores", positive=False)
    _check_range(path, out["capacity_cores"], "capacity_cores", positive=True)
    return out


def read_bitbrains_csv(path: Path) -> pd.DataFrame:
    """Read the shipped Bitbrains subset and convert MHz to cores (README's mapping)."""
    raw = _read_csv(path, usecols=BITBRAINS_COLUMNS)
    values = {c: _numeric(path, raw, c) for c in BITBRAINS_COLUMNS}
    _check_range(path, values["cpu_cores"], "cpu_cores", positive=True)
    _check_range(path, values["cpu_capacity_mhz"], "cpu_capacity_mhz", positive=True)
    _check_range(path, values["cpu_usage_mhz"], "cpu_usage_mhz", positive=False)
    mhz_per_core = values["cpu_capacity_mhz"] / values["cpu_cores"]
    return pd.DataFrame(
        {
            "id": raw["vm_id"].str.strip(),
            "timestamp_s": values["timestamp_s"],
            "usage_cores": values["cpu_usage_mhz"] / mhz_per_core,
            "capacity_cores": values["cpu_cores"],
        }
    )


def _parse_google_member(name: str, text: str, capacity_cores: float) -> np.ndarray:
    """Usage in cores from one ``cpu_pct mem_pct`` file; errors name the member and line."""
    rows: list[float] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) < 1:
            continue
        try:
            pct = float(fields[0])
        except ValueError as err:
            raise InputError(
                f"{name}: line {number}, field cpu_pct",
                f"{fields[0]!r} is not a number",
                "each line must be 'cpu_pct mem_pct'",
            ) from err
        if not np.isfinite(pct) or pct < 0:
            raise InputError(
                f"{name}: line {number}, field cpu_pct",
                f"must be a non-negative percentage, got {fields[0]}",
            )
        rows.append(pct)
    return np.asarray(rows, dtype=np.float64) / 100.0 * capacity_cores


def read_google(path: Path, *, capacity_cores: float = 1.0) -> pd.DataFrame:
    """Read the Google-derived set (a .tar.gz of ``GCD_VMs/vm_*`` files, or their directory).

    Lines are ``cpu_pct mem_pct`` every 5 minutes with no timestamps and no capacity:
    sample ``k`` gets ``timestamp_s = k * 300`` and usage ``cpu_pct / 100 * capacity_cores``.
    """
    if not capacity_cores > 0:
        raise InputError("--google-capacity-cores", f"must be positive, got {capacity_cores:g}")
    members: list[tuple[str, str]] = []
    if path.is_dir():
        for file in sorted(p for p in path.rglob("vm_*") if p.is_file()):
            members.append((file.name, file.read_text(encoding="ascii", errors="replace")))
    else:
        try:
            with tarfile.open(path, "r:*") as archive:
                for member in archive.getmembers():
                    base = member.name.rsplit("/", 1)[-1]
                    if not member.isfile() or not base.startswith("vm_"):
                        continue
                    handle = archive.extractfile(member)
                    if handle is None:
                        continue
                    with handle:
                        content = handle.read().decode("ascii", errors="replace")
                    members.append((base, content))
        except (tarfile.TarError, OSError, EOFError) as err:
            raise InputError(
                str(path),
                f"not a readable tar archive ({type(err).__name__})",
                "give the GCD_VMs .tar.gz or its folder",
            ) from err
    if not members:
        raise InputError(str(path), "holds no vm_* series files", "give the GCD_VMs archive")
    frames = []
    for name, text in members:
        usage = _parse_google_member(name, text, capacity_cores)
        frames.append(
            pd.DataFrame(
                {
                    "id": name,
                    "timestamp_s": np.arange(usage.size, dtype=np.float64) * GOOGLE_STEP_S,
                    "usage_cores": usage,
                    "capacity_cores": capacity_cores,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)

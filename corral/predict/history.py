"""The agent's usage history in SQLite, read as a trace or as per-workload histories.

The table corral expects (the agent writes it; one row per workload and sample)::

    CREATE TABLE usage (
        workload_id    TEXT NOT NULL,
        timestamp_s    REAL NOT NULL,   -- unix seconds
        usage_cores    REAL NOT NULL,   -- CPU used over the sample, in cores
        capacity_cores REAL NOT NULL    -- the workload's limit or request, in cores
    );
    CREATE INDEX usage_by_time ON usage (workload_id, timestamp_s);
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from corral.errors import InputError
from corral.predict.series import FloatArray

TABLE = "usage"
TABLE_COLUMNS = ("workload_id", "timestamp_s", "usage_cores", "capacity_cores")
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS usage (workload_id TEXT NOT NULL, timestamp_s REAL NOT NULL, "
    "usage_cores REAL NOT NULL, capacity_cores REAL NOT NULL);\n"
    "CREATE INDEX IF NOT EXISTS usage_by_time ON usage (workload_id, timestamp_s);"
)


@dataclass(frozen=True, eq=False)
class UsageHistory:
    """One workload's recent samples (any spacing, unsorted allowed), in cores."""

    timestamps_s: FloatArray
    usage_cores: FloatArray
    capacity_cores: FloatArray

    @classmethod
    def of(
        cls,
        timestamps_s: Sequence[float] | FloatArray,
        usage_cores: Sequence[float] | FloatArray,
        capacity_cores: Sequence[float] | FloatArray | float,
    ) -> UsageHistory:
        """Build a history; a scalar capacity applies to every sample."""
        t = np.asarray(timestamps_s, dtype=np.float64)
        u = np.asarray(usage_cores, dtype=np.float64)
        c = np.broadcast_to(np.asarray(capacity_cores, dtype=np.float64), t.shape).copy()
        if t.shape != u.shape or t.ndim != 1:
            raise InputError(
                "usage_cores", "needs one value per timestamp", "give arrays of equal length"
            )
        return cls(timestamps_s=t, usage_cores=u, capacity_cores=c)


def _connect(path: Path) -> sqlite3.Connection:
    if not path.exists():
        raise InputError(str(path), "no such database", "check the path to the agent's state")
    try:
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as err:
        raise InputError(str(path), f"cannot open the database: {err}") from err


def read_usage_frame(
    path: Path,
    *,
    workload_ids: Sequence[str] | None = None,
    since_s: float | None = None,
    until_s: float | None = None,
) -> pd.DataFrame:
    """Rows of the ``usage`` table as corral's long trace table (`series.COLUMNS`).

    Opens the database read-only. Raises `InputError` naming the table or column when the
    layout is not the one in this module's docstring, and naming the row on bad values.
    """
    connection = _connect(path)
    try:
        try:
            columns = {row[1] for row in connection.execute(f"PRAGMA table_info({TABLE})")}
        except sqlite3.Error as err:
            raise InputError(str(path), f"not a readable SQLite database: {err}") from err
        if not columns:
            raise InputError(
                f"{path}: table {TABLE}", "does not exist", f"create it with: {SCHEMA}"
            )
        missing = [c for c in TABLE_COLUMNS if c not in columns]
        if missing:
            raise InputError(
                f"{path}: table {TABLE}",
                f"missing column(s) {', '.join(missing)}",
                f"expected columns {', '.join(TABLE_COLUMNS)}",
            )
        where: list[str] = []
        params: list[object] = []
        if workload_ids is not None:
            where.append(f"workload_id IN ({','.join('?' * len(workload_ids))})")
            params.extend(workload_ids)
        if since_s is not None:
            where.append("timestamp_s >= ?")
            params.append(since_s)
        if until_s is not None:
            where.append("timestamp_s < ?")
            params.append(until_s)
        sql = f"SELECT rowid, {', '.join(TABLE_COLUMNS)} FROM {TABLE}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        try:
            rows = connection.execute(sql, params).fetchall()
        except sqlite3.Error as err:
            raise InputError(f"{path}: table {TABLE}", f"cannot be read: {err}") from err
    finally:
        connection.close()
    frame = pd.DataFrame(rows, columns=["rowid", "id", *TABLE_COLUMNS[1:]])
    for column in TABLE_COLUMNS[1:]:
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = values.isna() | ~np.isfinite(values.to_numpy(dtype=np.float64))
        if column == "usage_cores":
            bad |= values < 0
        elif column == "capacity_cores":
            bad |= values <= 0
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise InputError(
                f"{path}: table {TABLE}, rowid {frame['rowid'].iloc[row]}, column {column}",
                f"bad value {frame[column].iloc[row]!r}",
                "usage must be >= 0 and capacity > 0",
            )
        frame[column] = values.astype(np.float64)
    frame["id"] = frame["id"].astype(str)
    return frame.drop(columns="rowid")


def read_usage_histories(
    path: Path,
    *,
    since_s: float | None = None,
    workload_ids: Sequence[str] | None = None,
) -> dict[str, UsageHistory]:
    """Each workload's samples from the ``usage`` table (since ``since_s``), by workload id."""
    frame = read_usage_frame(path, workload_ids=workload_ids, since_s=since_s)
    out: dict[str, UsageHistory] = {}
    for workload_id, group in frame.groupby("id", sort=True):
        out[str(workload_id)] = UsageHistory(
            timestamps_s=group["timestamp_s"].to_numpy(dtype=np.float64),
            usage_cores=group["usage_cores"].to_numpy(dtype=np.float64),
            capacity_cores=group["capacity_cores"].to_numpy(dtype=np.float64),
        )
    return out

"""Trace loaders: real excerpts, irregular steps, gaps, duplicates and malformed files."""

from __future__ import annotations

import csv
import itertools
import sqlite3
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from corral.errors import InputError
from corral.predict.history import SCHEMA, read_usage_histories
from corral.predict.series import build_trace
from corral.predict.traces import load_trace

FIXTURES = Path(__file__).parent / "fixtures" / "traces"
BITBRAINS = FIXTURES / "bitbrains_excerpt.csv"
SHIPPED = Path(__file__).parents[1] / ".." / "shared" / "traces"


def _raw_rows() -> list[dict[str, str]]:
    with BITBRAINS.open() as handle:
        return list(csv.DictReader(handle))


def test_bitbrains_excerpt_converts_mhz_to_cores_per_the_readme() -> None:
    trace = load_trace(BITBRAINS, "bitbrains")
    assert trace.ids == ("102", "182", "42")
    row = _raw_rows()[0]  # VM 102, first sample
    expected = float(row["cpu_usage_mhz"]) / (
        float(row["cpu_capacity_mhz"]) / float(row["cpu_cores"])
    )
    assert trace.usage[0] == pytest.approx(expected)
    assert trace.capacity[0] == 4.0
    assert trace.start_s[0] == float(row["timestamp_s"])


def test_bitbrains_gaps_and_irregular_steps_are_reported_not_dropped() -> None:
    rows = _raw_rows()
    trace = load_trace(BITBRAINS, "bitbrains")
    report = trace.report
    # Counted independently from the raw file: steps that are not whole 300 s steps.
    off_grid = gaps = 0
    for before, after in itertools.pairwise(rows):
        if before["vm_id"] != after["vm_id"]:
            continue
        step = int(after["timestamp_s"]) - int(before["timestamp_s"])
        if step >= 450:
            gaps += 1
        if step % 300 != 0:
            off_grid += 1
    assert report.rows == len(rows) == 940
    assert report.gaps == gaps == 2
    assert report.missing_samples == 2
    assert report.off_grid_steps == off_grid
    assert report.duplicate_samples == 0
    # Every row is kept and each gap is a missing (NaN) grid slot.
    assert np.count_nonzero(~np.isnan(trace.usage)) == len(rows)
    assert np.count_nonzero(np.isnan(trace.usage)) == 2
    assert any("gaps: 2" in line for line in report.lines())


def test_bitbrains_usage_above_capacity_is_clipped_and_counted() -> None:
    rows = _raw_rows()
    over = sum(float(r["cpu_usage_mhz"]) > float(r["cpu_capacity_mhz"]) for r in rows)
    trace = load_trace(BITBRAINS, "bitbrains")
    assert trace.report.above_capacity == over > 0
    assert trace.report.max_over_capacity > 1.0
    observed = ~np.isnan(trace.usage)
    assert np.all(trace.usage[observed] <= trace.capacity[observed])


def test_google_directory_and_archive_load_the_same_series(tmp_path: Path) -> None:
    archive = tmp_path / "gcd.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(FIXTURES / "GCD_VMs", arcname="GCD_VMs")
    from_dir = load_trace(FIXTURES / "GCD_VMs", "google")
    from_tar = load_trace(archive, "google", google_capacity_cores=2.0)
    assert from_dir.ids == from_tar.ids
    assert len(from_dir.ids) == 3
    assert from_dir.step_s == 300.0
    np.testing.assert_allclose(from_tar.usage, from_dir.usage * 2.0)
    first = (FIXTURES / "GCD_VMs" / from_dir.ids[0]).read_text().split()[0]
    assert from_dir.usage[0] == pytest.approx(float(first) / 100.0)
    assert any("no timestamps" in note for note in from_dir.report.notes)


def _corral_csv(path: Path, rows: list[tuple[str, float, float, float]]) -> Path:
    frame = pd.DataFrame(rows, columns=["id", "timestamp_s", "usage_cores", "capacity_cores"])
    frame.to_csv(path, index=False)
    return path


def test_corral_format_merges_duplicate_timestamps_and_reports_them(tmp_path: Path) -> None:
    rows = [("a", 0.0, 1.0, 2.0), ("a", 60.0, 2.0, 2.0), ("a", 60.0, 4.0, 2.0)]
    rows += [("a", 120.0, 1.5, 2.0), ("a", 300.0, 0.5, 2.0), ("b", 7.0, 0.25, 1.0)]
    rows += [("b", 68.0, 0.5, 1.0)]
    trace = load_trace(_corral_csv(tmp_path / "t.csv", rows), "corral")
    assert trace.step_s == 60.0
    assert trace.report.duplicate_samples == 1
    a = trace.usage[trace.offsets[0] : trace.offsets[1]]
    # 60 s holds the mean of the duplicates (3 -> clipped to capacity 2); 180, 240 missing.
    np.testing.assert_array_equal(a, [1.0, 2.0, 1.5, np.nan, np.nan, 0.5])
    assert trace.report.above_capacity == 1
    assert trace.report.gaps == 1
    assert trace.report.missing_samples == 2
    assert trace.report.longest_gap_s == 180.0
    assert trace.report.off_grid_steps == 1  # b's 61 s step, snapped


def test_resampling_averages_samples_into_bins(tmp_path: Path) -> None:
    rows = [("a", float(t), float(t % 3), 4.0) for t in range(0, 600, 10)]
    trace = load_trace(_corral_csv(tmp_path / "t.csv", rows), "corral", step_s=300.0)
    expected = [
        np.mean([t % 3 for t in range(0, 300, 10)]),
        np.mean([t % 3 for t in range(300, 600, 10)]),
    ]
    np.testing.assert_allclose(trace.usage, expected)
    assert trace.report.duplicate_samples == 58


def test_a_series_on_another_step_is_refused_by_name() -> None:
    frame = pd.DataFrame(
        {
            "id": ["a"] * 4 + ["fast"] * 20 + ["b"] * 4,
            "timestamp_s": [0, 300, 600, 900, *range(0, 200, 10), 0, 300, 600, 900],
            "usage_cores": 0.5,
            "capacity_cores": 1.0,
        }
    )
    with pytest.raises(InputError, match=r"id fast.*every 10 s"):
        build_trace(frame, source="mem", fmt="corral")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("id,timestamp_s,usage_cores\na,0,1\n", "missing column.*capacity_cores"),
        (
            "id,timestamp_s,usage_cores,capacity_cores\na,0,1,2\na,300,lots,2\n",
            "line 3, field usage_cores.*'lots' is not a finite number",
        ),
        (
            "id,timestamp_s,usage_cores,capacity_cores\na,0,1,2\na,300,-1,2\n",
            "line 3, field usage_cores.*non-negative",
        ),
        ("id,timestamp_s,usage_cores,capacity_cores\na,0,1,0\n", "line 2, field capacity_cores"),
        ("id,timestamp_s,usage_cores,capacity_cores\na,0,1,2\n,300,1,2\n", "line 3, field id"),
        ("id,timestamp_s,usage_cores,capacity_cores\na,0,1,2\na,300,1,2,9\n", "malformed CSV"),
        ("id,timestamp_s,usage_cores,capacity_cores\na,nan,1,2\n", "line 2, field timestamp_s"),
        ("", "not a readable CSV"),
    ],
)
def test_malformed_corral_files_name_the_line_and_field(
    tmp_path: Path, content: str, match: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(InputError, match=match):
        load_trace(path, "corral")


def test_malformed_bitbrains_file_names_the_line(tmp_path: Path) -> None:
    lines = BITBRAINS.read_text().splitlines()
    fields = lines[5].split(",")
    fields[4] = "n/a"
    lines[5] = ",".join(fields)
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match="line 6, field cpu_usage_mhz"):
        load_trace(path, "bitbrains")


def test_malformed_google_file_names_the_member_and_line(tmp_path: Path) -> None:
    folder = tmp_path / "GCD_VMs"
    folder.mkdir()
    (folder / "vm_1_1").write_text("10.0 2.0\n11.5 2.0\nbusy 2.0\n")
    with pytest.raises(InputError, match=r"vm_1_1: line 3, field cpu_pct"):
        load_trace(folder, "google")


def test_unknown_format_and_missing_file_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown trace format"):
        load_trace(BITBRAINS, "parquet")
    with pytest.raises(InputError, match="no such file"):
        load_trace(tmp_path / "nope.csv", "corral")


def _usage_db(path: Path, rows: list[tuple[str, float, float, float]]) -> Path:
    with sqlite3.connect(path) as db:
        db.executescript(SCHEMA)
        db.executemany("INSERT INTO usage VALUES (?, ?, ?, ?)", rows)
    return path


def test_agent_history_in_sqlite_reads_as_trace_and_histories(tmp_path: Path) -> None:
    rows = [("web", 1000.0 + 10 * k, 0.1 * (k % 5), 2.0) for k in range(60)]
    rows += [("batch", 1000.0 + 10 * k, 1.0, 4.0) for k in range(30)]
    db = _usage_db(tmp_path / "state.db", rows)
    trace = load_trace(db, "sqlite", step_s=60.0)
    assert trace.ids == ("batch", "web")
    assert trace.report.rows == 90
    web = trace.usage[trace.offsets[1] : trace.offsets[2]]
    assert web[0] == pytest.approx(np.mean([0.1 * (k % 5) for k in range(6)]))
    histories = read_usage_histories(db, since_s=1100.0)
    assert set(histories) == {"web", "batch"}
    assert histories["web"].timestamps_s.min() == 1100.0
    assert histories["batch"].capacity_cores[0] == 4.0


def test_sqlite_with_the_wrong_layout_says_what_is_expected(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    with pytest.raises(InputError, match=r"table usage: does not exist.*CREATE TABLE"):
        load_trace(empty, "sqlite")
    wrong = tmp_path / "wrong.db"
    with sqlite3.connect(wrong) as db:
        db.execute("CREATE TABLE usage (workload_id TEXT, timestamp_s REAL, usage_cores REAL)")
    with pytest.raises(InputError, match=r"missing column.*capacity_cores"):
        load_trace(wrong, "sqlite")
    bad = _usage_db(tmp_path / "bad.db", [("a", 0.0, 1.0, 1.0), ("a", 60.0, -2.0, 1.0)])
    with pytest.raises(InputError, match="rowid 2, column usage_cores"):
        load_trace(bad, "sqlite")


@pytest.mark.slow
@pytest.mark.skipif(
    not (SHIPPED / "bitbrains_rnd_2013-08_100vms.csv.gz").exists(),
    reason="the shipped traces (../shared/traces) are not beside the clone",
)
def test_the_shipped_bitbrains_trace_loads_whole() -> None:
    trace = load_trace(SHIPPED / "bitbrains_rnd_2013-08_100vms.csv.gz", "bitbrains")
    assert len(trace.ids) == 100
    assert trace.report.rows == 862_280
    assert trace.step_s == 300.0
    assert trace.report.gaps > 0

"""`corral bench colocation`: its pure parts, its CLI errors, and one real end-to-end run
in quick mode (memcached + stress-ng + the C client on this host's cgroup v1)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from corral.bench.colocation.loadgen import GenOutput, diurnal, schedule_arg, steps
from corral.bench.colocation.runner import (
    POLICIES,
    ColocationBenchConfig,
    run_colocation_bench,
    targets,
)
from corral.bench.colocation.stress import bogo_ops, stress_argv
from corral.bench.colocation.tree import PREFIX, remove_tree
from corral.cli import app
from corral.control.slo import Slo

ROOT = Path("/sys/fs/cgroup")

STRESS_OUTPUT = """stress-ng: info:  [17489] dispatching hogs: 1 cpu
stress-ng: metrc: [17489] stressor       bogo ops real time  usr time  sys time   bogo ops/s
stress-ng: metrc: [17489]                           (secs)    (secs)    (secs)   (real time)
stress-ng: metrc: [17489] cpu                 394      1.00      0.40      0.00       393.89
"""


def test_bogo_ops_come_from_stress_ngs_own_metrics_line() -> None:
    assert bogo_ops(STRESS_OUTPUT, "cpu") == 394.0
    assert bogo_ops(STRESS_OUTPUT, "vm") is None
    assert stress_argv("vm", 2, 3.2)[:3] == ["stress-ng", "--vm", "2"]


def test_load_pattern_is_steps_then_one_compressed_day() -> None:
    segs = steps(100_000, (0.1, 0.5), 3) + diurnal(100_000, 0.1, 0.9, 10)
    assert segs[:2] == [(3, 10_000), (3, 50_000)]
    day = [r for _, r in segs[2:]]
    assert len(day) == 10 and max(day) <= 90_000 and min(day) >= 10_000
    assert day.index(max(day)) in (4, 5)  # the peak in the middle of the day
    assert schedule_arg([(2.0, 1234.4)]) == "2:1234"


def test_generator_output_is_read_line_by_line_as_it_grows(tmp_path: Path) -> None:
    path = tmp_path / "gen.jsonl"
    line = {
        "window": 0, "t": 0.0, "rate": 100.0, "sent": 100, "done": 99, "dropped": 0,
        "p50_ms": 0.1, "p99_ms": 0.5, "max_ms": 0.9, "lag_max_ms": 0.02,
        "lag_mean_ms": 0.01, "cpu": 0.1,
    }  # fmt: skip
    path.write_text(json.dumps(line) + "\n" + '{"window": 1, "t"')
    out = GenOutput(path)
    first = out.poll()
    assert [w.p99_ms for w in first] == [0.5]
    with open(path, "a") as handle:
        handle.write(
            ': 1.0, "rate": 1, "sent": 0, "done": 0, "dropped": 0, "p50_ms": -1,'
            ' "p99_ms": -1, "max_ms": -1, "lag_max_ms": 0, "lag_mean_ms": 0, "cpu": 0}\n'
            '{"end": 1, "sent": 100, "done": 100, "lost": 0, "cpu_s": 0.2}\n'
        )
    second = out.poll()
    assert second[0].p99_ms is None  # no completions: no percentile, not 0
    assert out.end is not None and out.end["lost"] == 0


def test_targets_compare_corral_with_the_best_static_policy_meeting_the_slo() -> None:
    policies = {
        "none": {"emu": 1.1, "slo_violations": 7},
        "static-cpuset": {"emu": 0.8, "slo_violations": 0},
        "static-idle": {"emu": 0.95, "slo_violations": 2},
        "corral": {"emu": 0.92, "slo_violations": 0},
    }
    result = targets(policies)
    assert result["best_static_meeting_slo"] == "static-cpuset"
    assert result["corral_beats_best_static"] is True
    assert result["corral_emu_at_least_0.9"] is True
    assert result["none_shows_violations"] is True


def test_cli_names_a_bad_policy_without_a_traceback() -> None:
    result = CliRunner().invoke(app, ["bench", "colocation", "--policy", "bogus"])
    assert result.exit_code == 2
    assert "--policy[0]" in result.output and "Traceback" not in result.output


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create cgroups"
    for binary in ("memcached", "stress-ng", "gcc"):
        if shutil.which(binary) is None:
            return f"{binary} is not installed (.ci/system-packages installs it)"
    for controller, probe in (("cpu", "cpu.shares"), ("cpuacct", "cpuacct.usage"),
                              ("cpuset", "cpuset.cpus"), ("memory", "memory.limit_in_bytes"),
                              ("freezer", "cgroup.procs")):  # fmt: skip
        if not (ROOT / controller / probe).exists():
            return f"needs the v1 {controller} controller at {ROOT / controller}"
    return None


SKIP = _skip_reason()


@pytest.fixture
def no_leftovers() -> Iterator[None]:
    name = f"{PREFIX}{os.getpid()}"
    try:
        yield
    finally:
        leftovers = [
            c for c in ("cpu", "cpuset", "memory", "freezer") if (ROOT / c / name).exists()
        ]
        remove_tree(ROOT, name)  # clean up even if the benchmark's own clean-up failed
        assert not leftovers, f"the benchmark left cgroups behind in {leftovers}"


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.skipif(SKIP is not None, reason=SKIP or "")
def test_quick_benchmark_runs_end_to_end_and_cleans_up(tmp_path: Path, no_leftovers: None) -> None:
    # The figures are reported, never asserted (a shared 2-CPU host is noisy); a 5 ms SLO
    # keeps the peak search meaningful even when other tests load the machine. The
    # pattern is the quick one, shortened further for the suite.
    config = replace(
        ColocationBenchConfig.quick_config(),
        slo=Slo(target_ms=5.0),
        step_s=2.0,
        diurnal_s=6.0,
        peak_rates=(5_000.0, 10_000.0, 20_000.0, 40_000.0, 80_000.0),
    )
    messages: list[str] = []
    doc = run_colocation_bench(config, work_dir=tmp_path, progress=messages.append)
    assert set(doc["policies"]) == set(POLICIES)
    for name, policy in doc["policies"].items():
        assert isinstance(policy["emu"], float) and policy["emu"] > 0, name
        assert isinstance(policy["slo_violations"], int)
        windows = policy["windows"]
        assert len(windows) >= 14
        assert {"t", "p99_ms", "lag_max_ms", "steal_cpu", "gen_cpu", "be_cpu", "noisy"} <= set(
            windows[0]
        )
    # The controller ran in every window of its policy and said what it did.
    assert all(w["mode"] for w in doc["policies"]["corral"]["windows"])
    assert doc["policies"]["corral"]["repetitions"][0]["actions"].get("SetCpus", 0) >= 1
    assert doc["peak_rps"] >= 5_000
    assert doc["be_alone"]["cpu"]["ops_per_s"] > 0
    memory = doc["memory"]
    assert memory["contained"], memory
    assert memory["memcached_alive"] and memory["memcached_data_after"], memory
    assert any("LC peak" in m for m in messages)
    from corral.bench.colocation.report import plot

    png = plot(doc, tmp_path / "plot.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

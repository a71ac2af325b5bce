"""``corral apply`` and ``corral drift`` against a cgroup v2 tree (no root needed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.fixtures.cgroup_trees import add_v2_cgroup, write_v2_root


def corral(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "corral.cli", *args], capture_output=True, text=True, check=False
    )


def tree(tmp_path: Path) -> tuple[Path, Path, Path]:
    root = write_v2_root(tmp_path / "cgroup")
    for rel in ("corral/web", "corral/be/batch"):
        add_v2_cgroup(root, rel)
    topo = tmp_path / "topo.yaml"
    topo.write_text(
        yaml.safe_dump(
            {"cpus": [{"id": i, "core": i, "socket": 0, "numa": 0, "l3": 0} for i in range(4)]}
        )
    )
    workloads = tmp_path / "w.yaml"
    workloads.write_text(
        yaml.safe_dump(
            {
                "workloads": [
                    {"id": "web", "qos": "LC", "cpus": 2, "policy": "exclusive"},
                    {"id": "batch", "qos": "BE", "cpus": 1, "memory_limit": "1Gi"},
                ]
            }
        )
    )
    return root, topo, workloads


def test_apply_dry_run_prints_the_plan_and_writes_nothing(tmp_path: Path) -> None:
    root, topo, workloads = tree(tmp_path)
    args = ["-w", str(workloads), "-t", str(topo), "--cgroup-root", str(root)]
    done = corral("apply", *args, "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "would write" in done.stdout and "cpuset.cpus" in done.stdout
    assert (root / "corral/web/cpuset.cpus").read_text().strip() == ""


@pytest.mark.slow
def test_apply_then_drift_round_trip_on_a_v2_tree(tmp_path: Path) -> None:
    root, topo, workloads = tree(tmp_path)
    args = ["-w", str(workloads), "-t", str(topo), "--cgroup-root", str(root)]
    applied = corral("apply", *args, "--json")
    assert applied.returncode == 0, applied.stderr
    report = json.loads(applied.stdout)["report"]
    assert report["ok"] and any(w["path"].endswith("web/cpuset.cpus") for w in report["writes"])
    assert corral("drift", *args).returncode == 0
    (root / "corral/be/batch/memory.max").write_text("max\n")
    drifted = corral("drift", *args)
    assert drifted.returncode == 1 and "memory.max" in drifted.stdout
    assert corral("drift", *args, "--repair").returncode == 0
    assert (root / "corral/be/batch/memory.max").read_text().strip() == str(1 << 30)


def test_bad_input_is_one_clear_error_line(tmp_path: Path) -> None:
    root, topo, workloads = tree(tmp_path)
    args = ["-w", str(workloads), "-t", str(topo), "--cgroup-root", str(root)]
    done = corral("apply", *args, "--be-memory-max", "lots")
    assert done.returncode == 2 and done.stderr.startswith("error: --be-memory-max")
    big = corral(
        "apply", "-w", str(workloads), "-t", "nonexistent-preset", "--cgroup-root", str(root)
    )
    assert big.returncode == 2 and "Traceback" not in big.stderr

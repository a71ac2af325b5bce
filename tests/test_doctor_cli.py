"""`corral doctor` as users run it: a subprocess whose whole stdout is parsed, its exit
code checked on this host, on a fake root without cgroups, as a non-root user and on bad
input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from corral.topology.presets import preset
from tests.real_cgroups import CGROUP_ROOT, v1_skip_reason
from tests.sysfs_tree import write_sysfs_tree

REPO = Path(__file__).parents[1]
SKIP = v1_skip_reason(["cpuset", "cpu"])


def corral(*args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, sys.executable, "-m", "corral.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
        env={**os.environ, "COLUMNS": "100"},
    )


def leftovers() -> list[Path]:
    return [p for h in CGROUP_ROOT.iterdir() if h.is_dir() for p in h.glob("corral-doctor-*")]


@pytest.mark.skipif(SKIP is not None, reason=str(SKIP))
def test_json_on_this_host_is_the_whole_stdout_and_exit_0_says_it_can_enforce() -> None:
    out = corral("doctor", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)  # the whole stdout, nothing before or after
    assert doc["can_enforce"] is True and doc["blockers"] == []
    assert doc["mode"] in {"v1", "hybrid", "v2"}
    checks = {f["check"]: f for f in doc["findings"]}
    assert checks["cgroup.write.cpuset"]["status"] == "ok"
    assert {f["status"] for f in doc["findings"]} <= {"ok", "warn", "missing", "error"}
    assert leftovers() == []


def test_a_fake_root_without_cgroups_exits_1_and_says_what_blocks(tmp_path: Path) -> None:
    write_sysfs_tree(tmp_path / "sys", preset("xeon-e2288g"))
    out = corral("doctor", "--json", "--root", str(tmp_path))
    assert out.returncode == 1, out.stderr
    doc = json.loads(out.stdout)
    assert doc["can_enforce"] is False and doc["mode"] == "none"
    assert any("no cgroup hierarchy" in b for b in doc["blockers"])
    checks = {f["check"]: f for f in doc["findings"]}
    assert checks["cgroup.mode"]["status"] == "error"
    assert checks["cpu.topology"]["data"]["cpus"] == 16


def test_a_root_that_does_not_exist_exits_2_naming_the_option(tmp_path: Path) -> None:
    out = corral("doctor", "--root", str(tmp_path / "absent"))
    assert out.returncode == 2
    assert "--root" in out.stderr and "not a directory" in out.stderr
    assert out.stdout == ""


@pytest.mark.skipif(
    SKIP is not None or shutil.which("setpriv") is None, reason=str(SKIP or "no setpriv")
)
def test_as_an_unprivileged_user_the_real_kernel_refuses_and_doctor_exits_1() -> None:
    nobody = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
    reach = corral("--version", prefix=nobody)
    if reach.returncode != 0:  # e.g. a venv under a 0700 directory: nobody cannot run it
        pytest.skip(f"uid 65534 cannot run {sys.executable}: {reach.stderr.strip()[:200]}")
    out = corral("doctor", "--json", prefix=nobody)
    assert out.returncode == 1, out.stderr
    doc = json.loads(out.stdout)
    assert not doc["can_enforce"]
    assert any("cpuset" in b and "EACCES" in b for b in doc["blockers"]), doc["blockers"]
    write = {f["check"]: f for f in doc["findings"]}["cgroup.write.cpuset"]
    assert write["status"] == "error" and "run as root" in write["fix"]
    assert leftovers() == []


@pytest.mark.skipif(SKIP is not None, reason=str(SKIP))
def test_the_terminal_table_groups_findings_by_area_and_ends_with_the_verdict() -> None:
    out = corral("doctor")
    assert out.returncode == 0, out.stderr
    lines = [line.strip() for line in out.stdout.splitlines()]
    for area in ("cgroups", "pressure", "cache/RDT", "cpu", "kubelet", "tools", "clock"):
        assert area in lines, area
    assert lines[-1] == "corral can enforce cpusets and CPU isolation on this host"


def test_bad_input_under_json_is_an_error_document_naming_the_option(tmp_path: Path) -> None:
    out = corral("doctor", "--json", "--root", str(tmp_path / "absent"))
    assert out.returncode == 2
    doc = json.loads(out.stdout)
    assert doc["error"]["field"] == "--root" and "not a directory" in doc["error"]["message"]

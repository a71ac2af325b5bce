"""Packaging: the wheel carries what the agent serves and what an operator installs, the
example config is one the agent accepts, the systemd unit verifies, and the constraints
file pins every dependency within pyproject's ranges."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from corral.agent.config import SYSTEM_CONFIG, default_config_paths, find_config, load_settings
from corral.agent.reload import LIVE_FIELDS
from corral.agent.ui.routes import ASSETS

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "packaging" / "systemd" / "corral-agent.service"
EXAMPLE = REPO / "packaging" / "agent.example.yaml"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    """corral's wheel, built by pip from a copy of the tree (the build writes nothing
    into this one)."""
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    ignore = shutil.ignore_patterns(".git", ".venv", "*.egg-info", "build", "__pycache__", "*.pyc")
    shutil.copytree(REPO, src, ignore=ignore)
    out = work / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(src)],
        check=True,
        timeout=900,
    )
    (path,) = out.glob("corral-*.whl")
    with zipfile.ZipFile(path) as archive:
        yield archive


@pytest.mark.slow
def test_the_wheel_holds_the_web_view_examples_and_service_files(
    wheel: zipfile.ZipFile,
) -> None:
    names = set(wheel.namelist())
    for asset in ASSETS:
        assert f"corral/agent/ui/static/{asset}" in names
    assert "corral/py.typed" in names
    assert any(n.startswith("corral/bench/colocation/") and n.endswith(".c") for n in names)
    assert "corral/agent/docs.py" in names
    # Every file of the package that is not Python source is package data: in the wheel.
    data_files = {
        path.relative_to(REPO).as_posix()
        for path in (REPO / "corral").rglob("*")
        if path.is_file() and path.suffix not in (".py", ".pyc") and "__pycache__" not in path.parts
    }
    assert data_files - names == set(), "add them to [tool.setuptools.package-data]"
    assert "corral/topology/presets.py" in names
    data = {n.split(".data/data/", 1)[1] for n in names if ".data/data/" in n}
    examples = {f"share/corral/examples/{p.name}" for p in (REPO / "examples").glob("*.yaml")}
    assert examples and examples <= data
    assert {
        "share/corral/agent.example.yaml",
        "share/corral/constraints.txt",
        "share/corral/systemd/corral-agent.service",
    } <= data
    assert not any(n.startswith("tests/") for n in names)


@pytest.mark.slow
def test_the_wheel_declares_the_cli_and_its_dependencies(wheel: zipfile.ZipFile) -> None:
    (entry,) = (n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt"))
    assert "corral = corral.cli:main" in wheel.read(entry).decode()
    (meta,) = (n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    requires = {
        canonicalize_name(Requirement(line.split(":", 1)[1].strip()).name)
        for line in wheel.read(meta).decode().splitlines()
        if line.startswith("Requires-Dist:")
    }
    assert {"fastapi-offline", "highspy", "uvicorn", "prometheus-client"} <= requires


def test_the_example_config_is_accepted_by_the_agent() -> None:
    settings = load_settings(EXAMPLE, {}, search=())
    assert settings.state_path == Path("/var/lib/corral/state.db")
    assert settings.listen == "127.0.0.1:7781"
    assert settings.source is not None and settings.source.path == EXAMPLE
    # Every key the example marks [live] really is reloadable, and no other is.
    marked = {
        line.split(":", 1)[0]
        for line in EXAMPLE.read_text().splitlines()
        if "[live]" in line and not line.startswith("#")
    }
    assert marked and marked <= LIVE_FIELDS
    unmarked = {
        line.split(":", 1)[0]
        for line in EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#") and "[live]" not in line
    }
    assert not unmarked & LIVE_FIELDS


def test_config_search_order_is_xdg_then_etc(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "HOME": str(tmp_path / "home")}
    assert default_config_paths(env) == (tmp_path / "xdg" / "corral" / "agent.yaml", SYSTEM_CONFIG)
    assert default_config_paths({"HOME": str(tmp_path / "home")})[0] == (
        tmp_path / "home" / ".config" / "corral" / "agent.yaml"
    )
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    second.write_text("budget_ms: 7\n")
    assert find_config([first, second]) == second
    first.write_text("budget_ms: 9\n")
    assert find_config([first, second]) == first
    assert load_settings(None, {}, search=[first, second]).budget_ms == 9
    assert load_settings(second, {}, search=[first]).budget_ms == 7  # --config wins
    assert load_settings(None, {}, search=[]).source is not None


def _unit_directives() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def test_the_systemd_unit_sandboxes_the_agent_but_lets_it_write_cgroups() -> None:
    unit = _unit_directives()
    assert unit["ExecStart"] == ["/opt/corral/bin/corral agent --config /etc/corral/agent.yaml"]
    assert str(SYSTEM_CONFIG) in unit["ExecStart"][0]
    assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert unit["Restart"] == ["on-failure"]
    assert unit["ProtectSystem"] == ["strict"]
    assert {"/sys/fs/cgroup", "-/sys/fs/resctrl"} <= set(unit["ReadWritePaths"])
    assert unit["StateDirectory"] == ["corral"]
    for flag in ("NoNewPrivileges", "ProtectHome", "PrivateTmp"):
        assert unit[flag] == ["true"], flag
    # These would make /sys/fs/cgroup read-only.
    assert "ProtectControlGroups" not in unit
    assert "ProtectKernelTunables" not in unit
    # The default state path under the unit is the StateDirectory.
    assert "XDG_DATA_HOME=/var/lib" in unit["Environment"][0]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    # verify checks that ExecStart exists: point it at this environment's corral.
    corral = Path(sys.executable).with_name("corral")
    if not corral.exists():
        pytest.skip(f"no corral script beside {sys.executable}")
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text().replace("/opt/corral/bin/corral", str(corral)))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(copy)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "corral-agent.service" not in done.stderr, done.stderr


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for raw in (REPO / "constraints.txt").read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not NAME==VERSION"
            pins[canonicalize_name(name)] = version
    return pins


def test_constraints_pin_every_dependency_within_pyprojects_ranges() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = _pins()
    for text in [*project["dependencies"], *project["optional-dependencies"]["test"]]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not pinned: run scripts/refresh-constraints"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{name}=={pins[name]} is outside {requirement.specifier}: "
            "run scripts/refresh-constraints"
        )
    assert "corral" not in pins


def test_ci_installs_with_the_constraints() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"pip install .*-c constraints\.txt -e '\.\[test\]'", ci), ci

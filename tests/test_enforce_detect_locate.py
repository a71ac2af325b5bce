"""Detection of cgroup layouts and locating container cgroups, on trees and on this host."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.enforce.detect import Mode, Version, detect_cgroups
from corral.enforce.locate import container_candidates, explicit_path, locate_container
from corral.errors import InputError
from tests.fixtures.cgroup_trees import add_v1_cgroup, write_v1_root, write_v2_root

CID = "4f1c2d3e5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d"


def test_a_cgroup2_root_is_unified_and_serves_its_controllers(tmp_path: Path) -> None:
    write_v2_root(tmp_path)
    layout = detect_cgroups(tmp_path)
    assert layout.mode is Mode.UNIFIED
    assert {c: h.version for c, h in layout.managed().items()} == {
        "cpuset": Version.V2,
        "cpu": Version.V2,
        "memory": Version.V2,
    }
    assert layout.limitations() == ()


def test_v1_hierarchies_are_recognised_by_their_files(tmp_path: Path) -> None:
    write_v1_root(tmp_path, idle=False)
    layout = detect_cgroups(tmp_path)
    assert layout.mode is Mode.LEGACY
    assert layout.controllers["cpu"].path == tmp_path / "cpu"
    assert layout.controllers["memory"].version is Version.V1
    assert any("cpu.idle" in note for note in layout.limitations())


def test_hybrid_without_controllers_in_cgroup2_says_it_enforces_through_v1(tmp_path: Path) -> None:
    write_v1_root(tmp_path)
    unified = tmp_path / "unified"
    unified.mkdir()
    (unified / "cgroup.controllers").write_text("\n")
    layout = detect_cgroups(tmp_path)
    assert layout.mode is Mode.HYBRID and layout.unified is not None
    assert layout.controllers["cpuset"].version is Version.V1
    assert any("enforces through v1" in note for note in layout.limitations())


def test_a_missing_controller_is_a_stated_limitation(tmp_path: Path) -> None:
    write_v1_root(tmp_path)
    for file in (tmp_path / "memory").iterdir():
        file.unlink()
    (tmp_path / "memory").rmdir()
    layout = detect_cgroups(tmp_path)
    assert "memory" not in layout.controllers
    assert any("memory controller is not mounted" in n for n in layout.limitations())
    assert detect_cgroups(tmp_path / "nothing").mode is Mode.NONE


def test_this_hosts_layout_is_detected() -> None:
    root = Path("/sys/fs/cgroup")
    if not (root / "cpuset" / "cpuset.cpus").exists():
        pytest.skip("this host has no v1 cpuset hierarchy at /sys/fs/cgroup/cpuset")
    layout = detect_cgroups(root)
    assert layout.mode in {Mode.LEGACY, Mode.HYBRID}
    assert layout.controllers["cpuset"].path == root / "cpuset"
    assert layout.controllers["cpu"].path == root / "cpu"


@pytest.mark.parametrize(
    "rel",
    [
        f"kubepods/burstable/pod1234-5678/{CID}",
        f"kubepods/pod1234-5678/{CID}",
        f"kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12_34.slice/cri-containerd-{CID}.scope",
        f"kubepods.slice/kubepods-pod12_34.slice/crio-{CID}.scope",
        f"docker/{CID}",
        f"system.slice/docker-{CID}.scope",
        f"k8s.io/{CID}",
        f"system.slice/containerd-{CID}.scope",
    ],
)
def test_container_ids_are_found_under_the_usual_layouts(tmp_path: Path, rel: str) -> None:
    write_v1_root(tmp_path)
    add_v1_cgroup(tmp_path, rel)
    assert locate_container(tmp_path / "cpuset", CID) == rel
    assert locate_container(tmp_path / "cpuset", CID[:12]) == rel  # docker ps short id
    assert locate_container(tmp_path / "cpuset", "containerd://" + CID) == rel


def test_unknown_short_malformed_and_ambiguous_ids_are_clear_errors(tmp_path: Path) -> None:
    write_v1_root(tmp_path)
    add_v1_cgroup(tmp_path, f"docker/{CID}")
    add_v1_cgroup(tmp_path, f"docker/{CID[:20]}{'0' * 44}")
    with pytest.raises(InputError, match="no cgroup for container"):
        locate_container(tmp_path / "cpuset", "a" * 64)
    with pytest.raises(InputError, match="hex digits"):
        locate_container(tmp_path / "cpuset", "web-1")
    with pytest.raises(InputError, match="matches 2 cgroups"):
        locate_container(tmp_path / "cpuset", CID[:16])
    assert len(container_candidates(tmp_path / "cpuset")) == 2


def test_explicit_paths_are_normalised_and_escapes_refused() -> None:
    assert explicit_path("/kubepods/pod1/abc/") == "kubepods/pod1/abc"
    with pytest.raises(InputError, match="not a cgroup path"):
        explicit_path("../etc")
    with pytest.raises(InputError, match="not a cgroup path"):
        explicit_path("/")

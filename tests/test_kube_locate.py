"""Finding pods' and containers' cgroups under kubelet's layouts: cgroupfs and systemd
drivers, the QoS sub-trees, containerd / CRI-O / docker names, v1 hierarchies and the v2
tree (fixture trees), and on this host's real cgroup v1 cpuset hierarchy."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from corral.enforce.locate import locate_container, locate_pod, pod_cgroup_candidates
from corral.errors import InputError
from tests.fixtures.cgroup_trees import add_v1_cgroup, add_v2_cgroup, write_v1_root, write_v2_root

UID = "1f2e3d4c-5b6a-4789-8abc-def012345678"
SYSTEMD_UID = UID.replace("-", "_")
CID = "0123456789abcdef" * 4

LAYOUTS = [
    # (QoS class, pod cgroup, container cgroup)
    ("Guaranteed", f"kubepods/pod{UID}", f"kubepods/pod{UID}/{CID}"),
    ("Burstable", f"kubepods/burstable/pod{UID}", f"kubepods/burstable/pod{UID}/crio-{CID}"),
    ("BestEffort", f"kubepods/besteffort/pod{UID}", f"kubepods/besteffort/pod{UID}/{CID}"),
    (
        "Guaranteed",
        f"kubepods.slice/kubepods-pod{SYSTEMD_UID}.slice",
        f"kubepods.slice/kubepods-pod{SYSTEMD_UID}.slice/cri-containerd-{CID}.scope",
    ),
    (
        "Burstable",
        f"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{SYSTEMD_UID}.slice",
        f"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{SYSTEMD_UID}.slice/crio-{CID}.scope",
    ),
    (
        "BestEffort",
        f"kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{SYSTEMD_UID}.slice",
        f"kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{SYSTEMD_UID}.slice/docker-{CID}.scope",
    ),
]


@pytest.mark.parametrize(("qos", "pod", "container"), LAYOUTS)
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_pods_and_containers_are_found(
    tmp_path: Path, version: str, qos: str, pod: str, container: str
) -> None:
    if version == "v1":
        write_v1_root(tmp_path)
        add_v1_cgroup(tmp_path, container)
        hierarchy = tmp_path / "cpuset"
    else:
        write_v2_root(tmp_path)
        add_v2_cgroup(tmp_path, container)
        hierarchy = tmp_path
    assert locate_pod(hierarchy, UID, qos) == pod
    assert locate_pod(hierarchy, UID) == pod
    assert locate_container(hierarchy, f"containerd://{CID}") == container
    assert locate_container(hierarchy, CID[:12]) == container
    other = next(q for q in ("Guaranteed", "Burstable", "BestEffort") if q != qos)
    with pytest.raises(InputError, match="no pod cgroup"):
        locate_pod(hierarchy, UID, other)


def test_bad_uid_and_class_are_refused() -> None:
    with pytest.raises(InputError, match="pod uid"):
        pod_cgroup_candidates("../etc")
    with pytest.raises(InputError, match="QoS class"):
        pod_cgroup_candidates(UID, "Gold")
    assert len(pod_cgroup_candidates(UID)) == 6


REAL_CPUSET = Path("/sys/fs/cgroup/cpuset")


@pytest.mark.root
@pytest.mark.skipif(
    not (REAL_CPUSET / "cgroup.procs").exists() or os.geteuid() != 0,
    reason="needs root and the cgroup v1 cpuset hierarchy at /sys/fs/cgroup/cpuset",
)
def test_real_kubepods_tree_in_the_v1_cpuset_hierarchy() -> None:
    uid = str(uuid.uuid4())
    cid = uuid.uuid4().hex + uuid.uuid4().hex
    top = f"corral-test-kubepods-{uid[:8]}"
    # kubelet's --cgroup-root may put kubepods under another cgroup: locate under it.
    hierarchy = REAL_CPUSET / top
    made = [
        top,
        f"{top}/kubepods",
        f"{top}/kubepods/burstable",
        f"{top}/kubepods/burstable/pod{uid}",
        f"{top}/kubepods/burstable/pod{uid}/{cid}",
    ]
    try:
        for rel in made:
            (REAL_CPUSET / rel).mkdir()
        assert locate_pod(hierarchy, uid, "Burstable") == f"kubepods/burstable/pod{uid}"
        assert (
            locate_container(hierarchy, f"containerd://{cid}")
            == f"kubepods/burstable/pod{uid}/{cid}"
        )
    finally:
        for rel in reversed(made):
            if (REAL_CPUSET / rel).exists():
                (REAL_CPUSET / rel).rmdir()

"""resctrl on directory trees shaped like /sys/fs/resctrl (this VM has no RDT hardware)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from corral.enforce.resctrl import Resctrl, ResctrlError, Schemata
from corral.errors import InputError
from corral.topology.cpuset import CpuSet
from tests.fixtures.cgroup_trees import add_resctrl_group, read_only, write_resctrl


def test_info_reads_masks_closids_bandwidth_and_cache_ids(tmp_path: Path) -> None:
    info = Resctrl(write_resctrl(tmp_path, num_closids=16)).info()
    l3 = info.caches["L3"]
    assert (l3.cbm_mask, l3.min_cbm_bits, l3.num_closids, l3.ids) == (0xFFF, 1, 16, (0, 1))
    assert info.mb is not None
    assert (info.mb.min_bandwidth, info.mb.bandwidth_gran, info.mb.ids) == (10, 10, (0, 1))
    assert info.num_closids == 16


def test_an_unmounted_resctrl_is_a_clear_error(tmp_path: Path) -> None:
    resctrl = Resctrl(tmp_path / "resctrl")
    assert not resctrl.available()
    with pytest.raises(ResctrlError, match="not mounted"):
        resctrl.info()


def test_schemata_parse_the_kernels_padding_and_print_canonically() -> None:
    parsed = Schemata.parse("    MB:0= 50;1=100\n    L3:0=0ff0;1=fff\n")
    assert parsed.mb == {0: 50, 1: 100}
    assert parsed.caches == {"L3": {0: 0xFF0, 1: 0xFFF}}
    assert str(parsed) == "L3:0=ff0;1=fff\nMB:0=50;1=100\n"
    with pytest.raises(ValueError, match="id=value"):
        Schemata.parse("L3:0ff0")


@pytest.mark.parametrize(
    ("schemata", "problem"),
    [
        (Schemata(caches={"L3": {0: 0xF0F}}), "contiguous"),
        (Schemata(caches={"L3": {0: 0x1000}}), "outside cbm_mask"),
        (Schemata(caches={"L3": {0: 0}}), "empty"),
        (Schemata(caches={"L3": {7: 0xF}}), "no cache id 7"),
        (Schemata(caches={"L2": {0: 0xF}}), "no such resctrl resource"),
        (Schemata(mb={0: 5}), "outside 10..100"),
        (Schemata(mb={0: 55}), "multiple of bandwidth_gran"),
        (Schemata(mb={3: 50}), "no MB domain 3"),
    ],
)
def test_schemata_breaking_info_rules_are_refused_with_the_rule(
    tmp_path: Path, schemata: Schemata, problem: str
) -> None:
    info = Resctrl(write_resctrl(tmp_path)).info()
    with pytest.raises(InputError, match=problem):
        schemata.validate(info)


def test_min_cbm_bits_is_enforced(tmp_path: Path) -> None:
    info = Resctrl(write_resctrl(tmp_path, min_cbm_bits=2)).info()
    with pytest.raises(InputError, match="fewer than min_cbm_bits 2"):
        Schemata(caches={"L3": {0: 0x8}}).validate(info)
    Schemata(caches={"L3": {0: 0x18}}).validate(info)


def test_groups_are_created_written_assigned_and_read_back(tmp_path: Path) -> None:
    root = write_resctrl(tmp_path)
    resctrl = Resctrl(root)
    assert resctrl.create_group("lc")
    add_resctrl_group(root, "lc")  # what the kernel fills in
    assert not resctrl.create_group("lc")  # idempotent
    wanted = Schemata(caches={"L3": {0: 0xFF0, 1: 0xFF0}}, mb={0: 100, 1: 100})
    assert resctrl.write_schemata("lc", wanted) == ("L3:0=ff0;1=ff0",)  # MB already right
    assert (root / "lc/schemata").read_text() == "L3:0=ff0;1=ff0\n"
    # the kernel merges a partial write into the group's full schemata:
    (root / "lc/schemata").write_text("    MB:0=100;1=100\n    L3:0=ff0;1=ff0\n")
    assert resctrl.drift("lc", wanted) == {}
    assert resctrl.write_schemata("lc", wanted) == ()
    (root / "lc/schemata").write_text("    MB:0=100;1=100\n    L3:0=fff;1=ff0\n")
    assert resctrl.drift("lc", wanted) == {"L3": ("L3:0=ff0;1=ff0", "L3:0=fff;1=ff0")}
    resctrl.assign_tasks("lc", [os.getpid()])
    assert resctrl.tasks("lc") == (os.getpid(),)
    resctrl.assign_cpus("lc", CpuSet.parse("2-3"))
    assert resctrl.cpus("lc") == CpuSet.parse("2-3")
    assert resctrl.groups() == ("lc",)


def test_running_out_of_closids_is_a_clear_error_before_mkdir(tmp_path: Path) -> None:
    root = write_resctrl(tmp_path, num_closids=3, groups=("a", "b"))
    with pytest.raises(ResctrlError, match=r"no free CLOSID \(num_closids=3") as caught:
        Resctrl(root).create_group("c")
    assert caught.value.errno == errno.ENOSPC
    assert not (root / "c").exists()


def test_enospc_from_the_kernels_mkdir_is_translated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_resctrl(tmp_path, num_closids=16)

    def full(self: Path, *args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "mkdir", full)
    with pytest.raises(ResctrlError, match="no free CLOSID") as caught:
        Resctrl(root).create_group("lc")
    assert caught.value.errno == errno.ENOSPC


def test_a_refused_schemata_write_carries_the_kernels_status(tmp_path: Path) -> None:
    root = write_resctrl(tmp_path, groups=("lc",))
    (root / "info/last_cmd_status").write_text("Mask out of range\n")
    with read_only(root / "lc/schemata"), pytest.raises(ResctrlError, match="Mask out of range"):
        Resctrl(root).write_schemata("lc", Schemata(caches={"L3": {0: 0xF}}))


def test_reserved_group_names_are_refused(tmp_path: Path) -> None:
    resctrl = Resctrl(write_resctrl(tmp_path))
    for name in ("info", "mon_groups", "a/b", ""):
        with pytest.raises(InputError, match="group name"):
            resctrl.create_group(name)

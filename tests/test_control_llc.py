"""The controller's resctrl actuator on directory trees shaped like /sys/fs/resctrl (this VM
has no RDT hardware): groups, tasks, CPUs and schemata from the ways and MBA ladders."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import corral.enforce.resctrl as resctrl_module
from corral.control.actions import SetCache, SetCpus, SetWorkloadWays, WayGrant
from corral.control.cache import CacheSettings
from corral.control.llc import BE_GROUP, LC_GROUP, CacheUnavailableError, ResctrlActuator
from corral.enforce.cgroupfs import write_file
from corral.enforce.resctrl import Resctrl, ResctrlError, Schemata
from corral.errors import InputError
from corral.topology.cpuset import CpuSet
from tests.fixtures.cgroup_trees import add_resctrl_group, write_resctrl


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Make the tree behave like resctrl: mkdir fills the group, ``tasks`` writes add a
    pid, ``schemata`` writes merge the line into the group's schemata."""
    real_make_dir = resctrl_module.make_dir

    def make_dir(path: Path) -> bool:
        made = real_make_dir(path)
        if made:
            add_resctrl_group(path.parent, path.name)
        return made

    def write(path: Path | str, value: str) -> None:
        file = Path(path)
        if file.name == "tasks":
            file.write_text(file.read_text() + value.strip() + "\n")
        elif file.name == "schemata":
            merged = Schemata.parse(file.read_text()).lines()
            line = Schemata.parse(value).lines()
            merged.update(line)
            file.write_text("\n".join(merged[k] for k in sorted(merged)) + "\n")
        else:
            write_file(path, value)

    monkeypatch.setattr(resctrl_module, "make_dir", make_dir)
    monkeypatch.setattr(resctrl_module, "write_file", write)
    yield


def actuator(root: Path, *, lc: bool = True) -> ResctrlActuator:
    return ResctrlActuator(
        Resctrl(root),
        be_pids=lambda: (101, 102),
        lc_pids=(lambda: (7,)) if lc else None,
        workload_pids=lambda w: {"batch": (101,), "video": (102,)}[w],
    )


def schemata(root: Path, group: str) -> Schemata:
    return Schemata.parse((root / group / "schemata").read_text() if group else "")


@pytest.mark.usefixtures("kernel")
def test_set_cache_creates_both_groups_writes_masks_and_rounded_bandwidth(tmp_path: Path) -> None:
    root = write_resctrl(tmp_path, cache_ids=(0, 1), cbm_mask="fff", num_closids=8)
    act = actuator(root)
    act.apply(SetCache(lc_mask=0xFF0, be_mask=0x00F, be_mb_percent=35, reason="r"))
    assert set(Resctrl(root).groups()) == {BE_GROUP, LC_GROUP}
    assert schemata(root, LC_GROUP).caches == {"L3": {0: 0xFF0, 1: 0xFF0}}
    assert schemata(root, LC_GROUP).mb == {0: 100, 1: 100}  # LC bandwidth untouched
    assert schemata(root, BE_GROUP).caches == {"L3": {0: 0x00F, 1: 0x00F}}
    assert schemata(root, BE_GROUP).mb == {0: 40, 1: 40}  # up to bandwidth_gran 10
    assert Resctrl(root).tasks(BE_GROUP) == (101, 102)
    assert Resctrl(root).tasks(LC_GROUP) == (7,)


@pytest.mark.usefixtures("kernel")
def test_bandwidth_below_the_hardware_minimum_is_raised_to_it(tmp_path: Path) -> None:
    root = write_resctrl(tmp_path)
    actuator(root).apply(SetCache(None, None, 3, "r"))
    assert schemata(root, BE_GROUP).mb == {0: 10, 1: 10}


@pytest.mark.usefixtures("kernel")
def test_without_an_lc_cgroup_lc_ways_go_to_the_default_group(tmp_path: Path) -> None:
    root = write_resctrl(tmp_path)
    actuator(root, lc=False).apply(SetCache(0xFF0, 0x00F, None, "r"))
    assert Resctrl(root).groups() == (BE_GROUP,)
    assert Resctrl(root).read_schemata("").caches == {"L3": {0: 0xFF0, 1: 0xFF0}}


@pytest.mark.usefixtures("kernel")
def test_cpu_partitioned_lc_and_be_also_get_their_cpus(tmp_path: Path) -> None:
    root = write_resctrl(tmp_path)
    act = actuator(root)
    act.apply(SetCpus(CpuSet([3]), CpuSet([0, 1, 2]), "r"))  # before any group: recorded
    act.apply(SetCache(0xFF0, 0x00F, None, "r"))
    assert Resctrl(root).cpus(BE_GROUP) == CpuSet([3])
    assert Resctrl(root).cpus(LC_GROUP) == CpuSet([0, 1, 2])
    act.apply(SetCpus(CpuSet([2, 3]), CpuSet([0, 1]), "r"))
    assert Resctrl(root).cpus(BE_GROUP) == CpuSet([2, 3])


@pytest.mark.usefixtures("kernel")
def test_running_out_of_closids_is_a_clear_error(tmp_path: Path) -> None:
    root = write_resctrl(tmp_path, num_closids=2)  # the default group and one more
    with pytest.raises(ResctrlError, match=r"no free CLOSID.*num_closids=2"):
        actuator(root).apply(SetCache(0xFF0, 0x00F, None, "r"))


@pytest.mark.usefixtures("kernel")
@pytest.mark.parametrize(
    ("lc_mask", "problem"),
    [(0xF0F, "contiguous"), (0x1000, "outside cbm_mask"), (0x800, "fewer than min_cbm_bits")],
)
def test_masks_breaking_the_hardware_rules_are_refused(
    tmp_path: Path, lc_mask: int, problem: str
) -> None:
    root = write_resctrl(tmp_path, min_cbm_bits=2)
    with pytest.raises(InputError, match=problem):
        actuator(root).apply(SetCache(lc_mask, 0x003, None, "r"))


@pytest.mark.usefixtures("kernel")
def test_dcat_grants_get_one_group_per_workload(tmp_path: Path) -> None:
    root = write_resctrl(tmp_path, num_closids=8)
    grants = (WayGrant("batch", 0x00F), WayGrant("video", 0x030))
    actuator(root).apply(SetWorkloadWays(grants, "dcat"))
    assert schemata(root, "corral-w-batch").caches == {"L3": {0: 0x00F, 1: 0x00F}}
    assert schemata(root, "corral-w-video").caches == {"L3": {0: 0x030, 1: 0x030}}
    assert Resctrl(root).tasks("corral-w-video") == (102,)


def test_fit_cache_follows_the_host_and_refuses_a_wrong_width(tmp_path: Path) -> None:
    root = write_resctrl(tmp_path, cbm_mask="7ff", min_cbm_bits=2)
    act = actuator(root)
    fitted = act.fit_cache(CacheSettings(total_ways=11, min_ways=1, mb_ladder=(15, 55, 100)))
    assert (fitted.total_ways, fitted.min_ways, fitted.mb_ladder) == (11, 2, (20, 60, 100))
    with pytest.raises(InputError, match=r"cache\.total_ways.*11 ways"):
        act.fit_cache(CacheSettings(total_ways=12))
    cap = act.capability()
    assert (cap.ways, cap.min_ways, cap.mba, cap.num_closids) == (11, 2, True, 4)


def test_without_resctrl_every_cache_action_is_refused_and_the_ladders_are_off(
    tmp_path: Path,
) -> None:
    act = actuator(tmp_path / "resctrl")
    assert not act.available()
    off = act.fit_cache(CacheSettings(total_ways=11, min_ways=1, mb_ladder=(50,)))
    assert (off.total_ways, off.mb_ladder) == (0, ())
    assert "no resctrl at" in act.capability().why_not
    for action in (SetCache(0xF0, 0x0F, 50, "r"), SetWorkloadWays((WayGrant("a", 1),), "r")):
        with pytest.raises(CacheUnavailableError, match="LLC ways and MBA cannot be set"):
            act.apply(action)
    act.apply(SetCpus(CpuSet([1]), CpuSet([0]), "r"))  # a CPU split alone needs no resctrl
    act.sync()


def test_a_host_without_mba_refuses_a_bandwidth_step(tmp_path: Path) -> None:
    root = write_resctrl(tmp_path, mb=False, groups=(BE_GROUP, LC_GROUP))
    act = actuator(root)
    with pytest.raises(CacheUnavailableError, match="no MB resource"):
        act.apply(SetCache(None, None, 50, "r"))
    assert act.fit_cache(CacheSettings(total_ways=12, mb_ladder=(50,))).mb_ladder == ()

"""`make_actuator`: the controller's actuator for this host's cgroups and resctrl.

It reads the cgroup layout (`corral.enforce.detect.detect_cgroups`): the cpu controller
bound to a v1 hierarchy gives `CgroupV1Actuator`, cpu enabled on a cgroup2 mount gives
`CgroupV2Actuator`; no (writable) cpu controller is an `InputError` naming what is missing.
Either actuator drives resctrl through `corral.control.llc` when ``resctrl_root`` holds a
mounted resctrl, and says in `describe()` that LLC ways and MBA are unavailable otherwise.
"""

from __future__ import annotations

from pathlib import Path

from corral.control.actuator import ControlActuator, Reader, Writer
from corral.control.cgroupv1 import CgroupV1Actuator
from corral.control.cgroupv2 import CgroupV2Actuator
from corral.enforce.cgroupfs import read_file, write_file
from corral.enforce.detect import CgroupLayout, Version, detect_cgroups
from corral.errors import InputError


def make_actuator(
    *,
    cgroup_root: Path,
    resctrl_root: Path | None,
    be_group: str,
    lc_group: str | None,
    layout: CgroupLayout | None = None,
    writer: Writer = write_file,
    reader: Reader = read_file,
    memory_max_bytes: int | None = None,
) -> ControlActuator:
    """The actuator for this host's cgroups (v1 or v2, see the module docstring).

    ``resctrl_root`` None means "do not use resctrl" (cache knobs then reported as
    unavailable); a path without a mounted resctrl is reported the same way, with the
    path. ``memory_max_bytes`` is the BE box's hard limit (the cap of senpai's limit on
    v1, where the limit is ``memory.limit_in_bytes``). Raises `InputError` when the cpu
    controller is not mounted or not writable.
    """
    layout = layout or detect_cgroups(cgroup_root)
    cpu = layout.hierarchy_of("cpu")
    if cpu is None:
        raise InputError(
            "control",
            f"{cgroup_root} has no cpu controller (neither a v1 cpu hierarchy nor cpu in "
            "a cgroup2 mount's cgroup.controllers): the controller has nothing to act on",
            "mount the cpu controller, run the agent with --dry-run, or drop the control section",
        )
    if not cpu.writable:
        raise InputError(
            "control",
            f"{cpu.path} (cpu, {cpu.version}) is not writable by this process",
            "run the agent as root or delegate the subtree to it",
        )
    if cpu.version is Version.V1:
        return CgroupV1Actuator(
            cgroup_root=cgroup_root,
            be_group=be_group,
            lc_group=lc_group,
            resctrl_root=resctrl_root,
            layout=layout,
            writer=writer,
            reader=reader,
            memory_max_bytes=memory_max_bytes,
        )
    return CgroupV2Actuator(
        cgroup_root=cpu.path,
        be_group=be_group,
        lc_group=lc_group,
        resctrl_root=resctrl_root,
        writer=writer,
        reader=reader,
    )

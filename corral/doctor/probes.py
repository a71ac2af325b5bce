"""The probes: small readers of the host under a root path, one per area.

Every probe takes the root the host is seen under (``/`` on a real host, a directory tree in
tests) and returns an observation value; none raises for a missing file (absence is what
they report). The only write is `probe_cgroups`' test cgroup, made and removed in each
hierarchy corral would create its parent in, and removed even when a later step fails.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import replace
from pathlib import Path, PurePosixPath

from corral.doctor.observations import (
    WANTED_CONTROLLERS,
    CgroupObservation,
    ClockObservation,
    ControllerHome,
    CpuObservation,
    K8sObservation,
    KubeletObservation,
    PerfObservation,
    PsiObservation,
    RdtObservation,
    ToolObservation,
    WriteProbe,
)
from corral.enforce.detect import Hierarchy, Mode, Version, detect_cgroups
from corral.enforce.resctrl import Resctrl
from corral.errors import CorralError
from corral.kube.kubelet import (
    CONFIG_FILE,
    STATE_FILE,
    read_cpu_manager_state,
    read_kubelet_config,
)
from corral.topology.cpuset import CpuSet
from corral.topology.sysfs import load_sysfs

_MODE_NAMES = {Mode.LEGACY: "v1", Mode.UNIFIED: "v2", Mode.HYBRID: "hybrid", Mode.NONE: "none"}
#: RDT-related flags of /proc/cpuinfo (Intel and AMD spell them the same).
RDT_FLAGS = (
    "rdt_a",
    "cat_l3",
    "cat_l2",
    "cdp_l3",
    "cdp_l2",
    "mba",
    "cqm_llc",
    "cqm_occup_llc",
    "cqm_mbm_total",
    "cqm_mbm_local",
)
PSI_RESOURCES = ("cpu", "memory", "io")
_BIN_DIRS = ("usr/local/sbin", "usr/local/bin", "usr/sbin", "usr/bin", "sbin", "bin")
_INTERESTING = re.compile(r"^(?:\w+\.pressure|cpu\.idle)$")


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _describe_os_error(action: str, path: Path, err: OSError) -> str:
    name = errno.errorcode.get(err.errno or 0, "?")
    return f"{action} {path}: {err.strerror or err} ({name})"


# --- cgroups ---------------------------------------------------------------------------


def probe_cgroups(root: Path, *, cgroup_parent: str = "corral") -> CgroupObservation:
    """How cgroups are mounted under ``root/sys/fs/cgroup``, where each wanted controller
    lives, and whether a cgroup can be created and removed where corral would create
    ``cgroup_parent`` in every hierarchy it would use (and in the v2 mount, for PSI)."""
    layout = detect_cgroups(root / "sys/fs/cgroup")
    served = dict(layout.controllers)
    if layout.mode in (Mode.LEGACY, Mode.HYBRID):
        for name, hierarchy in _v1_mounts(root).items():
            served.setdefault(name, hierarchy)
    homes = tuple(
        ControllerHome(name, str(h.path), str(h.version))
        for name, h in sorted(served.items())
        if name in WANTED_CONTROLLERS
    )
    targets: dict[Path, Hierarchy] = {}
    for name in WANTED_CONTROLLERS:
        home = served.get(name)
        if home is not None:
            targets.setdefault(home.path, home)
    if layout.unified is not None:
        targets.setdefault(layout.unified.path, layout.unified)
    writes = tuple(
        _write_probe(h, cgroup_parent, served=served) for _, h in sorted(targets.items())
    )
    unified = layout.unified
    return CgroupObservation(
        root=str(layout.root),
        mode=_MODE_NAMES[layout.mode],
        homes=homes,
        v2_path=None if unified is None else str(unified.path),
        v2_controllers=() if unified is None else tuple(sorted(unified.controllers)),
        v2_subtree=() if unified is None else _subtree(unified.path),
        writes=writes,
        cpu_idle=_cpu_idle(served.get("cpu"), writes),
        euid=os.geteuid(),
    )


def _v1_mounts(root: Path) -> dict[str, Hierarchy]:
    """The wanted v1 controllers ``root/proc/mounts`` names, by mount point.

    The interface-file detection misses a v1 hierarchy whose root has no marker file: the
    freezer's root cgroup has no ``freezer.state`` (only its children do), so the mount
    options are the only place that says which controller a hierarchy carries.
    """
    found: dict[str, Hierarchy] = {}
    for line in (_read(root / "proc/mounts") or "").splitlines():
        fields = line.split()
        if len(fields) < 4 or fields[2] != "cgroup":
            continue
        path = root / fields[1].replace("\\040", " ").lstrip("/")
        names = frozenset(o for o in fields[3].split(",") if o in WANTED_CONTROLLERS)
        if names and path.is_dir():
            writable = os.access(path, os.W_OK | os.X_OK)
            for name in names:
                found[name] = Hierarchy(path, Version.V1, names, writable)
    return found


def _subtree(path: Path) -> tuple[str, ...]:
    text = _read(path / "cgroup.subtree_control") or ""
    return tuple(sorted(text.split()))


def _cpu_idle(cpu: Hierarchy | None, writes: tuple[WriteProbe, ...]) -> bool | None:
    if cpu is None:
        return None
    if cpu.version is Version.V1:
        return (cpu.path / "cpu.idle").exists()
    probe = next((w for w in writes if w.hierarchy == str(cpu.path) and w.created), None)
    if probe is None or "cpu" not in _subtree(cpu.path):
        return None
    return "cpu.idle" in probe.files


def _write_probe(
    hierarchy: Hierarchy, cgroup_parent: str, *, served: dict[str, Hierarchy]
) -> WriteProbe:
    """mkdir then rmdir a probe cgroup next to where corral's parent would go; the rmdir
    runs whatever happened in between."""
    base = hierarchy.path
    for part in PurePosixPath(cgroup_parent).parent.parts:
        if not (base / part).is_dir():
            break  # corral would create the rest itself: probe at the deepest existing level
        base = base / part
    probe = base / f"corral-doctor-{os.getpid()}"
    controllers = tuple(sorted(c for c, h in served.items() if h.path == hierarchy.path))
    created = removed = False
    error = ""
    files: tuple[str, ...] = ()
    try:
        probe.mkdir()
        created = True
        with suppress(OSError):
            files = tuple(sorted(e.name for e in probe.iterdir() if _INTERESTING.match(e.name)))
    except OSError as err:
        error = _describe_os_error("mkdir", probe, err)
    finally:
        if created:
            try:
                probe.rmdir()
                removed = True
            except OSError as err:
                error = _describe_os_error("rmdir", probe, err)
    return WriteProbe(
        hierarchy=str(hierarchy.path),
        controllers=controllers,
        probe=str(probe),
        created=created,
        removed=removed,
        error=error,
        files=files,
    )


# --- pressure, RDT, perf ---------------------------------------------------------------


def probe_psi(root: Path) -> PsiObservation:
    """The ``some`` line of each ``proc/pressure/<resource>`` file, or why it is unreadable
    (absent: the kernel lacks CONFIG_PSI; EOPNOTSUPP: booted with psi=0)."""
    lines: list[tuple[str, str]] = []
    errors: list[tuple[str, str]] = []
    for resource in PSI_RESOURCES:
        path = root / "proc/pressure" / resource
        try:
            text = path.read_text()
        except OSError as err:
            errors.append((resource, _describe_os_error("read", path, err)))
            continue
        some = next((ln for ln in text.splitlines() if ln.startswith("some")), "")
        if some:
            lines.append((resource, some))
        else:
            errors.append((resource, f"{path} has no 'some' line"))
    return PsiObservation(lines=tuple(lines), errors=tuple(errors))


def cpu_flags(root: Path) -> frozenset[str]:
    """The flags of the first CPU in ``proc/cpuinfo`` (empty when unreadable)."""
    for line in (_read(root / "proc/cpuinfo") or "").splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def probe_rdt(root: Path) -> RdtObservation:
    """RDT flags of the CPU, whether the kernel knows resctrl, and what the mount offers."""
    flags = cpu_flags(root)
    kernel = any(
        line.split()[-1:] == ["resctrl"]
        for line in (_read(root / "proc/filesystems") or "").splitlines()
    )
    resctrl = Resctrl(root / "sys/fs/resctrl")
    mounted = resctrl.available()
    resources: list[tuple[str, int]] = []
    error = ""
    if mounted:
        try:
            info = resctrl.info()
        except (CorralError, ValueError, OSError) as err:
            error = str(err)
        else:
            resources = [(name, c.num_closids) for name, c in sorted(info.caches.items())]
            if info.mb is not None:
                resources.append(("MB", info.mb.num_closids))
    return RdtObservation(
        flags=tuple(f for f in RDT_FLAGS if f in flags),
        kernel_resctrl=kernel,
        mount=str(resctrl.root),
        mounted=mounted,
        resources=tuple(resources),
        error=error,
    )


def probe_perf(root: Path) -> PerfObservation | None:
    """Whether hardware counters open on this kernel (None under a root other than ``/``:
    the perf syscall always asks the running kernel)."""
    if root.resolve() != Path("/"):
        return None
    from corral.enforce.perf import counters_status  # noqa: PLC0415  ctypes only when probed

    status = counters_status(root / "proc")
    return PerfObservation(available=status.available, reason=status.reason)


# --- CPU topology ----------------------------------------------------------------------


def probe_cpu(root: Path) -> CpuObservation:
    """SMT state (``smt/active``, ``smt/control``, the widest sibling list) and the counts
    of corral's own topology loader over ``root/sys``."""
    cpu_dir = root / "sys/devices/system/cpu"
    active = _read(cpu_dir / "smt/active")
    control = _read(cpu_dir / "smt/control")
    widest: int | None = None
    for entry in sorted(cpu_dir.glob("cpu[0-9]*/topology/thread_siblings_list")):
        text = _read(entry)
        if text is None:
            continue
        with suppress(ValueError):
            widest = max(widest or 0, len(CpuSet.parse(text.strip())))
    base = CpuObservation(
        smt_active=None if active is None else active.strip(),
        smt_control=None if control is None else control.strip(),
        max_siblings=widest,
    )
    try:
        topo = load_sysfs(root / "sys")
    except CorralError as err:
        return replace(base, topology_error=str(err))
    return replace(
        base,
        cpus=len(topo.all_cpus),
        cores=len(topo.cores),
        sockets=len(topo.sockets),
        numa_nodes=len(topo.numa_nodes),
        l3_domains=len(topo.l3_domains),
    )


# --- kubelet ---------------------------------------------------------------------------


def find_kubelet(root: Path) -> tuple[int, list[str]] | None:
    """The pid and argv of a running kubelet under ``root/proc`` (None: no kubelet)."""
    try:
        entries = [e for e in os.scandir(root / "proc") if e.name.isdigit()]
    except OSError:
        return None
    for entry in sorted(entries, key=lambda e: int(e.name)):
        try:
            raw = Path(entry.path, "cmdline").read_bytes()
        except OSError:
            continue  # the process ended while we looked: a normal race
        argv = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
        if argv and PurePosixPath(argv[0]).name == "kubelet":
            return int(entry.name), argv
    return None


def flag_value(argv: Iterable[str], flag: str) -> str | None:
    """The value of ``--flag=value`` or ``--flag value`` in ``argv`` (the last one wins)."""
    args = list(argv)
    found: str | None = None
    for i, arg in enumerate(args):
        if arg.startswith(flag + "="):
            found = arg.split("=", 1)[1]
        elif arg == flag and i + 1 < len(args):
            found = args[i + 1]
    return found


def probe_kubelet(root: Path) -> KubeletObservation:
    """kubelet's CPU manager policy from its process flags and config file (the file named
    by ``--config``, else ``var/lib/kubelet/config.yaml``), and its ``cpu_manager_state``."""
    kubelet_root = root / "var/lib/kubelet"
    process = find_kubelet(root)
    pid, argv = process if process is not None else (None, [])
    config_flag = flag_value(argv, "--config")
    config_path = root / config_flag.lstrip("/") if config_flag else kubelet_root / CONFIG_FILE
    errors: list[str] = []
    config_policy: str | None = None
    try:
        config = read_kubelet_config(config_path)
    except CorralError as err:
        errors.append(str(err))
    else:
        config_policy = None if config is None else config.cpu_manager_policy
    state_path = kubelet_root / STATE_FILE
    try:
        state = read_cpu_manager_state(kubelet_root)
    except CorralError as err:
        errors.append(str(err))
        state = None
    return KubeletObservation(
        config_path=str(config_path),
        config_policy=config_policy,
        process_pid=pid,
        process_policy=flag_value(argv, "--cpu-manager-policy"),
        state_path=str(state_path),
        state_policy=None if state is None else state.policy,
        default_cpus="" if state is None else str(state.default_cpus),
        entries=0 if state is None else sum(len(p) for p in state.entries.values()),
        exclusive_cpus="" if state is None else str(state.exclusive_cpus),
        errors=tuple(errors),
    )


# --- tools -----------------------------------------------------------------------------


def probe_tools(root: Path, names: Iterable[tuple[str, ...]]) -> tuple[ToolObservation, ...]:
    """Each tool (its name and alternative names) found on PATH (root ``/``) or in the
    usual bin directories under ``root``."""
    out = []
    for alternatives in names:
        found = next(
            (p for p in (_which(root, name) for name in alternatives) if p is not None), None
        )
        out.append(ToolObservation(name=alternatives[0], path=found))
    return tuple(out)


def _which(root: Path, name: str) -> str | None:
    if root.resolve() == Path("/"):
        return shutil.which(name)
    for directory in _BIN_DIRS:
        candidate = root / directory / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def probe_k8s(directory: Path | None) -> K8sObservation:
    """The ``bin/*.xz`` Kubernetes binaries under ``directory`` (``shared/k8s``)."""
    if directory is None or not (directory / "bin").is_dir():
        return K8sObservation(directory=None if directory is None else str(directory))
    binaries = tuple(sorted(p.name.removesuffix(".xz") for p in (directory / "bin").glob("*.xz")))
    return K8sObservation(directory=str(directory), binaries=binaries)


# --- clock -----------------------------------------------------------------------------


def probe_clock(root: Path) -> ClockObservation:
    """The current and available clock sources, the hypervisor flag and the host's steal
    time so far (``proc/stat``'s ``cpu`` line: steal against all ticks)."""
    source = root / "sys/devices/system/clocksource/clocksource0"
    current = _read(source / "current_clocksource")
    available = _read(source / "available_clocksource") or ""
    steal: int | None = None
    total: int | None = None
    for line in (_read(root / "proc/stat") or "").splitlines():
        fields = line.split()
        if fields[:1] == ["cpu"] and len(fields) >= 9:
            with suppress(ValueError):
                ticks = [int(v) for v in fields[1:9]]  # user .. steal (guest is in user)
                steal, total = ticks[7], sum(ticks)
            break
    return ClockObservation(
        current=None if current is None else current.strip(),
        available=tuple(available.split()),
        hypervisor="hypervisor" in cpu_flags(root),
        steal_ticks=steal,
        total_ticks=total,
    )

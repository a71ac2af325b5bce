"""Turn what the probes saw into findings and a verdict: pure functions, no OS access.

The verdict (`Report.can_enforce`) is about cpusets and CPU isolation only: the cpuset
and cpu controllers must be served and corral must be able to create cgroups in their
hierarchies, and the CPU topology must be readable. Everything else (memory limits, PSI,
RDT, counters, kubelet, tools, clock) narrows what corral does there but does not stop it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from corral.doctor.findings import Area, Finding, Report, Status
from corral.doctor.observations import (
    REQUIRED_CONTROLLERS,
    WANTED_CONTROLLERS,
    CgroupObservation,
    ClockObservation,
    CpuObservation,
    HostObservation,
    K8sObservation,
    KubeletObservation,
    PerfObservation,
    PsiObservation,
    RdtObservation,
    ToolObservation,
    WriteProbe,
)


@dataclass(frozen=True, slots=True)
class Tool:
    """An external program some feature needs: its names, Debian package and use."""

    names: tuple[str, ...]
    package: str
    used_for: str


TOOLS: tuple[Tool, ...] = (
    Tool(("memcached",), "memcached", "the LC service of `corral bench colocation`"),
    Tool(("stress-ng",), "stress-ng", "the BE antagonist of `corral bench colocation`"),
    Tool(("gcc",), "gcc libc6-dev", "builds the load client of `corral bench colocation`"),
    Tool(("etcd",), "etcd-server", "the real Kubernetes control plane of the kube tests"),
    Tool(("openssl",), "openssl", "the certificates of the kube tests' control plane"),
    Tool(("curl",), "curl", "the health checks of the kube tests' control plane"),
    Tool(("xz",), "xz-utils", "unpacks the Kubernetes binaries of shared/k8s"),
    Tool(("chromium", "chromium-browser"), "chromium", "the web-view test (headless)"),
)

_CONTROLLER_USE = {
    "cpuset": "pins workloads to CPUs and memory nodes",
    "cpu": "sets CPU weight, idle class and quota (BE isolation)",
    "cpuacct": "counts each cgroup's CPU time (usage sampling, the predictor)",
    "memory": "sets memory limits (senpai's law on the BE box)",
    "freezer": "freezes BE work when the controller disables it",
}
_CONTROLLER_LOST = {
    "cpuset": "workloads cannot be pinned: corral cannot enforce placements",
    "cpu": "no CPU weight, idle class or quota: BE cannot be held back",
    "cpuacct": "CPU usage is not sampled: the predictor uses each workload's request",
    "memory": "no memory limits: senpai's memory law is off",
    "freezer": "BE cannot be frozen when the controller disables it",
}


def evaluate(host: HostObservation) -> Report:
    """Every finding for ``host`` and the verdict: can corral enforce cpusets and CPU
    isolation there, and if not, what blocks it."""
    findings = [
        *cgroup_findings(host.cgroups),
        *psi_findings(host.psi, host.cgroups),
        *rdt_findings(host.rdt, host.perf),
        *cpu_findings(host.cpu),
        *kubelet_findings(host.kubelet),
        *tool_findings(host.tools, host.k8s),
        *clock_findings(host.clock),
    ]
    blockers = enforcement_blockers(host.cgroups, host.cpu)
    return Report(
        can_enforce=not blockers,
        mode=host.cgroups.mode,
        findings=tuple(findings),
        blockers=tuple(blockers),
    )


# --- cgroups ---------------------------------------------------------------------------


def enforcement_blockers(cgroups: CgroupObservation, cpu: CpuObservation) -> list[str]:
    """What stops corral enforcing cpusets and CPU isolation (empty: nothing)."""
    blockers: list[str] = []
    if cgroups.mode == "none":
        blockers.append(f"no cgroup hierarchy is mounted under {cgroups.root}")
    for name in REQUIRED_CONTROLLERS:
        home = cgroups.home(name)
        if home is None:
            if cgroups.mode != "none":
                blockers.append(f"the {name} controller is not available")
            continue
        probe = cgroups.write_of(home.path)
        if probe is not None and not probe.created:
            blockers.append(f"cannot create cgroups in {home.path} ({name}): {probe.error}")
    if cpu.topology_error:
        blockers.append(f"the CPU topology cannot be read: {cpu.topology_error}")
    return blockers


def cgroup_findings(obs: CgroupObservation) -> list[Finding]:
    """The mount mode, each wanted controller, each write probe and ``cpu.idle``."""
    out = [_mode_finding(obs)]
    out.extend(_controller_finding(obs, name) for name in WANTED_CONTROLLERS)
    out.extend(_write_finding(obs, probe) for probe in obs.writes)
    if obs.cpu_idle is not None:
        out.append(_cpu_idle_finding(obs.cpu_idle))
    return out


def _mode_finding(obs: CgroupObservation) -> Finding:
    data = {"root": obs.root, "v2": obs.v2_path, "v2_controllers": list(obs.v2_controllers)}
    if obs.mode == "none":
        return Finding(
            Area.CGROUPS,
            "cgroup.mode",
            Status.ERROR,
            f"no cgroup hierarchy under {obs.root}: nothing can be enforced",
            f"mount -t cgroup2 cgroup2 {obs.root}",
            data,
        )
    if obs.mode == "v1":
        summary = "cgroup v1: corral enforces through the v1 hierarchies"
    elif obs.mode == "v2":
        summary = f"cgroup v2 (unified) at {obs.v2_path}"
    else:
        on_v1 = ", ".join(h.controller for h in obs.homes if h.version == "v1") or "nothing"
        served = ", ".join(obs.v2_controllers) or "no controllers"
        summary = (
            f"hybrid: {on_v1} on v1; cgroup2 at {obs.v2_path} with {served} "
            "(corral uses it for PSI and cgroup.stat)"
        )
    return Finding(Area.CGROUPS, "cgroup.mode", Status.OK, summary, "", data)


def _controller_finding(obs: CgroupObservation, name: str) -> Finding:
    check = f"cgroup.controller.{name}"
    home = obs.home(name)
    if home is not None:
        data = {"path": home.path, "version": home.version}
        if home.version == "v2" and name not in obs.v2_subtree:
            note = "; corral enables it in cgroup.subtree_control of its parents"
        else:
            note = ""
        return Finding(
            Area.CGROUPS,
            check,
            Status.OK,
            f"{home.version} at {home.path}: {_CONTROLLER_USE[name]}{note}",
            "",
            data,
        )
    if obs.mode == "v2" and name in ("cpuacct", "freezer"):
        how = "cpu.stat of every cgroup" if name == "cpuacct" else "cgroup.freeze"
        return Finding(
            Area.CGROUPS, check, Status.OK, f"v2 has no {name} controller: it uses {how}"
        )
    status = Status.MISSING if name in REQUIRED_CONTROLLERS else Status.WARN
    return Finding(
        Area.CGROUPS,
        check,
        status,
        f"not available: {_CONTROLLER_LOST[name]}",
        _controller_fix(obs, name),
    )


def _controller_fix(obs: CgroupObservation, name: str) -> str:
    if obs.mode == "v2":
        return (
            f"check {obs.v2_path}/cgroup.controllers; boot without cgroup_disable={name} "
            "(or with systemd.unified_cgroup_hierarchy=1 so v1 does not hold it)"
        )
    if obs.mode == "none":
        return f"mount -t cgroup2 cgroup2 {obs.root}"
    return f"mkdir -p {obs.root}/{name} && mount -t cgroup -o {name} cgroup {obs.root}/{name}"


def _write_finding(obs: CgroupObservation, probe: WriteProbe) -> Finding:
    name = PurePosixPath(probe.hierarchy).name
    check = f"cgroup.write.{name}"
    served = ", ".join(probe.controllers) or "no controllers"
    data = {
        "hierarchy": probe.hierarchy,
        "probe": probe.probe,
        "created": probe.created,
        "removed": probe.removed,
        "error": probe.error,
    }
    if probe.created and probe.removed:
        return Finding(
            Area.CGROUPS,
            check,
            Status.OK,
            f"created and removed a probe cgroup in {probe.hierarchy} ({served})",
            "",
            data,
        )
    if probe.created:
        return Finding(
            Area.CGROUPS,
            check,
            Status.ERROR,
            f"the probe cgroup could not be removed: {probe.error}",
            f"rmdir {probe.probe}",
            data,
        )
    needed = any(c in REQUIRED_CONTROLLERS for c in probe.controllers)
    return Finding(
        Area.CGROUPS,
        check,
        Status.ERROR if needed else Status.WARN,
        f"cannot create cgroups in {probe.hierarchy} ({served}): {probe.error}",
        _write_fix(obs, probe),
        data,
    )


def _write_fix(obs: CgroupObservation, probe: WriteProbe) -> str:
    if "EROFS" in probe.error:
        return (
            "the cgroup filesystem is read-only (a container?): give it a writable cgroup "
            "mount (docker run --cgroupns=private --privileged, or a delegated subtree)"
        )
    if obs.euid != 0:
        return (
            f"run as root (sudo corral ...), or delegate the subtree: "
            f"sudo chown -R $USER {probe.hierarchy}/<parent>"
        )
    return f"check the mount options of {probe.hierarchy} (mount | grep cgroup)"


def _cpu_idle_finding(present: bool) -> Finding:
    if present:
        return Finding(
            Area.CGROUPS,
            "cgroup.cpu_idle",
            Status.OK,
            "cpu.idle present: BE runs in the idle class next to LC",
        )
    return Finding(
        Area.CGROUPS,
        "cgroup.cpu_idle",
        Status.WARN,
        "no cpu.idle (needs Linux 5.15+): BE gets the minimum cpu.shares/cpu.weight instead",
        "run a Linux 5.15 or newer kernel",
    )


# --- pressure --------------------------------------------------------------------------


def psi_findings(psi: PsiObservation, cgroups: CgroupObservation) -> list[Finding]:
    """System-wide PSI files and per-cgroup PSI through the cgroup2 mount."""
    have = [r for r, _ in psi.lines]
    data = {"lines": dict(psi.lines), "errors": dict(psi.errors)}
    if not psi.errors:
        system = Finding(
            Area.PRESSURE,
            "psi.system",
            Status.OK,
            f"/proc/pressure has {', '.join(have)}",
            "",
            data,
        )
    else:
        system = Finding(
            Area.PRESSURE,
            "psi.system",
            Status.MISSING if not have else Status.WARN,
            f"no PSI for {', '.join(r for r, _ in psi.errors)}: memory pressure cannot "
            f"steer senpai's law ({psi.errors[0][1]})",
            "boot a kernel with CONFIG_PSI=y and without psi=0 (or add psi=1)",
            data,
        )
    return [system, _cgroup_psi_finding(cgroups)]


def _cgroup_psi_finding(cgroups: CgroupObservation) -> Finding:
    check = "psi.cgroup"
    if cgroups.v2_path is None:
        return Finding(
            Area.PRESSURE,
            check,
            Status.MISSING,
            "no cgroup2 mount: no per-cgroup PSI (v1 has none), senpai's memory probing is off",
            f"mkdir -p {cgroups.root}/unified && mount -t cgroup2 cgroup2 {cgroups.root}/unified",
        )
    probe = cgroups.write_of(cgroups.v2_path)
    if probe is None or not probe.created:
        return Finding(
            Area.PRESSURE,
            check,
            Status.WARN,
            f"per-cgroup PSI not checked: no cgroup could be created in {cgroups.v2_path}",
            "run as root to check",
        )
    psi = [f for f in probe.files if f.endswith(".pressure")]
    if "memory.pressure" in psi:
        return Finding(
            Area.PRESSURE,
            check,
            Status.OK,
            f"cgroups under {cgroups.v2_path} have {', '.join(psi)}",
            "",
            {"files": psi},
        )
    return Finding(
        Area.PRESSURE,
        check,
        Status.MISSING,
        f"cgroups under {cgroups.v2_path} have no memory.pressure: senpai's memory law is off",
        "boot with psi=1 (CONFIG_PSI=y)",
        {"files": psi},
    )


# --- cache allocation and counters -----------------------------------------------------


def rdt_findings(rdt: RdtObservation, perf: PerfObservation | None) -> list[Finding]:
    """RDT in the CPU, resctrl in the kernel and mounted, and hardware counters."""
    flags = ", ".join(rdt.flags)
    features = [
        label
        for label, flag in (("CAT L3", "cat_l3"), ("CAT L2", "cat_l2"), ("MBA", "mba"))
        if flag in rdt.flags
    ]
    if features:
        cpu = Finding(
            Area.CACHE,
            "rdt.cpu",
            Status.OK,
            f"the CPU offers {', '.join(features)} ({flags})",
            "",
            {"flags": list(rdt.flags)},
        )
    else:
        cpu = Finding(
            Area.CACHE,
            "rdt.cpu",
            Status.MISSING,
            "no RDT in /proc/cpuinfo (no cat_l3, cat_l2, mba): LLC ways and memory "
            "bandwidth stay shared; corral isolates with cores and CPU weight only",
            "use a host whose CPU has Intel RDT or AMD PQoS (VMs seldom pass it through)",
            {"flags": list(rdt.flags)},
        )
    out = [cpu, _resctrl_finding(rdt, bool(features))]
    if perf is not None:
        out.append(_perf_finding(perf))
    return out


def _resctrl_finding(rdt: RdtObservation, cpu_has_rdt: bool) -> Finding:
    data = {"mount": rdt.mount, "kernel": rdt.kernel_resctrl, "resources": dict(rdt.resources)}
    if rdt.error:
        return Finding(
            Area.CACHE,
            "rdt.resctrl",
            Status.ERROR,
            f"resctrl at {rdt.mount} cannot be read: {rdt.error}",
            f"umount {rdt.mount} && mount -t resctrl resctrl {rdt.mount}",
            data,
        )
    if rdt.mounted:
        offered = ", ".join(f"{r} ({n} CLOSIDs)" for r, n in rdt.resources) or "no resources"
        return Finding(
            Area.CACHE,
            "rdt.resctrl",
            Status.OK if rdt.resources else Status.WARN,
            f"resctrl mounted at {rdt.mount}: {offered}",
            "",
            data,
        )
    if not cpu_has_rdt:
        return Finding(
            Area.CACHE,
            "rdt.resctrl",
            Status.MISSING,
            f"resctrl not mounted at {rdt.mount} (nothing to mount: the CPU has no RDT); "
            "the cache knobs are off",
            "",
            data,
        )
    if not rdt.kernel_resctrl:
        return Finding(
            Area.CACHE,
            "rdt.resctrl",
            Status.MISSING,
            "the CPU has RDT but the kernel has no resctrl filesystem",
            "run a kernel built with CONFIG_X86_CPU_RESCTRL=y",
            data,
        )
    return Finding(
        Area.CACHE,
        "rdt.resctrl",
        Status.MISSING,
        f"the CPU has RDT but resctrl is not mounted at {rdt.mount}: the cache knobs are off",
        f"mount -t resctrl resctrl {rdt.mount}",
        data,
    )


def _perf_finding(perf: PerfObservation) -> Finding:
    if perf.available:
        return Finding(
            Area.CACHE, "perf.counters", Status.OK, f"hardware counters open: {perf.reason}"
        )
    return Finding(
        Area.CACHE,
        "perf.counters",
        Status.MISSING,
        f"no hardware counters ({perf.reason}): dCat is driven by BE throughput, not IPC/MPKI",
        "on a VM give it a virtual PMU (QEMU: -cpu host,pmu=on); else lower "
        "kernel.perf_event_paranoid or run as root",
    )


# --- CPU topology ----------------------------------------------------------------------


def cpu_findings(cpu: CpuObservation) -> list[Finding]:
    """SMT, and the topology corral's loader reads (CPUs, cores, sockets, NUMA, L3)."""
    out = [_smt_finding(cpu)]
    if cpu.topology_error:
        out.append(
            Finding(
                Area.CPU,
                "cpu.topology",
                Status.ERROR,
                f"the topology cannot be read: {cpu.topology_error}",
                "check that sysfs is mounted (mount -t sysfs sysfs /sys)",
            )
        )
        return out
    data = {
        "cpus": cpu.cpus,
        "cores": cpu.cores,
        "sockets": cpu.sockets,
        "numa_nodes": cpu.numa_nodes,
        "l3_domains": cpu.l3_domains,
    }
    out.append(
        Finding(
            Area.CPU,
            "cpu.topology",
            Status.OK,
            f"{cpu.cpus} CPUs, {cpu.cores} cores, {cpu.sockets} socket(s), "
            f"{cpu.l3_domains} L3 domain(s) (corral topology shows them)",
            "",
            data,
        )
    )
    if cpu.numa_nodes > 1:
        numa = f"{cpu.numa_nodes} NUMA nodes: numa-policy workloads get one node's pool"
    else:
        numa = "one NUMA node: the numa policy is the shared pool, no cross-node placement"
    out.append(Finding(Area.CPU, "cpu.numa", Status.OK, numa, "", {"nodes": cpu.numa_nodes}))
    return out


def _smt_finding(cpu: CpuObservation) -> Finding:
    data = {"active": cpu.smt_active, "control": cpu.smt_control, "siblings": cpu.max_siblings}
    siblings = cpu.max_siblings or 1
    if cpu.smt_active == "1" or siblings > 1:
        return Finding(
            Area.CPU,
            "cpu.smt",
            Status.OK,
            f"SMT on ({siblings} threads per core): LC and BE are kept off sibling threads",
            "",
            data,
        )
    why = f" (smt/control: {cpu.smt_control})" if cpu.smt_control else ""
    return Finding(
        Area.CPU,
        "cpu.smt",
        Status.OK,
        f"no SMT{why}: every CPU is a whole core, no sibling interference",
        "",
        data,
    )


# --- kubelet ---------------------------------------------------------------------------


def kubelet_findings(obs: KubeletObservation) -> list[Finding]:
    """kubelet's CPU manager policy (process flag, config, checkpoint) and what it means
    for corral's cpusets."""
    errors = [
        Finding(Area.KUBELET, "kubelet.read", Status.ERROR, err, "check the file or remove it")
        for err in obs.errors
    ]
    if obs.process_pid is None and obs.config_policy is None and obs.state_policy is None:
        return [
            *errors,
            Finding(
                Area.KUBELET,
                "kubelet.cpu_manager",
                Status.OK,
                f"no kubelet here (no process, no {obs.config_path}, no {obs.state_path}): "
                "corral is the only cpuset writer",
            ),
        ]
    policy = obs.process_policy or obs.config_policy or obs.state_policy or "none"
    source = (
        "--cpu-manager-policy"
        if obs.process_policy
        else (obs.config_path if obs.config_policy else obs.state_path)
    )
    data = {
        "pid": obs.process_pid,
        "policy": policy,
        "config": obs.config_path,
        "config_policy": obs.config_policy,
    }
    if policy == "static":
        manager = Finding(
            Area.KUBELET,
            "kubelet.cpu_manager",
            Status.WARN,
            f"kubelet runs the static CPU manager ({source}): it rewrites every container's "
            "cpuset, so the agent refuses to start by default",
            "kubelet --cpu-manager-policy=none (drain, remove cpu_manager_state, restart "
            "kubelet), or set kube.static_cpu_manager: avoid in the agent config",
            data,
        )
    else:
        manager = Finding(
            Area.KUBELET,
            "kubelet.cpu_manager",
            Status.OK,
            f"kubelet's CPU manager policy is {policy} ({source}): containers stay in the "
            "shared pool and corral may write their cpusets",
            "",
            data,
        )
    return [*errors, manager, *_state_findings(obs, policy)]


def _state_findings(obs: KubeletObservation, policy: str) -> list[Finding]:
    if obs.state_policy is None:
        return []
    data = {
        "path": obs.state_path,
        "policyName": obs.state_policy,
        "defaultCpuSet": obs.default_cpus,
        "entries": obs.entries,
        "exclusive": obs.exclusive_cpus,
    }
    if obs.state_policy != policy:
        return [
            Finding(
                Area.KUBELET,
                "kubelet.cpu_manager_state",
                Status.WARN,
                f"{obs.state_path} is from policy {obs.state_policy} but kubelet is set to "
                f"{policy}: kubelet refuses to start until the checkpoint is removed",
                f"drain the node, rm {obs.state_path}, restart kubelet",
                data,
            )
        ]
    held = f", {obs.entries} container(s) hold {obs.exclusive_cpus}" if obs.entries else ""
    return [
        Finding(
            Area.KUBELET,
            "kubelet.cpu_manager_state",
            Status.WARN if obs.entries else Status.OK,
            f"checkpoint policy {obs.state_policy}, shared pool {obs.default_cpus or '-'}{held}",
            "corral keeps off kubelet's exclusive CPUs with kube.static_cpu_manager: avoid"
            if obs.entries
            else "",
            data,
        )
    ]


# --- tools -----------------------------------------------------------------------------


def tool_findings(tools: tuple[ToolObservation, ...], k8s: K8sObservation) -> list[Finding]:
    """Each external program in `TOOLS` (found or not, and what it is for) and the
    Kubernetes binaries of shared/k8s."""
    found = {t.name: t.path for t in tools}
    out: list[Finding] = []
    for tool in TOOLS:
        name = tool.names[0]
        if name not in found:
            continue
        path = found[name]
        if path is not None:
            out.append(
                Finding(
                    Area.TOOLS,
                    f"tool.{name}",
                    Status.OK,
                    f"{path}: {tool.used_for}",
                    "",
                    {"path": path},
                )
            )
        else:
            out.append(
                Finding(
                    Area.TOOLS,
                    f"tool.{name}",
                    Status.MISSING,
                    f"{name} not found: {tool.used_for} cannot run",
                    f"apt-get install {tool.package}",
                )
            )
    out.append(_k8s_finding(k8s))
    return out


def _k8s_finding(k8s: K8sObservation) -> Finding:
    if k8s.binaries:
        return Finding(
            Area.TOOLS,
            "tool.k8s",
            Status.OK,
            f"{', '.join(k8s.binaries)} under {k8s.directory}: the kube tests' control plane",
            "",
            {"directory": k8s.directory, "binaries": list(k8s.binaries)},
        )
    where = k8s.directory or "shared/k8s"
    return Finding(
        Area.TOOLS,
        "tool.k8s",
        Status.MISSING,
        f"no Kubernetes binaries under {where}: the kube tests skip",
        "put shared/k8s next to the clone, or set CORRAL_SHARED_K8S=<dir>",
        {"directory": k8s.directory},
    )


# --- clock -----------------------------------------------------------------------------


def clock_findings(clock: ClockObservation) -> list[Finding]:
    """The clock source (tsc or a warning why not) and whether this is a VM losing time."""
    return [_source_finding(clock), _vm_finding(clock)]


def _source_finding(clock: ClockObservation) -> Finding:
    data = {"current": clock.current, "available": list(clock.available)}
    if clock.current is None:
        return Finding(
            Area.CLOCK,
            "clock.source",
            Status.MISSING,
            "no clocksource in sysfs: the clock's cost cannot be told",
            "",
            data,
        )
    if clock.current == "tsc":
        return Finding(
            Area.CLOCK, "clock.source", Status.OK, "tsc: cheap, stable time stamps", "", data
        )
    fix = (
        "echo tsc > /sys/devices/system/clocksource/clocksource0/current_clocksource"
        if "tsc" in clock.available
        else "boot with tsc=reliable clocksource=tsc if the TSC is invariant (constant_tsc)"
    )
    return Finding(
        Area.CLOCK,
        "clock.source",
        Status.WARN,
        f"clock source {clock.current}, not tsc: each time stamp is a slower read, which "
        "adds timing noise to latency probes and benchmarks",
        fix,
        data,
    )


def _vm_finding(clock: ClockObservation) -> Finding:
    steal = clock.steal_ticks or 0
    share = 100.0 * steal / clock.total_ticks if clock.total_ticks else 0.0
    data = {"hypervisor": clock.hypervisor, "steal_ticks": steal, "steal_percent": round(share, 3)}
    if not clock.hypervisor and steal == 0:
        return Finding(
            Area.CLOCK, "clock.vm", Status.OK, "bare metal (no hypervisor flag)", "", data
        )
    if steal == 0:
        return Finding(
            Area.CLOCK,
            "clock.vm",
            Status.OK,
            "a VM (hypervisor flag), no steal time so far",
            "",
            data,
        )
    return Finding(
        Area.CLOCK,
        "clock.vm",
        Status.WARN,
        f"a VM with steal time ({share:.2f}% of CPU time since boot): when the host "
        "deschedules it, tail latencies jump; repeat benchmarks and compare medians",
        "run benchmarks on a quiet host or on dedicated (pinned) vCPUs",
        data,
    )

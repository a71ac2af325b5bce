"""Enforcement: cgroup v1/v2 and resctrl writers, idempotent, ordered, checked for drift.

Modules, lowest first:

* `detect` - v2 unified, v1 or hybrid; which controller lives where; writability; the
  plain-words list of what cannot be enforced on this host (`CgroupLayout.limitations`).
* `weights` - kubelet's shares/quota arithmetic and runc's shares<->weight conversions.
* `desired` - `DesiredState` per cgroup (parent, BE box, workloads) from a placement.
* `files` - a desired state as v1 or v2 interface files, in the order the kernel accepts.
* `order` - the cpuset write plan: widen parents, release, grant (staging swaps through a
  spare CPU), shrink parents; every step valid, no CPU held by two exclusive workloads.
* `cgroupfs` - the only code that reads or writes cgroup files; errors carry file + errno.
* `locate` - explicit cgroup paths and container ids (kubepods, kubepods.slice, docker,
  system.slice/docker-<id>.scope, containerd namespaces).
* `hygiene` - reclaim page cache (v1 memory.force_empty, v2 memory.reclaim) before removing
  a cgroup; dying-cgroup counts (v2 cgroup.stat, v1 /proc/cgroups vs directories).
* `enforcer` - `Enforcer(cgroup_root=...)`: `locate`, `apply` (-> `ApplyReport`), `drift`
  (-> `DriftReport`), `repair`, `attach`, `join_accounting`, `stale`, `remove`, `prune`,
  `dying`.
* `usage` - `UsageReader(layout).read(cgroup)`: a cgroup's CPU time (v1 cpuacct wherever it
  is mounted, else v2 cpu.stat) or why there is none.
* `resctrl` - `Resctrl(resctrl_root=...)`: info, validated schemata, groups, tasks/CPUs.

Where it was verified: on the project VM's real cgroup v1 hierarchies (Linux 6.18, 2 CPUs,
1 NUMA node) with real sleeping processes - cpusets seen in /proc/<pid>/status, cpu.shares,
CFS quota/period, cpu.idle, memory limits and soft limits, release-before-grant ordering,
refusals (EINVAL) with file and errno, drift and repair, page-cache reclaim before removal,
the v1 dying-cgroup count. cgroup v2 (cpu.weight, cpu.max, memory.high/max,
subtree_control, memory.reclaim, cgroup.stat) and resctrl were tested only on directory
trees shaped like the kernel's: this VM has no v2 CPU/memory controllers and no RDT, so
neither ran on such hardware here.
"""

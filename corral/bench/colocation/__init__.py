"""``corral bench colocation``: memcached (LC) next to stress-ng (BE) under four policies.

Modules: `host` (what the machine has, package set-up, steal time), `build` (compiles the
C load generator), `tree` (the benchmark's own cgroups, processes placed in them, clean-up
that always runs), `loadgen` (schedules and the generator's per-window records), `stress`
(BE antagonists and their bogo-ops metrics), `runner` (peak search, BE alone, the load
pattern under each policy, the memory scenario, EMU) and `report` (table and plot).
"""

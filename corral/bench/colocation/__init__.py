"""``corral bench colocation``: memcached (LC) next to stress-ng (BE) under five policies.

Modules: `host` (what the machine has, package set-up, steal time), `build` (compiles the
C load generator), `tree` (the benchmark's own cgroups, processes placed in them, clean-up
that always runs), `loadgen` (schedules and the generator's per-window records), `stress`
(BE antagonists and their bogo-ops metrics), `stats` (the SLO calibrated from LC alone,
violations attributable to BE, t-intervals over repetitions), `progress` (what the run
reports while it goes), `runner` (peak search, calibration, BE alone, the load pattern
under each policy, the memory scenario, EMU) and `report` (rows and plot).
"""

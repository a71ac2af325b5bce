"""The node agent (`corral agent`): owns CPU placement and isolation of the workloads it is
told about, survives restarts, and shows its state to people and machines.

Modules, one job each: `config` (settings and the YAML file), `state` (SQLite WAL store:
workloads, assignment, decisions, event log, usage), `events` (the coalescing queue),
`core` (the decisions as a pure step: state and batch in, next state and effects out),
`decide` (one placement through `corral.placement.decisions`), `effects` (the one ordered
worker thread that performs every kernel and SQLite write), `faults` (the failure policy:
expected failures retried with backoff and shown, programming errors fatal), `enforcer`
(what the agent needs from enforcement, and the dry run), `cgroups` (the adapter to
`corral.enforce`), `sampler` (CPU usage windows), `throttling` (CFS throttling from
cpu.stat), `observer` and `metrics` (prometheus collectors on a registry passed in: per
workload series and build info too), `service` (the wiring of loop, core and executor),
`reload` (what a SIGHUP may change live), `api` (FastAPI app), `docs` (/docs and /redoc
from local files), `run` (listeners and signals), `client` (HTTP client for the CLI).

HTTP API (OpenAPI at /openapi.json; errors are ``{"detail", "field", "fix"}``):

- ``PUT /workloads/{id}[?wait=true]``: create or update. 202 once committed as pending
  (placed by the next coalesced decision); with ``wait=true`` 201/200 once placed, or 409
  with the reason and nothing stored. 422 names the bad field.
- ``GET /workloads``, ``GET /workloads/{id}`` (status, CPUs, latest utilisation),
  ``DELETE /workloads/{id}`` (204 once committed; 404 unknown).
- ``GET /assignments``, ``GET /topology``, ``GET /status`` (pending events, last decision,
  solver stats, drift, enforcement errors, open faults, recent events; served from memory,
  never waiting for the store), ``POST /rebalance``,
  ``POST /reconcile``, ``GET /healthz``, ``GET /metrics``, ``GET /docs`` and ``/redoc``
  (served offline).

TCP listeners other than loopback need ``Authorization: Bearer <token>``; the unix socket
is created mode 0600.
"""

"""The open-loop section of ``corral bench agent``: latency at fixed request rates.

Four scenarios, each at every rate of ``rates`` for ``seconds`` (fixed-interval arrivals,
see `corral.bench.openloop`): ``GET /workloads/{id}`` (a random one of the loaded
workloads), ``GET /workloads`` (the whole list), ``PUT /workloads/{id}`` (a BE update that
returns once queued) and the same PUT with ``?wait=true`` (returns once placed). With
``overload_rate`` each scenario also runs once at that rate, above the agent's capacity on
this host, to show what overload does: 429 with Retry-After, or latency that grows.

Latency is of 2xx responses, from each request's due time. The targets of issue 12 are
checked at ``TARGET_RATE``: GET p99 < 50 ms and PUT p99 < 100 ms, with at least 99% of the
requests answered 2xx (a p99 of the few admitted requests says nothing if most were
refused). They are reported as figures; nothing here asserts them.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import httpx

from corral.bench.openloop import (
    Arrivals,
    LoadResult,
    Outcome,
    arrival_offsets,
    encode_request,
    measure,
)
from corral.errors import InputError

TARGET_RATE = 200.0
"""Requests per second at which issue 12's latency targets apply."""
MIN_OK_FRACTION = 0.99
"""Share of 2xx answers below which a target counts as missed whatever the p99."""
HOST_STALL_MS = 50.0
"""Sender lateness above which a run is flagged: the host stalled the generator itself
(other work on the machine), so the run overstates the agent's latency; rerun it."""


class Kind(StrEnum):
    """The four open-loop scenarios."""

    GET_ONE = "GET /workloads/{id}"
    GET_LIST = "GET /workloads"
    PUT = "PUT /workloads/{id}"
    PUT_WAIT = "PUT /workloads/{id}?wait=true"


TARGET_MS: dict[Kind, float] = {
    Kind.GET_ONE: 50.0,
    Kind.GET_LIST: 50.0,
    Kind.PUT: 100.0,
    Kind.PUT_WAIT: 100.0,
}
"""p99 bound of each scenario at `TARGET_RATE`, ms (issue 12)."""


@dataclass(frozen=True, slots=True)
class OpenLoopConfig:
    """What the open-loop section runs."""

    rates: tuple[float, ...] = (100.0, 200.0, 500.0, 1000.0)
    seconds: float = 10.0  # per scenario and rate
    overload_rate: float | None = 2000.0  # one more run per scenario above capacity; None: no
    max_connections: int = 512  # client connection bound; beyond it requests are dropped
    timeout_s: float = 10.0  # a request is abandoned this long after its due time
    settle_s: float = 1.0  # pause between runs (after the agent's backlog is flushed)
    arrivals: Arrivals = Arrivals.FIXED
    seed: int = 11

    def __post_init__(self) -> None:
        if not self.rates or any(r <= 0 for r in self.rates):
            raise InputError("--rates", f"{self.rates!r}", "give positive requests per second")
        if self.seconds <= 0:
            raise InputError("--seconds", f"{self.seconds!r} is not positive", "give seconds")
        if self.overload_rate is not None and self.overload_rate <= 0:
            raise InputError("--overload-rate", "not positive", "give a rate or 0 to skip it")

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "rates": list(self.rates),
            "seconds": self.seconds,
            "overload_rate": self.overload_rate,
            "max_connections": self.max_connections,
            "timeout_s": self.timeout_s,
            "arrivals": self.arrivals.value,
            "seed": self.seed,
        }


@dataclass(frozen=True, slots=True)
class TargetCheck:
    """One target of issue 12 against what was measured."""

    scenario: Kind
    rate: float
    bound_ms: float
    p99_ms: float | None
    ok_fraction: float
    send_lag_max_ms: float = 0.0

    @property
    def host_stalled(self) -> bool:
        """The generator was more than `HOST_STALL_MS` late during the run."""
        return self.send_lag_max_ms > HOST_STALL_MS

    @property
    def met(self) -> bool:
        """p99 below the bound and at least `MIN_OK_FRACTION` of answers 2xx."""
        return (
            self.p99_ms is not None
            and self.p99_ms < self.bound_ms
            and self.ok_fraction >= MIN_OK_FRACTION
        )

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "scenario": self.scenario.value,
            "rate": self.rate,
            "bound_ms": self.bound_ms,
            "p99_ms": None if self.p99_ms is None else round(self.p99_ms, 3),
            "ok_fraction": round(self.ok_fraction, 4),
            "send_lag_max_ms": round(self.send_lag_max_ms, 3),
            "host_stalled": self.host_stalled,
            "met": self.met,
        }


@dataclass(frozen=True, slots=True)
class OpenLoopBench:
    """Every open-loop figure of one bench run."""

    config: OpenLoopConfig
    results: tuple[LoadResult, ...]  # scenario-major, rates ascending, overload last
    targets: tuple[TargetCheck, ...]

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "config": self.config.to_json(),
            "results": [r.to_json() for r in self.results],
            "targets": [t.to_json() for t in self.targets],
        }


def ok_fraction(result: LoadResult) -> float:
    """2xx answers over planned requests."""
    return result.count(Outcome.OK) / result.planned if result.planned else 0.0


def check_targets(results: tuple[LoadResult, ...]) -> tuple[TargetCheck, ...]:
    """Issue 12's targets for each scenario measured at `TARGET_RATE`."""
    return tuple(
        TargetCheck(
            Kind(r.scenario),
            r.target_rate,
            TARGET_MS[Kind(r.scenario)],
            r.p99_ms,
            ok_fraction(r),
            r.send_lag_max_ms,
        )
        for r in results
        if r.target_rate == TARGET_RATE
    )


def _bodies(
    kind: Kind, n: int, ids: list[str], shared: list[str], rng: random.Random
) -> list[bytes]:
    host = "127.0.0.1"
    if kind is Kind.GET_ONE:
        return [encode_request("GET", f"/workloads/{rng.choice(ids)}", host=host) for _ in range(n)]
    if kind is Kind.GET_LIST:
        one = encode_request("GET", "/workloads", host=host)
        return [one] * n
    suffix = "?wait=true" if kind is Kind.PUT_WAIT else ""
    out = []
    for _ in range(n):
        body = json.dumps({"qos": "BE", "cpus": rng.choice([0.5, 1, 2])}).encode()
        out.append(
            encode_request("PUT", f"/workloads/{rng.choice(shared)}{suffix}", body, host=host)
        )
    return out


def run_open_loop_section(
    *,
    url_port: int,
    ids: list[str],
    shared: list[str],
    agent_cpu: Callable[[], float],
    settle: Callable[[], None],
    config: OpenLoopConfig,
    progress: Callable[[str], None] | None = None,
) -> OpenLoopBench:
    """Run every scenario at every rate (then at ``overload_rate``) against the agent on
    127.0.0.1:``url_port``; ``settle()`` is called after each run to flush the agent's
    backlog so runs do not inherit each other's queues."""
    if not ids or not shared:
        raise InputError("workloads", "the open-loop bench needs loaded workloads", "load some")
    rng = random.Random(config.seed)
    rates = list(config.rates)
    if config.overload_rate is not None:
        rates.append(config.overload_rate)
    results = []
    for kind in Kind:
        for rate in rates:
            if progress:
                progress(f"open loop: {kind.value} at {rate:g}/s for {config.seconds:g} s")
            offsets = arrival_offsets(
                rate, config.seconds, arrivals=config.arrivals, seed=rng.randrange(2**31)
            )
            results.append(
                measure(
                    _bodies(kind, len(offsets), ids, shared, rng),
                    offsets,
                    host="127.0.0.1",
                    port=url_port,
                    scenario=kind.value,
                    target_rate=rate,
                    seconds=config.seconds,
                    max_connections=config.max_connections,
                    timeout_s=config.timeout_s,
                    server_cpu=agent_cpu,
                )
            )
            settle()
            time.sleep(config.settle_s)
    done = tuple(results)
    return OpenLoopBench(config, done, check_targets(done))


def flush_backlog(http: httpx.Client, workload_id: str, spec: dict[str, Any]) -> None:
    """A ``PUT ?wait=true`` that returns once every write queued before it is placed (it
    retries while the agent answers 429, up to 30 s)."""
    deadline = time.monotonic() + 30.0
    while True:
        response = http.put(f"/workloads/{workload_id}?wait=true", json=spec)
        if response.status_code != 429 or time.monotonic() > deadline:
            return
        time.sleep(float(response.headers.get("retry-after", "1")))

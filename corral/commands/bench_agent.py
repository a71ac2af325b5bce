"""``corral bench agent``: API throughput, p99 latency and idle CPU of a real agent."""

from __future__ import annotations

from typing import Annotated

import typer

from corral.bench.agent import run_agent_bench
from corral.commands.common import clear_errors, console, print_json


def bench_agent(  # noqa: PLR0917 - typer maps parameters to options
    topology: Annotated[str, typer.Option(help="Preset or topology file.")] = "epyc-7742-2s",
    allocator: Annotated[str, typer.Option(help="optimal or greedy.")] = "optimal",
    workloads: Annotated[int, typer.Option(min=1, help="Workloads loaded first.")] = 100,
    clients: Annotated[int, typer.Option(min=1, help="Concurrent client threads.")] = 8,
    seconds: Annotated[float, typer.Option(min=0.5, help="Length of each scenario, s.")] = 5.0,
    idle: Annotated[float, typer.Option(min=1, help="Idle CPU measurement window, s.")] = 30.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for programs.")] = False,
) -> None:
    """Throughput, p99 latency and idle CPU of a real agent on loopback.

    Starts an agent (dry run), loads N workloads, measures its idle CPU from
    /proc/<pid>/stat, then sustained throughput and p50/p99 latency of GET and PUT
    against GET /healthz measured in the same run.
    """
    with clear_errors():
        result = run_agent_bench(
            topology=topology,
            allocator=allocator,
            workloads=workloads,
            clients=clients,
            seconds=seconds,
            idle_s=idle,
        )
    if as_json:
        print_json(result.to_json())
    else:
        out = console()
        for line in result.lines():
            out.print(line, soft_wrap=True)

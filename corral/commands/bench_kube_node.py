"""``corral bench kube-node``: the node agent in Kubernetes mode on a real control plane."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from corral.commands.common import clear_errors, console, print_json


def bench_kube_node(  # noqa: PLR0917 - typer maps parameters to options
    pods: Annotated[int, typer.Option(min=1, help="Pods created at once.")] = 200,
    idle_pods: Annotated[int, typer.Option(min=0, help="Pods kept for the idle CPU.")] = 100,
    idle_s: Annotated[float, typer.Option(min=1, help="Idle measurement, s.")] = 30.0,
    topology: Annotated[str, typer.Option(help="The agent's preset.")] = "epyc-7742-2s",
    quick: Annotated[bool, typer.Option("--quick", help="A 10 s idle window.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for programs.")] = False,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Also write the JSON to this file.")
    ] = None,
) -> None:
    """A real kube-apiserver (../shared/k8s), one Node and the agent in dry run: the time
    for a burst of pods to all carry corral.io/cpuset, the NRT writes for that burst, and
    the agent's CPU at idle with pods bound."""
    # The bench (httpx, the control plane helpers) loads only when it runs.
    from corral.bench.kube_node import (  # noqa: PLC0415
        TARGET_BURST_S,
        TARGET_NRT_WRITES,
        KubeNodeBenchConfig,
        run_kube_node_bench,
    )

    config = KubeNodeBenchConfig(
        pods=pods,
        idle_pods=min(idle_pods, pods),
        idle_s=10.0 if quick else idle_s,
        topology=topology,
    )
    with clear_errors():
        result = run_kube_node_bench(config, progress=lambda m: console().print(f"[dim]{m}[/]"))
    doc = result.to_json()
    if output is not None:
        output.write_text(json.dumps(doc, indent=2) + "\n")
    if as_json:
        print_json(doc)
        return
    from rich.table import Table  # noqa: PLC0415 - only for people

    table = Table(title=f"corral bench kube-node ({result.topology}, dry run, real apiserver)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    table.add_row(
        f"{result.pods} pods created at once -> all carry {'corral.io/cpuset'}",
        f"{result.burst_annotated_s:.2f} s",
        f"< {TARGET_BURST_S:g} s",
    )
    table.add_row("  of which creating them (API)", f"{result.burst_create_s:.2f} s", "")
    table.add_row("NRT writes for that burst", str(result.nrt_writes), f"<= {TARGET_NRT_WRITES}")
    table.add_row(
        f"agent CPU at idle, {result.idle_pods} pods ({result.idle_s:g} s)",
        f"{result.idle_cpu_percent:.2f} %",
        "",
    )
    console().print(table)

"""``corral bench cluster``: the real kube-scheduler with and without corral's extender on
hollow nodes (see `corral.bench.cluster`)."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from corral.commands.common import clear_errors, print_json


def bench_cluster(  # noqa: PLR0917 - typer maps parameters to options
    quick: Annotated[bool, typer.Option("--quick", help="8 nodes, 80 pods (CI).")] = False,
    nodes: Annotated[int | None, typer.Option(min=2, max=64, help="Hollow nodes.")] = None,
    pods: Annotated[int | None, typer.Option(min=1, max=5000, help="Pods per run.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the mix and arrivals.")] = 0,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Directory for result.json and the PNG.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    plane_dir: Annotated[
        Path | None,
        typer.Option(help="A running control-plane.sh directory to reuse (else one is started)."),
    ] = None,
    kube_bin: Annotated[
        Path | None, typer.Option(help="Its kube-scheduler/kubectl directory (with --plane-dir).")
    ] = None,
) -> None:
    """Schedule a Poisson-burst pod mix (Guaranteed, Burstable, BE, GPU) on 8-16 hollow
    nodes with kube-scheduler v1.20.2 alone, then with corral's extender; print misaligned,
    cross-socket, BE-over and GPU-over pods, throughput and extender latency."""
    # httpx and matplotlib load only when the bench runs (CLI start-up time).
    from corral.bench.cluster import (  # noqa: PLC0415
        ClusterBenchConfig,
        chart,
        run_cluster_bench,
    )

    config = ClusterBenchConfig.quick() if quick else ClusterBenchConfig()
    changes: dict[str, int] = {"seed": seed}
    if nodes is not None:
        changes["nodes"] = nodes
    if pods is not None:
        changes["pods"] = pods
    config = replace(config, **changes)
    with clear_errors():
        result = run_cluster_bench(
            config,
            kubeconfig_dir=plane_dir,
            kube_bin=kube_bin,
            progress=lambda m: print(f"... {m}", file=sys.stderr),
        )
    doc = result.to_json()
    if output is not None:
        output.mkdir(parents=True, exist_ok=True)
        (output / "result.json").write_text(json.dumps(doc, indent=2) + "\n")
        chart(result, output / "bench-cluster.png")
    if as_json:
        print_json(doc)
        return
    for run in result.runs:
        verbs = run.extender.get("verbs", {})
        lat = " ".join(
            f"{v}: p50 {d['p50_ms']}ms p99 {d['p99_ms']}ms ({d['calls']})" for v, d in verbs.items()
        )
        print(
            f"{run.name:>9}: bound {run.bound}/{run.pods}, misaligned {run.misaligned}, "
            f"cross-socket {run.cross_socket}, BE over {run.be_over}, GPU over {run.gpu_over}, "
            f"{run.throughput} pods/s, pod wait p50 {run.pod_latency_p50_s}s "
            f"p99 {run.pod_latency_p99_s}s {lat}"
        )
    for name, ok in result.targets().items():
        print(f"target {name}: {'met' if ok else 'MISSED'}")

"""``corral bench colocation``: memcached + stress-ng under none/static/corral policies."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from corral.bench.colocation.report import plot, summary_rows
from corral.bench.colocation.runner import ColocationBenchConfig, run_colocation_bench
from corral.commands.common import clear_errors, console, print_json
from corral.control.slo import Slo


def bench_colocation(  # noqa: PLR0917 - typer maps parameters to options
    quick: Annotated[
        bool, typer.Option("--quick", help="One repetition, short pattern (under 3 minutes).")
    ] = False,
    repetitions: Annotated[
        int | None, typer.Option(min=1, help="Repetitions per policy (full mode: 3).")
    ] = None,
    slo_ms: Annotated[float, typer.Option("--slo-ms", help="p99 target in ms.")] = 1.0,
    peak_rps: Annotated[
        float | None,
        typer.Option("--peak-rps", help="Skip the peak search and use this LC peak."),
    ] = None,
    policy: Annotated[
        list[str] | None, typer.Option("--policy", help="Only these policies (repeatable).")
    ] = None,
    antagonist: Annotated[
        list[str] | None,
        typer.Option("--antagonist", help="BE stressors (cpu, cache, vm, stream, matrix)."),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Also write the JSON to this file.")
    ] = None,
    plot_path: Annotated[Path, typer.Option("--plot", help="Where to write the PNG plot.")] = Path(
        "colocation.png"
    ),
    cgroup_root: Annotated[
        Path, typer.Option("--cgroup-root", help="Where the cgroup hierarchies are mounted.")
    ] = Path("/sys/fs/cgroup"),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for programs.")] = False,
) -> None:
    """Measure LC peak and BE alone, then run the load pattern (steps 10-90% of peak and a
    compressed day) with memcached as LC and stress-ng as BE under each policy; report EMU,
    SLO violations, noisy windows, the memory-containment scenario and a plot (needs root,
    memcached, stress-ng, gcc and cgroup v1; cleans up its cgroups and processes)."""
    config = ColocationBenchConfig.quick_config() if quick else ColocationBenchConfig()
    changes: dict[str, Any] = {"slo": Slo(target_ms=slo_ms) if slo_ms != 1.0 else config.slo}
    if repetitions is not None:
        changes["repetitions"] = repetitions
    if peak_rps is not None:
        changes["peak_rps"] = peak_rps
    if policy:
        changes["policies"] = tuple(policy)
    if antagonist:
        changes["antagonists"] = tuple(antagonist)

    def progress(message: str) -> None:
        print(f"... {message}", file=sys.stderr)

    with clear_errors():
        config = replace(config, **changes)
        doc = run_colocation_bench(config, cgroup_root=cgroup_root, progress=progress)
    doc["plot"] = str(plot(doc, plot_path))
    if output is not None:
        output.write_text(json.dumps(doc, indent=2) + "\n")
    if as_json:
        print_json(doc)
        return
    out = console()
    out.width = max(out.width, 130)  # ten columns: do not truncate them when piped
    out.print(colocation_table(doc))
    mem = doc["memory"]
    out.print(
        f"memory: BE asked {mem['be_asked_bytes'] >> 20} MiB in a {mem['be_limit_bytes'] >> 20}"
        f" MiB box -> max use {mem['be_max_usage_bytes'] >> 20} MiB, {mem['be_oom_kills']} OOM"
        f" kills in the box, contained={mem['contained']}; memcached alive="
        f"{mem['memcached_alive']}, data intact={mem['memcached_data_after']}"
    )
    out.print(f"targets: {doc['targets']}")
    for note in doc["notes"]:
        out.print(f"note: {note}")
    out.print(f"plot: {doc['plot']}")


def colocation_table(doc: dict[str, Any]) -> Table:
    """The summary table."""
    host = doc["host"]
    table = Table(
        title=(
            f"colocation: LC peak {doc['peak_rps']:.0f}/s, SLO p99 <= "
            f"{doc['config']['slo']['target_ms']} ms, {doc['config']['repetitions']} rep(s), "
            f"load avg at start {host['loadavg_at_start'][0]}, {host['seconds']:.0f} s"
        )
    )
    for column in (
        "policy",
        "EMU",
        "SLO viol.",
        "of them BE idle",
        "noisy",
        "windows",
        "worst p99 ms",
        "BE CPUs",
        "client CPUs",
        "EMU per rep",
    ):
        table.add_column(column, justify="left" if column == "policy" else "right")
    for row in summary_rows(doc):
        table.add_row(
            row["policy"],
            f"{row['emu']:.3f}",
            str(row["slo_violations"]),
            str(row["violations_be_idle"]),
            str(row["noisy_windows"]),
            str(row["windows"]),
            "-" if row["p99_max_ms"] is None else f"{row['p99_max_ms']:.3f}",
            f"{row['be_share']:.2f}",
            f"{row['gen_cpu']:.2f}",
            " ".join(f"{e:.2f}" for e in row["emu_runs"]),
        )
    return table

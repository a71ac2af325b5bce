"""``corral bench cli``: how fast the command line starts against its libraries alone."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from corral.commands.common import clear_errors, console, print_json


def bench_cli(
    repeat: Annotated[
        int, typer.Option("--repeat", "-n", min=1, help="Timed rounds; medians are shown.")
    ] = 5,
    agent: Annotated[
        bool,
        typer.Option(
            "--agent/--no-agent",
            help="Also start a real agent (no model) and list what it imports.",
        ),
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for programs.")] = False,
) -> None:
    """Time `corral --help`, `corral topology [--json]` and `corral place --request 4`
    against `python -c 'import typer, pydantic, rich, yaml'` (subprocesses, interleaved,
    medians) with each ratio against the 2x target, and check that `corral agent` without
    a model never imports lightgbm or scikit-learn."""
    from corral.bench.cli_startup import (  # noqa: PLC0415 - keep this module light
        AGENT_FORBIDDEN,
        TARGET_RATIO,
        run_cli_startup_bench,
    )

    def progress(message: str) -> None:
        if not as_json:
            print(f"... {message}", file=sys.stderr)

    with clear_errors():
        result = run_cli_startup_bench(repeat=repeat, check_agent=agent, progress=progress)
    doc = result.to_json()
    if as_json:
        print_json(doc)
        return
    from rich.table import Table  # noqa: PLC0415 - only for people

    base = doc["baseline"]
    table = Table(
        title=f"CLI start-up, median of {repeat} interleaved runs (baseline "
        f"{base['median_ms']:.0f} ms: {base['label']})"
    )
    columns = ("command", "ms", "ratio", f"<= {TARGET_RATIO:g}x", "cpu ms", "cpu ratio", "heavy")
    for column in columns:
        table.add_column(column, justify="left" if column in ("command", "heavy") else "right")
    table.add_row(
        base["label"],
        f"{base['median_ms']:.0f}",
        "1.00",
        "",
        f"{base['median_cpu_ms']:.0f}",
        "1.00",
        _mods(base),
    )
    for case in doc["cases"]:
        table.add_row(
            case["label"],
            f"{case['median_ms']:.0f}",
            f"{case['ratio']:.2f}",
            "met" if case["met"] else "MISSED",
            f"{case['median_cpu_ms']:.0f}",
            f"{case['cpu_ratio']:.2f}",
            _mods(case),
        )
    out = console()
    out.print(table)
    if doc["agent"] is not None:
        a = doc["agent"]
        verdict = "none: met" if a["ok"] else f"{', '.join(a['forbidden_loaded'])}: MISSED"
        out.print(
            f"corral agent without a model ({a['modules']} modules, placed a workload: "
            f"{a['placed_a_workload']}): {' / '.join(AGENT_FORBIDDEN)} imported: {verdict}; "
            f"heavy: {', '.join(a['heavy_modules']) or '-'}"
        )
    for note in doc["notes"]:
        out.print(f"note: {note}")
    out.print(f"targets: {'met' if doc['met'] else 'MISSED'}")


def _mods(row: dict[str, object]) -> str:
    mods = row["heavy_modules"]
    return ", ".join(str(m) for m in mods) if isinstance(mods, list) and mods else "-"

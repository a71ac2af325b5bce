"""``corral bench agent``: API throughput, latency at fixed rates and idle CPU of a real agent."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from corral.commands.common import clear_errors, console, print_json
from corral.errors import InputError

if TYPE_CHECKING:  # the bench (numpy, httpx) loads only when it runs: CLI start-up time
    from rich.table import Table

_MODES = ("closed", "open", "both")
_ARRIVALS = ("fixed", "poisson")


def bench_agent(  # noqa: PLR0917 - typer maps parameters to options
    topology: Annotated[str, typer.Option(help="Preset or topology file.")] = "epyc-7742-2s",
    allocator: Annotated[str, typer.Option(help="optimal or greedy.")] = "optimal",
    workloads: Annotated[int, typer.Option(min=1, help="Workloads loaded first.")] = 100,
    mode: Annotated[
        str,
        typer.Option(
            metavar="|".join(_MODES), help="closed: capacity and idle CPU; open: fixed rates; both."
        ),
    ] = "both",
    quick: Annotated[
        bool, typer.Option("--quick", help="3 s per run and a 5 s idle window.")
    ] = False,
    clients: Annotated[int, typer.Option(min=1, help="Closed loop: client threads.")] = 8,
    seconds: Annotated[
        float | None,
        typer.Option(min=0.5, help="Length of each run (scenario and rate), s [10; quick 3]."),
    ] = None,
    idle: Annotated[
        float | None, typer.Option(min=1, help="Idle CPU window, s [30; quick 5].")
    ] = None,
    rates: Annotated[
        str, typer.Option(help="Open loop: requests per second, comma-separated.")
    ] = "100,200,500,1000",
    overload_rate: Annotated[
        float,
        typer.Option(min=0, help="Open loop: one more run per scenario at this rate; 0: none."),
    ] = 2000.0,
    arrivals: Annotated[
        str,
        typer.Option(
            metavar="|".join(_ARRIVALS), help="Open loop: fixed intervals or Poisson arrivals."
        ),
    ] = "fixed",
    max_connections: Annotated[
        int, typer.Option(min=1, help="Open loop: client connections at most (then drops).")
    ] = 512,
    timeout: Annotated[
        float, typer.Option(min=0.1, help="Open loop: a request's time limit from its due time.")
    ] = 10.0,
    max_concurrent_requests: Annotated[
        int | None, typer.Option(min=1, help="Agent setting (default: the agent's).")
    ] = None,
    max_queued_requests: Annotated[
        int | None, typer.Option(min=1, help="Agent setting (default: the agent's).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for programs.")] = False,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Also write the JSON to this file.")
    ] = None,
) -> None:
    """Throughput, latency at fixed rates and idle CPU of a real agent on loopback.

    Starts one agent (dry run) and loads N workloads. Closed loop: its idle CPU from
    /proc/<pid>/stat, then throughput and p50/p99 of GET and PUT from client threads that
    wait for each answer, against GET /healthz. Open loop: GET one, GET the list, PUT and
    PUT ?wait=true at each rate (fixed intervals by default), latency from each request's
    due time (no coordinated omission), counts by status class, client drops, agent and
    generator CPU, a run above capacity, and issue 12's targets at 200/s (GET p99 < 50 ms,
    PUT p99 < 100 ms, with >= 99% 2xx) reported as met or missed.
    """
    from corral.bench.agent import BenchMode, run_agent_bench  # noqa: PLC0415
    from corral.bench.agent_openloop import OpenLoopConfig  # noqa: PLC0415
    from corral.bench.openloop import Arrivals  # noqa: PLC0415

    run_s = seconds if seconds is not None else (3.0 if quick else 10.0)
    idle_s = idle if idle is not None else (5.0 if quick else 30.0)
    extra: dict[str, Any] = {}
    if max_concurrent_requests is not None:
        extra["max_concurrent_requests"] = max_concurrent_requests
    if max_queued_requests is not None:
        extra["max_queued_requests"] = max_queued_requests

    def progress(message: str) -> None:
        if not as_json:
            print(f"... {message}", file=sys.stderr)

    with clear_errors():
        bench_mode = BenchMode(_choice("--mode", mode, _MODES))
        config = OpenLoopConfig(
            rates=_rates(rates),
            seconds=run_s,
            overload_rate=overload_rate or None,
            max_connections=max_connections,
            timeout_s=timeout,
            arrivals=Arrivals(_choice("--arrivals", arrivals, _ARRIVALS)),
        )
        result = run_agent_bench(
            topology=topology,
            allocator=allocator,
            workloads=workloads,
            clients=clients,
            seconds=run_s,
            idle_s=idle_s,
            mode=bench_mode,
            open_loop=config,
            agent_settings=extra,
            progress=progress,
        )
    doc = result.to_json()
    if output is not None:
        output.write_text(json.dumps(doc, indent=2) + "\n")
    if as_json:
        print_json(doc)
        return
    from rich.console import Console  # noqa: PLC0415 - only for people

    out = Console(highlight=False, width=max(console().width, 180))
    if bench_mode is not BenchMode.OPEN:
        for line in result.lines():
            out.print(line, soft_wrap=True)
    if "open_loop" in doc:
        out.print(open_loop_table(doc["open_loop"]))
        limits = ", ".join(f"{k}={v}" for k, v in doc["agent_limits"].items())
        lines = target_lines(doc["open_loop"]) + overload_lines(doc["open_loop"])
        for line in [*lines, f"agent admission limits: {limits}"]:
            out.print(line, soft_wrap=True)


def _choice(option: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise InputError(option, f"{value!r} is not one of {', '.join(choices)}")
    return value


def _rates(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError as err:
        raise InputError("--rates", f"{text!r} is not a list of numbers", "e.g. 100,200") from err
    if not values:
        raise InputError("--rates", "no rate given", "e.g. 100,200,500,1000")
    return values


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if value < 1000 else f"{value:.0f}"


def open_loop_table(doc: dict[str, Any]) -> Table:
    """The open-loop results as one rich table (from the JSON document)."""
    from rich.table import Table  # noqa: PLC0415 - only for people

    from corral.bench.agent_openloop import HOST_STALL_MS  # noqa: PLC0415

    cfg = doc["config"]
    table = Table(
        title=f"open loop ({cfg['arrivals']} arrivals, {cfg['seconds']:g} s per run, at most "
        f"{cfg['max_connections']} connections, timeout {cfg['timeout_s']:g} s): latency in "
        "ms of 2xx answers from each request's due time; got/s = answered per second; "
        "cpu in cores; lag max = how late the generator sent, ms (above "
        f"{HOST_STALL_MS:g} ms the host stalled the client and the row overstates the agent)"
    )
    columns = (
        "scenario",
        "rate/s",
        "got/s",
        "2xx/s",
        "p50",
        "p99",
        "max",
        "429 p99",
        "2xx",
        "429",
        "5xx",
        "other",
        "t/o+err",
        "dropped",
        "conns",
        "agent cpu",
        "gen cpu",
        "lag max",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "scenario" else "right")
    previous = None
    for r in doc["results"]:
        c = r["counts"]
        table.add_row(
            r["scenario"] if r["scenario"] != previous else "",
            f"{r['target_rate']:g}",
            f"{r['achieved_rate']:.0f}",
            f"{r['ok_rate']:.0f}",
            _ms(r["p50_ms"]),
            _ms(r["p99_ms"]),
            _ms(r["max_ms"]),
            _ms(r["p99_429_ms"]),
            str(c["2xx"]),
            str(c["429"]),
            str(c["5xx"]),
            str(c["other"]),
            str(c["timeout"] + c["error"]),
            str(c["dropped"]),
            str(r["connections_peak"]),
            f"{r['agent_cpu_cores']:.2f}",
            f"{r['generator_cpu_cores']:.2f}",
            _ms(r["send_lag_max_ms"]),
        )
        previous = r["scenario"]
    return table


def target_lines(doc: dict[str, Any]) -> list[str]:
    """Issue 12's targets at 200/s, each as measured figures and met / missed."""
    from corral.bench.agent_openloop import MIN_OK_FRACTION, TARGET_RATE  # noqa: PLC0415

    if not doc["targets"]:
        return [f"targets: not checked ({TARGET_RATE:g}/s is not among the rates)"]
    out = [
        f"targets at {TARGET_RATE:g}/s (p99 of 2xx below the bound, >= "
        f"{MIN_OK_FRACTION:.0%} of requests 2xx):"
    ]
    for t in doc["targets"]:
        verdict = "met" if t["met"] else "MISSED"
        if t["host_stalled"]:
            verdict += (
                f" (the generator was up to {_ms(t['send_lag_max_ms'])} ms late: the host "
                "stalled it, rerun on a quieter machine)"
            )
        out.append(
            f"  {t['scenario']:<32} p99 {_ms(t['p99_ms'])} ms vs < {t['bound_ms']:g} ms, "
            f"{t['ok_fraction']:.1%} 2xx: {verdict}"
        )
    return out


def overload_lines(doc: dict[str, Any]) -> list[str]:
    """What each scenario did at the overload rate: refusals against latency growth."""
    rate = doc["config"]["overload_rate"]
    if rate is None:
        return []
    out = [f"above capacity ({rate:g}/s): 429s instead of growing latency?"]
    for r in doc["results"]:
        if r["target_rate"] != rate:
            continue
        c, planned = r["counts"], r["planned"] or 1
        out.append(
            f"  {r['scenario']:<32} 2xx {r['ok_rate']:.0f}/s, 429 {c['429'] / planned:.0%}, "
            f"5xx {c['5xx']}, dropped by the client {c['dropped'] / planned:.0%}; "
            f"p99 of 2xx {_ms(r['p99_ms'])} ms, of 429 {_ms(r['p99_429_ms'])} ms"
        )
    return out

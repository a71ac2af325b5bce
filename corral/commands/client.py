"""Commands that talk to a running agent: ``corral status``, ``corral workloads add|rm|ls``,
``corral rebalance``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from corral.agent.client import AgentClient
from corral.commands.common import clear_errors, console, print_json
from corral.errors import CorralError, InputError
from corral.placement.workload import Policy, Qos, load_workloads

AgentOption = Annotated[
    str | None,
    typer.Option("--agent", help="Agent URL (default $CORRAL_AGENT_URL or 127.0.0.1:7781)."),
]
SocketOption = Annotated[
    Path | None, typer.Option("--socket", help="Talk to the agent over this unix socket.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for programs.")]

workloads_app = typer.Typer(
    help="Add, remove and list the workloads of a running agent.", no_args_is_help=True
)


def _client(agent: str | None, socket_path: Path | None) -> AgentClient:
    return AgentClient(agent, socket_path=socket_path)


def _workload_table(items: list[dict[str, Any]]) -> Table:
    table = Table(title=f"{len(items)} workload(s)")
    for column in ("id", "qos", "policy", "cpus", "status", "cpuset", "use", "reason"):
        table.add_column(column, justify="right" if column in ("cpus", "use") else "left")
    for item in items:
        spec = item["spec"]
        use = item.get("utilisation")
        table.add_row(
            item["id"],
            spec.get("qos", "BE"),
            spec.get("policy", "shared"),
            f"{spec['cpus']:g}",
            item["status"],
            item.get("cpuset") or "-",
            "-" if use is None else f"{use:.0%}",
            item.get("reason") or "",
        )
    return table


def status(
    agent: AgentOption = None, socket: SocketOption = None, as_json: JsonOption = False
) -> None:
    """Show the agent: workloads, pending events, the last decision, drift."""
    with clear_errors(), _client(agent, socket) as client:
        data = client.status()
    if as_json:
        print_json(data)
        return
    out = console()
    out.print(f"[bold]{data['topology']['name']}[/]: {data['topology']['describe']}")
    out.print(f"enforcement: {data['enforcer']}")
    table = Table(show_header=False)
    table.add_column("key")
    table.add_column("value")
    counts = data["workloads"]
    table.add_row("workloads", ", ".join(f"{k} {v}" for k, v in counts.items()))
    table.add_row("pending events", str(data["pending_events"]))
    table.add_row("decisions", str(data["decisions_total"]))
    last = data.get("last_decision")
    if last:
        table.add_row(
            "last decision",
            f"#{last['id']} {last['trigger']}: {last['events']} event(s), "
            f"{last['workloads']} workload(s), {last['duration_ms']:.2f} ms, "
            f"{last['moves']} move(s), {last['allocator']}",
        )
    table.add_row("solver fallbacks", str(data["solver"]["fallbacks"]))
    drift = data["drift"]
    table.add_row("drift outstanding", str(len(drift["outstanding"])))
    if drift["last_reconcile"]:
        rec = drift["last_reconcile"]
        table.add_row("last reconcile", f"found {rec['found_total']}, repaired {rec['repaired']}")
    for error in data["enforcement_errors"][:5]:
        table.add_row("[red]enforcement error[/]", error)
    out.print(table)


@workloads_app.command("ls")
def workloads_ls(
    agent: AgentOption = None, socket: SocketOption = None, as_json: JsonOption = False
) -> None:
    """List workloads with their status, CPUs and latest utilisation."""
    with clear_errors(), _client(agent, socket) as client:
        items = client.workloads()
    if as_json:
        print_json(items)
    else:
        console().print(_workload_table(items))


@workloads_app.command("add")
def workloads_add(  # noqa: PLR0917 - typer maps parameters to options
    workload_id: Annotated[str | None, typer.Argument(help="Workload id.")] = None,
    cpus: Annotated[float | None, typer.Option(help="CPU request in cores.")] = None,
    qos: Annotated[Qos, typer.Option(help="LC, BE or system.")] = Qos.BE,
    policy: Annotated[Policy, typer.Option(help="Cpuset policy.")] = Policy.SHARED,
    cpuset: Annotated[str | None, typer.Option(help="Fixed CPUs (immovable).")] = None,
    cgroup: Annotated[str | None, typer.Option(help="Explicit cgroup path.")] = None,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="Add every workload of this file.")
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Wait until placed (default).")
    ] = True,
    agent: AgentOption = None,
    socket: SocketOption = None,
    as_json: JsonOption = False,
) -> None:
    """Add (or update) one workload from options, or all workloads of a file."""
    with clear_errors():
        if (file is None) == (workload_id is None):
            raise InputError("workload", "give a workload id or --file FILE, not both")
        specs: list[dict[str, Any]]
        if file is not None:
            specs = [w.model_dump(mode="json", exclude_none=True) for w in load_workloads(file)]
        else:
            if cpus is None:
                raise InputError("--cpus", "is required", "e.g. --cpus 2")
            spec: dict[str, Any] = {"id": workload_id, "cpus": cpus, "qos": qos, "policy": policy}
            spec.update({k: v for k, v in (("cpuset", cpuset), ("cgroup", cgroup)) if v})
            specs = [spec]
        results = []
        failed: list[str] = []
        with _client(agent, socket) as client:
            for spec in specs:
                try:
                    code, body = client.put(spec, wait=wait)
                except CorralError as err:
                    if len(specs) == 1:
                        raise
                    failed.append(f"{spec['id']}: {err}")
                    continue
                results.append(body | {"http_status": code})
    if as_json:
        print_json({"workloads": results, "failed": failed})
    else:
        console().print(_workload_table(results))
        for line in failed:
            console().print(f"[red]refused[/] {line}")
    if failed:
        raise typer.Exit(1)


@workloads_app.command("rm")
def workloads_rm(
    workload_ids: Annotated[list[str], typer.Argument(help="Workload ids to remove.")],
    agent: AgentOption = None,
    socket: SocketOption = None,
) -> None:
    """Remove workloads; an unknown id is an error."""
    with clear_errors(), _client(agent, socket) as client:
        for workload_id in workload_ids:
            client.delete(workload_id)
            console().print(f"removed {workload_id}")


def rebalance(
    agent: AgentOption = None, socket: SocketOption = None, as_json: JsonOption = False
) -> None:
    """Ask the agent to rebalance now and show whether anything moved."""
    with clear_errors(), _client(agent, socket) as client:
        data = client.rebalance()
    if as_json:
        print_json(data)
        return
    decision = data["decision"]
    verdict = "adopted" if decision.get("adopted") else "kept the current placement"
    console().print(
        f"decision #{decision['id']}: {verdict}; {decision['moves']} move(s) in "
        f"{decision['duration_ms']:.2f} ms"
    )

"""Commands that talk to a running agent: ``corral status``, ``corral workloads add|rm|ls``,
``corral rebalance``."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from corral.commands.common import clear_errors, console, print_json
from corral.errors import CorralError, InputError
from corral.placement.workload import Policy, Qos

if TYPE_CHECKING:  # httpx and the agent's settings load only when a command talks to it
    from rich.table import Table

    from corral.agent.client import AgentClient

AgentOption = Annotated[
    str | None,
    typer.Option(
        "--agent",
        metavar="HOST:PORT|URL|SOCKET",
        help="The agent: HOST:PORT, http(s)://HOST:PORT or a unix socket path (default "
        "$CORRAL_AGENT_URL or 127.0.0.1:7781).",
    ),
]
SocketOption = Annotated[
    Path | None, typer.Option("--socket", help="Talk to the agent over this unix socket.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for programs.")]

workloads_app = typer.Typer(
    help="Add, remove and list the workloads of a running agent.", no_args_is_help=True
)


def agent_address(agent: str | None, socket_path: Path | None) -> tuple[str | None, Path | None]:
    """Where the agent is, as ``(url, socket)`` (one of them None; both None: the client's
    default). ``agent`` (else ``$CORRAL_AGENT_URL``) may be ``HOST:PORT`` (http:// is
    assumed), a URL, ``unix:/PATH`` or a socket path; `InputError` names ``--agent``."""
    if agent is not None and socket_path is not None:
        raise InputError("--agent", "give --agent or --socket, not both", "drop one of them")
    if socket_path is not None:
        return None, socket_path
    text = agent if agent is not None else os.environ.get("CORRAL_AGENT_URL")
    if not text:
        return None, None
    field = "--agent" if agent is not None else "$CORRAL_AGENT_URL"
    text = text.strip()
    if text.startswith("unix:"):
        return None, Path(text.removeprefix("unix:").removeprefix("//"))
    if text.startswith(("/", "./", "../")):
        return None, Path(text)
    if "://" in text:
        scheme = text.split("://", 1)[0]
        if scheme not in ("http", "https"):
            raise InputError(field, f"{text!r}: unknown scheme {scheme}", "use http:// or https://")
        return text.rstrip("/"), None
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise InputError(
            field, f"{text!r} is not HOST:PORT, a URL or a socket path", "e.g. 127.0.0.1:7781"
        )
    return f"http://{text}", None


def _client(agent: str | None, socket_path: Path | None) -> AgentClient:
    from corral.agent.client import AgentClient  # noqa: PLC0415 - httpx: see the imports

    url, path = agent_address(agent, socket_path)
    return AgentClient(url, socket_path=path)


def _workload_table(items: list[dict[str, Any]]) -> Table:
    from rich.table import Table  # noqa: PLC0415 - only for people

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
    from rich.table import Table  # noqa: PLC0415 - only for people

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
    workload_id: Annotated[
        str | None,
        typer.Argument(help="Workload id (default: a generated one, printed on stderr)."),
    ] = None,
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
        specs: list[dict[str, Any]]
        if file is not None:
            if workload_id is not None or cpus is not None:
                raise InputError(
                    "--file",
                    "give one workload (WORKLOAD_ID --cpus N) or --file FILE, not both",
                    "e.g. corral workloads add -f examples/workloads-small.yaml",
                )
            from corral.placement.workload import load_workloads  # noqa: PLC0415

            specs = [w.model_dump(mode="json", exclude_none=True) for w in load_workloads(file)]
        else:
            if cpus is None:
                raise InputError(
                    "--cpus",
                    "is required for one workload",
                    "e.g. corral workloads add web --cpus 2 --qos LC, or --file FILE",
                )
            if workload_id is None:
                workload_id = f"w-{uuid.uuid4().hex[:8]}"
                print(f"workload id: {workload_id} (generated)", file=sys.stderr)
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

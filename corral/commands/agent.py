"""``corral agent``: run the node agent (HTTP API, coalesced decisions, SQLite state)."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from corral.commands.common import clear_errors, fail
from corral.errors import CorralError

# The agent's own modules (settings, the server, the Kubernetes mode) are imported inside
# `agent`: `corral agent --help` and the rest of the CLI must not pay for uvicorn, fastapi,
# httpx and the solvers. The predictor's lightgbm loads only when a model is configured.

_RESERVED = set(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


class JsonLines(logging.Formatter):
    """One JSON object per record: time, level, logger, event name and its fields."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one JSON line."""
        data: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
        }
        data.update({k: v for k, v in vars(record).items() if k not in _RESERVED})
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


class Human(logging.Formatter):
    """``time level event key=value ...`` for people."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line."""
        fields = " ".join(f"{k}={v}" for k, v in vars(record).items() if k not in _RESERVED)
        line = f"{self.formatTime(record)} {record.levelname:<7} {record.getMessage()} {fields}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line.rstrip()


def _configure_logging(level: str, form: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines() if form == "json" else Human())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def agent(  # noqa: PLR0917 - typer maps parameters to options
    listen: Annotated[
        str | None,
        typer.Option(help="HOST:PORT of the HTTP API (default 127.0.0.1:7781)."),
    ] = None,
    state: Annotated[
        Path | None,
        typer.Option(help="SQLite state file (default $XDG_DATA_HOME/corral/state.db)."),
    ] = None,
    topology: Annotated[
        str | None, typer.Option(help="'sysfs' (default), a preset name or a topology file.")
    ] = None,
    dry_run: Annotated[
        bool | None,
        typer.Option("--dry-run/--enforce", help="Record cgroup writes instead of making them."),
    ] = None,
    unix_socket: Annotated[
        Path | None, typer.Option(help="Also serve on this unix socket (mode 0600).")
    ] = None,
    allocator: Annotated[str | None, typer.Option(help="optimal (default) or greedy.")] = None,
    budget_ms: Annotated[
        float | None, typer.Option(help="Time budget of one optimising decision, ms (50).")
    ] = None,
    cgroup_root: Annotated[
        Path | None, typer.Option(help="Where the cgroup hierarchies are mounted.")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="YAML file of agent settings (default: the first of "
            "$XDG_CONFIG_HOME/corral/agent.yaml and /etc/corral/agent.yaml; SIGHUP re-reads it).",
        ),
    ] = None,
    reset_state: Annotated[
        bool | None,
        typer.Option(
            "--reset-state",
            help="Move a corrupt state file aside (<path>.corrupt-<time>) and start empty.",
        ),
    ] = None,
    log_level: Annotated[str | None, typer.Option(help="DEBUG, INFO, WARNING, ERROR.")] = None,
    log_format: Annotated[
        str | None, typer.Option(metavar="human|json", help="human (default) or json lines.")
    ] = None,
    kubeconfig: Annotated[
        Path | None,
        typer.Option(help="Kubernetes mode: the kubeconfig (in a pod: the service account)."),
    ] = None,
    node_name: Annotated[
        str | None,
        typer.Option(help="Kubernetes mode: this node's name (default $NODE_NAME)."),
    ] = None,
    kubelet_root: Annotated[
        Path | None,
        typer.Option(help="kubelet's root directory (default /var/lib/kubelet)."),
    ] = None,
) -> None:
    """Run the node agent: places and isolates the workloads it is told about over HTTP,
    keeps them in SQLite across restarts, and rebalances and repairs drift periodically.
    With --kubeconfig/--node-name (or a kube section), it is also a Kubernetes node
    component: the pods bound to the node become its workloads (README, Kubernetes)."""
    from corral.agent.config import load_settings  # noqa: PLC0415 - see the module imports
    from corral.agent.run import serve  # noqa: PLC0415

    with clear_errors():
        settings = load_settings(
            config,
            {
                "listen": listen,
                "state_path": state,
                "topology": topology,
                "dry_run": dry_run,
                "unix_socket": unix_socket,
                "allocator": allocator,
                "budget_ms": budget_ms,
                "cgroup_root": cgroup_root,
                "log_level": log_level,
                "log_format": log_format,
                "reset_state": reset_state,
            },
        )
        _configure_logging(settings.log_level, settings.log_format)
        companions = []
        flags = {"kubeconfig": kubeconfig, "node_name": node_name, "kubelet_root": kubelet_root}
        if settings.kube is not None or any(v is not None for v in flags.values()):
            from corral.kube.config import kube_settings  # noqa: PLC0415
            from corral.kube.mode import client_config, companion, prepare  # noqa: PLC0415

            prepared = prepare(settings, kube_settings(settings.kube, flags))
            settings = prepared.agent
            companions.append(companion(prepared, client_config(prepared.kube)))
        try:
            asyncio.run(serve(settings, companions))
        except BaseExceptionGroup as group:
            first = _first_leaf(group)
            if isinstance(first, CorralError):
                fail(str(first))
            raise


def _first_leaf(error: BaseException) -> BaseException:
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error

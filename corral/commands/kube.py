"""``corral kube ...``: Kubernetes components other than the node agent; today the
kube-scheduler extender (``corral kube extender``)."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from corral.commands.common import clear_errors
from corral.errors import InputError

kube_app = typer.Typer(help="Kubernetes components (the scheduler extender).", no_args_is_help=True)


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` as (host, port); `InputError` names ``--listen``."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InputError("--listen", f"{text!r} is not HOST:PORT", "write e.g. 127.0.0.1:18890")
    return host.strip("[]"), int(port)


@kube_app.command("extender")
def extender(
    kubeconfig: Annotated[
        Path | None,
        typer.Option(help="kubeconfig file (absent: the pod's service account)."),
    ] = None,
    listen: Annotated[str, typer.Option(help="HOST:PORT to serve on.")] = "127.0.0.1:18890",
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML settings (scoring, cache).")
    ] = None,
    log_level: Annotated[str, typer.Option(help="Logging level.")] = "WARNING",
) -> None:
    """Serve the kube-scheduler extender: POST /filter, /prioritize and /bind (urlPrefix
    http://HOST:PORT), fed by watches of Nodes, NodeResourceTopology objects and pods.
    Prints ``ready <port>`` on stdout once the watches have listed."""
    # The extender's server and its HTTP clients load only when it runs (CLI start-up).
    from corral.kube.extender.config import load_settings  # noqa: PLC0415
    from corral.kube.extender.server import serve  # noqa: PLC0415

    with clear_errors():
        host, port = parse_listen(listen)
        settings = load_settings(config)
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        root = logging.getLogger()
        root.handlers[:] = [handler]
        root.setLevel(log_level.upper())

        def ready(bound: int) -> None:
            print(f"ready {bound}", flush=True)

        asyncio.run(
            serve(kubeconfig=kubeconfig, host=host, port=port, settings=settings, on_ready=ready)
        )

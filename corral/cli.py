"""The ``corral`` command line: a thin layer that wires command modules together."""

from __future__ import annotations

import typer

from corral.commands.agent import agent
from corral.commands.apply import apply, drift
from corral.commands.bench import bench_app
from corral.commands.bench_agent import bench_agent
from corral.commands.bench_colocation import bench_colocation
from corral.commands.bench_enforce import bench_enforce
from corral.commands.bench_kube_node import bench_kube_node
from corral.commands.bench_predict import bench_predict
from corral.commands.client import rebalance, status, workloads_app
from corral.commands.kube import kube_app
from corral.commands.place import place
from corral.commands.predict import predict_app
from corral.commands.topology import topology

app = typer.Typer(
    name="corral",
    help="Place and isolate latency-critical and best-effort workloads on one Linux host.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command()(topology)
app.command()(place)
app.command()(apply)
app.command()(drift)
app.command()(agent)
app.command()(status)
app.command()(rebalance)
app.add_typer(workloads_app, name="workloads")
app.add_typer(predict_app, name="predict")
app.add_typer(kube_app, name="kube")
bench_app.command("agent")(bench_agent)
bench_app.command("colocation")(bench_colocation)
bench_app.command("predict")(bench_predict)
bench_app.command("enforce")(bench_enforce)
bench_app.command("kube-node")(bench_kube_node)
app.add_typer(bench_app, name="bench")


def main() -> None:
    """Entry point of the ``corral`` console script."""
    app()


if __name__ == "__main__":
    main()

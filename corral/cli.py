"""The ``corral`` command line: a thin layer that wires command modules together.

Commands are registered lazily: ``corral --help`` lists them from the table below without
importing their modules, and running a command imports only its own module. That keeps the
start of every command close to the cost of importing typer itself (issue 13; measured by
``corral bench cli``). `typer.main.get_command(app)` still gives a walkable click tree:
reading a group's ``.commands`` loads every command under it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import typer
import typer.main
from typer.core import TyperGroup

try:  # typer >= 0.22 vendors click as typer._click
    from typer._click import ClickException, Command
    from typer._click.utils import make_default_short_help
except ImportError:  # pragma: no cover - older typer on plain click
    from click import ClickException, Command  # type: ignore[assignment]
    from click.utils import make_default_short_help  # type: ignore[no-redef]

from corral.commands.common import EXIT_INPUT, document_of, error_document, report_error
from corral.errors import CorralError


@dataclass(frozen=True)
class Lazy:
    """A command imported only when it runs or its own help is shown.

    ``target`` is ``module:attribute``: a function (one command) or a `typer.Typer` (a
    group). ``help`` is the line the parent's ``--help`` shows without importing ``target``
    (tests/test_cli_startup.py checks it against the command's docstring); None: import it
    for that line too. ``subcommands`` are further lazy commands of a group target.
    """

    name: str
    target: str
    help: str | None = None
    subcommands: tuple[Lazy, ...] = ()

    def load(self) -> Command:
        """Import the target and build its click command (plain help: see `plain_help`)."""
        module, _, attribute = self.target.partition(":")
        # __import__, not importlib.import_module: only the former shows in -X importtime.
        obj = getattr(__import__(module, fromlist=[attribute]), attribute)
        if isinstance(obj, typer.Typer):
            built = typer.main.get_group(obj)
            group = LazyGroup(
                name=self.name,
                commands=dict(built.commands),
                help=built.help,
                short_help=built.short_help,
                epilog=built.epilog,
                params=built.params,
                callback=built.callback,
                no_args_is_help=built.no_args_is_help,
                rich_markup_mode=None,
                pending=self.subcommands,
            )
            return plain_help(group)
        single = typer.Typer(add_completion=False, rich_markup_mode=None)
        single.command(self.name)(obj)
        return plain_help(typer.main.get_command(single))


def plain_help(command: Command) -> Command:
    """Turn off rich help on ``command`` and the commands already built under it: click's
    plain layout never cuts option names and shows flags without a ``<bool>`` type, so
    ``--help`` reads well at 80 columns."""
    if hasattr(command, "rich_markup_mode"):
        command.rich_markup_mode = None
    loaded = command._loaded if isinstance(command, LazyGroup) else getattr(command, "commands", {})
    for sub in loaded.values():
        plain_help(sub)
    return command


class LazyGroup(TyperGroup):
    """A typer group whose commands may be `Lazy`: listed by name and help, imported when
    resolved. ``entries`` (class level) and ``pending`` (per instance) name them."""

    entries: tuple[Lazy, ...] = ()

    def __init__(self, *args: Any, pending: Sequence[Lazy] = (), **kwargs: Any) -> None:
        self._loaded: MutableMapping[str, Command] = {}
        self._pending: dict[str, Lazy] = {}
        super().__init__(*args, **kwargs)
        for entry in (*self.entries, *pending):
            self._pending[entry.name] = entry

    @property
    def commands(self) -> MutableMapping[str, Command]:
        """Every command of the group, importing the lazy ones (for walking the tree)."""
        for name in list(self._pending):
            self._load(name)
        return self._loaded

    @commands.setter
    def commands(self, value: MutableMapping[str, Command]) -> None:
        self._loaded = value

    def _load(self, name: str) -> Command | None:
        entry = self._pending.pop(name, None)
        if entry is not None:
            self._loaded[name] = entry.load()
        return self._loaded.get(name)

    def add_command(self, cmd: Command, name: str | None = None) -> None:
        """Register a command built elsewhere (eagerly)."""
        key = name or cmd.name
        if key is None:
            raise TypeError("Command has no name.")
        self._loaded[key] = cmd

    def list_commands(self, ctx: Any) -> list[str]:
        """Names in registration order: built commands first, then the lazy ones."""
        return [*self._loaded, *(n for n in self._pending if n not in self._loaded)]

    def get_command(self, ctx: Any, cmd_name: str) -> Command | None:
        """The command ``cmd_name``, importing it if it is lazy."""
        return self._load(cmd_name)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        """The ``Commands`` section, from the lazy entries' help where they give one."""
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(n) for n in names)
        rows = []
        for name in names:
            entry = self._pending.get(name)
            if entry is not None and entry.help is not None:
                rows.append((name, make_default_short_help(entry.help, limit)))
                continue
            cmd = self.get_command(ctx, name)
            if cmd is not None and not cmd.hidden:
                rows.append((name, cmd.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


#: Every command of ``corral``; ``help`` is each one's first docstring paragraph.
COMMANDS: tuple[Lazy, ...] = (
    Lazy(
        "topology",
        "corral.commands.topology:topology",
        "Show the host: sockets, NUMA nodes, L3 groups, cores with their threads.",
    ),
    Lazy(
        "place",
        "corral.commands.place:place",
        "Compute cpusets: one request (--request) or a whole workload list (--workloads).",
    ),
    Lazy(
        "apply",
        "corral.commands.apply:apply",
        "Place the workloads and enforce the placement in their cgroups; print what was written.",
    ),
    Lazy(
        "drift",
        "corral.commands.apply:drift",
        "Read back every file corral manages for these workloads and show the differences.",
    ),
    Lazy(
        "agent",
        "corral.commands.agent:agent",
        "Run the node agent: places and isolates the workloads it is told about over HTTP, "
        "keeps them in SQLite across restarts, and rebalances and repairs drift periodically.",
    ),
    Lazy(
        "status",
        "corral.commands.client:status",
        "Show the agent: workloads, pending events, the last decision, drift.",
    ),
    Lazy(
        "rebalance",
        "corral.commands.client:rebalance",
        "Ask the agent to rebalance now and show whether anything moved.",
    ),
    Lazy(
        "workloads",
        "corral.commands.client:workloads_app",
        "Add, remove and list the workloads of a running agent.",
    ),
    Lazy(
        "predict",
        "corral.commands.predict:predict_app",
        "Predict each workload's CPU quantile (default P95 over the next 10 minutes).",
    ),
    Lazy(
        "kube", "corral.commands.kube:kube_app", "Kubernetes components (the scheduler extender)."
    ),
    Lazy(
        "doctor",
        "corral.commands.doctor:doctor",
        "Check this host: cgroups, PSI, RDT, SMT, NUMA, kubelet, tools, clock; each finding "
        "with its fix.",
    ),
    Lazy(
        "bench",
        "corral.commands.bench:bench_app",
        "Benchmarks: each prints its figures next to a baseline measured in the same run.",
        subcommands=(
            Lazy("agent", "corral.commands.bench_agent:bench_agent"),
            Lazy("colocation", "corral.commands.bench_colocation:bench_colocation"),
            Lazy("predict", "corral.commands.bench_predict:bench_predict"),
            Lazy("enforce", "corral.commands.bench_enforce:bench_enforce"),
            Lazy("kube-node", "corral.commands.bench_kube_node:bench_kube_node"),
            Lazy("cli", "corral.commands.bench_cli:bench_cli"),
        ),
    ),
)


class CorralGroup(LazyGroup):
    """The root group: the lazy `COMMANDS`, and errors as JSON under ``--json``.

    A usage error or a `CorralError` that reaches the top prints ``error: ...`` (or click's
    usage message) on stderr and, when the arguments hold ``--json``, one
    ``{"error": {...}}`` document on stdout; the exit code is 2 (click's own for usage).
    """

    entries = COMMANDS

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        """Run the command line; exit (or, with ``standalone_mode=False``, return) its code."""
        argv = list(sys.argv[1:] if args is None else args)
        as_json = "--json" in argv
        try:
            result = super().main(
                argv,
                prog_name,
                complete_var,
                standalone_mode=False,
                windows_expand_args=windows_expand_args,
                **extra,
            )
            code = result if isinstance(result, int) else 0
        except ClickException as err:
            code = _usage_error(err, as_json=as_json)
        except typer.Abort:
            print("Aborted!", file=sys.stderr)
            code = 1
        except CorralError as err:
            report_error(document_of(err), as_json=as_json)
            code = EXIT_INPUT
        if standalone_mode:
            sys.exit(code)
        return code


def _usage_error(err: ClickException, *, as_json: bool) -> int:
    if type(err).__name__ == "NoArgsIsHelpError":  # `corral`, `corral bench`: help on stdout
        print(err.format_message())
        return err.exit_code
    err.show()
    if as_json:
        param = getattr(err, "param", None)
        opts = getattr(param, "opts", None) or []
        field = opts[0] if opts else getattr(param, "name", None)
        hint = getattr(getattr(err, "ctx", None), "command_path", "corral")
        doc = error_document(
            err.format_message(),
            field=field,
            fix=f"see `{hint} --help`",
            kind="UsageError",
        )
        sys.stdout.write(_dumps(doc))
    return err.exit_code


def _dumps(doc: dict[str, Any]) -> str:
    import json  # noqa: PLC0415 - error path only

    return json.dumps(doc, indent=2) + "\n"


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

        try:
            found = version("corral")
        except PackageNotFoundError:
            found = "unknown (not installed; run pip install -e .)"
        print(f"corral {found}")
        raise typer.Exit


app = typer.Typer(
    name="corral",
    cls=CorralGroup,
    help="Place and isolate latency-critical and best-effort workloads on one Linux host.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print corral's version and exit."
        ),
    ] = False,
) -> None:
    """Place and isolate latency-critical and best-effort workloads on one Linux host."""


def walk(command: Command, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Command]]:
    """Every command under ``command`` with its path (``("bench", "cli")``), groups included;
    imports every command module."""
    yield path, command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from walk(sub, (*path, name))


def main() -> None:
    """Entry point of the ``corral`` console script."""
    typer.main.get_command(app).main(prog_name="corral")


if __name__ == "__main__":
    main()

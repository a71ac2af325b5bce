"""``corral bench colocation``: memcached + stress-ng under lc-alone/none/static/corral.

Light at import (``corral --help`` loads it): the benchmark, numpy and matplotlib are
imported when the command runs.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from corral.commands.common import clear_errors, console, print_json

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

SCENARIOS = ("default", "kernel", "oom-loop")


class RichProgress:
    """The benchmark's progress as a rich bar on stderr: windows done of planned, ETA."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: TaskID = progress.add_task("starting", total=0)

    def note(self, message: str) -> None:
        """Print ``message`` above the bar."""
        self.progress.console.print(f"... {message}", highlight=False, markup=False)

    def expect(self, windows: int) -> None:
        """Grow the total by ``windows``."""
        total = self.progress.tasks[0].total or 0
        self.progress.update(self.task, total=total + windows)

    def advance(self, windows: int, phase: str) -> None:
        """Count ``windows`` done in ``phase``."""
        self.progress.update(self.task, advance=windows, description=phase)


class _StderrNotes:
    """Notes as ``... message`` lines on stderr (not a terminal); no bar."""

    def note(self, message: str) -> None:
        """Print ``message`` on stderr."""
        print(f"... {message}", file=sys.stderr, flush=True)

    def expect(self, windows: int) -> None:
        """No bar: nothing to do."""

    def advance(self, windows: int, phase: str) -> None:
        """No bar: nothing to do."""


class _Silent(_StderrNotes):
    """Nothing at all (``--json``: stdout is the document, stderr stays quiet)."""

    def note(self, message: str) -> None:
        """Drop ``message``."""


@contextmanager
def progress_for(as_json: bool) -> Iterator[Any]:
    """A rich bar on stderr when it is a terminal and ``--json`` is off; plain notes on
    stderr when it is not a terminal; silence under ``--json``."""
    err = Console(stderr=True)
    bar = not as_json and err.is_terminal
    # The controller's warnings (e.g. ``control.signal_lost``) go to stderr, above the bar.
    handler: logging.Handler = logging.StreamHandler(sys.stderr)
    if bar:
        from rich.logging import RichHandler  # noqa: PLC0415 - only when a bar is drawn

        handler = RichHandler(console=err, show_path=False)
    handler.setLevel(logging.WARNING)
    logger = logging.getLogger("corral")
    logger.addHandler(handler)
    try:
        if not bar:
            yield _Silent() if as_json else _StderrNotes()
            return
        with _bar(err) as progress:
            yield RichProgress(progress)
    finally:
        logger.removeHandler(handler)


@contextmanager
def _bar(err: Console) -> Iterator[Progress]:
    from rich.progress import (  # noqa: PLC0415 - only when a bar is drawn
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("windows"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    ) as progress:
        yield progress


def bench_colocation(  # noqa: PLR0917 - typer maps parameters to options
    quick: Annotated[
        bool, typer.Option("--quick", help="One repetition, short pattern (about 3 minutes).")
    ] = False,
    repetitions: Annotated[
        int | None, typer.Option(min=1, help="Repetitions per policy (full mode: 3).")
    ] = None,
    slo_us: Annotated[
        int | None,
        typer.Option(
            "--slo-us",
            min=1,
            help="p99 target in microseconds; default: calibrated from LC alone.",
        ),
    ] = None,
    peak_rps: Annotated[
        float | None,
        typer.Option("--peak-rps", help="Skip the peak search and use this LC peak."),
    ] = None,
    scenario: Annotated[
        str,
        typer.Option(
            "--scenario",
            help="BE antagonists: default (cpu, cache, vm, stream, matrix), kernel "
            "(hdd, vm-big, fork: harm cpu.idle does not contain) or oom-loop (a cpu, cache or "
            "matrix job beside an OOM-looping vm-big job).",
        ),
    ] = "default",
    policy: Annotated[
        list[str] | None, typer.Option("--policy", help="Only these policies (repeatable).")
    ] = None,
    antagonist: Annotated[
        list[str] | None,
        typer.Option("--antagonist", help="BE stressors, overriding --scenario (repeatable)."),
    ] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="Write colocation.json and colocation.png in this directory."),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the JSON to this file.")
    ] = None,
    plot_path: Annotated[
        Path | None, typer.Option("--plot", help="Write the PNG plot to this file.")
    ] = None,
    cgroup_root: Annotated[
        Path, typer.Option("--cgroup-root", help="Where the cgroup hierarchies are mounted.")
    ] = Path("/sys/fs/cgroup"),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for programs.")] = False,
) -> None:
    """Measure LC peak and BE alone, calibrate the SLO from LC alone, then run the load
    pattern with memcached as LC and stress-ng as BE under each policy, repetitions
    interleaved; report EMU, SLO violations (and those attributable to BE), BE CPUs with
    95% intervals, corral against the best static policy, and the memory-containment
    check. Writes files only where --out/--output/--plot say (needs root, memcached,
    stress-ng, gcc and cgroup v1; cleans up its cgroups, processes and /tmp files)."""
    from dataclasses import replace  # noqa: PLC0415 - keep `corral --help` light

    from corral.bench.colocation.runner import (  # noqa: PLC0415 - heavy: only when run
        SCENARIOS as ANTAGONIST_SETS,
    )
    from corral.bench.colocation.runner import (  # noqa: PLC0415
        ColocationBenchConfig,
        run_colocation_bench,
    )
    from corral.control.slo import Slo  # noqa: PLC0415
    from corral.errors import InputError  # noqa: PLC0415

    with clear_errors():
        if scenario not in ANTAGONIST_SETS:
            raise InputError("--scenario", f"unknown scenario {scenario!r}", ", ".join(SCENARIOS))
        config = ColocationBenchConfig.quick_config() if quick else ColocationBenchConfig()
        changes: dict[str, Any] = {"scenario": scenario}
        # Quick mode runs one repetition: only the scenario's first antagonist is used.
        changes["antagonists"] = ANTAGONIST_SETS[scenario][: 1 if quick else None]
        if slo_us is not None:
            changes["slo"] = Slo(target_ms=slo_us / 1000)
            changes["calibrate"] = False
        if repetitions is not None:
            changes["repetitions"] = repetitions
        if peak_rps is not None:
            changes["peak_rps"] = peak_rps
        if policy:
            changes["policies"] = tuple(policy)
        if antagonist:
            changes["antagonists"] = tuple(antagonist)
        config = replace(config, **changes)
        check_targets(out_dir=out_dir, output=output, plot_path=plot_path)
        with progress_for(as_json) as progress:
            doc = run_colocation_bench(config, cgroup_root=cgroup_root, progress=progress)
        write_outputs(doc, out_dir=out_dir, output=output, plot_path=plot_path)
    if as_json:
        print_json(doc)
        return
    print_report(doc)


def check_targets(*, out_dir: Path | None, output: Path | None, plot_path: Path | None) -> None:
    """Refuse, before a long run, outputs that cannot be written (`InputError` naming the
    option): a directory given as a file, a plot type matplotlib cannot write, an
    ``--out`` that cannot be created (it is created now)."""
    from corral.errors import InputError  # noqa: PLC0415

    for option, path in (("--output", output), ("--plot", plot_path)):
        if path is not None and path.is_dir():
            raise InputError(option, f"{path} is a directory", "give a file name")
    if plot_path is not None and plot_path.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise InputError("--plot", f"{plot_path}: not .png, .svg or .pdf", "e.g. colocation.png")
    if out_dir is not None:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise InputError(
                "--out", f"{out_dir}: {err.strerror}", "give a writable directory"
            ) from err


def write_outputs(
    doc: dict[str, Any], *, out_dir: Path | None, output: Path | None, plot_path: Path | None
) -> None:
    """Write the JSON and the plot where told (``doc["files"]`` lists them); nothing
    without ``out_dir``, ``output`` or ``plot_path``."""
    from corral.bench.colocation.report import plot  # noqa: PLC0415 - matplotlib

    json_paths = [p for p in (output, out_dir and out_dir / "colocation.json") if p]
    plots = [p for p in (plot_path, out_dir and out_dir / "colocation.png") if p]
    doc["files"] = {"json": [str(p) for p in json_paths], "plot": [str(p) for p in plots]}
    for path in plots:
        plot(doc, path)
    for path in json_paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=2) + "\n")


def print_report(doc: dict[str, Any]) -> None:
    """The table, the comparison, the targets and the notes on stdout."""
    out = console()
    out.width = max(out.width, 130)  # many columns: do not truncate them when piped
    slo = doc["slo"]
    out.print(
        f"SLO: p99 <= {slo['target_us']} us per {doc['config']['window_s']:g} s window ("
        + (
            f"calibrated: LC alone's p{slo['quantile']:g} {slo['quantile_p99_us']:.0f} us x "
            f"{slo['margin']:g}, met in {slo['met']}/{slo['measured']} windows)"
            if slo["source"] == "calibrated"
            else "explicit)"
        )
        + (
            ""
            if slo.get("lc_alone_met_in_runs") is None
            else f"; LC alone met it in {slo['lc_alone_met_in_runs']:.0%} of its quiet windows"
            " during the policy runs"
        )
    )
    out.print(colocation_table(doc))
    comparison = doc.get("comparison")
    if comparison:
        out.print(comparison_text(comparison))
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
    for kind, paths in doc.get("files", {}).items():
        for path in paths:
            out.print(f"{kind}: {path}")


def comparison_text(comparison: dict[str, Any]) -> str:
    """One line: corral minus the best static policy, with intervals and noise flags."""
    parts = []
    for key, label in (
        ("emu", "EMU"),
        ("slo_violations", "violations"),
        ("be_attributable", "BE-attributable"),
    ):
        diff = comparison.get(key)
        if diff is None:
            continue
        ci = diff["ci95"]
        noise = {True: "within noise", False: "beyond noise", None: "CI not available"}[
            diff["within_noise"]
        ]
        interval = "" if ci is None else f" [{ci[0]:+.3f}, {ci[1]:+.3f}]"
        parts.append(f"{label} {diff['mean']:+.3f}{interval} ({noise})")
    return f"corral - {comparison['best_static']} (paired per repetition): " + "; ".join(parts)


def _ci(entry: dict[str, Any] | None, digits: int = 2) -> str:
    if entry is None:
        return "-"
    ci = entry["ci95"]
    if ci is None:
        return f"{entry['mean']:.{digits}f}"
    return f"{entry['mean']:.{digits}f} ± {(ci[1] - ci[0]) / 2:.{digits}f}"


def colocation_table(doc: dict[str, Any]) -> Table:
    """The summary table: means over repetitions ± half the 95% interval."""
    from corral.bench.colocation.report import summary_rows  # noqa: PLC0415

    host = doc["host"]
    reps = doc["config"]["repetitions"]
    table = Table(
        title=(
            f"colocation ({doc['config']['scenario']}): LC peak {doc['peak_rps']:.0f}/s, SLO p99"
            f" <= {doc['slo']['target_us']} us, {reps} rep(s)"
            + (" (one repetition: no CI)" if reps < 2 else ", mean ± 95% CI")
            + f", load avg at start {host['loadavg_at_start'][0]}, {host['seconds']:.0f} s"
        )
    )
    for column in (
        "policy",
        "EMU",
        "SLO viol.",
        "due to BE",
        "of them BE idle",
        "noisy",
        "windows",
        "worst p99 ms",
        "BE CPUs",
        "EMU per rep",
    ):
        table.add_column(column, justify="left" if column == "policy" else "right")
    policies = doc["policies"]
    for row in summary_rows(doc):
        p = policies[row["policy"]]
        table.add_row(
            row["policy"],
            _ci(p["emu_ci"], 3),
            _ci(p["slo_violations_ci"], 1),
            _ci(p["be_attributable_ci"], 1),
            f"{row['violations_be_idle']:g}",
            f"{row['noisy_windows']:g}"
            + (
                ""
                if not p.get("noisy_be_attributable")
                else f" ({p['noisy_be_attributable']:g} BE)"
            ),
            str(row["windows"]),
            "-" if row["p99_max_ms"] is None else f"{row['p99_max_ms']:.3f}",
            _ci(p["be_cpus_ci"], 2),
            " ".join(f"{e:.2f}" for e in row["emu_runs"]),
        )
    return table

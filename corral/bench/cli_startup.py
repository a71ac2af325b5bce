"""How fast the command line starts, against importing its libraries alone (issue 13).

Every figure is a wall-clock time of a real subprocess, as a user meets it: the baseline
``python -c 'import typer, pydantic, rich, yaml'`` and the ``corral`` console script with a
few everyday arguments, run interleaved (one of each per round, the order rotated every
round) and summarised by their medians. Separately, a real ``corral agent`` with no model
configured is started under ``-X importtime`` (dry run, loopback port, temporary state),
given one workload, and stopped; the modules it imported show whether lightgbm or
scikit-learn were loaded.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corral.bench.agent_process import free_port
from corral.errors import CorralError

#: What the CLI's start is measured against.
BASELINE_CODE = "import typer, pydantic, rich, yaml"
#: Each case must start within this many times the baseline.
TARGET_RATIO = 2.0
#: The commands timed, as arguments of ``corral``.
CASES: tuple[tuple[str, ...], ...] = (
    ("--help",),
    ("topology",),
    ("topology", "--json"),
    ("place", "--request", "4", "--topology", "toy-16", "--json"),
)
#: Modules `corral agent` must not import while no predictor model is configured.
AGENT_FORBIDDEN = ("lightgbm", "sklearn")
#: Modules worth naming when a command imports them (the slow ones).
HEAVY = (
    "numpy",
    "scipy",
    "highspy",
    "lightgbm",
    "sklearn",
    "pandas",
    "matplotlib",
    "fastapi",
    "uvicorn",
    "httpx",
    "kubernetes",
)
_IMPORT_LINE = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)")


@dataclass(frozen=True)
class Timed:
    """One command's wall-clock times (ms) over the rounds, and the heavy modules it imports."""

    label: str
    argv: tuple[str, ...]
    runs_ms: tuple[float, ...]
    cpu_ms: tuple[float, ...]
    heavy_modules: tuple[str, ...] = ()

    @property
    def median_ms(self) -> float:
        """Median wall-clock time of the runs."""
        return statistics.median(self.runs_ms)

    @property
    def median_cpu_ms(self) -> float:
        """Median CPU time (user + system) of the runs: steadier than wall clock on a busy
        host, where waiting for a CPU inflates every wall-clock figure."""
        return statistics.median(self.cpu_ms)


@dataclass(frozen=True)
class AgentImports:
    """What a real `corral agent` without a model imported, up to serving one workload."""

    argv: tuple[str, ...]
    forbidden_loaded: tuple[str, ...]
    heavy_modules: tuple[str, ...]
    modules: int
    placed: bool

    @property
    def ok(self) -> bool:
        """No forbidden module was imported."""
        return not self.forbidden_loaded


@dataclass(frozen=True)
class CliStartupResult:
    """The baseline, each case with its ratio to the baseline, and the agent's imports."""

    repeat: int
    baseline: Timed
    cases: tuple[Timed, ...]
    agent: AgentImports | None
    notes: tuple[str, ...] = field(default=())

    def ratio(self, case: Timed) -> float:
        """``case``'s median wall-clock time over the baseline's (the target's measure)."""
        return case.median_ms / self.baseline.median_ms

    def cpu_ratio(self, case: Timed) -> float:
        """``case``'s median CPU time over the baseline's."""
        return case.median_cpu_ms / self.baseline.median_cpu_ms

    @property
    def met(self) -> bool:
        """Every case within `TARGET_RATIO` and the agent free of forbidden modules."""
        fast = all(self.ratio(c) <= TARGET_RATIO for c in self.cases)
        return fast and (self.agent is None or self.agent.ok)

    def to_json(self) -> dict[str, Any]:
        """The result as a JSON document (times in ms)."""
        return {
            "repeat": self.repeat,
            "target_ratio": TARGET_RATIO,
            "baseline": _timed_json(self.baseline),
            "cases": [
                _timed_json(c)
                | {
                    "ratio": round(self.ratio(c), 3),
                    "cpu_ratio": round(self.cpu_ratio(c), 3),
                    "met": self.ratio(c) <= TARGET_RATIO,
                }
                for c in self.cases
            ],
            "agent": None
            if self.agent is None
            else {
                "command": list(self.agent.argv),
                "forbidden": list(AGENT_FORBIDDEN),
                "forbidden_loaded": list(self.agent.forbidden_loaded),
                "heavy_modules": list(self.agent.heavy_modules),
                "modules": self.agent.modules,
                "placed_a_workload": self.agent.placed,
                "ok": self.agent.ok,
            },
            "met": self.met,
            "notes": list(self.notes),
        }


def _timed_json(t: Timed) -> dict[str, Any]:
    return {
        "label": t.label,
        "command": list(t.argv),
        "median_ms": round(t.median_ms, 1),
        "median_cpu_ms": round(t.median_cpu_ms, 1),
        "runs_ms": [round(r, 1) for r in t.runs_ms],
        "cpu_ms": [round(r, 1) for r in t.cpu_ms],
        "heavy_modules": list(t.heavy_modules),
    }


def corral_command(python: str = sys.executable) -> tuple[str, ...]:
    """The ``corral`` console script next to ``python`` (what users run), else
    ``python -m corral.cli``."""
    script = Path(python).parent / "corral"
    if script.exists():
        return (str(script),)
    return (python, "-m", "corral.cli")


def imported_modules(importtime_stderr: str) -> list[str]:
    """Module names from ``-X importtime`` output (other stderr lines are ignored)."""
    names = []
    for line in importtime_stderr.splitlines():
        match = _IMPORT_LINE.match(line)
        if match and match.group(1) != "package":
            names.append(match.group(1))
    return names


def heavy_among(modules: Sequence[str]) -> tuple[str, ...]:
    """The `HEAVY` top-level packages among ``modules``, in `HEAVY` order."""
    tops = {m.split(".")[0] for m in modules}
    return tuple(h for h in HEAVY if h in tops)


def _run_once(argv: Sequence[str], *, cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """(wall-clock ms, user + system CPU ms) of one run of ``argv``."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        list(argv),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        cwd=cwd,
        env=env,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = (time.perf_counter() - started) * 1000
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise CorralError(f"{' '.join(argv)} exited with {proc.returncode}")
    return elapsed, (usage.ru_utime + usage.ru_stime) * 1000


def _imports_of(argv: Sequence[str], *, cwd: Path, env: dict[str, str]) -> tuple[str, ...]:
    done = subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**env, "PYTHONPROFILEIMPORTTIME": "1"},
        stdin=subprocess.DEVNULL,
        check=False,
    )
    return heavy_among(imported_modules(done.stderr))


def user_env(pycache: Path) -> dict[str, str]:
    """The environment of the timed runs: this one, but with byte-code caching on (into
    ``pycache``, not the source tree) as on a user's machine, even where
    ``PYTHONDONTWRITEBYTECODE`` is set (this project's CI and sessions set it)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


def time_commands(
    commands: Sequence[tuple[str, tuple[str, ...]]],
    *,
    repeat: int,
    cwd: Path,
    env: dict[str, str],
    progress: Callable[[str], None] = lambda _: None,
) -> list[Timed]:
    """Time each ``(label, argv)`` ``repeat`` times, interleaved: one round runs each command
    once, the starting command rotating by one each round; one untimed warm-up round first
    (it also fills the byte-code cache). A command that exits non-zero is a `CorralError`
    (its time would mean nothing)."""
    for _, argv in commands:
        _run_once(argv, cwd=cwd, env=env)
    runs: list[list[tuple[float, float]]] = [[] for _ in commands]
    for round_no in range(repeat):
        progress(f"round {round_no + 1}/{repeat}")
        for offset in range(len(commands)):
            index = (round_no + offset) % len(commands)
            runs[index].append(_run_once(commands[index][1], cwd=cwd, env=env))
    return [
        Timed(
            label,
            argv,
            tuple(wall for wall, _ in r),
            tuple(cpu for _, cpu in r),
            _imports_of(argv, cwd=cwd, env=env),
        )
        for (label, argv), r in zip(commands, runs, strict=True)
    ]


def _http(method: str, url: str, body: dict[str, Any] | None = None) -> int:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as err:
        return err.code
    except (urllib.error.URLError, OSError):
        return 0


def agent_imports(*, python: str = sys.executable, start_timeout_s: float = 120.0) -> AgentImports:
    """Start ``corral agent`` (no model, dry run, toy-16, loopback, temporary state) under
    ``-X importtime``, wait for ``/healthz``, PUT one workload and wait for it, stop it with
    SIGTERM; report the modules it imported. Cleans up its directory and process."""
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="corral-bench-cli-"))
    config = workdir / "agent.yaml"
    config.write_text(
        f"listen: 127.0.0.1:{port}\nstate_path: {workdir / 'state.db'}\n"
        "topology: toy-16\ndry_run: true\nallocator: optimal\n"
    )
    argv = (python, "-X", "importtime", "-m", "corral.cli", "agent", "--config", str(config))
    stderr_path = workdir / "stderr.log"
    try:
        with stderr_path.open("w") as stderr:
            proc = subprocess.Popen(
                argv, stdout=subprocess.DEVNULL, stderr=stderr, stdin=subprocess.DEVNULL
            )
            try:
                placed = _exercise(proc, f"http://127.0.0.1:{port}", start_timeout_s, stderr_path)
            finally:
                _stop(proc)
        modules = imported_modules(stderr_path.read_text())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    tops = {m.split(".")[0] for m in modules}
    return AgentImports(
        argv=argv,
        forbidden_loaded=tuple(f for f in AGENT_FORBIDDEN if f in tops),
        heavy_modules=heavy_among(modules),
        modules=len(modules),
        placed=placed,
    )


def _exercise(proc: subprocess.Popen[bytes], url: str, timeout_s: float, log: Path) -> bool:
    deadline = time.monotonic() + timeout_s
    while _http("GET", f"{url}/healthz") != 200:
        if proc.poll() is not None:
            tail = "\n".join(log.read_text().splitlines()[-20:])
            raise CorralError(f"the agent exited with {proc.returncode}:\n{tail}")
        if time.monotonic() > deadline:
            raise CorralError(f"the agent did not answer /healthz within {timeout_s:g} s")
        time.sleep(0.1)
    spec = {"id": "bench-cli", "cpus": 2, "qos": "LC", "policy": "exclusive"}
    status = _http("PUT", f"{url}/workloads/bench-cli?wait=true", spec)
    return 200 <= status < 300


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def run_cli_startup_bench(
    *,
    repeat: int = 5,
    python: str = sys.executable,
    check_agent: bool = True,
    cwd: Path | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> CliStartupResult:
    """Time the baseline and every `CASES` command (medians of ``repeat`` interleaved runs)
    and, with ``check_agent``, check the agent's imports (`agent_imports`)."""
    corral = corral_command(python)
    commands = [
        ("python -c '" + BASELINE_CODE + "'", (python, "-c", BASELINE_CODE)),
        *(("corral " + " ".join(args), (*corral, *args)) for args in CASES),
    ]
    workdir = Path(tempfile.gettempdir()) if cwd is None else cwd
    pycache = Path(tempfile.mkdtemp(prefix="corral-bench-cli-pycache-"))
    try:
        timed = time_commands(
            commands, repeat=repeat, cwd=workdir, env=user_env(pycache), progress=progress
        )
    finally:
        shutil.rmtree(pycache, ignore_errors=True)
    agent = None
    if check_agent:
        progress("corral agent under -X importtime")
        agent = agent_imports(python=python)
    notes = (
        f"{len(commands)} commands x {repeat} rounds, interleaved, medians; wall clock of "
        "each subprocess including interpreter start (the target's measure) and its CPU "
        "time (user + system; steadier when the host is busy); byte code cached as on a "
        "user's machine (PYTHONPYCACHEPREFIX in a temporary directory)",
        f"load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}",
    )
    return CliStartupResult(
        repeat=repeat, baseline=timed[0], cases=tuple(timed[1:]), agent=agent, notes=notes
    )

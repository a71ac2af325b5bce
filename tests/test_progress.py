"""Long commands show rich progress with ETA on a terminal and nothing when piped or --json.

The commands run as real subprocesses: once on a pseudo-terminal (what an operator sees)
and once with stdout and stderr piped under ``--json`` (what a program sees). They run
from a directory outside the repository, which must stay empty.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from corral.commands.progress import progress_reporter, progress_wanted
from corral.predict.model import save_model, train_model
from corral.predict.series import build_trace
from tests.test_predict_model import FAST, daily_cycle_frame

ESCAPE = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")
#: A safety net against a hung child, not a timing assertion.
CHILD_DEADLINE_S = 900.0


@pytest.fixture(scope="module")
def tiny_trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("trace") / "daily.csv"
    daily_cycle_frame(days=6, series=3).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small model on 300 s steps: ``bench predict`` then skips its own training."""
    trace = build_trace(daily_cycle_frame(days=6, series=3), source="daily", fmt="corral")
    path = tmp_path_factory.mktemp("model") / "model.json"
    save_model(train_model(trace, FAST), path)
    return path


def _corral(*args: str) -> list[str]:
    return [sys.executable, "-m", "corral.cli", *args]


def run_in_pty(argv: list[str], cwd: Path) -> tuple[int, bytes]:
    """Run ``argv`` with stdin, stdout and stderr on a new 120-column pseudo-terminal."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 120, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + CHILD_DEADLINE_S
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed its side
                break
            if not data:
                break
            chunks.append(data)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return code, b"".join(chunks)


def bar_lines(screen: bytes) -> dict[str, str]:
    """The last drawn line of each progress bar, escape codes removed, by its step."""
    text = ESCAPE.sub(b"", screen).decode("utf-8", "replace")
    lines: dict[str, str] = {}
    for line in re.split(r"[\r\n]+", text):
        if " elapsed " in line and " left " in line:
            lines[line.split("━")[0].strip()] = line.strip()
    return lines


@pytest.fixture
def empty_cwd(tmp_path: Path) -> Path:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    return cwd


def _commands(trace: Path, model: Path, out: Path) -> dict[str, tuple[list[str], tuple[str, ...]]]:
    """Each long command with the smallest options that keep it quick, and its steps.

    ``bench predict`` cuts its histories from the embedded sample (no --trace), from a
    directory outside the repository; training is covered by ``predict train|eval``.
    """
    return {
        "bench predict": (
            ["bench", "predict", "--series", "300", "--repeats", "2", "--model", str(model)],
            ("loading the trace", "timed calls"),
        ),
        "bench placement": (
            ["bench", "placement", "--quick", "--family-only", "--plot", str(out / "p.png")],
            ("family instances",),
        ),
        "predict train": (
            [
                "predict",
                "train",
                "--train",
                str(trace),
                "--out",
                str(out / "m.json"),
                "--max-train-rows",
                "2000",
            ],
            ("loading the trace", "training windows", "boosting rounds", "calibration windows"),
        ),
        "predict eval": (
            ["predict", "eval", "--train", str(trace), "--max-train-rows", "2000"],
            ("training windows", "boosting rounds", "calibration windows", "test windows"),
        ),
    }


COMMANDS = ("bench predict", "bench placement", "predict train", "predict eval")


@pytest.mark.slow
@pytest.mark.parametrize("name", COMMANDS)
def test_a_terminal_sees_every_step_with_its_eta_and_the_step_finished(
    name: str, tiny_trace: Path, tiny_model: Path, empty_cwd: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    args, steps = _commands(tiny_trace, tiny_model, out)[name]
    code, screen = run_in_pty(_corral(*args), empty_cwd)
    assert code == 0, screen.decode("utf-8", "replace")[-2000:]
    bars = bar_lines(screen)
    for step in steps:
        assert step in bars, (step, sorted(bars))
        done, total = re.search(r"(\d+)/(\d+)", bars[step]).groups()  # type: ignore[union-attr]
        assert done == total, bars[step]
    assert list(empty_cwd.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("name", COMMANDS)
def test_json_piped_is_one_document_on_stdout_and_no_bar_on_stderr(
    name: str, tiny_trace: Path, tiny_model: Path, empty_cwd: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    args, _ = _commands(tiny_trace, tiny_model, out)[name]
    proc = subprocess.run(
        _corral(*args, "--json"),
        cwd=empty_cwd,
        capture_output=True,
        timeout=CHILD_DEADLINE_S,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    json.loads(proc.stdout)  # the whole of stdout, nothing before or after
    assert b"\x1b[" not in proc.stderr and "━".encode() not in proc.stderr, proc.stderr[:500]
    assert list(empty_cwd.iterdir()) == []


@pytest.mark.slow
def test_without_a_terminal_and_without_json_no_progress_is_written(
    empty_cwd: Path, tmp_path: Path
) -> None:
    plot = tmp_path / "family.svg"
    proc = subprocess.run(
        _corral("bench", "placement", "--quick", "--family-only", "--plot", str(plot)),
        cwd=empty_cwd,
        capture_output=True,
        timeout=CHILD_DEADLINE_S,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert proc.stderr == b""
    assert b"instance family" in proc.stdout
    assert plot.read_text().lstrip().startswith(("<?xml", "<svg"))
    assert list(empty_cwd.iterdir()) == []


def test_progress_is_wanted_only_on_a_terminal_and_never_under_json() -> None:
    master, slave = pty.openpty()
    try:
        with os.fdopen(os.dup(slave), "w") as tty:
            assert progress_wanted(as_json=False, stream=tty)
            assert not progress_wanted(as_json=True, stream=tty)
        assert not progress_wanted(as_json=False, stream=io.StringIO())
    finally:
        os.close(master)
        os.close(slave)


def test_a_reporter_off_a_terminal_swallows_every_call() -> None:
    stream = io.StringIO()
    with progress_reporter(as_json=False, stream=stream) as on_progress:
        for done in range(4):
            on_progress("step", done, 3)
    assert stream.getvalue() == ""


def test_a_reporter_on_a_terminal_draws_one_bar_per_step() -> None:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 20, 100, 0, 0))
    try:
        with os.fdopen(os.dup(slave), "w") as tty:
            with progress_reporter(as_json=False, stream=tty) as on_progress:
                on_progress("first step", 0, 2)
                on_progress("first step", 2, 2)
                on_progress("second step", 5, 10)
            tty.flush()
        screen = b""
        while select.select([master], [], [], 0.5)[0]:
            screen += os.read(master, 65536)
    finally:
        os.close(master)
        os.close(slave)
    bars = bar_lines(screen)
    assert set(bars) == {"first step", "second step"}
    assert "2/2" in bars["first step"] and "5/10" in bars["second step"]

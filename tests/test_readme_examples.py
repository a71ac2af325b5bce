"""The commands of README.md's "Usage" section run as written, from a clean checkout.

Each fenced ``bash`` block of the section runs top to bottom through bash, with the venv's
``corral`` first on PATH, in a fresh directory holding only ``examples/`` (so files a command
writes, like ``before.json``, exist only if the README makes them first). A line ending in
``&`` that starts the agent is started as written (on a free port, with a temporary state
file) and the lines after it talk to it. Every command must exit 0, and print one JSON
document when it has ``--json``. Commands not run here are in `NOT_RUN` with the reason.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from corral.bench.agent_process import free_port

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"

NOT_RUN: dict[str, str] = {
    "sudo corral apply --workloads examples/workloads-small.yaml": (
        "writes the host's real cgroups; tests/test_enforce_real_v1.py applies to the real "
        "hierarchy and cleans up"
    ),
    "sudo corral drift --workloads examples/workloads-small.yaml --repair": (
        "repairs the host's real cgroups; tests/test_enforce_real_v1.py covers drift and repair"
    ),
    "sudo corral bench colocation --quick --out results/": (
        "needs root, memcached, stress-ng and about 3 minutes; tests/test_bench_colocation.py "
        "runs its smallest configuration"
    ),
    "sudo corral bench colocation --quick --scenario kernel": (
        "needs root, memcached, stress-ng and about 3 minutes; tests/test_bench_colocation.py "
        "runs its smallest configuration"
    ),
    "sudo corral bench colocation --quick --scenario oom-loop": (
        "needs root, memcached, stress-ng and about 3 minutes; tests/test_bench_colocation.py "
        "runs its smallest configuration with a cpu+vm-big antagonist"
    ),
    "corral doctor": (
        "probes the host's cgroups; tests/test_doctor_cli.py runs it as a subprocess and "
        "parses its output"
    ),
    "corral bench placement --quick": (
        "about a minute on 2 cores; tests/test_cli_json.py runs `bench placement` with one "
        "preset and tests/test_bench_placement.py the benchmark itself"
    ),
}
#: The README's demo address and state file, replaced by a free port and a temporary file.
DEMO_ADDRESS = "127.0.0.1:7791"
DEMO_STATE = "/tmp/corral-demo.db"


@dataclass(frozen=True)
class Example:
    """One command of the README: its text as written (continuations joined) and its words
    without the comment."""

    text: str
    words: tuple[str, ...]

    @property
    def key(self) -> str:
        """The command without its comment, as `NOT_RUN` names it."""
        return " ".join(self.words)


def usage_blocks(markdown: str) -> list[list[Example]]:
    """The fenced bash blocks of the "## Usage" section, each as its commands."""
    section = markdown.split("\n## Usage\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.DOTALL)
    out = []
    for block in blocks:
        joined = block.replace("\\\n", " ")
        examples = [
            Example(line.strip(), tuple(shlex.split(line, comments=True)))
            for line in joined.splitlines()
            if line.strip() and not line.strip().startswith("#")
        ]
        out.append(examples)
    return out


BLOCKS = usage_blocks(README.read_text())


def test_the_usage_section_has_commands_and_the_skip_list_is_current() -> None:
    keys = {e.key for block in BLOCKS for e in block}
    assert len(keys) > 10
    assert set(NOT_RUN) - keys == set(), "NOT_RUN names commands the README no longer has"


def test_a_file_a_command_reads_is_made_by_an_earlier_command() -> None:
    for block in BLOCKS:
        made: set[str] = set()
        for example in block:
            for i, word in enumerate(example.words):
                if word == "--previous":
                    assert example.words[i + 1] in made, example.text
            if ">" in example.words:
                made.add(example.words[example.words.index(">") + 1])


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A directory like a fresh clone's, for the commands' relative paths."""
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    return tmp_path


def _env() -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture
def background(checkout: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a block started with ``&``; stopped (SIGTERM, then SIGKILL) at the end."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def _start(command: str, cwd: Path, address: str) -> subprocess.Popen[bytes]:
    with (cwd / "agent.log").open("wb") as log:  # the child keeps its own copy
        proc = subprocess.Popen(
            ["bash", "-c", f"exec {command}"],
            cwd=cwd,
            env=_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    deadline = time.monotonic() + 60
    while not _healthy(f"http://{address}"):
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = (cwd / "agent.log").read_text()[-2000:]
            pytest.fail(f"the README's agent did not start: {command}\n{tail}")
        time.sleep(0.1)
    return proc


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=lambda i: f"block{i + 1}")
def test_every_usage_command_runs_as_written(
    index: int, checkout: Path, background: list[subprocess.Popen[bytes]]
) -> None:
    address = f"127.0.0.1:{free_port()}"
    for example in BLOCKS[index]:
        if example.key in NOT_RUN:
            continue
        command = example.text.replace(DEMO_ADDRESS, address)
        command = command.replace(DEMO_STATE, str(checkout / "demo.db"))
        if example.words[0] == "sudo":
            if os.geteuid() != 0:
                continue  # needs root; the same command runs where the tests run as root
            command = command.removeprefix("sudo ")
        if command.rstrip().endswith("&"):
            assert example.words[:2] == ("corral", "agent"), example.text
            background.append(_start(command.rstrip().rstrip("&"), checkout, address))
            continue
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=checkout,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert done.returncode == 0, (example.text, done.stderr[-2000:])
        if "--json" in example.words:
            target = example.words[example.words.index(">") + 1] if ">" in example.words else None
            json.loads((checkout / target).read_text() if target else done.stdout)

"""Every command with ``--json`` prints one JSON document on stdout and nothing else, as a
program reading it sees it: a real subprocess, the whole stdout through ``json.loads``.

`JSON_ARGS` holds, per command path, arguments that work offline on this host (commands of
a running agent get one, started on a loopback port with a temporary state directory, in dry
run). A command that gains ``--json`` without an entry in the table fails
`test_every_json_command_has_arguments_in_the_table`. Errors under ``--json`` are JSON too.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer.main

from corral.bench.agent_process import AgentProcess, free_port
from corral.cli import app, walk
from corral.commands.client import agent_address
from corral.errors import InputError
from tests.test_predict_model import daily_cycle_frame

ROOT = Path(__file__).parents[1]


@dataclass(frozen=True)
class Run:
    """How to run one command offline: its arguments (``{agent}``, ``{tmp}``, ``{trace}``
    are filled in), the exit codes that are not failures, or why it is not run here."""

    args: tuple[str, ...] = ()
    codes: tuple[int, ...] = (0,)
    skip: str = ""
    root: bool = False


JSON_ARGS: dict[str, Run] = {
    "topology": Run(("--source", "epyc-7742-2s")),
    "place": Run(("--topology", "epyc-7742-2s", "--workloads", "examples/workloads.yaml")),
    "apply": Run(("--workloads", "examples/workloads-small.yaml", "--dry-run")),
    # Read-only: a parent that does not exist reports every file missing (exit 1).
    "drift": Run(
        ("--workloads", "examples/workloads-small.yaml", "--parent", "corral-json-test"),
        codes=(0, 1),
    ),
    "status": Run(("--agent", "{agent}")),
    "rebalance": Run(("--agent", "{agent}")),
    "workloads ls": Run(("--agent", "{agent}")),
    "workloads add": Run(("json-web", "--cpus", "1", "--qos", "LC", "--agent", "{agent}")),
    "doctor": Run(codes=(0, 1)),  # the exit code says whether corral can enforce here
    "predict train": Run(
        ("--train", "{trace}", "--out", "{tmp}/model.json", "--max-train-rows", "2000")
    ),
    "predict eval": Run(("--train", "{trace}", "--max-train-rows", "2000")),
    "predict show": Run(("{tmp}/model.json",)),  # the model `predict train` wrote
    "bench placement": Run(
        ("--quick", "--preset", "toy-16", "--instances", "1", "--family-only", "--budget-ms", "5")
    ),
    "bench agent": Run(
        tuple(
            shlex.split(
                "--quick --mode closed --seconds 0.5 --idle 1 --workloads 2 --clients 1 "
                "--topology toy-16 --allocator greedy"
            )
        )
    ),
    "bench predict": Run(("--trace", "{trace}", "--format", "corral", "--series", "20")),
    "bench enforce": Run(("--workloads", "2", "--repeats", "1"), root=True),
    "bench cli": Run(("--repeat", "1", "--no-agent")),
    "bench colocation": Run(
        skip="needs root, memcached, stress-ng and minutes; its smallest run is "
        "tests/test_bench_colocation.py::test_smallest_benchmark_calibrates_its_slo_and_"
        "leaves_nothing_behind"
    ),
    "bench cluster": Run(
        skip="starts kube-apiserver, etcd and kube-scheduler and schedules pods for about a "
        "minute; tests/test_bench_cluster.py runs the quick bench on the real scheduler"
    ),
    "bench kube-node": Run(
        skip="starts a real kube-apiserver and etcd and creates pods for tens of seconds; "
        "tests/test_kube_agent.py covers the agent in Kubernetes mode"
    ),
}
# Run in this order: `predict show` reads the model `predict train` wrote.
ORDER = sorted(JSON_ARGS, key=lambda p: (p == "predict show", p))


def json_commands() -> list[str]:
    """Paths of every command of the app that has a ``--json`` option."""
    return [
        " ".join(path)
        for path, command in walk(typer.main.get_command(app))
        if any("--json" in getattr(param, "opts", ()) for param in command.params)
    ]


def corral(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "corral.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        check=False,
        env=env,
    )


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    settings = {"topology": "toy-16", "dry_run": True, "coalesce_window_s": 0.05}
    proc = AgentProcess(tmp_path_factory.mktemp("json-agent"), settings)
    proc.start(timeout_s=180)  # a loaded 2-core host can take a while to import it
    try:
        yield proc
    finally:
        proc.terminate()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("json-commands")


@pytest.fixture(scope="module")
def trace(workdir: Path) -> Path:
    path = workdir / "daily.csv"
    daily_cycle_frame(days=4, series=2).to_csv(path, index=False)
    return path


def test_every_json_command_has_arguments_in_the_table() -> None:
    found = set(json_commands())
    assert found - set(JSON_ARGS) == set(), "add these --json commands to JSON_ARGS"
    assert set(JSON_ARGS) - found == set(), "JSON_ARGS names commands that no longer exist"


@pytest.mark.parametrize("path", ORDER)
def test_json_output_is_one_document(
    path: str, request: pytest.FixtureRequest, workdir: Path, trace: Path
) -> None:
    run = JSON_ARGS[path]
    if run.skip:
        pytest.skip(run.skip)
    if run.root and os.geteuid() != 0:
        pytest.skip("needs root: it writes real cgroups (and removes them)")
    fill = {"tmp": str(workdir), "trace": str(trace)}
    if any("{agent}" in a for a in run.args):  # the agent starts only for its commands
        agent: AgentProcess = request.getfixturevalue("agent")
        fill["agent"] = f"127.0.0.1:{agent.port}"
    args = [a.format(**fill) for a in run.args]
    out = corral(*path.split(), *args, "--json")
    assert out.returncode in run.codes, out.stderr[-2000:]
    json.loads(out.stdout)  # the whole stdout, nothing before or after the document


@pytest.mark.parametrize(
    ("args", "field", "message"),
    [
        (("place", "--request", "0"), "--request", "at least one CPU"),
        (("place", "--topology", "toy-16"), "--request N | --workloads FILE", "exactly one"),
        (("topology", "--source", "no-such-preset"), "topology", "not 'sysfs', a preset"),
        (("place", "--request", "two"), "--request", "--request"),
        (("place", "--no-such-option"), None, "No such option"),
    ],
)
def test_errors_under_json_are_one_error_document_and_exit_2(
    args: tuple[str, ...], field: str | None, message: str
) -> None:
    out = corral(*args, "--json")
    assert out.returncode == 2
    doc = json.loads(out.stdout)
    assert set(doc) == {"error"}
    assert doc["error"]["field"] == field
    assert message in doc["error"]["message"]
    assert set(doc["error"]) >= {"message", "field", "fix"}
    assert "Traceback" not in out.stderr


def test_input_errors_carry_their_fix_and_keep_the_stderr_line() -> None:
    out = corral("place", "--request", "0", "--json")
    doc = json.loads(out.stdout)
    assert doc["error"]["fix"] == "ask for at least one CPU, e.g. --request 4"
    assert out.stderr.startswith("error: --request: 0 CPUs is not a request")


def test_an_unreachable_agent_under_json_is_an_error_document() -> None:
    port = free_port()  # nothing listens there
    out = corral("status", "--agent", f"127.0.0.1:{port}", "--json")
    assert out.returncode == 2
    doc = json.loads(out.stdout)
    assert f"127.0.0.1:{port}" in doc["error"]["message"]
    assert out.stderr.startswith("error: no corral agent answers")


def test_without_json_errors_stay_off_stdout() -> None:
    out = corral("place", "--request", "0")
    assert out.returncode == 2
    assert out.stdout == ""
    assert "error: --request" in out.stderr


def test_a_refused_request_under_json_is_an_error_document_with_exit_1() -> None:
    out = corral("place", "--topology", "toy-16", "--request", "40", "--json")
    assert out.returncode == 1
    doc = json.loads(out.stdout)
    assert doc["error"]["kind"] == "PlacementError"
    assert "requested=40, available=16" in doc["error"]["message"]


@pytest.mark.parametrize(
    ("given", "url", "socket"),
    [
        ("127.0.0.1:7791", "http://127.0.0.1:7791", None),
        ("http://127.0.0.1:7791/", "http://127.0.0.1:7791", None),
        ("https://agent.example:443", "https://agent.example:443", None),
        ("[::1]:7791", "http://[::1]:7791", None),
        ("/run/corral.sock", None, Path("/run/corral.sock")),
        ("unix:///run/corral.sock", None, Path("/run/corral.sock")),
    ],
)
def test_agent_addresses_as_help_shows_them(
    given: str, url: str | None, socket: Path | None
) -> None:
    assert agent_address(given, None) == (url, socket)


@pytest.mark.parametrize("given", ["ftp://host:1", "localhost", "host:port"])
def test_a_bad_agent_address_names_the_option(given: str) -> None:
    with pytest.raises(InputError) as caught:
        agent_address(given, None)
    assert caught.value.field == "--agent"


def test_the_agent_url_from_the_environment_gets_the_same_rules(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CORRAL_AGENT_URL", "127.0.0.1:9")
    assert agent_address(None, None) == ("http://127.0.0.1:9", None)
    assert agent_address(None, Path("/s")) == (None, Path("/s"))

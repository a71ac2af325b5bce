"""Start a real `corral agent` as a subprocess on a loopback port (benchmarks and tests)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import yaml

from corral.agent.client import AgentClient
from corral.errors import CorralError


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_seconds(pid: int, *, proc_root: Path = Path("/proc")) -> float:
    """User + system CPU time of a process from ``/proc/<pid>/stat`` (fields 14 and 15)."""
    text = (proc_root / str(pid) / "stat").read_text()
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = text[text.rindex(")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


class AgentProcess:
    """One agent subprocess with its own state directory and config file.

    ``settings`` are written to ``<state_dir>/agent.yaml``; ``listen`` and ``state_path``
    are filled in unless given. Use as a context manager: the process is stopped on exit.
    """

    def __init__(
        self,
        state_dir: Path,
        settings: dict[str, Any] | None = None,
        *,
        python: str = sys.executable,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.state_dir = state_dir
        self.port = free_port()
        self.settings: dict[str, Any] = {
            "listen": f"127.0.0.1:{self.port}",
            "state_path": str(state_dir / "state.db"),
            **(settings or {}),
        }
        if self.settings.get("listen") is None:
            self.port = 0
        self.config_path = state_dir / "agent.yaml"
        self.log_path = state_dir / "agent.log"
        self._python = python
        self._extra = extra_args
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The agent's base URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The process id (`CorralError` before `start`)."""
        return self._process().pid

    def _process(self) -> subprocess.Popen[bytes]:
        if self.proc is None:
            raise CorralError("the agent was not started: call start() first")
        return self.proc

    def start(self, *, timeout_s: float = 30.0) -> AgentProcess:
        """Start the agent and wait until it answers /healthz (or its socket exists)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.settings))
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    self._python,
                    "-m",
                    "corral.cli",
                    "agent",
                    "--config",
                    str(self.config_path),
                    *self._extra,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise CorralError(
                    f"the agent exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            if self._ready():
                return self
            time.sleep(0.05)
        self.kill()
        raise CorralError(f"the agent did not answer within {timeout_s} s:\n{self.log_tail()}")

    def _ready(self) -> bool:
        sock = self.settings.get("unix_socket")
        if self.port == 0:
            return sock is not None and Path(sock).exists()
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200
        except httpx.TransportError:
            return False

    def client(self, **kwargs: Any) -> AgentClient:
        """A client of this agent."""
        return AgentClient(self.url, **kwargs)

    def log_tail(self, lines: int = 40) -> str:
        """The end of the agent's log."""
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def kill(self) -> None:
        """``kill -9`` and reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def terminate(self, *, timeout_s: float = 15.0) -> int:
        """SIGTERM, wait, and return the exit code (SIGKILL if it does not stop in time)."""
        proc = self._process()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        return proc.returncode

    def __enter__(self) -> AgentProcess:
        return self.start() if self.proc is None else self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.terminate()

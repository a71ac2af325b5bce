"""The state filesystem fills up under a running agent: writes are refused with 503 and the
reason, the agent stays up and live, and it takes writes again once space returns; nothing
it acknowledged is lost across a restart."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import httpx
import pytest

from corral.bench.agent_process import AgentProcess

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root"),
]


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(path: Path) -> None:
    with suppress(OSError), path.open("wb") as handle:
        while True:
            handle.write(b"\0" * 65536)
            handle.flush()


def test_disk_full_gives_503_with_the_reason_and_the_agent_recovers(
    tmp_path: Path, small_fs: Path
) -> None:
    settings = {
        "topology": "toy-16",
        "dry_run": True,
        "state_path": str(small_fs / "state.db"),
        "coalesce_window_s": 0.01,
    }
    acknowledged: set[str] = set()
    with (
        AgentProcess(tmp_path / "agent", settings) as agent,
        httpx.Client(base_url=agent.url, timeout=30) as http,
    ):
        for i in range(5):
            assert http.put(f"/workloads/w{i}", json={"cpus": 0.1}).status_code == 202
            acknowledged.add(f"w{i}")
        _fill(small_fs / "filler")
        refused = None
        for i in range(5, 400):
            response = http.put(f"/workloads/w{i}", json={"cpus": 0.1, "qos": "LC"})
            if response.status_code == 202:
                acknowledged.add(f"w{i}")
                continue
            refused = response
            break
        assert refused is not None, "the full filesystem never refused a write"
        assert refused.status_code == 503, refused.text
        body = refused.json()
        assert body["field"] == "state" and body["fix"]
        assert "space" in body["detail"].lower() or "full" in body["detail"].lower()
        assert http.get("/healthz").status_code == 200
        assert http.get("/status").status_code == 200
        (small_fs / "filler").unlink()  # space returns
        again = http.put("/workloads/after", json={"cpus": 0.1})
        assert again.status_code == 202, again.text
        acknowledged.add("after")
        placed = http.put("/workloads/waited?wait=true", json={"cpus": 1, "qos": "LC"})
        assert placed.status_code == 201, placed.text
        acknowledged.add("waited")
        assert agent.terminate() == 0
    with (
        AgentProcess(tmp_path / "agent", settings) as agent,
        httpx.Client(base_url=agent.url, timeout=30) as http,
    ):
        stored = {w["id"] for w in http.get("/workloads").json()["workloads"]}
        assert acknowledged <= stored
        assert agent.terminate() == 0

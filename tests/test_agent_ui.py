"""The agent's web view (/ui): the ring buffer and the JSON in-process, the page in a real
headless Chromium (Debian's ``chromium``, driven over the DevTools protocol) against real
agent subprocesses (dry run, preset topologies, 40+ workloads of every policy)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from prometheus_client import CollectorRegistry

from corral.agent.api import create_app
from corral.agent.config import AgentSettings
from corral.agent.enforcer import DryRunEnforcer
from corral.agent.service import AgentService
from corral.agent.state import StateStore
from corral.agent.ui import HostHistory
from corral.agent.ui.history import entries_from, point_from
from corral.agent.ui.routes import cpu_usage, load_assets
from corral.bench.agent_process import AgentProcess
from corral.topology.cpuset import CpuSet
from corral.topology.presets import epyc_7742_2s, toy_16
from tests import polling

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOT_COPY = os.environ.get("CORRAL_UI_SCREENSHOT")
"""Where to copy the controller test's screenshot too (the README's docs/ image)."""

# --- 42 workloads of every policy and QoS on epyc-7742-2s (256 CPUs) --------------------
WORKLOADS: dict[str, dict[str, Any]] = {
    **{
        f"web-{i:02d}": {"qos": "LC", "cpus": (2, 4, 6, 8)[i % 4], "policy": "exclusive"}
        for i in range(1, 17)
    },
    **{f"cache-{i}": {"qos": "LC", "cpus": 2 + i % 3, "policy": "numa"} for i in range(1, 9)},
    **{
        f"batch-{i:02d}": {"qos": "BE", "cpus": 1 + i % 4, "policy": "shared"} for i in range(1, 13)
    },
    "api-gw": {"qos": "LC", "cpus": 2, "policy": "shared"},
    "search": {"qos": "LC", "cpus": 3, "policy": "shared", "predicted_cpus": 1.5},
    "node-exporter": {"qos": "system", "cpus": 1, "policy": "immovable", "cpuset": "255"},
    "logd": {"qos": "system", "cpus": 1, "policy": "immovable", "cpuset": "254"},
    "dns": {"qos": "system", "cpus": 1, "policy": "immovable", "cpuset": "126"},
    "sshd": {"qos": "system", "cpus": 1, "policy": "immovable", "cpuset": "127"},
}


def put_all(http: httpx.Client, workloads: dict[str, dict[str, Any]]) -> None:
    """PUT every workload (acknowledged, decided in a few coalesced batches) and wait until
    each is placed."""
    for wid, spec in workloads.items():
        response = http.put(f"/workloads/{wid}", json=spec)
        assert response.status_code in (200, 201, 202), response.text
    wait_for(
        "every workload placed",
        lambda: all(w["status"] == "placed" for w in http.get("/workloads").json()["workloads"]),
    )


wait_for = functools.partial(polling.wait_for, timeout_s=30.0)
"""`tests.polling.wait_for` with this file's 30 s timeout."""


# --- the ring buffer and the JSON, in-process ----------------------------------------------
class FakeStatus:
    """A status source whose documents the test sets (the real agent is used below)."""

    def __init__(self) -> None:
        self.doc: dict[str, Any] = {"control": None, "recent_events": []}
        self.rows: list[dict[str, Any]] = []

    def status(self) -> dict[str, Any]:
        return self.doc

    def workloads_json(self) -> list[dict[str, Any]]:
        return self.rows


def test_the_history_keeps_one_hour_and_each_event_once() -> None:
    now = [1000.0]
    source = FakeStatus()
    history = HostHistory(source, cpus=16, period_s=10, keep_s=60, clock=lambda: now[0])
    event = {"at_s": 999.0, "kind": "add", "workload_id": "a", "decision_id": 1, "detail": ""}
    source.doc = {
        "control": {
            "mode": "grow",
            "slack": 0.6,
            "load": 0.3,
            "be": {"cpus": "4-7,12-15"},
            "lc": [{"name": "cache", "latency_ms": 0.4, "slo": {"target_ms": 1.0}}],
        },
        "recent_events": [event],
        "last_decision": {"id": 1, "at_s": 999.0, "trigger": "add", "workloads": 1},
    }
    source.rows = [
        {"id": "b", "spec": {"qos": "BE"}, "usage_cores": 2.0, "cpuset": "4-7"},
        {"id": "a", "spec": {"qos": "LC"}, "usage_cores": None, "cpuset": "0-1"},
    ]
    for _ in range(10):
        history.sample()
        now[0] += 10
    doc = history.to_json()
    assert len(doc["points"]) == 7  # 60 s kept at one point per 10 s (both ends)
    assert [p["t"] for p in doc["points"]] == [1030.0 + 10 * i for i in range(7)]
    point = doc["points"][-1]
    assert point["lc"] == [{"name": "cache", "latency_ms": 0.4, "target_ms": 1.0, "load_rps": None}]
    assert (point["be_cpus"], point["be_share"], point["be_usage_share"]) == (8, 0.5, 0.125)
    assert point["lc_usage_share"] is None  # no LC usage sampled
    assert [e["kind"] for e in doc["events"]] == ["add", "decision"]  # seen 10 times, kept once
    assert history.to_json(after_seq=doc["last_seq"])["events"] == []
    assert history.to_json(since_s=1080.0)["points"] == [doc["points"][-1]]


def test_without_a_controller_points_carry_usage_only() -> None:
    rows = [{"id": "b", "spec": {"qos": "BE"}, "usage_cores": 1.0, "cpuset": "0"}]
    point = point_from({"control": None}, rows, cpus=4, at_s=5.0)
    assert (point.mode, point.lc, point.be_cpus, point.be_usage_share) == (None, (), None, 0.25)
    assert entries_from({"recent_events": [], "last_decision": None}) == []


def test_usage_is_spread_over_the_cpus_a_workload_runs_on() -> None:
    topo = toy_16()
    rows: list[dict[str, Any]] = [
        {"id": "lc", "usage_cores": 1.0, "cpuset": "0-1"},
        {"id": "be", "usage_cores": 3.0, "cpuset": "0-15"},
        {"id": "idle", "usage_cores": None, "cpuset": "2"},
    ]
    usage = cpu_usage(topo, rows, {"be": CpuSet.parse("4-5")})
    assert usage == {"0": 0.5, "1": 0.5, "4": 1.0, "5": 1.0}  # be's 1.5 per CPU is capped


def test_the_page_files_ship_with_the_package_and_load_nothing_from_elsewhere() -> None:
    assets = load_assets()
    assert set(assets) == {"index.html", "app.js", "style.css"}
    assert 'src="/ui/static/app.js"' in assets["index.html"].body.decode()
    for name, asset in assets.items():
        text = asset.body.decode().replace("http://www.w3.org/2000/svg", "")  # a namespace
        assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/|@import", text), name


def test_the_page_is_open_and_its_data_needs_the_token(tmp_path: Path) -> None:
    settings = AgentSettings(state_path=tmp_path / "s.db", topology="toy-16", dry_run=True)
    store = StateStore(settings.state_path)
    service = AgentService(
        settings=settings, topology=toy_16(), store=store, enforcer=DryRunEnforcer(toy_16())
    )

    async def main() -> list[int]:
        await service.start()
        app = create_app(service, registry=CollectorRegistry(), token="s3cret")
        transport = httpx.ASGITransport(app=app)
        good = {"Authorization": "Bearer s3cret"}
        async with httpx.AsyncClient(transport=transport, base_url="http://agent") as client:
            page = await client.get("/ui")
            assert "default-src 'none'" in page.headers["content-security-policy"]
            host = await client.get("/ui/api/host", headers=good)
            assert len(host.json()["topology"]["cpus"]) == 16
            return [
                page.status_code,
                (await client.get("/ui/static/app.js")).status_code,
                (await client.get("/ui/static/nope.js")).status_code,
                (await client.get("/ui/api/host")).status_code,
                (await client.get("/ui/api/history", headers={"Authorization": "x"})).status_code,
                host.status_code,
                (await client.get("/ui/api/history", headers=good)).status_code,
            ]

    try:
        assert asyncio.run(main()) == [200, 200, 404, 401, 401, 200, 200]
    finally:
        service.close()


# --- a real browser ---------------------------------------------------------------------
class Browser:
    """Headless Chromium with its own profile directory, one page driven over the DevTools
    protocol (a websocket); console errors and uncaught exceptions are collected."""

    def __init__(self, binary: str, profile: Path) -> None:
        import websocket  # the websocket-client package (test extra)

        self.profile = profile
        profile.mkdir(parents=True)
        self._log = (profile.parent / "chromium.log").open("wb")
        self.proc = subprocess.Popen(
            [
                binary,
                "--headless",
                "--no-sandbox",  # runs as root here
                "--disable-gpu",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--mute-audio",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--window-size=1440,900",
                "about:blank",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.session: str | None = None
        active = profile / "DevToolsActivePort"

        def port() -> list[str] | None:
            self._exited()
            lines = active.read_text().split() if active.exists() else []
            return lines if len(lines) == 2 else None

        lines = wait_for("Chromium's DevTools port", port)
        self.ws = websocket.create_connection(f"ws://127.0.0.1:{lines[0]}{lines[1]}", timeout=30)
        self._id = 0
        self.events: list[dict[str, Any]] = []
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        attached = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})
        self.session = attached["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")

    def _exited(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"chromium exited with {self.proc.returncode}")

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send one DevTools command (to the page once attached) and return its result."""
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if self.session is not None:
            message["sessionId"] = self.session
        self.ws.send(json.dumps(message))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            self.events.append(reply)

    def js(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (awaited, by value)."""
        result = self.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str, width: int = 1440, height: int = 900) -> None:
        """Load ``url`` at a laptop's window size."""
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        self.call("Page.navigate", {"url": "about:blank"})  # stop the last page's polling
        self.js("1")
        self.events.clear()  # errors count from this page on
        self.call("Page.navigate", {"url": url})
        wait_for("the page to load", lambda: self.js("document.readyState") == "complete")

    def click(self, selector: str) -> None:
        """A real mouse click in the middle of the element ``selector`` names."""
        self.js(
            f"document.querySelector({json.dumps(selector)}).scrollIntoView({{block: 'center'}})"
        )
        x, y = self.js(
            f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
            ".getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1},
            )

    def errors(self) -> list[str]:
        """Console errors, failed loads and uncaught exceptions seen so far."""
        out = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                out.append(json.dumps(params["exceptionDetails"])[:500])
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                out.append(json.dumps(params.get("args"))[:500])
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                out.append(f"{params['entry'].get('text')} {params['entry'].get('url', '')}")
        return out

    def screenshot(self, path: Path) -> Path:
        """A PNG of the whole page."""
        size = self.call("Page.getLayoutMetrics")["cssContentSize"]
        shot = self.call(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {
                    "x": 0,
                    "y": 0,
                    "width": size["width"],
                    "height": size["height"],
                    "scale": 1,
                },
            },
        )
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def close(self) -> None:
        """Stop the browser and remove its profile."""
        try:
            self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
            self._log.close()
            # Its helper processes may still write the profile for a moment after it exits.
            deadline = time.monotonic() + 10
            while self.profile.exists() and time.monotonic() < deadline:
                shutil.rmtree(self.profile, ignore_errors=True)
                time.sleep(0.05)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (.ci/system-packages installs Debian's chromium)")
    browser = Browser(CHROMIUM, tmp_path_factory.mktemp("chromium") / "profile")
    try:
        yield browser
    finally:
        browser.close()
    assert browser.proc.returncode is not None and not browser.profile.exists()


def assert_not_blank(png: Path) -> None:
    """The PNG decodes and shows a real picture: many colours, not one flat fill."""
    from matplotlib import image

    pixels = image.imread(png)
    assert pixels.shape[0] > 400 and pixels.shape[1] >= 1000
    flat = pixels[:, :, :3].reshape(-1, 3)
    assert flat.std() > 0.05
    assert len({tuple(p) for p in flat[:: max(1, len(flat) // 50000)].tolist()}) > 50


CPU_FACTS = """(() => {
  const cpus = [...document.querySelectorAll('#map [data-cpu]')];
  return {
    ids: cpus.map((el) => Number(el.dataset.cpu)),
    held: cpus.filter((el) => el.dataset.workload)
      .map((el) => [el.dataset.cpu, el.dataset.workload, el.getAttribute('fill')]),
    kinds: [...new Set(cpus.map((el) => el.dataset.kind))].sort(),
    rows: [...document.querySelectorAll('#workloads tbody tr')].map((tr) => tr.dataset.workload),
    swatches: [...document.querySelectorAll('#workloads tbody .swatch')]
      .map((el) => el.style.background),
    widths: cpus.map((el) => el.getBoundingClientRect().width),
    svg: document.querySelector('#map svg').getBoundingClientRect().toJSON(),
  };
})()"""


def test_the_page_draws_every_cpu_and_names_every_workload(
    browser: Browser, tmp_path: Path
) -> None:
    settings = {"topology": "epyc-7742-2s", "dry_run": True, "coalesce_window_s": 0.05}
    with (
        AgentProcess(tmp_path / "agent", settings) as agent,
        httpx.Client(base_url=agent.url, timeout=30) as http,
    ):
        put_all(http, WORKLOADS)
        placed = {w["id"]: w for w in http.get("/workloads").json()["workloads"]}
        browser.open(f"{agent.url}/ui")
        wait_for(
            "every workload in the table",
            lambda: (
                browser.js("document.querySelectorAll('#workloads tbody tr').length")
                == len(WORKLOADS)
            ),
        )
        facts = browser.js(CPU_FACTS)

        assert sorted(facts["ids"]) == list(range(256))  # one element per CPU
        assert sorted(facts["rows"]) == sorted(WORKLOADS)  # every workload named
        assert facts["kinds"] == ["exclusive", "immovable", "numa", "shared"]  # no CPU free
        held: dict[str, set[str]] = {}
        for cpu, wid, fill in facts["held"]:
            assert int(cpu) in CpuSet.parse(placed[wid]["cpuset"])
            held.setdefault(wid, set()).add(fill)
        solid = {w for w, s in WORKLOADS.items() if s["policy"] in ("exclusive", "immovable")}
        assert solid <= set(held)  # each exclusive and immovable workload is on the map
        fills = [next(iter(held[w])) for w in solid]
        assert all(len(held[w]) == 1 for w in solid) and len(set(fills)) == len(solid)
        assert len(set(facts["swatches"])) == len(WORKLOADS)  # colours differ per workload
        # numa and shared CPUs are hatched in their pool's pattern: one per NUMA node the
        # numa workloads were placed on (which nodes depends on how the PUTs were batched),
        # and the shared pool's
        pools = browser.js(
            "[...new Set([...document.querySelectorAll('#map [data-pool]')]"
            ".map((el) => el.getAttribute('fill')))]"
        )
        topology = epyc_7742_2s()
        spans = [
            topology.numa_nodes_of(CpuSet.parse(placed[wid]["cpuset"]))
            for wid, spec in WORKLOADS.items()
            if spec["policy"] == "numa"
        ]
        assert all(len(nodes) == 1 for nodes in spans)  # numa workloads keep to one node
        numa_nodes = {nodes[0] for nodes in spans}
        expected = {"url(#hatch-shared)", *(f"url(#hatch-numa-{n})" for n in numa_nodes)}
        assert set(pools) == expected

        # Clicking a CPU shows its workload, with the reason its CPUs were chosen.
        cpu = next(iter(CpuSet.parse(placed["web-03"]["cpuset"])))
        browser.click(f'#map [data-cpu="{cpu}"]')
        details = wait_for(
            "the details of web-03",
            lambda: (
                text
                if "web-03" in (text := browser.js("document.getElementById('details').innerText"))
                else None
            ),
        )
        web = placed["web-03"]
        for fact in ("exclusive", "LC", web["cpuset"], web["assignment_reason"], "request"):
            assert fact in details, (fact, details)
        selected = browser.js(
            "[...document.querySelectorAll('#map .cpu.sel')].map((el) => Number(el.dataset.cpu))"
        )
        assert set(selected) == set(CpuSet.parse(placed["web-03"]["cpuset"]))

        # The table filters; without a controller there is no time view.
        browser.js(
            "(() => { const f = document.getElementById('filter-policy');"
            " f.value = 'numa'; f.dispatchEvent(new Event('input')); })()"
        )
        rows = browser.js(
            "[...document.querySelectorAll('#workloads tbody tr')].map((tr) => tr.dataset.workload)"
        )
        assert sorted(rows) == sorted(w for w, s in WORKLOADS.items() if s["policy"] == "numa")
        assert browser.js("document.getElementById('time-section').hidden") is True
        assert browser.js("document.getElementById('no-control').hidden") is False

        # Live: a new workload appears without a reload.
        browser.js("window.__marker = 1")
        http.put("/workloads/late?wait=true", json={"qos": "LC", "cpus": 2, "policy": "exclusive"})
        wait_for(
            "the new workload on the map",
            lambda: (
                browser.js("document.querySelectorAll('#map [data-workload=\"late\"]').length") == 2
            ),
        )
        assert browser.js("window.__marker") == 1

        png = browser.screenshot(tmp_path / "ui.png")
        assert_not_blank(png)
        assert browser.errors() == []


def test_the_timeline_appears_when_the_controller_runs(browser: Browser, tmp_path: Path) -> None:
    latency = tmp_path / "lat.json"

    def write(p99_ms: float) -> None:
        tmp = latency.with_suffix(".tmp")
        tmp.write_text(json.dumps({"p99_ms": p99_ms, "rps": 20000}))
        tmp.replace(latency)

    write(0.3)
    control = {
        "top": {"period_s": 0.5, "cooldown_s": 2.0},
        "trial": {"settle_s": 0.5, "hold_s": 5.0},
        "sub_period_s": 0.5,
        "workloads": [
            {
                "name": "cache",
                "slo": {"percentile": 99, "target_ms": 1.0, "window_s": 1.0},
                "peak_rps": 40000,
                "latency": {"kind": "file", "path": str(latency), "stale_s": 3600},
            }
        ],
    }
    settings = {
        "topology": "epyc-7742-2s",
        "dry_run": True,
        "coalesce_window_s": 0.05,
        "control": control,
    }
    with (
        AgentProcess(tmp_path / "agent", settings) as agent,
        httpx.Client(base_url=agent.url, timeout=30) as http,
    ):
        put_all(http, WORKLOADS)
        browser.open(f"{agent.url}/ui")
        wait_for(
            "the time view", lambda: browser.js("!document.getElementById('time-section').hidden")
        )

        def recorded(p99_ms: float) -> bool:
            points = http.get("/ui/api/history").json()["points"]
            return any(lc["latency_ms"] == p99_ms for point in points for lc in point["lc"])

        for p99 in (0.5, 0.97, 1.4, 0.6):  # slack falls: BE shrinks, then is disabled
            write(p99)
            wait_for(f"a history point at {p99} ms", functools.partial(recorded, p99))
        wait_for(
            "a p99 line and its SLO",
            lambda: browser.js("document.querySelectorAll('#chart-latency polyline').length") >= 2,
        )
        wait_for(
            "BE share and load lines",
            lambda: browser.js("document.querySelectorAll('#chart-share polyline').length") >= 2,
        )
        log = wait_for(
            "controller decisions with reasons in the log",
            lambda: (
                text
                if "slack" in (text := browser.js("document.getElementById('log').innerText"))
                else None
            ),
        )
        assert "control" in log
        summary = browser.js("document.getElementById('control-summary').innerText")
        assert "cache" in summary and "SLO" in summary
        assert (
            browser.js("document.querySelectorAll('#map .be-mark[visibility=visible]').length") > 0
        )
        png = browser.screenshot(tmp_path / "ui-control.png")
        assert_not_blank(png)
        if SCREENSHOT_COPY:
            shutil.copyfile(png, SCREENSHOT_COPY)
        assert browser.errors() == []


class TokenAgent:
    """A real `AgentService` (dry run, toy-16) served by uvicorn on loopback with a bearer
    token, on a thread of its own (the agent subprocess only asks for a token off
    loopback, where tests must not listen)."""

    TOKEN = "s3cret-token"

    def __init__(self, state_dir: Path) -> None:
        self.settings = AgentSettings(
            state_path=state_dir / "state.db", topology="toy-16", dry_run=True
        )
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server: uvicorn.Server | None = None
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        topo = toy_16()
        service = AgentService(
            settings=self.settings,
            topology=topo,
            store=StateStore(self.settings.state_path),
            enforcer=DryRunEnforcer(topo),
        )
        await service.start()
        app = create_app(service, registry=CollectorRegistry(), token=self.TOKEN)
        self.server = uvicorn.Server(
            uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")
        )
        core = asyncio.create_task(service.run())
        try:
            await self.server.serve(sockets=[self.sock])
        finally:
            core.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await core
            service.close()

    def __enter__(self) -> TokenAgent:
        self.thread.start()
        wait_for("the server", lambda: self.server is not None and self.server.started)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.server is not None:
            self.server.should_exit = True
        self.thread.join(timeout=20)
        self.sock.close()
        assert not self.thread.is_alive()


def test_the_page_asks_for_the_token_once_and_sends_it_as_bearer(
    browser: Browser, tmp_path: Path
) -> None:
    with TokenAgent(tmp_path) as agent:
        page = httpx.get(f"{agent.url}/ui")
        assert page.status_code == 200  # the page itself is open: it asks for the token
        assert httpx.get(f"{agent.url}/ui/api/host").status_code == 401
        browser.open(f"{agent.url}/ui")
        wait_for(
            "the token form", lambda: browser.js("!document.getElementById('token-panel').hidden")
        )
        assert browser.js("document.querySelectorAll('#map [data-cpu]').length") == 0
        browser.js(f"document.getElementById('token-input').value = {json.dumps(agent.TOKEN)}")
        browser.click("#token-form button")
        wait_for(
            "the map after the token",
            lambda: browser.js("document.querySelectorAll('#map [data-cpu]').length") == 16,
        )
        assert browser.js("sessionStorage.getItem('corral.token')") == agent.TOKEN
        assert browser.js("document.getElementById('token-panel').hidden") is True
        # Only the first, token-less requests were refused.
        assert [e for e in browser.errors() if "401" not in e] == []


def test_a_384_thread_host_stays_readable_on_a_laptop_screen(
    browser: Browser, tmp_path: Path
) -> None:
    settings = {"topology": "epyc-9654-2s", "dry_run": True, "coalesce_window_s": 0.05}
    workloads = {f"w{i}": {"qos": "LC", "cpus": 8, "policy": "exclusive"} for i in range(10)} | {
        "be": {"qos": "BE", "cpus": 4}
    }
    with (
        AgentProcess(tmp_path / "agent", settings) as agent,
        httpx.Client(base_url=agent.url, timeout=30) as http,
    ):
        put_all(http, workloads)
        browser.open(f"{agent.url}/ui", width=1366, height=768)
        wait_for(
            "the map",
            lambda: browser.js("document.querySelectorAll('#map [data-cpu]').length") == 384,
        )
        facts = browser.js(CPU_FACTS)
        assert sorted(facts["ids"]) == list(range(384))
        assert min(facts["widths"]) >= 8  # each thread a visible, clickable cell
        assert facts["svg"]["right"] <= 1366  # no sideways scrolling
        assert facts["svg"]["height"] <= 768 * 0.75  # the whole host in one screen
        browser.screenshot(tmp_path / "ui-384.png")
        assert browser.errors() == []

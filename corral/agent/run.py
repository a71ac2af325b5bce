"""Run the agent: open the state, load the topology, choose the enforcer, serve the API on
TCP and/or a unix socket, reload the config on SIGHUP (`corral.agent.reload`), and stop
cleanly on SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import stat
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import uvicorn
from prometheus_client import CollectorRegistry

from corral.agent.admission import AdmissionMiddleware, LoopLag
from corral.agent.api import create_app
from corral.agent.cgroups import make_enforcer
from corral.agent.config import AgentSettings, load_settings
from corral.agent.enforcer import Enforcer
from corral.agent.metrics import AgentMetrics
from corral.agent.reload import ReloadOutcome, ReloadResult, plan_reload
from corral.agent.service import AgentControl, AgentService
from corral.agent.state import StateStore
from corral.control.actuator import ControlActuator
from corral.control.config import runtime_from_config
from corral.control.dcatrun import perf_cgroup_dirs
from corral.control.evict import BeWorkload
from corral.control.factory import make_actuator
from corral.control.metrics import register_metrics
from corral.control.ownership import CONTROLLED_FILES, be_pool_cores
from corral.control.runtime import Actuator, DryRunActuator, MemorySignals
from corral.enforce.cgroupfs import read_file, write_file
from corral.enforce.desired import EnforceSettings
from corral.enforce.marker import mark_for
from corral.errors import CorralError, InputError
from corral.placement.assignment import Placement
from corral.placement.workload import MAX_MEMORY_BYTES
from corral.topology.source import load_topology

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the agent owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _tcp_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says TCP,
    # and without it each keep-alive response waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise InputError(
            "listen",
            f"cannot listen on {host}:{port}: {err.strerror or err}",
            "choose another port or stop the process that holds it",
        ) from err
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def _unix_socket(path: Path) -> socket.socket:
    """Listen on ``path``, replacing only a stale socket there (never a regular file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(mode):
            raise InputError(
                "unix_socket",
                f"{path} exists and is not a socket",
                "give a path that is free or holds a stale corral socket",
            )
        if _answers(path):
            raise InputError(
                "unix_socket",
                f"{path} is the socket of a running process",
                "stop that agent, or give another --unix-socket",
            )
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # The socket is created 0600 (umask 0177), never briefly world-connectable.
    old = os.umask(0o177)
    try:
        sock.bind(str(path))
    except OSError as err:
        sock.close()
        raise InputError("unix_socket", f"cannot bind {path}: {err.strerror or err}") from err
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def controlled_be_files(settings: AgentSettings) -> frozenset[str]:
    """The agent's BE box files the controller owns: `CONTROLLED_FILES` when the config's
    controller acts on the agent's own BE box, else none (the enforcer owns them all)."""
    config = settings.control_config()
    if config is None:
        return frozenset()
    agent_box = EnforceSettings(parent=settings.cgroup_parent).be_box_path
    if config.cgroups.be not in (None, agent_box):
        return frozenset()
    if config.settings.memory.enabled:
        # senpai's limit on v1 is the box's hard limit (corral.control.memory).
        return CONTROLLED_FILES | {"memory.limit_in_bytes"}
    return CONTROLLED_FILES


async def build_control(
    settings: AgentSettings, enforcer: Enforcer, service: AgentService
) -> AgentControl | None:
    """The colocation controller of the config's control section (None without one).

    It acts on ``cgroups.be`` (default: the agent's own BE box, ``<cgroup_parent>/be``)
    through the actuator for this host (`corral.control.factory.make_actuator`: cgroup v1
    or v2, resctrl where mounted), or records its actions without writing when the agent
    runs dry. The cache ladders are cut to what the host can do, so the controller never
    reports ways or bandwidth it cannot set. Its writes go through the agent's effect
    executor; its actions and mode changes go to the agent's event log. Workloads left
    frozen by an earlier run are thawed now: a new controller starts from a fresh state.
    Raises `InputError` when the host has no writable cpu controller to act on.
    """
    config = settings.control_config()
    if config is None:
        return None
    agent_box = EnforceSettings(parent=settings.cgroup_parent).be_box_path
    be = config.cgroups.be or agent_box
    actuator: Actuator
    memory: MemorySignals | None = None
    real: ControlActuator | None = None
    if enforcer.dry_run:
        actuator = DryRunActuator()
    else:
        lc = config.cgroups.lc

        def made() -> ControlActuator:
            return make_actuator(
                cgroup_root=settings.cgroup_root,
                resctrl_root=settings.resctrl_root,
                be_group=be,
                lc_group=lc,
                writer=write_file,
                reader=read_file,
            )

        made_actuator = await service.effects.run(made)
        cache = made_actuator.fit_cache(config.settings.cache)
        config = replace(config, settings=replace(config.settings, cache=cache))
        actuator = memory = real = made_actuator
    workloads = _be_workloads(service, real if be != agent_box else None)
    runtime = runtime_from_config(
        config,
        cores=be_pool_cores(service.topology, Placement(assignments={}, pools={})),
        actuator=actuator,
        memory=memory,
        oom=real,
        workloads=workloads,
        listener=service.control_event,
        execute=service.effects.run,
        perf_cgroup=None if real is None else perf_cgroup_dirs(settings.cgroup_root, be),
    )
    if real is not None:
        frozen = await service.effects.run(real.frozen)
        await runtime.thaw(frozen, "left frozen by an earlier run of the controller")
    described = None if real is None else real.describe().to_json()
    return AgentControl(runtime, be, agent_box=be == agent_box, actuator=described)


def _be_workloads(
    service: AgentService, foreign: ControlActuator | None
) -> Callable[[], Sequence[BeWorkload]]:
    """The BE workloads the controller may freeze: the agent's own BE workloads, or the
    child cgroups of a foreign BE box (listed on the effect executor, never on the loop:
    each call returns the last listing and queues the next)."""
    if foreign is None:
        return lambda: [BeWorkload(wid) for wid in service.be_box_workloads()]
    known: list[BeWorkload] = []

    def refresh() -> None:
        known[:] = [BeWorkload(wid) for wid in foreign.workloads()]

    def listed() -> Sequence[BeWorkload]:
        service.effects.submit(refresh, what="list the BE box's workloads")
        return list(known)

    return listed


def _answers(path: Path) -> bool:
    """True when a process accepts connections on the unix socket at ``path``."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(0.5)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def host_memory_bytes(proc_root: Path) -> int | None:
    """MemTotal of this host in bytes (the bound of any memory request), None if unread."""
    try:
        for line in (proc_root / "meminfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key == "MemTotal":
                return int(value.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _remove_own_socket(path: Path, inode: int | None) -> None:
    """Unlink ``path`` only while it is still the socket this agent bound (``inode``)."""
    try:
        if inode is not None and path.lstat().st_ino == inode:
            path.unlink()
    except FileNotFoundError:
        pass


async def open_service(settings: AgentSettings) -> tuple[AgentService, CollectorRegistry]:
    """The agent's core as `serve` runs it, not started: topology, state, enforcer, the
    controller of the config's control section and the metrics registry. The caller owns
    it: ``await service.start()``, then ``service.run()``, then ``service.close()``."""
    topology = load_topology(settings.topology, sysfs_root=settings.sysfs_root)
    store = StateStore(
        settings.state_path, durability=settings.durability, reset_corrupt=settings.reset_state
    )
    try:
        enforcer = make_enforcer(
            topology,
            dry_run=settings.dry_run,
            cgroup_root=settings.cgroup_root,
            proc_root=settings.proc_root,
            parent=settings.cgroup_parent,
            controlled_be_files=controlled_be_files(settings),
        )
        service = AgentService(settings=settings, topology=topology, store=store, enforcer=enforcer)
    except BaseException:
        store.close()
        raise
    if enforcer.dry_run:
        log.warning("agent.dry_run", extra={"why": enforcer.describe()})
    try:
        mark = mark_for("agent", str(settings.state_path), proc_root=settings.proc_root)
        await service.effects.run(lambda: enforcer.claim(mark))
    except BaseException:
        service.close()
        raise
    registry = CollectorRegistry()
    service.observer = AgentMetrics(registry, service.gauges)
    try:
        service.control = await build_control(settings, enforcer, service)
    except BaseException:
        service.close()
        raise
    if service.control is not None:
        register_metrics(registry, service.control.runtime.snapshot)
    return service, registry


class ConfigReloader:
    """Reads the agent's config again when asked (SIGHUP) and applies what may change
    live (`corral.agent.reload`): the same ``--config`` file (or the same search) and CLI
    flags as at start, compared with what was loaded last."""

    def __init__(
        self,
        service: AgentService,
        admissions: Sequence[AdmissionMiddleware] = (),
        *,
        requested: asyncio.Event | None = None,
    ) -> None:
        self._service = service
        self._admissions = tuple(admissions)
        self._source = service.settings.source
        self._loaded: dict[str, Any] = dict(self._source.loaded) if self._source else {}
        self.requested = requested or asyncio.Event()

    async def run(self) -> None:
        """Reload each time `requested` is set, until cancelled (a root task)."""
        while True:
            await self.requested.wait()
            self.requested.clear()
            await self.reload()

    async def reload(self) -> ReloadResult:
        """Read the config (off the loop), apply its live changes, log one line per field
        that needs a restart; an invalid config changes nothing. The result is recorded
        in the service (/status ``config``, metrics) and returned."""
        source = self._source
        now = time.time()
        if source is None:
            problem = "these settings were not read by load_settings: nothing to re-read"
            fix = "start the agent with corral agent [--config PATH]"
            log.error("agent.reload_refused", extra={"error": problem, "fix": fix})
            result = ReloadResult(now, ReloadOutcome.INVALID, None, error=problem, fix=fix)
            self._service.reloads.record(result)
            return result
        given, overrides, path = source.given, source.overrides, source.path
        try:
            new = await asyncio.to_thread(load_settings, given, overrides)
        except CorralError as err:
            field = getattr(err, "field", None)
            problem = getattr(err, "problem", str(err))
            fix = getattr(err, "fix", "") or "fix the file and send SIGHUP again"
            log.error(
                "agent.reload_refused",
                extra={"path": str(path), "field": field, "error": problem, "fix": fix},
            )
            result = ReloadResult(now, ReloadOutcome.INVALID, path, (), (), problem, field, fix)
            self._service.reloads.record(result)
            return result
        path = new.source.path if new.source is not None else path
        plan = plan_reload(self._loaded, new)
        fresh = new.model_dump()
        for name in plan.restart:
            log.warning(
                "agent.reload_needs_restart",
                extra={
                    "field": name,
                    "running": _shown(name, self._loaded.get(name)),
                    "file": _shown(name, fresh.get(name)),
                    "fix": f"restart the agent to change {name}",
                },
            )
        if plan.live:
            self._apply(plan.live)
            self._loaded.update({name: fresh[name] for name in plan.live})
        result = ReloadResult(now, plan.outcome, path, tuple(plan.live), plan.restart)
        log.info(
            "agent.reloaded",
            extra={
                "path": str(path),
                "outcome": str(result.outcome),
                "applied": list(result.applied),
                "restart_needed": list(result.restart),
            },
        )
        self._service.reloads.record(result)
        return result

    def _apply(self, live: Mapping[str, Any]) -> None:
        settings = self._service.apply_settings(live)
        for admission in self._admissions:
            admission.limit = settings.max_concurrent_requests
            admission.max_lag_s = settings.max_loop_lag_s
        if "log_level" in live:
            logging.getLogger().setLevel(settings.log_level)


def _shown(name: str, value: Any) -> Any:
    """A setting's value as a log line may show it (never the token)."""
    return "<hidden>" if name == "token" and value is not None else value


Companion = Callable[[AgentService], Coroutine[Any, Any, None]]
"""A root task run beside the agent's own (the Kubernetes node integration): it gets the
started service and runs until cancelled; when it fails, the agent stops with its error."""


async def serve(settings: AgentSettings, companions: Sequence[Companion] = ()) -> None:
    """Run the agent until SIGTERM/SIGINT; returns after a clean shutdown. Each of
    ``companions`` runs as one more root task once the service has started."""
    sockets: list[tuple[socket.socket, str | None]] = []
    socket_inode: int | None = None
    # SIGHUP from now on asks for a reload (taken once the agent has started), never the
    # default action of ending the process.
    hup = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, hup.set)
    # Listen first: an agent that cannot serve must fail before it writes anything.
    try:
        address = settings.listen_address
        if address is not None:
            sockets.append((_tcp_socket(*address), settings.token))
        if settings.unix_socket is not None:
            sockets.append((_unix_socket(settings.unix_socket), None))
            socket_inode = settings.unix_socket.lstat().st_ino
        if not sockets:
            raise InputError("listen", "no listener", "give listen or unix_socket")
        service, registry = await open_service(settings)
    except BaseException:
        for sock, _ in sockets:
            sock.close()
        if settings.unix_socket is not None:
            _remove_own_socket(settings.unix_socket, socket_inode)
        raise
    memory_bound = host_memory_bytes(settings.proc_root) or MAX_MEMORY_BYTES
    lag = LoopLag()
    try:
        await service.start()
        admissions = [
            AdmissionMiddleware(
                create_app(
                    service,
                    registry=registry,
                    token=token if settings.needs_token() else None,
                    max_memory_bytes=memory_bound,
                ),
                limit=settings.max_concurrent_requests,
                lag=lag,
                max_lag_s=settings.max_loop_lag_s,
            )
            for _, token in sockets
        ]
        reloader = ConfigReloader(service, admissions, requested=hup)
        servers = [
            _Server(
                uvicorn.Config(
                    admission,
                    log_config=None,
                    access_log=False,
                    lifespan="off",
                    timeout_graceful_shutdown=5,
                )
            )
            for admission in admissions
        ]
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        for sock, _ in sockets:
            name = sock.getsockname()
            log.info("agent.listening", extra={"address": str(name)})
        async with asyncio.TaskGroup() as group:
            core = group.create_task(service.run(), name="core")
            watch = group.create_task(lag.run(), name="loop-lag")
            reloads = group.create_task(reloader.run(), name="reload")
            extra = [
                group.create_task(companion(service), name=f"companion-{i}")
                for i, companion in enumerate(companions)
            ]
            web = [
                group.create_task(server.serve(sockets=[sock]), name="http")
                for server, (sock, _) in zip(servers, sockets, strict=True)
            ]
            waiter = group.create_task(stop.wait(), name="signals")
            # A failing core task makes the group cancel this wait and raise its error.
            await asyncio.wait([core, waiter, *web, *extra], return_when=asyncio.FIRST_COMPLETED)
            log.info("agent.stopping")
            for server in servers:
                server.should_exit = True
            await asyncio.gather(*web, return_exceptions=True)
            for task in (core, waiter, watch, reloads, *extra):
                task.cancel()
    finally:
        for sock, _ in sockets:
            sock.close()
        if settings.unix_socket is not None:
            _remove_own_socket(settings.unix_socket, socket_inode)
        service.close()
        log.info("agent.stopped")

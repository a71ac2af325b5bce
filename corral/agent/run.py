"""Run the agent: open the state, load the topology, choose the enforcer, serve the API on
TCP and/or a unix socket, and stop cleanly on SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path

import uvicorn
from prometheus_client import CollectorRegistry

from corral.agent.api import create_app
from corral.agent.cgroups import make_enforcer
from corral.agent.config import AgentSettings
from corral.agent.enforcer import Enforcer
from corral.agent.metrics import AgentMetrics
from corral.agent.service import AgentControl, AgentService
from corral.agent.state import StateStore
from corral.control.cgroupv1 import CgroupV1Actuator
from corral.control.config import runtime_from_config
from corral.control.evict import BeWorkload
from corral.control.metrics import register_metrics
from corral.control.ownership import be_pool_cores
from corral.control.runtime import Actuator, DryRunActuator, MemorySignals
from corral.enforce.cgroupfs import read_file, write_file
from corral.enforce.desired import EnforceSettings
from corral.enforce.detect import Version, detect_cgroups
from corral.errors import InputError
from corral.placement.assignment import Placement
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
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
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


def build_control(
    settings: AgentSettings, enforcer: Enforcer, service: AgentService
) -> AgentControl | None:
    """The colocation controller of the config's control section (None without one).

    It acts on ``cgroups.be`` (default: the agent's own BE box, ``<cgroup_parent>/be``)
    through the cgroup v1 actuator, or records its actions without writing when the agent
    runs dry. Its actions and mode changes go to the agent's event log. Workloads left
    frozen by an earlier run are thawed now: a new controller starts from a fresh state.
    Raises `InputError` when the host has no cgroup v1 cpu controller to act on.
    """
    config = settings.control_config()
    if config is None:
        return None
    agent_box = EnforceSettings(parent=settings.cgroup_parent).be_box_path
    be = config.cgroups.be or agent_box
    actuator: Actuator
    memory: MemorySignals | None = None
    real: CgroupV1Actuator | None = None
    if enforcer.dry_run:
        actuator = DryRunActuator()
    else:
        cpu = detect_cgroups(settings.cgroup_root).hierarchy_of("cpu")
        if cpu is None or cpu.version is not Version.V1:
            raise InputError(
                "control",
                f"the controller writes cgroup v1 cpu/cpuset/freezer files and "
                f"{settings.cgroup_root} has no v1 cpu hierarchy",
                "run the agent on a cgroup v1 host, with --dry-run, or without a control section",
            )
        real = CgroupV1Actuator(
            cgroup_root=settings.cgroup_root,
            be_group=be,
            lc_group=config.cgroups.lc,
            writer=write_file,
            reader=read_file,
        )
        actuator = memory = real

    def workloads() -> Sequence[BeWorkload]:
        if be == agent_box or real is None:
            return [BeWorkload(wid) for wid in service.be_box_workloads()]
        return [BeWorkload(wid) for wid in real.workloads()]

    runtime = runtime_from_config(
        config,
        cores=be_pool_cores(service.topology, Placement(assignments={}, pools={})),
        actuator=actuator,
        memory=memory,
        workloads=workloads,
        listener=service.control_event,
    )
    if real is not None:
        runtime.thaw(real.frozen(), "left frozen by an earlier run of the controller")
    return AgentControl(runtime, be, agent_box=be == agent_box)


async def serve(settings: AgentSettings) -> None:
    """Run the agent until SIGTERM/SIGINT; returns after a clean shutdown."""
    topology = load_topology(settings.topology, sysfs_root=settings.sysfs_root)
    store = StateStore(settings.state_path)
    enforcer = make_enforcer(
        topology,
        dry_run=settings.dry_run,
        cgroup_root=settings.cgroup_root,
        proc_root=settings.proc_root,
        parent=settings.cgroup_parent,
    )
    if enforcer.dry_run:
        log.warning("agent.dry_run", extra={"why": enforcer.describe()})
    registry = CollectorRegistry()
    service = AgentService(settings=settings, topology=topology, store=store, enforcer=enforcer)
    service.observer = AgentMetrics(registry, service.gauges)
    sockets: list[tuple[socket.socket, str | None]] = []
    try:
        service.control = build_control(settings, enforcer, service)
        if service.control is not None:
            register_metrics(registry, service.control.runtime.snapshot)
        await service.start()
        address = settings.listen_address
        if address is not None:
            sockets.append((_tcp_socket(*address), settings.token))
        if settings.unix_socket is not None:
            sockets.append((_unix_socket(settings.unix_socket), None))
        if not sockets:
            raise InputError("listen", "no listener", "give listen or unix_socket")
        servers = [
            _Server(
                uvicorn.Config(
                    create_app(
                        service, registry=registry, token=token if settings.needs_token() else None
                    ),
                    log_config=None,
                    access_log=False,
                    lifespan="off",
                    timeout_graceful_shutdown=5,
                )
            )
            for _, token in sockets
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
            web = [
                group.create_task(server.serve(sockets=[sock]), name="http")
                for server, (sock, _) in zip(servers, sockets, strict=True)
            ]
            waiter = group.create_task(stop.wait(), name="signals")
            # A failing core task makes the group cancel this wait and raise its error.
            await asyncio.wait([core, waiter, *web], return_when=asyncio.FIRST_COMPLETED)
            log.info("agent.stopping")
            for server in servers:
                server.should_exit = True
            await asyncio.gather(*web, return_exceptions=True)
            core.cancel()
            waiter.cancel()
    finally:
        for sock, _ in sockets:
            sock.close()
        if settings.unix_socket is not None:
            with contextlib.suppress(FileNotFoundError):
                settings.unix_socket.unlink()
        service.close()
        log.info("agent.stopped")

"""Agent settings: one pydantic model, read from a YAML file and overridden by CLI flags.

Every field says its unit and why its default is what it is. Unknown keys are refused so a
typo in a config file never silently falls back to a default.

Where the file comes from (`load_settings`): ``--config PATH`` when given; otherwise the
first that exists of `default_config_paths`: ``$XDG_CONFIG_HOME/corral/agent.yaml`` (else
``~/.config/corral/agent.yaml``), then ``/etc/corral/agent.yaml``; none of them: the
embedded defaults. CLI flags override the file, and ``$CORRAL_AGENT_TOKEN`` gives a token
neither sets. The agent re-reads the same file on SIGHUP (`corral.agent.reload`).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from corral.agent.predictions import PredictorSettings
from corral.agent.state import Durability
from corral.control.config import ColocationConfig, parse_config
from corral.errors import InputError
from corral.placement.allocate import Allocator
from corral.placement.workload import check_cgroup_path
from corral.topology.cpuset import CpuSet

DEFAULT_PORT = 7781
SYSTEM_CONFIG = Path("/etc/corral/agent.yaml")
"""The system-wide config file (the systemd unit passes it with --config)."""


def default_config_paths(env: Mapping[str, str] | None = None) -> tuple[Path, ...]:
    """Where the agent looks for its config without ``--config``, first found wins:
    ``$XDG_CONFIG_HOME/corral/agent.yaml`` (else ``~/.config/corral/agent.yaml``), then
    `SYSTEM_CONFIG`."""
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or Path.home()) / ".config")
    return (Path(base) / "corral" / "agent.yaml", SYSTEM_CONFIG)


@dataclass(frozen=True, slots=True)
class ConfigSource:
    """Where a running agent's settings came from, so SIGHUP can read them again:
    ``given`` (--config, None when searched), ``path`` (the file read, None: defaults
    only), the CLI ``overrides`` and the ``loaded`` values (field -> value as read)."""

    given: Path | None
    path: Path | None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    loaded: Mapping[str, Any] = field(default_factory=dict)


class LogFormat(StrEnum):
    """How the agent writes its log: for people, or one JSON object per line."""

    HUMAN = "human"
    JSON = "json"


def default_state_path() -> Path:
    """``$XDG_DATA_HOME/corral/state.db``, else ``~/.local/share/corral/state.db``."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "corral" / "state.db"


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) -> (host, port); `ValueError` otherwise."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{text!r} is not HOST:PORT, e.g. 127.0.0.1:{DEFAULT_PORT}")
    host = host.removeprefix("[").removesuffix("]")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is outside 0-65535")
    return host, port


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and any address in 127.0.0.0/8 or ``::1``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AgentSettings(BaseModel):
    """Everything `corral agent` can be told; the defaults suit one host run by hand."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    listen: str | None = Field(
        default=f"127.0.0.1:{DEFAULT_PORT}",
        description="TCP HOST:PORT for the HTTP API; null for the unix socket only. A "
        "non-loopback host needs `token`, because the API changes what runs where.",
    )
    unix_socket: Path | None = Field(
        default=None, description="Also serve the API on this unix socket (mode 0600)."
    )
    token: str | None = Field(
        default=None,
        description="Bearer token required on TCP listeners other than loopback "
        "(also read from $CORRAL_AGENT_TOKEN).",
    )
    state_path: Path = Field(
        default_factory=default_state_path, description="SQLite database (WAL) of the agent."
    )
    topology: str = Field(
        default="sysfs", description="'sysfs' (this host), a preset name or a topology file."
    )
    sysfs_root: Path = Field(default=Path("/sys"), description="Where sysfs is mounted.")
    cgroup_root: Path = Field(
        default=Path("/sys/fs/cgroup"), description="Where the cgroup hierarchies are mounted."
    )
    proc_root: Path = Field(default=Path("/proc"), description="Where procfs is mounted.")
    resctrl_root: Path = Field(
        default=Path("/sys/fs/resctrl"),
        description="Where resctrl is mounted (Intel RDT: LLC ways and memory bandwidth for "
        "the controller); without a mounted resctrl there the cache knobs are off and "
        "/status says so.",
    )
    cgroup_parent: str = Field(
        default="corral",
        description="Parent cgroup (relative to each hierarchy) of workloads that name no "
        "cgroup of their own.",
    )
    durability: Durability = Field(
        default=Durability.FULL,
        description="full: fsync every commit, nothing acknowledged is lost even on power "
        "loss or a filesystem abort (median 0.3-1.6 ms a commit here); normal: WAL without fsync, "
        "survives kill -9 of the agent but may lose the last commits of a crash.",
    )
    reset_state: bool = Field(
        default=False,
        description="When the state file is corrupt or not corral's, move it aside "
        "(<path>.corrupt-<time>) and start empty instead of refusing to start.",
    )
    dry_run: bool | None = Field(
        default=None,
        description="true: never write cgroups, record what would be written; false "
        "(--enforce): write them or refuse to start with the reason; unset: write them "
        "when this host allows it, else a dry run that says why.",
    )
    allocator: Allocator = Field(
        default=Allocator.OPTIMAL,
        description="optimal (MIP under the cost model, never worse than greedy) or greedy "
        "(kubelet order).",
    )
    budget_ms: float = Field(
        default=50.0,
        gt=0,
        description="Time budget of one optimising decision, ms: small enough to run on "
        "every burst of adds without stalling the API.",
    )
    coalesce_window_s: float = Field(
        default=0.05,
        ge=0,
        description="After an event, wait this long for more before deciding (s): a burst "
        "of container starts arrives within tens of ms of each other.",
    )
    coalesce_burst_gap_s: float = Field(
        default=0.002,
        ge=0,
        description="Events closer than this (s) are a burst that extends the window, up to "
        "coalesce_max_s; a slower stream is decided coalesce_window_s after its first event.",
    )
    coalesce_max_s: float = Field(
        default=0.5,
        ge=0,
        description="Never hold a decision back longer than this after its first event (s).",
    )
    rebalance_period_s: float = Field(
        default=300.0,
        gt=0,
        description="Periodic rebalance, s (titus-isolate rebalances every few minutes).",
    )
    rebalance_jitter: float = Field(
        default=0.2,
        ge=0,
        lt=1,
        description="Each period is drawn from period x (1 +/- jitter) so hosts do not move "
        "their workloads in lock step.",
    )
    reconcile_period_s: float = Field(
        default=30.0, gt=0, description="Drift check and repair period, s."
    )
    sample_period_s: float = Field(default=10.0, gt=0, description="CPU usage sampling period, s.")
    downsample_s: float = Field(
        default=60.0,
        gt=0,
        description="Samples are averaged over this window before they are stored, s: the "
        "predictor's features are 1-minute means.",
    )
    usage_retention_s: float = Field(
        default=86400.0,
        gt=0,
        description="Stored usage older than this is deleted, s (the predictor looks back "
        "one hour; a day leaves room for diagnosis).",
    )
    reserved_cpus: int | str = Field(
        default=1,
        description="CPUs never given to exclusive workloads (kept for the system, kube "
        "daemons and the BE box's floor; they stay in the shared pool): a count, taken the "
        "way kubelet's --reserved-cpus / kube-reserved is (packed from the lowest cores), or "
        "a CPU list such as '0,8'. Default 1, as kubelet's static policy requires a "
        "reservation; 0 turns it off.",
    )
    max_queued_requests: int = Field(
        default=2000,
        ge=1,
        description="Workload writes queued for a decision (or for the store) beyond which "
        "PUT and DELETE are refused with 429 and Retry-After: past this the queue only adds "
        "latency (one coalesced decision places a burst of hundreds in tens of ms).",
    )
    max_concurrent_requests: int = Field(
        default=256,
        ge=1,
        description="API requests in progress beyond which new ones get 429 and Retry-After "
        "(/healthz and /readyz are always answered): an overloaded agent answers fast "
        "instead of letting every caller's latency grow.",
    )
    max_loop_lag_s: float = Field(
        default=0.1,
        gt=0,
        description="Event-loop lateness (moving average, s) beyond which new API requests "
        "get 429: the backlog of a saturated agent waits in its sockets, where counting "
        "requests in progress cannot see it.",
    )
    event_log_keep: int = Field(
        default=10000, ge=100, description="How many event log rows the database keeps."
    )
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR.")
    log_format: LogFormat = Field(default=LogFormat.HUMAN, description="human or json.")
    control: dict[str, Any] | None = Field(
        default=None,
        description="The colocation controller run inside the agent (shape: "
        "corral.control.config; examples/agent-control.yaml): LC workloads with their SLO "
        "and latency source, the BE box cgroup (default: the agent's own), thresholds. "
        "Absent: no controller.",
    )
    kube: dict[str, Any] | None = Field(
        default=None,
        description="Kubernetes mode (shape: corral.kube.config.KubeSettings; read by "
        "`corral agent` when --kubeconfig/--node-name or this section is given): node_name, "
        "kubeconfig, kubelet_root, batch margins, eviction, GPUs. Absent: not a node agent.",
    )
    predictor: PredictorSettings = Field(
        default_factory=PredictorSettings,
        description="Usage predictions handed to placement as predicted_cpus "
        "(corral.agent.predictions): `model` (a file from `corral predict train`; absent: "
        "the peak 60 s mean of the last hour), `refresh_s`, `min_history_s`, `window_s`, "
        "`enabled`. Too little history: the request.",
    )

    _source: ConfigSource | None = PrivateAttr(default=None)

    @property
    def source(self) -> ConfigSource | None:
        """Where `load_settings` read these settings from (None when built otherwise);
        kept by ``model_copy``."""
        return self._source

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str | None) -> str | None:
        if value is not None:
            parse_listen(value)
        return value

    @field_validator("reserved_cpus")
    @classmethod
    def _check_reserved(cls, value: int | str) -> int | str:
        if isinstance(value, bool):
            raise ValueError("give a CPU count or a CPU list such as '0,8'")
        if isinstance(value, int):
            if value < 0:
                raise ValueError("a count of CPUs must not be negative")
            return value
        CpuSet.parse(value)  # names the bad element
        return value

    @field_validator("cgroup_parent")
    @classmethod
    def _check_parent(cls, value: str) -> str:
        return check_cgroup_path(value)  # relative, no '..', no NUL: the same rule as workloads

    @field_validator("unix_socket", "state_path", "sysfs_root", "cgroup_root", "proc_root")
    @classmethod
    def _check_path(cls, value: Path | None) -> Path | None:
        if value is not None and not str(value).isprintable():
            raise ValueError(f"{str(value)!r} holds control characters (such as NUL)")
        return value

    @field_validator("log_level")
    @classmethod
    def _check_level(cls, value: str) -> str:
        upper = value.upper()
        if upper not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return upper

    @property
    def listen_address(self) -> tuple[str, int] | None:
        """The TCP (host, port), or None when only the unix socket serves."""
        return None if self.listen is None else parse_listen(self.listen)

    def control_config(self) -> ColocationConfig | None:
        """The parsed control section (None without one); `InputError` names the field
        as ``control.<path>``."""
        if self.control is None:
            return None
        try:
            return parse_config(self.control)
        except InputError as err:
            raise InputError(f"control.{err.field}", err.problem, err.fix) from None

    def needs_token(self) -> bool:
        """True when a TCP listener is reachable from other hosts."""
        address = self.listen_address
        return address is not None and not is_loopback(address[0])


def settings_from(data: dict[str, Any], *, where: str = "config") -> AgentSettings:
    """Validate settings; `InputError` names the first bad field."""
    try:
        settings = AgentSettings.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")
        fix = ""
        if first["type"] == "extra_forbidden":
            fix = f"allowed keys: {', '.join(AgentSettings.model_fields)}"
        raise InputError(f"{where}.{field}" if field else where, message, fix) from None
    try:
        settings.control_config()  # refuse a bad control section before anything starts
    except InputError as err:
        raise InputError(f"{where}.{err.field}", err.problem, err.fix) from None
    return settings


def find_config(search: Sequence[Path] | None = None) -> Path | None:
    """The first existing file of ``search`` (default `default_config_paths`), or None."""
    for candidate in default_config_paths() if search is None else search:
        if candidate.is_file():
            return candidate
    return None


def load_settings(
    given: Path | None,
    overrides: Mapping[str, Any],
    *,
    search: Sequence[Path] | None = None,
) -> AgentSettings:
    """Settings from the YAML file ``given`` (else the first of ``search``, default
    `default_config_paths`, that exists; else none), then ``overrides`` (CLI flags that
    were given), then ``$CORRAL_AGENT_TOKEN`` for a token neither of them set. The result
    remembers its `ConfigSource`."""
    path = given if given is not None else find_config(search)
    data: dict[str, Any] = {}
    if path is not None:
        try:
            doc = yaml.safe_load(path.read_text())
        except OSError as err:
            raise InputError(str(path), f"cannot read: {err.strerror or err}") from err
        except yaml.YAMLError as err:
            raise InputError(str(path), f"not valid YAML: {err}") from err
        if doc is not None and not isinstance(doc, dict):
            raise InputError(str(path), "must be a mapping of settings", "e.g. listen: ...")
        data.update(doc or {})
    data.update({k: v for k, v in overrides.items() if v is not None})
    if data.get("token") is None and os.environ.get("CORRAL_AGENT_TOKEN"):
        data["token"] = os.environ["CORRAL_AGENT_TOKEN"]
    settings = settings_from(data, where=str(path) if path else "config")
    if settings.needs_token() and not settings.token:
        raise InputError(
            "listen",
            f"{settings.listen} is reachable from other hosts and no token is set",
            "set token in the config or $CORRAL_AGENT_TOKEN, or listen on 127.0.0.1",
        )
    settings._source = ConfigSource(  # set once, here, by the module that defines it
        given, path, dict(overrides), settings.model_dump()
    )
    return settings

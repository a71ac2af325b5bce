"""The controller's configuration from YAML/JSON: thresholds and the LC latency sources.

Shape (every key optional except ``workloads``; defaults are Heracles' and senpai's)::

    top: {period_s: 15, high_water: 0.85, low_water: 0.80, no_grow_slack: 0.10,
          shrink_slack: 0.05, cooldown_s: 60}
    trial: {settle_s: 2, grow_tolerance: 0.05, shrink_min_gain: 0.02, hold_s: 30,
            reference_windows: 5}
    cores: {min_cores: 1, max_cores: null, lc_reserve_cores: 1, shrink_step: 2,
            lc_overlap: true}
    weight: {ladder: [idle, "2"], grow_slack: 0.5, quota_ladder: [0.25, 0.5]}
    cache: {total_ways: 0, min_ways: 1, mb_ladder: []}
    memory: {enabled: false, pressure_us: 10000, interval_s: 6, max_bytes: null}
    evict: {freeze_after_periods: 1, evict: false, evict_after_s: 300, thaw_interval_s: 15}
    crash_loop: {enabled: true, kills: 3, window_s: 30, hold_s: 10, max_hold_s: 300,
                 reset_s: 600}
    dcat: {enabled: false, min_ways: 1, gain: 0.05, loss_tolerance: 0.03,
           streaming_mpki: 5.0, miss_fall: 0.05, phase_change: 0.25, settle_periods: 1}
    baseline: {enabled: true, weight: idle, cores: null, grow_above: false}
    attribution: {enabled: true, settle_periods: 1, judge_periods: 3, load_tolerance: 0.05,
                  holdoff_s: 60, max_holdoff_s: 600, noise_margin: 0, give_up_periods: 20,
                  tolerate: 0, tolerate_window_s: 60}
    bands: {enabled: true, width: 0.05, proof_periods: 8, proof_slack: 0.0,
            explore_slack: 0.1, memory_s: 600}
    sub_period_s: 2
    no_signal_floor_after: null     # top periods without a signal before BE is floored
    cgroups: {be: null, lc: null}   # the agent's BE box by default; see ControlCgroups
    workloads:
      - name: memcached
        slo: {percentile: 99, target_ms: 1.0, window_s: 15}
        peak_rps: 100000
        latency: {kind: probe, protocol: memcached, port: 11211, rate_hz: 20,
                  timeout_s: 1, min_samples: 10}
      - name: api
        slo: {target_ms: 50}
        latency: {kind: prometheus, url: "http://127.0.0.1:9100/metrics",
                  metric: http_request_duration_seconds, timeout_s: 1, min_samples: 1}
      - name: batch-frontend
        slo: {target_ms: 20}
        latency: {kind: file, path: /run/frontend/latency.json, latency_field: p99_ms,
                  stale_s: 5, timeout_s: 1}

Unknown keys and wrong types are refused with the dotted path of the field.

``baseline``, ``attribution`` and ``bands`` are the rules of issue 16 (each module's
docstring says why and what each field means): BE starts and rests at the static-idle
isolation (``baseline``, `corral.control.baseline`), a violation is charged to BE only if
it clears when BE is taken out (``attribution``, `corral.control.attribution`), and
Heracles' 85% high-water mark is relaxed per band of load where BE ran without harm
(``bands``, `corral.control.bands`). ``enabled: false`` on all three gives back the plain
Heracles controller of earlier versions (cold start, every violation BE's, fixed marks).

``dcat`` is the per-workload LLC manager (`corral.control.dcat`, after dCat, EuroSys 2018):
it divides BE's ways of the ``cache`` ladder among the BE workloads by their measured
performance, one step per sub-controller period. Off by default, because it needs what
most hosts lack - resctrl with L3 CAT (``cache.total_ways`` set to the host's width) and a
per-workload performance signal (hardware counters, or a BE throughput the caller
supplies) - and because each workload takes a CLOSID of the few the CPU has (often 16).
Enabled where it cannot run (this project's VM: no RDT, no hardware counters), the agent
says so in /status (``control.dcat.running: false`` with ``why``) and in one log line,
and writes nothing. Its settings, all relative to a workload's reference performance:
``min_ways`` (ways, raised to ``info/L3/min_cbm_bits``) is the fewest a workload keeps;
``gain`` (fraction, 0.05: above IPC noise) is what one more way must add to keep it;
``loss_tolerance`` (fraction, 0.03) what a donor may lose per way given;
``streaming_mpki`` (LLC misses per 1000 instructions, 5) marks a workload whose misses do
not fall (by ``miss_fall``, fraction 0.05) with one more way as streaming, sent to
``min_ways``; ``phase_change`` (fraction, 0.25) is the performance move at unchanged ways
that restarts a workload's search; ``settle_periods`` (sub periods, 1) lets the cache
refill before a step is judged.

What the sources promise (see `corral.control.signals`): none blocks the event loop. A
``probe`` runs as a task of its own and a refused or timed-out probe is a failure, not a
latency sample; a ``prometheus`` source scrapes with one async HTTP client of its own,
every scrape bounded by ``timeout_s`` (default 1 s; a scrape that takes longer is a
``slow`` signal, "no answer within 1.0 s"); a ``file`` is read in a worker thread, also
bounded by ``timeout_s``. Each source is also bounded, as a backstop, by its
``timeout_s`` plus `READ_MARGIN_S`. A source that is slow, failed or has fewer than
``min_samples`` samples gives no signal: the controller holds BE, and any one LC workload
without a signal holds it for all (`corral.control.combine`). Probers and scrape clients
are services of the runtime: `runtime_from_config` starts and stops them with its loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from corral.control.combine import CombinedSource, LcSignal
from corral.control.controller import Controller, ControllerSettings
from corral.control.dcat import DcatSettings
from corral.control.dcatrun import (
    CounterSampler,
    DcatRunner,
    HostSampler,
    PerfSampler,
    ThroughputSampler,
)
from corral.control.evict import BeWorkload
from corral.control.filesource import FileSource
from corral.control.probe import ProbeKind, Prober, ProbeSettings
from corral.control.runtime import (
    ActionRecord,
    Actuator,
    ColocationRuntime,
    Executor,
    MemorySignals,
    OomSignals,
    Service,
    SignalSource,
)
from corral.control.scrape import HttpFetch, ScrapeSource
from corral.control.slo import Slo
from corral.errors import InputError
from corral.topology.cpuset import CpuSet

LATENCY_KINDS = ("probe", "prometheus", "file")
READ_MARGIN_S = 1.0
"""Seconds beyond a source's own timeout before its read is cancelled as slow (a source
that hangs in spite of its timeout)."""


@dataclass(frozen=True, slots=True)
class ControlCgroups:
    """Which cgroups the controller acts on, relative to each hierarchy's root."""

    be: str | None = None
    """The BE box (its children are the BE workloads it may freeze). None: the node agent's
    own BE box, ``<cgroup_parent>/be``, which holds every BE workload the agent created."""
    lc: str | None = None
    """A cgroup to confine LC to the CPUs BE does not get (only used when LC and BE must
    not share cores: SMT hosts, or ``cores.lc_overlap: false``). None: LC is left alone."""

    def __post_init__(self) -> None:
        for name in ("be", "lc"):
            value = getattr(self, name)
            if value is not None and (
                value.startswith("/") or any(p in {"", ".", ".."} for p in value.split("/"))
            ):
                raise InputError(
                    f"cgroups.{name}",
                    f"{value!r} is not a relative cgroup path",
                    "write it relative to the hierarchy root, e.g. corral/be",
                )


@dataclass(frozen=True, slots=True)
class DcatConfig:
    """The ``dcat`` block: whether the per-workload cache manager runs, and its settings
    (see the module docstring for units and defaults)."""

    enabled: bool = False
    """Off by default: it needs resctrl with L3 CAT and a per-workload signal, and one
    CLOSID per BE workload."""
    settings: DcatSettings = dataclasses.field(default_factory=DcatSettings)


def parse_dcat(raw: Any, where: str = "dcat") -> DcatConfig:
    """`DcatConfig` from the ``dcat`` mapping (``enabled`` plus `DcatSettings` fields)."""
    if not isinstance(raw, Mapping):
        raise InputError(where, "must be a mapping", "write e.g. {enabled: true}")
    known = {"enabled", *(f.name for f in dataclasses.fields(DcatSettings))}
    unknown = sorted(str(k) for k in raw if k not in known)
    if unknown:
        raise InputError(
            f"{where}.{unknown[0]}", "unknown setting", f"known: {', '.join(sorted(known))}"
        )
    rest = {k: v for k, v in raw.items() if k != "enabled"}
    enabled = _coerce(bool, raw.get("enabled", False), f"{where}.enabled")
    return DcatConfig(enabled, build(DcatSettings, rest, where))


@dataclass(frozen=True, slots=True)
class ColocationConfig:
    """Parsed configuration: controller settings and one entry per LC workload."""

    settings: ControllerSettings
    workloads: tuple[Mapping[str, Any], ...]
    cgroups: ControlCgroups = ControlCgroups()
    dcat: DcatConfig = DcatConfig()

    def signals(self) -> tuple[list[LcSignal], list[Service]]:
        """Build the latency sources, and the services behind them (probers, scrape
        clients) that must be started before reading and stopped afterwards."""
        out: list[LcSignal] = []
        services: list[Service] = []
        for i, raw in enumerate(self.workloads):
            where = f"workloads[{i}]"
            name = _str(raw.get("name"), f"{where}.name")
            slo = build(Slo, raw.get("slo", {}), f"{where}.slo")
            peak = raw.get("peak_rps")
            if peak is not None and (
                isinstance(peak, bool) or not isinstance(peak, int | float) or peak <= 0
            ):
                raise InputError(
                    f"{where}.peak_rps",
                    f"{peak!r} is not a positive number",
                    "give the highest requests/s at which the LC alone meets its SLO",
                )
            unknown = sorted(set(raw) - {"name", "slo", "peak_rps", "latency"})
            if unknown:
                raise InputError(
                    f"{where}.{unknown[0]}",
                    "unknown setting",
                    "known: latency, name, peak_rps, slo",
                )
            latency = raw.get("latency")
            if not isinstance(latency, Mapping):
                raise InputError(
                    f"{where}.latency", "is missing", "give kind: probe|prometheus|file"
                )
            source, service, timeout = _source(latency, slo, name, f"{where}.latency")
            if service is not None:
                services.append(service)
            out.append(
                LcSignal(
                    name,
                    slo,
                    source,
                    float(peak) if peak is not None else None,
                    timeout_s=timeout + READ_MARGIN_S,
                )
            )
        return out, services


def runtime_from_config(
    config: ColocationConfig,
    *,
    cores: tuple[CpuSet, ...],
    actuator: Actuator,
    memory: MemorySignals | None = None,
    workloads: Callable[[], typing.Sequence[BeWorkload]] | None = None,
    listener: Callable[[ActionRecord], None] | None = None,
    execute: Executor | None = None,
    perf_cgroup: Callable[[str], Path] | None = None,
    be_throughput: Callable[[], Mapping[str, float | None]] | None = None,
    dcat_sampler: PerfSampler | None = None,
    oom: OomSignals | None = None,
) -> ColocationRuntime:
    """A runtime for the agent: the combined LC sources, the controller for ``cores`` (the
    physical cores BE may be given), probers and scrape clients started and stopped with
    the runtime, every action, mode change and signal transition handed to ``listener``
    (called on the event loop: it must not block). ``execute`` runs the memory readings
    and the actuator's writes (default `asyncio.to_thread`; the agent passes its ordered
    effect executor).

    With ``dcat.enabled`` the runtime also runs dCat, sampling each BE workload with
    ``dcat_sampler`` when given, else with hardware counters on ``perf_cgroup(workload)``
    (the workload's perf_event cgroup directory, e.g.
    `corral.control.dcatrun.perf_cgroup_dirs`) where the host has them, else with
    ``be_throughput`` (blocking: workload -> work per second); with none of them dCat
    reports why it cannot run. Both callables are called through ``execute``.

    ``oom`` (each BE workload's OOM-kill count, read through ``execute``) turns on the
    crash-loop rule (``crash_loop``, `corral.control.crashloop`); without it the rule does
    not run and /status says ``crash_loop.enabled: false``."""
    signals, services = config.signals()
    source = CombinedSource(signals)
    dcat = None
    if config.dcat.enabled:
        sampler = dcat_sampler
        if sampler is None:
            counters = None
            if perf_cgroup is not None:
                counters = CounterSampler(perf_cgroup, CpuSet().union(*cores))
            throughput = None if be_throughput is None else ThroughputSampler(be_throughput)
            sampler = HostSampler(counters, throughput)
        dcat = DcatRunner(config.dcat.settings, sampler)
    return ColocationRuntime(
        Controller(config.settings, cores),
        source=source,
        actuator=actuator,
        memory=memory,
        workloads=workloads,
        services=tuple(services),
        listener=listener,
        describe=source.status,
        execute=asyncio.to_thread if execute is None else execute,
        dcat=dcat,
        oom=oom,
    )


def parse_config(doc: Mapping[str, Any]) -> ColocationConfig:
    """`ColocationConfig` from a parsed YAML/JSON mapping (see the module docstring)."""
    if not isinstance(doc, Mapping):
        raise InputError("colocation", "must be a mapping", "see the documented shape")
    rest = {k: v for k, v in doc.items() if k not in ("workloads", "cgroups", "dcat")}
    workloads = doc.get("workloads")
    if not isinstance(workloads, list) or not workloads:
        raise InputError(
            "workloads",
            "needs at least one LC workload",
            "add a list item with name, slo: {target_ms}, latency: {kind, ...}",
        )
    for i, w in enumerate(workloads):
        if not isinstance(w, Mapping):
            raise InputError(f"workloads[{i}]", "must be a mapping", "give name, slo, latency")
    settings = build(ControllerSettings, rest, "")
    cgroups = build(ControlCgroups, doc.get("cgroups") or {}, "cgroups")
    dcat = parse_dcat(doc.get("dcat") or {})
    config = ColocationConfig(settings, tuple(workloads), cgroups, dcat)
    config.signals()  # validate the sources now, not when the agent starts them
    return config


def _source(
    raw: Mapping[str, Any], slo: Slo, name: str, where: str
) -> tuple[SignalSource, Service | None, float]:
    """The source, the service behind it (if any) and its own timeout in seconds."""
    kind = raw.get("kind")
    options = {k: v for k, v in raw.items() if k != "kind"}
    if kind == "probe":
        protocol = options.pop("protocol", "tcp")
        try:
            options["kind"] = ProbeKind(protocol)
        except ValueError as err:
            raise InputError(
                f"{where}.protocol", f"unknown protocol {protocol!r}", "tcp, http, memcached, redis"
            ) from err
        options.setdefault("window_s", slo.window_s)
        options.setdefault("percentile", slo.percentile)
        settings = build(ProbeSettings, options, where)
        prober = Prober(settings, name=name)
        return prober, prober, settings.timeout_s
    if kind == "prometheus":
        url = _str(options.pop("url", None), f"{where}.url")
        if not url.startswith(("http://", "https://")):
            raise InputError(
                f"{where}.url", f"{url!r} is not an http(s) URL", "e.g. http://host:9100/metrics"
            )
        timeout = _coerce(float, options.pop("timeout_s", 1.0), f"{where}.timeout_s")
        if not timeout > 0:
            raise InputError(f"{where}.timeout_s", f"{timeout} is not positive", "e.g. 1")
        options.setdefault("percentile", slo.percentile)
        metric = _str(options.pop("metric", None), f"{where}.metric")
        fetch = HttpFetch(url, timeout)
        source = build(ScrapeSource, {"metric": metric, **options}, where, fetch=fetch, name=name)
        return source, fetch, timeout
    if kind == "file":
        path = Path(_str(options.pop("path", None), f"{where}.path"))
        file = build(FileSource, {"path": path, **options}, where, name=name)
        return file, None, file.timeout_s
    raise InputError(f"{where}.kind", f"unknown latency source {kind!r}", ", ".join(LATENCY_KINDS))


_T = typing.TypeVar("_T")


def build(cls: type[_T], raw: Any, where: str, **fixed: Any) -> _T:
    """An instance of dataclass ``cls`` from ``raw``, checking every key and type.

    Nested dataclass fields take nested mappings; ``fixed`` supplies fields that are not
    configurable (callables). Errors name the dotted path of the offending field.
    """
    if not isinstance(raw, Mapping):
        raise InputError(where or "colocation", "must be a mapping", "write key: value pairs")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = dict(fixed)
    for key, value in raw.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in fields or key in fixed:
            known = ", ".join(sorted(k for k in fields if k not in fixed))
            raise InputError(path, "unknown setting", f"known: {known}")
        kwargs[key] = _coerce(hints[key], value, path)
    try:
        return cls(**kwargs)
    except InputError as err:
        # A model's own check names its field without the path to it: add the path.
        # At the top level the model's own names are already the full paths.
        last = err.field.rpartition(".")[2]
        if where and last in fields and not err.field.startswith(f"{where}."):
            raise InputError(f"{where}.{last}", err.problem, err.fix) from err
        raise


def _coerce(hint: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, path)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return build(hint, value, path)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise InputError(path, f"{value!r} is not a list", "write it as [a, b]")
        return tuple(_coerce(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
    if isinstance(hint, type) and issubclass(hint, Enum):
        try:
            return hint(value)
        except ValueError as err:
            raise InputError(
                path,
                f"{value!r} is not one of {[e.value for e in hint]}",
                f"use one of {', '.join(str(e.value) for e in hint)}",
            ) from err
    if hint is bool:
        if not isinstance(value, bool):
            raise InputError(path, f"{value!r} is not true or false", "write true or false")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InputError(path, f"{value!r} is not a number", "write a number, e.g. 0.5")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(path, f"{value!r} is not an integer", "write a whole number")
        return value
    if hint is str:
        return _str(value, path)
    if hint is Path:
        return Path(_str(value, path)) if not isinstance(value, Path) else value
    raise InputError(path, "is not configurable", "remove it")


def _str(value: Any, path: str) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)  # YAML reads cpu.shares "2" as a number
    if not isinstance(value, str) or not value:
        raise InputError(path, f"{value!r} is not a non-empty string", "write a name or path")
    return value

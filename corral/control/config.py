"""The controller's configuration from YAML/JSON: thresholds and the LC latency sources.

Shape (every key optional except ``workloads``; defaults are Heracles' and senpai's)::

    top: {period_s: 15, high_water: 0.85, low_water: 0.80, no_grow_slack: 0.10,
          shrink_slack: 0.05, cooldown_s: 60}
    trial: {settle_s: 2, grow_tolerance: 0.05, shrink_min_gain: 0.02, hold_s: 30}
    cores: {min_cores: 1, max_cores: null, lc_reserve_cores: 1, shrink_step: 2,
            lc_overlap: true}
    weight: {ladder: [idle, "2"], grow_slack: 0.5, quota_ladder: [0.25, 0.5]}
    cache: {total_ways: 0, min_ways: 1, mb_ladder: []}
    memory: {enabled: false, pressure_us: 10000, pressure_window_s: 6, max_bytes: null}
    evict: {freeze_after_periods: 1, evict: false, evict_after_s: 300, thaw_interval_s: 15}
    sub_period_s: 2
    cgroups: {be: null, lc: null}   # the agent's BE box by default; see ControlCgroups
    workloads:
      - name: memcached
        slo: {percentile: 99, target_ms: 1.0, window_s: 15}
        peak_rps: 100000
        latency: {kind: probe, protocol: memcached, port: 11211, rate_hz: 20}
      - name: api
        slo: {target_ms: 50}
        latency: {kind: prometheus, url: "http://127.0.0.1:9100/metrics",
                  metric: http_request_duration_seconds}
      - name: batch-frontend
        slo: {target_ms: 20}
        latency: {kind: file, path: /run/frontend/latency.json, latency_field: p99_ms}

Unknown keys and wrong types are refused with the dotted path of the field.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import httpx

from corral.control.combine import CombinedSource, LcSignal
from corral.control.controller import Controller, ControllerSettings
from corral.control.evict import BeWorkload
from corral.control.filesource import FileSource
from corral.control.probe import ProbeKind, Prober, ProbeSettings
from corral.control.runtime import ActionRecord, Actuator, ColocationRuntime, MemorySignals
from corral.control.scrape import ScrapeSource
from corral.control.slo import Slo
from corral.errors import CorralError, InputError
from corral.topology.cpuset import CpuSet

LATENCY_KINDS = ("probe", "prometheus", "file")


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
class ColocationConfig:
    """Parsed configuration: controller settings and one entry per LC workload."""

    settings: ControllerSettings
    workloads: tuple[Mapping[str, Any], ...]
    cgroups: ControlCgroups = ControlCgroups()

    def signals(self) -> tuple[list[LcSignal], list[Prober]]:
        """Build the latency sources; probers are returned too (they must be started)."""
        out: list[LcSignal] = []
        probers: list[Prober] = []
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
            source, prober = _source(latency, slo, f"{where}.latency")
            if prober is not None:
                probers.append(prober)
            out.append(LcSignal(name, slo, source, float(peak) if peak is not None else None))
        return out, probers


def runtime_from_config(
    config: ColocationConfig,
    *,
    cores: tuple[CpuSet, ...],
    actuator: Actuator,
    memory: MemorySignals | None = None,
    workloads: Callable[[], typing.Sequence[BeWorkload]] | None = None,
    listener: Callable[[ActionRecord], None] | None = None,
) -> ColocationRuntime:
    """A runtime for the agent: the combined LC sources, the controller for ``cores`` (the
    physical cores BE may be given), probers started and stopped with the runtime, every
    action and mode change handed to ``listener``."""
    signals, probers = config.signals()
    source = CombinedSource(signals)
    return ColocationRuntime(
        Controller(config.settings, cores),
        source=source,
        actuator=actuator,
        memory=memory,
        workloads=workloads,
        services=tuple(probers),
        listener=listener,
        describe=source.status,
    )


def parse_config(doc: Mapping[str, Any]) -> ColocationConfig:
    """`ColocationConfig` from a parsed YAML/JSON mapping (see the module docstring)."""
    if not isinstance(doc, Mapping):
        raise InputError("colocation", "must be a mapping", "see the documented shape")
    rest = {k: v for k, v in doc.items() if k not in ("workloads", "cgroups")}
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
    config = ColocationConfig(settings, tuple(workloads), cgroups)
    config.signals()  # validate the sources now, not when the agent starts them
    return config


def _source(raw: Mapping[str, Any], slo: Slo, where: str) -> tuple[Any, Prober | None]:
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
        prober = Prober(settings)
        return prober, prober
    if kind == "prometheus":
        url = _str(options.pop("url", None), f"{where}.url")
        timeout = _coerce(float, options.pop("timeout_s", 1.0), f"{where}.timeout_s")
        options.setdefault("percentile", slo.percentile)
        metric = _str(options.pop("metric", None), f"{where}.metric")
        source = build(
            ScrapeSource, {"metric": metric, **options}, where, fetch=_fetcher(url, timeout)
        )
        return source, None
    if kind == "file":
        path = Path(_str(options.pop("path", None), f"{where}.path"))
        return build(FileSource, {"path": path, **options}, where), None
    raise InputError(f"{where}.kind", f"unknown latency source {kind!r}", ", ".join(LATENCY_KINDS))


def _fetcher(url: str, timeout: float) -> Callable[[], str]:
    def fetch() -> str:
        try:
            response = httpx.get(url, timeout=timeout)
            response.raise_for_status()
        except httpx.HTTPError as err:
            raise CorralError(f"scraping {url}: {err}") from err
        return response.text

    return fetch


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
        last = err.field.rpartition(".")[2]
        if last in fields and not err.field.startswith(f"{where}."):
            raise InputError(f"{where}.{last}" if where else last, err.problem, err.fix) from err
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

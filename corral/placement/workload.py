"""Workload: what a container or service asks of the host, and the workload file loader.

Every field is bounded, because a workload spec comes from the network (the agent's API) and
is stored: a value that passes here is one the store, the kernel and the sampler can take.

* ``id``: 1-253 ASCII characters (the Kubernetes name bound, and under the 255 bytes of a
  cgroup directory name): a letter or digit, then letters, digits, ``_ . : -``. Kubernetes
  ids may take the form ``<namespace>/<name>`` (a DNS label, ``/``, then a plain id).
* ``cgroup``: a path relative to each hierarchy root (a leading ``/`` is read as that root,
  as ``/proc/<pid>/cgroup`` prints it; a trailing ``/`` is dropped) of at most 4096 bytes
  and 32 components, each at most 255 bytes of printable characters other than whitespace
  (so no NUL, no control characters, no lone surrogates), none ``.`` or ``..``; it is
  stored normalised (``/a/b/`` -> ``a/b``).
* ``container_id``: 12-64 hex digits, optionally after ``docker://``, ``containerd://`` or
  ``cri-o://`` (what ``docker ps``, ``crictl ps`` and the pod status print).
* numbers: JSON numbers only (no booleans, no strings), finite; ``cpus`` 0.001-4096 cores,
  ``predicted_cpus`` 0-4096; memory in bytes or a ``512Mi`` quantity, at most
  `MAX_MEMORY_BYTES` (or the ``max_memory_bytes`` given to `workload_from_mapping`);
  integers of at most `MAX_NUMBER_DIGITS` digits; CPU ids below `MAX_CPU_ID`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, Final

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from corral.errors import InputError
from corral.topology.cpuset import CpuSet

MAX_ID_LENGTH: Final = 253
"""Longest workload id (Kubernetes' object name bound; fits a cgroup directory name)."""
MIN_CPUS: Final = 0.001
"""Smallest CPU request, cores (Kubernetes' millicore resolution)."""
MAX_CPUS: Final = 4096.0
"""Largest CPU request or prediction, cores (above any host Linux runs on today)."""
MAX_CPU_ID: Final = 8192
"""CPU ids must be below this (the kernel's largest NR_CPUS)."""
MAX_MEMORY_BYTES: Final = 2**50
"""Largest memory request or limit, bytes (1 PiB); the agent may pass a tighter bound."""
MAX_NUMBER_DIGITS: Final = 20
"""Longest integer literal any field takes (2**64 has 20 digits)."""
MAX_CGROUP_PATH: Final = 4096
"""Longest cgroup path, UTF-8 bytes (PATH_MAX)."""
MAX_CGROUP_DEPTH: Final = 32
"""Most components of a cgroup path (kubelet's deepest layout has 4)."""
MAX_CGROUP_NAME: Final = 255
"""Longest component of a cgroup path, UTF-8 bytes (NAME_MAX)."""
MAX_CPU_LIST: Final = 4096
"""Longest ``cpuset`` text or list."""

_PLAIN_ID = r"[A-Za-z0-9][A-Za-z0-9_.:-]*"
_ID = re.compile(rf"(?:[a-z0-9](?:[a-z0-9-]{{0,61}}[a-z0-9])?/)?{_PLAIN_ID}", re.ASCII)
# The same id forms corral.enforce.locate accepts (it cannot be imported from here).
_CONTAINER_ID = re.compile(r"(?:(?:docker|containerd|cri-o)://)?[0-9a-fA-F]{12,64}", re.ASCII)
_CONTAINER_ID_MAX = len("containerd://") + 64
_QUANTITY = re.compile(r"([0-9]{1,20})(?:\.([0-9]{1,20}))?([KMGTPE]i?|k)?", re.ASCII)
_CPU_LIST = re.compile(r"[0-9,\- \t\n]*", re.ASCII)
_CPU_NUMBER = re.compile(r"[0-9]+", re.ASCII)
_UNITS = {
    None: 1,
    "k": 10**3,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}


class Qos(StrEnum):
    """QoS class: latency-critical, best-effort, or the host's own services."""

    LC = "LC"
    BE = "BE"
    SYSTEM = "system"


class Policy(StrEnum):
    """Cpuset policy (design.md section 1)."""

    EXCLUSIVE = "exclusive"
    NUMA = "numa"
    SHARED = "shared"
    IMMOVABLE = "immovable"


@dataclass(frozen=True)
class TooManyDigits:
    """Stands in for an integer literal longer than `MAX_NUMBER_DIGITS` digits, so a JSON
    reader never converts it (Python refuses past 4300 digits, and slowly) and the field
    that holds it is refused by name. `json_int` makes these."""

    digits: int


def json_int(text: str) -> int | TooManyDigits:
    """``parse_int`` hook for `json.loads`: the integer, or `TooManyDigits` for a literal
    longer than `MAX_NUMBER_DIGITS` digits."""
    digits = len(text) - text.startswith("-")
    return int(text) if digits <= MAX_NUMBER_DIGITS else TooManyDigits(digits)


def shown(value: object, limit: int = 64) -> str:
    """``repr(value)`` cut to ``limit`` characters: safe to echo in an error message (no
    control characters, no surrogates, bounded)."""
    if isinstance(value, int) and value.bit_length() > 200:
        # repr() of a huge integer is slow, and refused past 4300 digits.
        return f"an integer of about {int(value.bit_length() * math.log10(2))} digits"
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 5]}...{text[-2:]}"


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_workload_id(value: str) -> str:
    """``value`` if it is a workload id (module docstring); ``ValueError`` saying why not."""
    if not 1 <= len(value) <= MAX_ID_LENGTH:
        raise ValueError(f"must be 1-{MAX_ID_LENGTH} characters, got {len(value)}")
    if not _ID.fullmatch(value):
        raise ValueError(
            "must start with a letter or digit and hold only letters, digits, '_', '.', ':' "
            f"or '-' (or be <namespace>/<name>), got {shown(value)}"
        )
    return value


def check_cgroup_path(value: str) -> str:
    """``value`` as a normalised cgroup path relative to each hierarchy root (module
    docstring); ``ValueError`` saying why it is not one."""
    if len(value) > MAX_CGROUP_PATH:
        raise ValueError(f"must be at most {MAX_CGROUP_PATH} bytes, got {len(value)} characters")
    if not _encodable(value):
        raise ValueError(f"holds a lone surrogate (not UTF-8 text): {shown(value)}")
    if len(value.encode()) > MAX_CGROUP_PATH:
        raise ValueError(f"must be at most {MAX_CGROUP_PATH} bytes of UTF-8")
    if not value.isprintable() or " " in value:
        raise ValueError(
            f"must hold no whitespace or control characters (such as NUL), got {shown(value)}"
        )
    parts = value.removeprefix("/").removesuffix("/").split("/")
    if any(part in {"", ".", ".."} for part in parts):
        raise ValueError(
            f"{shown(value)} is not a cgroup path below the hierarchy root: no empty, '.' or "
            "'..' components; write e.g. kubepods/burstable/pod1/abc"
        )
    if len(parts) > MAX_CGROUP_DEPTH:
        raise ValueError(f"must have at most {MAX_CGROUP_DEPTH} components, got {len(parts)}")
    if any(len(part.encode()) > MAX_CGROUP_NAME for part in parts):
        raise ValueError(f"each component must be at most {MAX_CGROUP_NAME} bytes")
    return "/".join(parts)


def check_container_id(value: str) -> str:
    """``value`` if it is a container id (module docstring); ``ValueError`` otherwise."""
    if len(value) > _CONTAINER_ID_MAX or not _CONTAINER_ID.fullmatch(value):
        raise ValueError(
            f"{shown(value)} is not a container id: give 12-64 hex digits, optionally after "
            "docker://, containerd:// or cri-o:// (from 'docker ps' or 'crictl ps')"
        )
    return value


def check_number(value: object, *, low: float, high: float, unit: str) -> float:
    """``value`` as a float if it is a finite JSON number (not a boolean, not a string) in
    ``[low, high]``; ``ValueError`` otherwise. Huge integers are compared, never
    converted."""
    if isinstance(value, TooManyDigits):
        raise ValueError(f"has {value.digits} digits; at most {MAX_NUMBER_DIGITS}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"must be a number of {unit}, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"must be a finite number of {unit}, got {value}")
    if not low <= value <= high:
        floor = "greater than 0, " if low > 0 >= value else ""
        raise ValueError(f"must be {floor}between {low:g} and {high:g} {unit}, got {shown(value)}")
    return float(value)


def parse_bytes(value: object, *, maximum: int = MAX_MEMORY_BYTES) -> int:
    """Bytes from an integer or a Kubernetes-style quantity (``512Mi``, ``2G``, ``1.5Gi``).

    Raises ``ValueError`` for negatives, fractions of a byte, unknown suffixes, booleans,
    non-finite numbers and amounts above ``maximum`` (exact arithmetic: no float rounding).
    """
    if isinstance(value, TooManyDigits):
        raise ValueError(f"has {value.digits} digits; at most {MAX_NUMBER_DIGITS}")
    if isinstance(value, bool):
        raise ValueError("must be bytes or a quantity like 512Mi, not a boolean")
    if isinstance(value, int):
        total = value
    elif isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise ValueError("must be a whole, non-negative number of bytes")
        total = int(value)
    elif isinstance(value, str):
        total = _parse_quantity(value)
    else:
        raise ValueError("must be bytes or a quantity like 512Mi")
    if total < 0:
        raise ValueError("must not be negative")
    if total > maximum:
        raise ValueError(f"must be at most {maximum} bytes, got {shown(value)}")
    return total


def _parse_quantity(value: str) -> int:
    match = _QUANTITY.fullmatch(value.strip(" ")) if len(value) <= 64 else None
    if not match:
        raise ValueError(f"{shown(value)} is not bytes or a quantity like 512Mi or 2G")
    whole, fraction, unit = match.groups()
    exact = Fraction(f"{whole}.{fraction or 0}") * _UNITS[unit]
    if exact.denominator != 1:
        raise ValueError(f"{shown(value)} is not a whole number of bytes")
    return int(exact)


def _cpu_id(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < MAX_CPU_ID:
        raise ValueError(f"CPU ids must be integers 0-{MAX_CPU_ID - 1}, got {shown(value)}")
    return value


def _cpuset_from_any(value: object) -> object:
    if isinstance(value, CpuSet):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return CpuSet([_cpu_id(value)])
    if isinstance(value, list) and len(value) <= MAX_CPU_LIST:
        return CpuSet(_cpu_id(v) for v in value)
    if isinstance(value, str) and len(value) <= MAX_CPU_LIST and _CPU_LIST.fullmatch(value):
        for number in _CPU_NUMBER.findall(value):
            _cpu_id(int(number) if len(number) <= MAX_NUMBER_DIGITS else MAX_CPU_ID)
        return CpuSet.parse(value)
    raise ValueError(f"must be a CPU list like '0-3,8' (CPU ids 0-{MAX_CPU_ID - 1})")


def _limit(info: ValidationInfo) -> int:
    context = info.context if isinstance(info.context, dict) else {}
    limit = context.get("max_memory_bytes", MAX_MEMORY_BYTES)
    return min(int(limit), MAX_MEMORY_BYTES)


CpuSetField = Annotated[CpuSet, PlainSerializer(str, return_type=str)]


class Workload(BaseModel):
    """One workload (a container, a pod's container, or a host service).

    Unknown keys are refused, so a typo never silently changes a placement; every field is
    bounded (module docstring).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    id: str = Field(
        description=f"Unique name, 1-{MAX_ID_LENGTH} characters: a letter or digit, then "
        "letters, digits, '_', '.', ':', '-'; or <namespace>/<name>."
    )
    qos: Qos = Field(default=Qos.BE, description="LC, BE or system.")
    cpus: float = Field(
        description=f"CPU request in cores ({MIN_CPUS:g}-{MAX_CPUS:g}); exclusive needs a "
        "whole number."
    )
    policy: Policy = Field(default=Policy.SHARED, description="Cpuset policy.")
    memory_request: int | None = Field(
        default=None, description="Bytes or 512Mi-style, at most 1 PiB."
    )
    memory_limit: int | None = Field(
        default=None, description="Bytes or 512Mi-style, at most 1 PiB."
    )
    predicted_cpus: float | None = Field(
        default=None, description="Predicted P95 use in cores (from the predictor)."
    )
    cpuset: CpuSetField | None = Field(
        default=None, description="The fixed CPUs of an immovable workload."
    )
    cgroup: str | None = Field(
        default=None, description="Explicit cgroup path, relative to each hierarchy root."
    )
    container_id: str | None = Field(
        default=None, description="Container id (12-64 hex digits) to find the cgroup."
    )

    @field_validator("id", mode="after")
    @classmethod
    def _check_id(cls, value: str) -> str:
        return check_workload_id(value)

    @field_validator("cpus", mode="before")
    @classmethod
    def _check_cpus(cls, value: object) -> float:
        return check_number(value, low=MIN_CPUS, high=MAX_CPUS, unit="cores")

    @field_validator("predicted_cpus", mode="before")
    @classmethod
    def _check_predicted(cls, value: object) -> float | None:
        if value is None:
            return None
        return check_number(value, low=0.0, high=MAX_CPUS, unit="cores")

    @field_validator("memory_request", "memory_limit", mode="before")
    @classmethod
    def _check_memory(cls, value: object, info: ValidationInfo) -> int | None:
        return None if value is None else parse_bytes(value, maximum=_limit(info))

    @field_validator("cpuset", mode="before")
    @classmethod
    def _check_cpuset(cls, value: object) -> object:
        return None if value is None else _cpuset_from_any(value)

    @field_validator("cgroup", mode="after")
    @classmethod
    def _check_cgroup(cls, value: str | None) -> str | None:
        return None if value is None else check_cgroup_path(value)

    @field_validator("container_id", mode="after")
    @classmethod
    def _check_container(cls, value: str | None) -> str | None:
        return None if value is None else check_container_id(value)

    @model_validator(mode="after")
    def _check_policy(self) -> Workload:
        if self.policy is Policy.EXCLUSIVE and not float(self.cpus).is_integer():
            raise ValueError(
                f"cpus: an exclusive workload needs a whole number of CPUs, got {self.cpus}; "
                "round it or use policy 'shared'"
            )
        if self.policy is Policy.IMMOVABLE and self.cpuset is None:
            raise ValueError("cpuset: an immovable workload needs its fixed CPUs, e.g. '0-1'")
        if self.policy is Policy.IMMOVABLE and self.cpuset is not None and not self.cpuset:
            raise ValueError("cpuset: an immovable workload needs at least one CPU")
        if self.policy is not Policy.IMMOVABLE and self.cpuset is not None:
            raise ValueError(
                f"cpuset: only immovable workloads take fixed CPUs; this one is {self.policy}"
            )
        if (
            self.memory_request is not None
            and self.memory_limit is not None
            and self.memory_request > self.memory_limit
        ):
            raise ValueError("memory_request: must not exceed memory_limit")
        if self.cgroup is not None and self.container_id is not None:
            raise ValueError("cgroup: give either cgroup or container_id, not both")
        return self

    @property
    def whole_cpus(self) -> int:
        """The request as a whole number of CPUs (exclusive workloads)."""
        return int(self.cpus)

    @property
    def expected_use(self) -> float:
        """Predicted use when known, else the request: what cost models weigh."""
        return self.cpus if self.predicted_cpus is None else self.predicted_cpus


def workload_from_mapping(
    data: Any, *, where: str = "workload", max_memory_bytes: int = MAX_MEMORY_BYTES
) -> Workload:
    """Validate one workload mapping; `InputError` names the field and the fix. Memory
    above ``max_memory_bytes`` (capped at `MAX_MEMORY_BYTES`) is refused."""
    if not isinstance(data, dict):
        raise InputError(where, "must be a mapping with id, qos, cpus, policy, ...")
    for key in data:
        # Before pydantic, which refuses a key that is not UTF-8 text without naming it.
        if key not in Workload.model_fields:
            allowed = ", ".join(Workload.model_fields)
            raise InputError(f"{where}.{_loc_text(key)}", "unknown key", f"allowed keys: {allowed}")
    try:
        return Workload.model_validate(data, context={"max_memory_bytes": max_memory_bytes})
    except ValidationError as err:
        raise _input_error(err, where) from None


def parse_workloads_document(doc: Any) -> tuple[Workload, ...]:
    """Validate a ``workloads: [...]`` document; ids must be unique."""
    if not isinstance(doc, dict) or "workloads" not in doc:
        raise InputError(
            "workloads",
            "the document needs a top-level 'workloads' list",
            "write workloads: [{id: web, qos: LC, cpus: 4, policy: exclusive}]",
        )
    unknown = set(doc) - {"workloads"}
    if unknown:
        raise InputError(
            ", ".join(sorted(unknown)), "unknown top-level key(s)", "only 'workloads' is allowed"
        )
    entries = doc["workloads"]
    if not isinstance(entries, list):
        raise InputError("workloads", f"must be a list, got {type(entries).__name__}")
    workloads = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(entries):
        workload = workload_from_mapping(entry, where=f"workloads[{index}]")
        if workload.id in seen:
            raise InputError(
                f"workloads[{index}].id",
                f"{workload.id!r} is already used by workloads[{seen[workload.id]}]",
                "give every workload its own id",
            )
        seen[workload.id] = index
        workloads.append(workload)
    return tuple(workloads)


def load_workloads(path: Path | str) -> tuple[Workload, ...]:
    """Read a YAML or JSON workload file."""
    file = Path(path)
    try:
        doc = yaml.safe_load(file.read_text())
    except OSError as err:
        raise InputError(str(file), f"cannot read: {err.strerror or err}") from err
    except (yaml.YAMLError, ValueError, RecursionError) as err:
        # ValueError: an integer past Python's digit limit; RecursionError: deep nesting.
        raise InputError(str(file), f"not valid YAML or JSON: {err}") from err
    return parse_workloads_document(doc)


_FIXES: Final = {
    "id": f"use 1-{MAX_ID_LENGTH} letters, digits, '_', '.', ':' or '-' starting with a letter "
    "or digit, or <namespace>/<name>",
    "qos": "use LC, BE or system",
    "cpus": f"send a JSON number of cores from {MIN_CPUS:g} to {MAX_CPUS:g}, e.g. 2 or 0.5",
    "policy": "use exclusive, numa, shared or immovable",
    "memory_request": "send bytes as an integer or a quantity like 512Mi or 2Gi",
    "memory_limit": "send bytes as an integer or a quantity like 512Mi or 2Gi",
    "predicted_cpus": f"send a JSON number of cores from 0 to {MAX_CPUS:g}, or leave it out",
    "cpuset": f"send a CPU list like '0-3,8' with ids below {MAX_CPU_ID}",
    "cgroup": "send a path below the hierarchy root like kubepods/burstable/pod1/abc",
    "container_id": "send 12-64 hex digits, e.g. from 'crictl ps' or 'docker ps'",
}


def _loc_text(part: object) -> str:
    """A location part fit for an error body (an unknown key is the sender's text)."""
    text = str(part)
    if len(text) <= 64 and text.isprintable() and _encodable(text):
        return text
    return shown(text)


def _input_error(err: ValidationError, where: str) -> InputError:
    first = err.errors()[0]
    loc = [_loc_text(part) for part in first["loc"]]
    message = str(first["msg"]).removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        allowed = ", ".join(Workload.model_fields)
        return InputError(f"{where}.{'.'.join(loc)}", "unknown key", f"allowed keys: {allowed}")
    if not loc and ":" in message.split(" ")[0]:
        # Model-level checks start their message with the field they concern.
        field, _, rest = message.partition(": ")
        return InputError(f"{where}.{field}", rest, _FIXES.get(field, ""))
    suffix = f".{'.'.join(loc)}" if loc else ""
    return InputError(f"{where}{suffix}", message, _FIXES.get(loc[0], "") if loc else "")

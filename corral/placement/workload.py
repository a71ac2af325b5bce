"""Workload: what a container or service asks of the host, and the workload file loader."""

from __future__ import annotations

import math
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)

from corral.errors import InputError
from corral.topology.cpuset import CpuSet

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
_QUANTITY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTPE]i?|k)?\s*$")
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


def parse_bytes(value: object) -> int:
    """Bytes from an integer or a Kubernetes-style quantity (``512Mi``, ``2G``, ``1.5Gi``).

    Raises ``ValueError`` for negatives, fractions of a byte and unknown suffixes.
    """
    if isinstance(value, bool):
        raise ValueError("must be bytes or a quantity like 512Mi, not a boolean")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("must not be negative")
        return value
    if isinstance(value, float):
        if value < 0 or not value.is_integer():
            raise ValueError("must be a whole, non-negative number of bytes")
        return int(value)
    if isinstance(value, str):
        match = _QUANTITY.match(value)
        if not match:
            raise ValueError(f"{value!r} is not bytes or a quantity like 512Mi or 2G")
        number, unit = match.groups()
        total = float(number) * _UNITS[unit]
        if not total.is_integer():
            raise ValueError(f"{value!r} is not a whole number of bytes")
        return int(total)
    raise ValueError("must be bytes or a quantity like 512Mi")


def _cpuset_from_any(value: object) -> object:
    if isinstance(value, CpuSet):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return CpuSet([value])
    if isinstance(value, list) and all(isinstance(v, int) for v in value):
        return CpuSet(value)
    if isinstance(value, str):
        return CpuSet.parse(value)
    raise ValueError("must be a CPU list like '0-3,8'")


Bytes = Annotated[int, BeforeValidator(parse_bytes)]
CpuSetField = Annotated[
    CpuSet,
    BeforeValidator(_cpuset_from_any),
    PlainSerializer(str, return_type=str),
]


class Workload(BaseModel):
    """One workload (a container, a pod's container, or a host service).

    Unknown keys are refused, so a typo never silently changes a placement.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    id: str = Field(description="Unique name: letters, digits, '_', '.', ':', '-'.")
    qos: Qos = Field(default=Qos.BE, description="LC, BE or system.")
    cpus: float = Field(gt=0, description="CPU request in cores; exclusive needs a whole number.")
    policy: Policy = Field(default=Policy.SHARED, description="Cpuset policy.")
    memory_request: Bytes | None = Field(default=None, description="Bytes or 512Mi-style.")
    memory_limit: Bytes | None = Field(default=None, description="Bytes or 512Mi-style.")
    predicted_cpus: float | None = Field(
        default=None, ge=0, description="Predicted P95 use in cores (from the predictor)."
    )
    cpuset: CpuSetField | None = Field(
        default=None, description="The fixed CPUs of an immovable workload."
    )
    cgroup: str | None = Field(default=None, description="Explicit cgroup path.")
    container_id: str | None = Field(default=None, description="Container id to find the cgroup.")

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not _ID.match(value):
            raise ValueError(
                "must start with a letter or digit and hold only letters, digits, "
                "'_', '.', ':' or '-' (at most 128 characters)"
            )
        return value

    @field_validator("cpus")
    @classmethod
    def _check_cpus(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number of cores")
        return value

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


def workload_from_mapping(data: Any, *, where: str = "workload") -> Workload:
    """Validate one workload mapping; `InputError` names the field and the fix."""
    if not isinstance(data, dict):
        raise InputError(where, "must be a mapping with id, qos, cpus, policy, ...")
    try:
        return Workload.model_validate(data)
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
    except yaml.YAMLError as err:
        raise InputError(str(file), f"not valid YAML or JSON: {err}") from err
    return parse_workloads_document(doc)


def _input_error(err: ValidationError, where: str) -> InputError:
    first = err.errors()[0]
    loc = [str(part) for part in first["loc"]]
    message = str(first["msg"]).removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        allowed = ", ".join(Workload.model_fields)
        return InputError(f"{where}.{'.'.join(loc)}", "unknown key", f"allowed keys: {allowed}")
    if not loc and ":" in message.split(" ")[0]:
        # Model-level checks start their message with the field they concern.
        field, _, rest = message.partition(": ")
        return InputError(f"{where}.{field}", rest)
    suffix = f".{'.'.join(loc)}" if loc else ""
    return InputError(f"{where}{suffix}", message)

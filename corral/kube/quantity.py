"""Kubernetes resource quantities (``500m``, ``2``, ``1Gi``, ``1.5``): parse and format.

Values are exact (`fractions.Fraction`), so ``100m`` + ``900m`` is exactly ``1``.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Final

from corral.errors import InputError

_QUANTITY = re.compile(
    r"^([+-]?)([0-9]{1,30})(?:\.([0-9]{0,30}))?(?:[eE]([+-]?[0-9]{1,3}))?([a-zA-Z]{0,2})$"
)
_SUFFIX: Final[dict[str, Fraction]] = {
    "": Fraction(1),
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 10**3),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
    "Ki": Fraction(2**10),
    "Mi": Fraction(2**20),
    "Gi": Fraction(2**30),
    "Ti": Fraction(2**40),
    "Pi": Fraction(2**50),
    "Ei": Fraction(2**60),
}


def parse_quantity(value: str | int | float, *, field: str = "quantity") -> Fraction:
    """The exact value of a quantity string (or a JSON number); `InputError` names ``field``."""
    if isinstance(value, bool):
        raise InputError(field, f"{value!r} is not a quantity", "write a number such as 500m or 2")
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        return Fraction(value).limit_denominator(10**9)
    match = _QUANTITY.match(value.strip())
    if match is None or match.group(5) not in _SUFFIX or (match.group(4) and match.group(5)):
        raise InputError(field, f"{value!r} is not a quantity", "write e.g. 500m, 2, 1.5 or 1Gi")
    sign, whole, frac, exp, suffix = match.groups()
    number = Fraction(int(whole + (frac or "")), 10 ** len(frac or ""))
    if exp:
        number *= Fraction(10) ** int(exp)
    number *= _SUFFIX[suffix]
    return -number if sign == "-" else number


def cpu_millis(value: str | int | float, *, field: str = "cpu") -> int:
    """A CPU quantity in milli-CPUs, rounded up as kubelet does (``0.0001`` -> 1)."""
    exact = parse_quantity(value, field=field) * 1000
    return -((-exact.numerator) // exact.denominator)


def whole_units(value: str | int | float, *, field: str = "quantity") -> int:
    """A quantity as an integer, rounded up (bytes, counts, milli-CPU extended resources)."""
    exact = parse_quantity(value, field=field)
    return -((-exact.numerator) // exact.denominator)


def format_cpu_millis(millis: int) -> str:
    """Milli-CPUs as Kubernetes writes them: ``2`` for 2000, ``1500m`` for 1500."""
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def format_int(value: int) -> str:
    """An integer quantity (bytes, counts)."""
    return str(value)

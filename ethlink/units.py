"""Units in scenario files: rates, times and sizes as numbers or strings with a unit.

The engine counts time in integer picoseconds, rates in integer bit/s and sizes in bytes;
this module turns what a person writes ("400G", "1.5us", "16MiB") into those integers and
says exactly what went wrong when it cannot.

A bare number means the base unit (bit/s, ps, bytes). Decimal prefixes are powers of ten
(k, M, G, T), binary ones powers of two (KiB, MiB, GiB). NaN and infinity are refused
here; upper bounds (what fits the engine's int64 fields) are the scenario reader's.
"""
from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

_NUM = r"([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*"

RATE_UNITS = {
    "": 1, "bps": 1, "b/s": 1,
    "k": 10**3, "kbps": 10**3, "kb/s": 10**3,
    "m": 10**6, "mbps": 10**6, "mb/s": 10**6,
    "g": 10**9, "gbps": 10**9, "gb/s": 10**9,
    "t": 10**12, "tbps": 10**12, "tb/s": 10**12,
}
TIME_UNITS = {"": 1, "ps": 1, "ns": 10**3, "us": 10**6, "µs": 10**6, "ms": 10**9, "s": 10**12}
SIZE_UNITS = {
    "": 1, "b": 1, "byte": 1, "bytes": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9,
    "kib": 2**10, "mib": 2**20, "gib": 2**30,
}


class UnitError(ValueError):
    """A value that is not a number with a known unit."""


def _parse(value, units: dict[str, int], what: str, example: str) -> int:
    if isinstance(value, bool):
        raise UnitError(f"expected a {what} such as {example}, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise UnitError(f"expected a finite {what}, got {value!r}; write e.g. {example}")
        if value != int(value):
            raise UnitError(f"expected a whole number of base units, got {value!r}; write e.g. {example}")
        return int(value)
    if not isinstance(value, str):
        raise UnitError(f"expected a {what} such as {example}, got {type(value).__name__} {value!r}")
    m = re.fullmatch(_NUM + r"([A-Za-zµ/]*)", value.strip())
    if not m:
        raise UnitError(f"cannot read {value!r} as a {what}; write e.g. {example}")
    unit = m.group(2).lower()
    if unit not in units:
        raise UnitError(f"unknown unit {m.group(2)!r} in {value!r}; use one of "
                        f"{', '.join(sorted(u for u in units if u))} (e.g. {example})")
    try:
        exact = Decimal(m.group(1)) * units[unit]
    except InvalidOperation as exc:  # pragma: no cover - regex admits only numbers
        raise UnitError(f"cannot read {value!r}") from exc
    if exact != exact.to_integral_value():
        raise UnitError(f"{value!r} is not a whole number of base units; use a smaller unit")
    return int(exact)


def rate_bps(value) -> int:
    """Bit/s from 400000000000, "400G", "400Gbps" or "400 Gb/s"."""
    return _parse(value, RATE_UNITS, "rate", '"400G"')


def time_ps(value) -> int:
    """Picoseconds from 1500, "1.5ns", "2us", "1ms"."""
    return _parse(value, TIME_UNITS, "time", '"1.5us"')


def size_bytes(value) -> int:
    """Bytes from 4096, "4KiB", "16MiB", "1MB"."""
    return _parse(value, SIZE_UNITS, "size", '"16MiB"')


def fmt_time(ps: int) -> str:
    """A picosecond count for people: 1234567 -> '1.235 us'."""
    for unit, scale in (("s", 10**12), ("ms", 10**9), ("us", 10**6), ("ns", 10**3)):
        if abs(ps) >= scale:
            return f"{ps / scale:.4g} {unit}"
    return f"{ps} ps"


def fmt_rate(bps: float) -> str:
    for unit, scale in (("Tb/s", 1e12), ("Gb/s", 1e9), ("Mb/s", 1e6), ("kb/s", 1e3)):
        if abs(bps) >= scale:
            return f"{bps / scale:.4g} {unit}"
    return f"{bps:.4g} b/s"

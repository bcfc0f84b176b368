"""Tiny declarative checking for config tables.

Each key has one :class:`Field`: its type, default (the one place a default is
defined), an optional range rule, and a one-line doc with its unit. ``check_table``
rejects unknown keys, wrong types and out-of-range values with a ConfigError that
names the dotted key and the rule, and returns the table with defaults filled in.

Every integer must fit in 64 bits (``INT_MAX``) whatever its own rule, so no value
overflows a numpy array or a C call downstream; counts that size memory or processes
have their own, lower, upper bounds (``at_most``, ``between``).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

_MISSING = object()
#: the largest integer any key accepts (a 64-bit signed integer)
INT_MAX = 2**63 - 1
REQUIRED = _MISSING


@dataclass(frozen=True)
class Field:
    #: accepted Python types (after TOML parsing); int is accepted where float is
    types: tuple[type, ...]
    #: default value; REQUIRED if the key must be given
    default: Any = REQUIRED
    #: a predicate on the value, and the rule it enforces, in words ("> 0")
    check: Callable[[Any], bool] | None = None
    rule: str = ""
    #: one line, with the unit
    doc: str = ""
    #: for list fields: the accepted element types
    items: tuple[type, ...] | None = None
    #: allowed values (for strings)
    choices: tuple[Any, ...] | None = None


def type_name(types: tuple[type, ...]) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             list: "a list", dict: "a table"}
    return " or ".join(names.get(t, t.__name__) for t in types)


def check_value(f: Field, value: Any, key: str) -> Any:
    types = f.types
    if float in types and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if bool not in types and isinstance(value, bool):
        raise ConfigError(f"expected {type_name(types)}, got a boolean ({value})", key=key)
    if not isinstance(value, types):
        raise ConfigError(f"expected {type_name(types)}, got {type(value).__name__} ({value!r})", key=key)
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"must be finite, got {value}", key=key)
    if f.items is not None and isinstance(value, list):
        out = []
        for i, item in enumerate(value):
            if float in f.items and isinstance(item, int) and not isinstance(item, bool):
                item = float(item)
            if not isinstance(item, f.items) or (bool not in f.items and isinstance(item, bool)):
                raise ConfigError(f"item {i} must be {type_name(f.items)}, got {item!r}", key=key)
            if isinstance(item, int) and not -INT_MAX - 1 <= item <= INT_MAX:
                raise ConfigError(f"item {i} must fit in 64 bits (at most {INT_MAX:,} in size), got {_magnitude(item)}",
                                  key=key)
            out.append(item)
        value = out
    if f.choices is not None and value not in f.choices:
        raise ConfigError(f"must be one of {', '.join(map(repr, f.choices))}, got {value!r}", key=key)
    if f.check is not None and not f.check(value):
        raise ConfigError(f"must be {f.rule}, got {_show(value)}", key=key)
    if isinstance(value, int) and not -INT_MAX - 1 <= value <= INT_MAX:
        raise ConfigError(f"must fit in 64 bits (at most {INT_MAX:,} in size), got {_magnitude(value)}", key=key)
    return value


def _magnitude(v: int) -> str:
    return f"about {'-' if v < 0 else ''}10^{int(abs(v).bit_length() * 0.30103)}"


def _show(v: Any) -> str:
    """``repr(v)``, but an integer past 64 bits by its magnitude (it may have thousands of digits)."""
    if isinstance(v, int) and not isinstance(v, bool) and not -INT_MAX - 1 <= v <= INT_MAX:
        return _magnitude(v)
    return repr(v)


def check_table(table: Any, fields: Mapping[str, Field], prefix: str) -> dict[str, Any]:
    """Validate ``table`` against ``fields``; return it with defaults filled in."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"expected a table, got {type(table).__name__}", key=prefix or None)
    for k in table:
        if k not in fields:
            if not fields:
                raise ConfigError(f"unknown key; [{prefix}] takes no keys yet", key=_join(prefix, k))
            raise ConfigError(f"unknown key; known keys: {', '.join(fields)}", key=_join(prefix, k))
    out: dict[str, Any] = {}
    for k, f in fields.items():
        key = _join(prefix, k)
        if k in table:
            out[k] = check_value(f, table[k], key)
        elif f.default is REQUIRED:
            raise ConfigError("is required", key=key)
        else:
            out[k] = _copy(f.default)
    return out


def _join(prefix: str, k: str) -> str:
    return f"{prefix}.{k}" if prefix else k


def _copy(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _copy(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_copy(x) for x in v]
    return v


# Common rules
def positive(x) -> bool:
    return x > 0


def non_negative(x) -> bool:
    return x >= 0


def at_most(hi):
    """``0 < x <= hi``: a count with an upper bound (rule text: ``in 1..hi``)."""
    return between(1, hi)


def between(lo, hi):
    """``lo <= x <= hi``."""
    return lambda x: lo <= x <= hi


def count_rule(hi, lo=1) -> str:
    """The rule text of :func:`between` for counts, e.g. ``in 1..1,000,000``."""
    return f"in {lo:,}..{hi:,}"

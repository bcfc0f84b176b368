"""Names -> classes for estimators, placement and spillover policies, plus plug-ins.

A policy spec in a config is either a name or an inline table with ``name`` and
keyword arguments::

    placement = "PaperWaitTime"
    task_time = {name = "ExponentialAverage", alpha = 0.1}
    placement = {name = "mypkg.policies:Greedy", k = 3}    # a user's class

``build`` turns a spec into an instance, and every way it can go wrong (unknown name,
module that does not import, missing attribute, wrong base class, bad argument) is a
:class:`~testbed.core.errors.ConfigError` naming the config key.
"""
from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from typing import Any

from ..core.errors import ConfigError
from .base import Estimator, PlacementPolicy, SpilloverPolicy

#: kind -> (base class, module holding the built-ins)
KINDS: dict[str, tuple[type, str]] = {
    "estimator": (Estimator, "testbed.policy.estimators"),
    "placement": (PlacementPolicy, "testbed.policy.placement"),
    "spillover": (SpilloverPolicy, "testbed.policy.spillover"),
}

_REGISTRY: dict[str, dict[str, type]] = {k: {} for k in KINDS}


def register(kind: str):
    """Class decorator: make a built-in available by its class name."""
    def deco(cls):
        _REGISTRY[kind][cls.__name__] = cls
        return cls
    return deco


def builtins(kind: str) -> dict[str, type]:
    """The built-in classes of a kind, by name (in definition order)."""
    importlib.import_module(KINDS[kind][1])
    return dict(_REGISTRY[kind])


def split_spec(spec: Any, key: str) -> tuple[str, dict[str, Any]]:
    """``"Name"`` or ``{name=..., **kwargs}`` -> (name, kwargs)."""
    if isinstance(spec, str):
        return spec, {}
    if isinstance(spec, Mapping):
        if "name" not in spec:
            raise ConfigError("a policy table needs a 'name' entry", key=key)
        name = spec["name"]
        if not isinstance(name, str):
            raise ConfigError(f"'name' must be a string, not {type(name).__name__}", key=key)
        return name, {k: v for k, v in spec.items() if k != "name"}
    raise ConfigError(f"expected a name or a table with 'name', not {type(spec).__name__}", key=key)


def resolve(kind: str, name: str, key: str) -> type:
    """The class for ``name``: a built-in, or ``"pkg.module:Name"``."""
    base = KINDS[kind][0]
    if ":" in name:
        mod_name, _, attr = name.partition(":")
        if not mod_name or not attr:
            raise ConfigError(f"plug-in {name!r} must look like 'package.module:ClassName'", key=key)
        _cwd_on_path()
        try:
            module = importlib.import_module(mod_name)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - any import failure is the user's to see
            raise ConfigError(f"cannot import module {mod_name!r} for plug-in {name!r}: "
                              f"{_describe(exc)}", key=key) from None
        cls = module
        for part in attr.split("."):
            if not hasattr(cls, part):
                raise ConfigError(f"module {mod_name!r} has no attribute {attr!r}", key=key)
            cls = getattr(cls, part)
        if not (inspect.isclass(cls) and issubclass(cls, base)):
            raise ConfigError(f"plug-in {name!r} must be a subclass of testbed.policy.{base.__name__}",
                              key=key)
        return cls
    known = builtins(kind)
    if name not in known:
        raise ConfigError(f"unknown {kind} {name!r}; known: {', '.join(known)} "
                          f"(or a plug-in 'package.module:ClassName')", key=key)
    return known[name]


def _cwd_on_path() -> None:
    """Plug-ins are imported from installed packages or the current directory (as with
    ``python -m``); the console script alone would not look in the current directory."""
    import os
    import sys
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)


def check_kwargs(cls: type, kwargs: Mapping[str, Any], key: str) -> None:
    """Fail early if ``cls(**kwargs)`` cannot bind its arguments."""
    try:
        inspect.signature(cls).bind(**kwargs)
    except ValueError:
        return                     # no signature to read (a C type): calling it will tell
    except TypeError as exc:
        raise ConfigError(f"bad arguments for {cls.__name__}: {exc}", key=key) from None


def build(kind: str, spec: Any, key: str, **extra: Any) -> Any:
    """Instantiate a spec; argument errors name ``key``."""
    name, kwargs = split_spec(spec, key)
    cls = resolve(kind, name, key)
    kwargs = {**kwargs, **extra}
    check_kwargs(cls, kwargs, key)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{cls.__name__}: {exc}", key=key) from None
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - a user's class may raise anything
        raise ConfigError(f"{name}: creating it raised {_describe(exc)}", key=key) from None


def _describe(exc: BaseException) -> str:
    """``Type: message`` of an exception a plug-in raised (``SystemExit(0)`` included)."""
    if isinstance(exc, SystemExit):
        return f"SystemExit({exc.code!r}) (a plug-in must not exit)"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

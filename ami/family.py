"""Agent families by name: `agent.name` in the config picks one.

Every family builds an `Agent` with the same contract (`init`, `act`, `update`, `sample`,
`prepare`; see `ami.agent`) from a resolved config and the env's sizes, so `ami.run` trains,
evaluates and checkpoints any of them without knowing which it runs. Factories are named
as `"module:function"` and imported on first use, so the config can check a name without
importing any agent code.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

_FAMILIES: dict[str, str] = {"ami": "ami.agent:make_agent", "dreamer": "ami.baselines.dreamer.agent:make_dreamer"}


def names() -> tuple[str, ...]:
    return tuple(_FAMILIES)


def register(name: str, factory: str) -> None:
    """Registers the family `name` built by `factory` (`"package.module:function"`)."""
    if not name or ":" not in factory:
        raise ValueError(f"family: need a name and a 'module:function' factory, got {name!r}, {factory!r}")
    _FAMILIES[name] = factory


def factory(name: str) -> Callable:
    """The `make(cfg, spec) -> Agent` function of family `name`."""
    if name not in _FAMILIES:
        raise ValueError(f"unknown agent family {name!r}; known: {', '.join(_FAMILIES)}")
    module, attr = _FAMILIES[name].split(":")
    return getattr(importlib.import_module(module), attr)

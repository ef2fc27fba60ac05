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

# Families that bring their own training loop: `train(cfg, run_dir, quiet) -> summary` writes the
# run directory (config, metrics, summary) itself. Brax's PPO and SAC train this way.
_TRAINERS: dict[str, str] = {
    "ppo": "ami.baselines.brax_mf:train_from_config",
    "sac": "ami.baselines.brax_mf:train_from_config",
}


def names() -> tuple[str, ...]:
    return (*_FAMILIES, *_TRAINERS)


def trainer(name: str) -> Callable | None:
    """The `train(cfg, run_dir, quiet) -> summary` of a family with its own loop; None for contract families."""
    if name not in _TRAINERS:
        return None
    module, attr = _TRAINERS[name].split(":")
    return getattr(importlib.import_module(module), attr)


def register(name: str, factory: str) -> None:
    """Registers the family `name` built by `factory` (`"package.module:function"`)."""
    if not name or ":" not in factory:
        raise ValueError(f"family: need a name and a 'module:function' factory, got {name!r}, {factory!r}")
    _FAMILIES[name] = factory


def factory(name: str) -> Callable:
    """The `make(cfg, spec) -> Agent` function of family `name`."""
    if name in _TRAINERS:
        raise ValueError(
            f"agent family {name!r} trains with its own loop (ami train runs it); it has no init / act / "
            "update to build, re-plan or re-evaluate"
        )
    if name not in _FAMILIES:
        raise ValueError(f"unknown agent family {name!r}; known: {', '.join(_FAMILIES)}")
    module, attr = _FAMILIES[name].split(":")
    return getattr(importlib.import_module(module), attr)

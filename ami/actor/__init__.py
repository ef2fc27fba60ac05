"""The actor: planners that minimise an energy over action sequences, and receding-horizon helpers.

`make_planner(name, horizon=, action_size=, ...)` returns a `Planner` whose
`optimize(energy_fn, key, init=None) -> PlanResult` is pure, jittable and vmappable.
Planner kinds register themselves in `ami.actor.base`'s registry when their module is
imported here; `planner_names()` lists them.
"""

from ami.actor import gradient
from ami.actor.base import (
    ActionSpace,
    EnergyFn,
    Planner,
    PlannerKind,
    PlanResult,
    make_planner,
    planner_defaults,
    planner_names,
    register_planner,
    shift_plan,
)

__all__ = [
    "ActionSpace",
    "EnergyFn",
    "Planner",
    "PlannerKind",
    "PlanResult",
    "gradient",
    "make_planner",
    "planner_defaults",
    "planner_names",
    "register_planner",
    "shift_plan",
]

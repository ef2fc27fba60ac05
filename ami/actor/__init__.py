"""The actor: planners that minimise an energy over action sequences, and receding-horizon helpers.

`make_planner(name, horizon=, action_size=, ...)` returns a `Planner` whose
`optimize(energy_fn, key, init=None, prior=None) -> PlanResult` is pure, jittable and
vmappable. Planner kinds register themselves in `ami.actor.base`'s registry when their module
is imported here; `planner_names()` lists them: `"gradient"` (`ami.actor.gradient`), `"cem"`,
`"icem"`, `"mppi"` (`ami.actor.sampling`) and `"hybrid"` (`ami.actor.hybrid`).
"""

from ami.actor import gradient, hybrid, sampling
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
    "hybrid",
    "make_planner",
    "planner_defaults",
    "planner_names",
    "register_planner",
    "sampling",
    "shift_plan",
]

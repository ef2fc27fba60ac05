"""Config section of the high level of H-JEPA planning (`ami.hierarchy`), re-exported by `ami.config`."""

from __future__ import annotations

import dataclasses
from typing import Any

from ami import actor
from ami.configlib import check

# The keys a finished run may be re-planned with (`ami eval RUN hierarchy.plan=false ...`): none
# of them changes a trained parameter.
PLANNING_KEYS = (
    "plan",
    "planner",
    "horizon",
    "replan_every",
    "handover",
    "distance_weight",
    "critic_weight",
    "options",
    "edge_cutoff",
    "max_hops",
)


@dataclasses.dataclass(frozen=True)
class HierarchyConfig:
    """Two-level planning (goal tasks). `enabled` trains the high level beside the low one: a
    macro-action code of `macro_size` (None: the action size) for each block of `stride` actions,
    a predictor of the latent `stride` steps ahead and a cost-to-go in macro-steps
    (`critic_objective`: `td`, expectile TD with discount `gamma`, `expectile`,
    `random_goal_fraction` of goals from other windows and slow target `target_tau`; or
    `distance`, the constrained shortest path up to `max_distance` macro-steps), on `batch_size`
    replay windows of `steps` macro-steps; `macro_std` is the spread each macro-action coordinate keeps over the box.

    Planning (re-plannable on a finished run): with `plan`, every `replan_every` steps (None:
    `stride`) the high `planner` (any of `ami.actor`, its `options`) chooses `horizon`
    macro-actions minimising `distance_weight ||z_M - g||^2 / D + critic_weight mean C_H`, and
    the low planner plans to its first subgoal; within `handover` macro-steps of the goal by the
    high critic the low level plans to the goal itself.
    `plan: false` plans flat with the same run.

    `subgoals: landmarks` replaces the learned high level by a graph over `landmarks` replay
    observations (`ami.landmarks`): edges where the low critic reads at most `edge_cutoff`
    (its units; None: the configurator's `planner.horizon / 2` steps), shortest routes over at
    most `max_hops` edges, and the first landmark of the route as the low planner's goal,
    renewed every `replan_every` steps. No high networks are trained in that mode."""

    enabled: bool = False
    stride: int = 16
    macro_size: int | None = None
    steps: int = 8
    hidden: tuple[int, ...] = (128, 128)
    batch_size: int = 128
    critic_objective: str = "td"
    max_distance: float = 64.0
    gamma: float = 0.95
    expectile: float = 0.1
    random_goal_fraction: float = 0.3
    target_tau: float = 0.995
    macro_std: float = 0.5
    plan: bool = True
    planner: str = "cem"
    horizon: int = 8
    replan_every: int | None = None
    handover: float = 1.0
    distance_weight: float = 1.0
    critic_weight: float = 1.0
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    subgoals: str = "planned"
    landmarks: int = 512
    edge_cutoff: float | None = None
    max_hops: int = 64

    @property
    def learned(self) -> bool:
        """Whether the high level's networks are built and trained."""
        return self.enabled and self.subgoals == "planned"

    def validate(self) -> None:
        check(self.stride >= 2, "stride", "must be >= 2 low-level steps")
        check(self.macro_size is None or self.macro_size >= 1, "macro_size", "must be >= 1")
        for name in ("steps", "batch_size", "horizon"):
            check(getattr(self, name) >= 1, name, "must be >= 1")
        check(all(h >= 1 for h in self.hidden), "hidden", "widths must be >= 1")
        check(self.critic_objective in ("distance", "td"), "critic_objective", "must be 'distance' or 'td'")
        check(self.max_distance > 1.0, "max_distance", "must be > 1 (macro-steps)")
        check(0.0 < self.gamma < 1.0, "gamma", "must be in (0, 1)")
        check(0.0 < self.expectile < 1.0, "expectile", "must be in (0, 1)")
        check(0.0 <= self.random_goal_fraction <= 1.0, "random_goal_fraction", "must be in [0, 1]")
        check(0.0 <= self.target_tau < 1.0, "target_tau", "must be in [0, 1)")
        check(0.0 <= self.macro_std < 1.0, "macro_std", "must be in [0, 1)")
        check(self.replan_every is None or self.replan_every >= 1, "replan_every", "must be >= 1")
        check(self.handover >= 0.0, "handover", "must be >= 0 (macro-steps to go)")
        check(self.distance_weight >= 0.0 and self.critic_weight >= 0.0, "distance_weight", "weights must be >= 0")
        check(self.subgoals in ("planned", "landmarks"), "subgoals", "must be 'planned' or 'landmarks'")
        check(self.landmarks >= 2, "landmarks", "must be >= 2")
        check(self.edge_cutoff is None or self.edge_cutoff > 0.0, "edge_cutoff", "must be > 0 or null")
        check(self.max_hops >= 1, "max_hops", "must be >= 1")
        known = actor.planner_names()
        check(self.planner in known, "planner", f"unknown planner {self.planner!r}; known planners: {', '.join(known)}")
        declared = actor.planner_defaults(self.planner)
        unknown = sorted(set(self.options) - set(declared))
        check(not unknown, "options", f"planner {self.planner!r} has no option(s) {unknown}; known: {sorted(declared)}")

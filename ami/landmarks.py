"""A landmark graph over the replay: a long-range cost-to-go stitched from short hops the low
critic is trusted with, and the waypoint it hands the low planner (`hierarchy.subgoals:
landmarks`, a second level of planning that needs no model of its own).

The low critic `C(z, g)` (steps to go, `ami.cost`) is learned from hindsight pairs a few dozen
steps apart: near the data it measures short routes well, far from them it sees straight lines
(through walls). The graph keeps only its short answers. `L` landmark observations are chosen
from the replay once (`choose`, farthest-point sampling in observation space over an even
spread of the stored steps) and kept in the learner. At a re-plan, with `l = encode(landmarks)
[L, D]`:

    W_ij = C(l_i, l_j)   where C(l_i, l_j) <= cutoff, else inf       (edges [L, L])
    T_i  = min(C(l_i, g) [<= cutoff], min_j W_ij + T_j)               (Bellman-Ford, `max_hops` sweeps)
    route(z) = min_i C(z, l_i) [<= cutoff] + T_i

and the low planner's goal is the landmark of the minimum of `route_i - progress C(z, l_i)`
(of the landmarks on a shortest route, the farthest first hop: sums of hops tie along a route,
and the nearest landmark would hold the agent where it is), or the goal itself where
`C(z, g) <= cutoff` or no route is found. Costs are summed in the critic's own units (steps,
discounted for a TD critic: a sum of short hops then counts them nearly in full, as it should).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ami import hierarchy, memory

INF = jnp.inf


class LandmarkPlanning(NamedTuple):
    """Settings of waypoint planning: `num` landmarks, edges up to `cutoff` (critic units),
    `max_hops` Bellman-Ford sweeps, a new waypoint every `replan_every` steps; `progress` is the
    tie-break towards farther first hops (module docstring)."""

    num: int
    cutoff: float
    max_hops: int
    replan_every: int
    progress: float = 0.1


def choose(obs: jax.Array, num: int, pool: int = 16384) -> jax.Array:
    """`num` landmarks `[num, ...]` of the observations `obs [P, ...]`: farthest-point sampling
    (Euclidean, flattened) over `pool` evenly spaced rows, starting at the first. Deterministic."""
    if num < 1 or num > obs.shape[0]:
        raise ValueError(f"expected 1 <= landmarks <= {obs.shape[0]} observations, got {num}")
    stride = max(obs.shape[0] // pool, 1)
    cand = obs[::stride]
    flat = cand.reshape(cand.shape[0], -1).astype(jnp.float32)

    def pick(carry, _):
        nearest, last = carry
        nearest = jnp.minimum(nearest, jnp.sum((flat - flat[last]) ** 2, axis=-1))
        nxt = jnp.argmax(nearest)
        return (nearest, nxt), last

    start = (jnp.full((flat.shape[0],), INF), jnp.zeros((), jnp.int32))
    _, idx = jax.lax.scan(pick, start, None, length=num)
    return cand[idx]


def from_replay(data_obs: jax.Array, num: int) -> jax.Array:
    """Landmarks of a replay's observations `[N, C, ...]` (streams and steps flattened)."""
    return choose(data_obs.reshape(-1, *data_obs.shape[2:]), num)


def edges(critic: Callable, l: jax.Array, cutoff: float) -> jax.Array:
    """`W [L, L]`: `critic(l_i, l_j)` where it is at most `cutoff`, inf elsewhere; 0 on the diagonal."""
    w = critic(l[:, None], l[None, :])
    w = jnp.where(w <= cutoff, w, INF)
    return jnp.where(jnp.eye(l.shape[0], dtype=bool), 0.0, w)


def to_goal(w: jax.Array, last: jax.Array, max_hops: int) -> jax.Array:
    """`T [L]`, the shortest cost from each landmark to the goal over at most `max_hops` edges of
    `w [L, L]` and a last hop `last [L]` (inf where the goal is out of reach)."""

    def sweep(t, _):
        return jnp.minimum(t, jnp.min(w + t[None, :], axis=1)), None

    t, _ = jax.lax.scan(sweep, last, None, length=max_hops)
    return t


def waypoint(critic: Callable, lp: LandmarkPlanning, l: jax.Array, w: jax.Array, z: jax.Array, g: jax.Array):
    """The low planner's goal from `z [D]` towards `g [D]`: `(goal [D], route cost [], direct [])`;
    `direct` is whether it is `g` itself (within the cutoff, or no route through the graph)."""
    reach = lambda c: jnp.where(c <= lp.cutoff, c, INF)  # noqa: E731
    t = to_goal(w, reach(critic(l, g)), lp.max_hops)
    first = reach(critic(z, l))
    total = first + t
    best = jnp.argmin(jnp.where(jnp.isfinite(total), total - lp.progress * first, INF))
    direct = (critic(z, g) <= lp.cutoff) | ~jnp.isfinite(total[best])
    return jnp.where(direct, g, l[best]), total[best], direct


def plan_waypoints(critic: Callable, lp: LandmarkPlanning, l: jax.Array, mem: hierarchy.HighMemory, z, g):
    """New waypoints for a batch (`z, g [N, D]`, landmarks' latents `l [L, D]`): the memory with
    them as subgoals and `(route cost [N], direct [N])`. The graph is built once for the batch."""
    w = edges(critic, l, lp.cutoff)
    goal, route, direct = jax.vmap(lambda zi, gi: waypoint(critic, lp, l, w, zi, gi))(z, g)
    mem = mem._replace(subgoal=goal, plan_valid=jnp.ones_like(mem.plan_valid), since=jnp.zeros_like(mem.since))
    return mem, route, direct


def empty_memory(latent_size: int, num_envs: int) -> hierarchy.HighMemory:
    """`num_envs` waypoint memories (the high memory's subgoal and clock; no macro plan)."""
    one = hierarchy.HighMemory(
        plan=jnp.zeros((1, 1), jnp.float32),
        plan_valid=jnp.zeros((), jnp.bool_),
        subgoal=jnp.zeros((latent_size,), jnp.float32),
        since=jnp.zeros((), jnp.int32),
    )
    return memory.batched(one, num_envs)

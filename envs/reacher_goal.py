"""Reacher-Goal: DeepMind Control's two-link planar reacher as a goal-reaching task (MJX).

The physics is MuJoCo Playground's `ReacherEasy` model (the DMC reacher MJCF with the big
target, radius 0.05), stepped by `mujoco.mjx` in pure JAX, so it runs on any JAX backend
and planners can differentiate through it. Only the task around it is new:

* The goal is an observation of a reachable pose. `reset` draws a goal pose (shoulder
  uniform in [-pi, pi], wrist uniform in its joint range, as Playground draws the start),
  puts the target (a mocap body) at the fingertip of that pose, and sets
  `info["goal_obs"]` to the observation of the arm resting at it. The start pose is drawn
  independently, at rest. Every goal is therefore reachable and encoded like any
  observation.
* Observation `[8]`, the arm only (never the target, so one encoder serves both):

      [cos q_s, sin q_s, cos q_w, sin q_w, tip_x, tip_y, dq_s, dq_w]

  q_s / q_w the shoulder / wrist angles (rad), tip the fingertip position (m, the arm's
  base at the origin, reach 0.24), dq the joint velocities (rad/s). The goal observation
  has dq = 0.
* Action `[2]` in [-1, 1]: the two joint motors' controls (gear 0.05 N m).
* Reward: minus the fingertip-to-target distance. `metrics["distance"]` is that distance,
  `metrics["success"]` is 1 within `success_radius` (default the target's radius, 0.05).

Timing. One agent step is `ctrl_dt = 0.04` s: four physics steps of `sim_dt = 0.01` s.
The arm is light (joint-space inertia about 1.5e-3 kg m^2 at the shoulder) and nearly
undamped, so bang-bang torques swing the shoulder by pi and stop it in about 0.55 s. At
0.04 s per step a saturated joint-space PD controller (u = clip(2 e - 0.3 dq)) reaches
300 random start/goal pairs in 15 steps (median), 25 (99th percentile), 28 at most, and
moves between opposite poses (shoulder pi apart) in about 22 steps; the default episode,
50 steps (2 s), leaves about twice that. Playground steps at `sim_dt = 0.005` with
MuJoCo's implicit joint damping (`eulerdamp`, on by default in MuJoCo) turned off. With
it on, `sim_dt = 0.01` stays closer to a 0.0005 s reference (fingertip error after 50
agent steps of random actions: 0.6 mm median, 2 mm worst of 20 episodes) than 0.005
without it (1.8 mm, 11 mm), at half the physics steps, so that is the default.

Cost (2-core CPU, batch 64, `jit(vmap(step))`): about 6.5 s to compile the bare env's
step, 8 s through `envs.make`'s wrappers (which also trace `reset`), about 25 s for a
reverse-mode gradient through a scan of steps, and about 35,000-40,000 agent steps/s
after compiling. The model's solver settings stay (Newton, 1 iteration, 6 line-search
steps; contacts are off, the only constraint is the wrist's +-160 degree limit): fewer
line-search steps, the CG solver, or dropping the limit altogether each saved at most
about 1 s of compile time.

Fingertip positions come from the arm's planar forward kinematics (`fingertip`), with
link offsets read from the model and checked against its layout when the env is built;
the tests compare them with MuJoCo's own kinematics. `pipeline_state` is the MJX `Data`;
its derived fields (`xpos`, `geom_xpos`, ...) are those MuJoCo computed at the start of
the last physics step, and zero right after `reset` (run `mjx.forward` to render).
"""

from __future__ import annotations

import copy

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from mujoco import mjx

from envs.base import GOAL_OBS, SUCCESS, Env, State

PLAYGROUND_NAME = "ReacherEasy"
TARGET_RADIUS = 0.05  # Playground's reacher.BIG_TARGET, the target sphere of ReacherEasy
CTRL_DT = 0.04
SIM_DT = 0.01
EPISODE_LENGTH = 50
OBS_SIZE = 8
JOINTS = ("shoulder", "wrist")
BODIES = ("arm", "hand", "finger")


def load_model(sim_dt: float = SIM_DT) -> mujoco.MjModel:
    """Playground's `ReacherEasy` MuJoCo model, timestep `sim_dt`, implicit joint damping on."""
    from mujoco_playground import registry

    model = copy.copy(registry.load(PLAYGROUND_NAME, config_overrides={"impl": "jax"}).mj_model)
    model.opt.timestep = float(sim_dt)
    model.opt.disableflags &= ~int(mujoco.mjtDisableBit.mjDSBL_EULERDAMP)
    return model


def arm_geometry(model: mujoco.MjModel) -> tuple[np.ndarray, np.ndarray]:
    """The arm's base `[2]` and link offsets `[2, 2]` (shoulder->wrist, wrist->fingertip), in m.

    Raises `ValueError` unless the model is the planar chain arm(shoulder) -> hand(wrist)
    -> finger with z hinges at the body origins, unrotated bodies and qpos = [q_s, q_w].
    """
    ids = [model.body(name).id for name in BODIES]
    joints = [model.joint(name).id for name in JOINTS]
    finger_geom = model.geom("finger").id
    problems = []
    if (model.nq, model.nv, model.nu) != (2, 2, 2):
        problems.append(f"nq, nv, nu = {model.nq, model.nv, model.nu}, expected (2, 2, 2)")
    if list(model.body_parentid[ids[1:]]) != ids[:-1]:
        problems.append("bodies arm -> hand -> finger are not a chain")
    if list(model.jnt_bodyid[joints]) != ids[:2] or list(model.jnt_qposadr[joints]) != [0, 1]:
        problems.append("shoulder/wrist are not the hinges of arm/hand at qpos 0/1")
    if not np.allclose(model.jnt_axis[joints], [0.0, 0.0, 1.0]) or not np.allclose(model.jnt_pos[joints], 0.0):
        problems.append("the hinges are not z axes through the body origins")
    if not np.allclose(model.body_quat[ids], [1.0, 0.0, 0.0, 0.0]):
        problems.append("the arm's bodies are rotated")
    if model.geom_bodyid[finger_geom] != ids[2]:
        problems.append("the finger geom is not on the finger body")
    if problems:
        raise ValueError(f"reacher_goal: unexpected reacher model: {'; '.join(problems)}")
    base = model.body_pos[ids[0], :2]
    offsets = np.stack([model.body_pos[ids[1], :2], model.body_pos[ids[2], :2] + model.geom_pos[finger_geom, :2]])
    return base.astype(np.float32), offsets.astype(np.float32)


def planar_fingertip(base: jax.Array, offsets: jax.Array, qpos: jax.Array) -> jax.Array:
    """Forward kinematics: base `[2]`, link offsets `[2, 2]`, joint angles `[2]` -> fingertip `[2]`."""
    angles = jnp.cumsum(qpos)
    c, s = jnp.cos(angles), jnp.sin(angles)
    rotated = jnp.stack([c * offsets[:, 0] - s * offsets[:, 1], s * offsets[:, 0] + c * offsets[:, 1]], axis=-1)
    return base + rotated.sum(axis=0)


def safe_norm(x: jax.Array) -> jax.Array:
    """Euclidean norm of `x [..., D]` -> `[...]`, with gradient 0 (not NaN) at x = 0."""
    sq = jnp.sum(x * x, axis=-1)
    positive = sq > 0.0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def joint_angles(obs: jax.Array) -> jax.Array:
    """The joint angles `[..., 2]` an observation (or goal observation) `[..., 8]` describes."""
    return jnp.arctan2(obs[..., 1:4:2], obs[..., 0:4:2])


class ReacherGoal(Env):
    """Goal-conditioned two-link reacher on MJX physics; see the module docstring.

    Args:
      ctrl_dt: seconds per agent step; a multiple of `sim_dt`.
      sim_dt: the physics timestep.
      success_radius: fingertip-to-target distance counted as reached (m).
      terminate_on_success: end the episode (`done = 1`) once the goal is reached.
    """

    goal_conditioned = True

    def __init__(
        self,
        ctrl_dt: float = CTRL_DT,
        sim_dt: float = SIM_DT,
        success_radius: float = TARGET_RADIUS,
        terminate_on_success: bool = False,
    ):
        if sim_dt <= 0.0 or ctrl_dt <= 0.0:
            raise ValueError(f"reacher_goal: need ctrl_dt > 0 and sim_dt > 0, got {ctrl_dt=}, {sim_dt=}")
        n_substeps = round(ctrl_dt / sim_dt)
        if n_substeps < 1 or abs(n_substeps * sim_dt - ctrl_dt) > 1e-6 * ctrl_dt:
            raise ValueError(f"reacher_goal: ctrl_dt must be a multiple of sim_dt, got {ctrl_dt=}, {sim_dt=}")
        if success_radius <= 0.0:
            raise ValueError(f"reacher_goal: success_radius must be positive, got {success_radius}")
        self.ctrl_dt, self.sim_dt, self.n_substeps = float(ctrl_dt), float(sim_dt), int(n_substeps)
        self.success_radius = float(success_radius)
        self.terminate_on_success = bool(terminate_on_success)
        self.mj_model = load_model(sim_dt)
        self.mjx_model = mjx.put_model(self.mj_model, impl="jax")
        base, offsets = arm_geometry(self.mj_model)
        self._base, self._offsets = jnp.asarray(base), jnp.asarray(offsets)
        wrist_range = self.mj_model.jnt_range[self.mj_model.joint("wrist").id]
        self._pose_low = jnp.array([-np.pi, wrist_range[0]], jnp.float32)
        self._pose_high = jnp.array([np.pi, wrist_range[1]], jnp.float32)
        self._target_mocap = int(self.mj_model.body("target").mocapid[0])
        # host copy: states built from it stay uncommitted, like those a jitted reset returns
        self._data0 = jax.tree.map(np.asarray, mjx.make_data(self.mjx_model))

    @property
    def observation_size(self) -> int:
        return OBS_SIZE

    @property
    def action_size(self) -> int:
        return 2

    @property
    def backend(self) -> str:
        return "mjx"

    @property
    def dt(self) -> float:
        return self.ctrl_dt

    def sample_pose(self, key: jax.Array) -> jax.Array:
        """Random joint angles `[2]`: shoulder in [-pi, pi], wrist in its joint range."""
        return jax.random.uniform(key, (2,), minval=self._pose_low, maxval=self._pose_high)

    def fingertip(self, qpos: jax.Array) -> jax.Array:
        """Fingertip position `[2]` (m) of the arm at joint angles `qpos [2]`."""
        return planar_fingertip(self._base, self._offsets, qpos)

    def observe(self, qpos: jax.Array, qvel: jax.Array) -> jax.Array:
        """The observation `[8]` of the arm at angles `qpos [2]` moving at `qvel [2]`."""
        angles = jnp.stack([jnp.cos(qpos), jnp.sin(qpos)], axis=-1).reshape(4)
        return jnp.concatenate([angles, self.fingertip(qpos), qvel])

    def reset(self, rng: jax.Array) -> State:
        k_start, k_goal = jax.random.split(rng)
        return self.reset_to(self.sample_pose(k_start), self.sample_pose(k_goal))

    def reset_to(self, start: jax.Array, goal: jax.Array) -> State:
        """A fresh episode: the arm resting at angles `start [2]`, the goal pose `goal [2]`."""
        start, goal = jnp.asarray(start, jnp.float32), jnp.asarray(goal, jnp.float32)
        data = jax.tree.map(jnp.asarray, self._data0)
        target = data.mocap_pos.at[self._target_mocap, :2].set(self.fingertip(goal))
        data = data.replace(qpos=start, mocap_pos=target)
        return self._state(data, self.observe(goal, jnp.zeros(2, jnp.float32)), jnp.zeros((), jnp.float32))

    def set_pose(self, state: State, qpos: jax.Array, qvel: jax.Array | None = None) -> State:
        """`state` with the arm moved to angles `qpos [2]` at velocity `qvel [2]` (default rest)."""
        qvel = jnp.zeros(2, jnp.float32) if qvel is None else jnp.asarray(qvel, jnp.float32)
        data = state.pipeline_state.replace(qpos=jnp.asarray(qpos, jnp.float32), qvel=qvel)
        return self._state(data, state.info[GOAL_OBS], state.done)

    def step(self, state: State, action: jax.Array) -> State:
        data = self.physics(state.pipeline_state, action)
        return self._state(data, state.info[GOAL_OBS], state.done)

    def physics(self, data: mjx.Data, action: jax.Array) -> mjx.Data:
        """`n_substeps` MJX steps with the motors' controls `clip(action [2], -1, 1)`."""
        data = data.replace(ctrl=jnp.clip(action, -1.0, 1.0))

        def sub_step(d, _):
            return mjx.step(self.mjx_model, d), None

        return jax.lax.scan(sub_step, data, None, length=self.n_substeps)[0]

    def target(self, data: mjx.Data) -> jax.Array:
        """The target's position `[2]` (m)."""
        return data.mocap_pos[self._target_mocap, :2]

    def _state(self, data: mjx.Data, goal_obs: jax.Array, prev_done: jax.Array) -> State:
        dist = safe_norm(self.fingertip(data.qpos) - self.target(data))
        success = (dist <= self.success_radius).astype(jnp.float32)
        done = jnp.maximum(prev_done, success) if self.terminate_on_success else jnp.zeros((), jnp.float32)
        return State(
            pipeline_state=data,
            obs=self.observe(data.qpos, data.qvel),
            reward=-dist,
            done=done,
            metrics={SUCCESS: success, "distance": dist},
            info={GOAL_OBS: goal_obs},
        )

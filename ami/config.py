"""Experiment configuration: one frozen dataclass per component, loaded from YAML.

`load_experiment(path, overrides)` reads `experiments/*.yaml`, applies dotted overrides
(`planner.horizon=40`, `env.name=pkg.mod:factory`) and validates everything (unknown keys,
wrong types, impossible values) before anything compiles, naming the key. Fields left
`None` are chosen by the configurator (`ami.configurator.resolve`), which returns a new,
complete config; the resolved config is what a run saves.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

from ami import actor, configlib, family, scalars
from ami.config_baselines import BraxConfig, DreamerConfig
from ami.config_hierarchy import HierarchyConfig
from ami.configlib import ConfigError, check
from ami.nn import ACTIVATIONS


@dataclasses.dataclass(frozen=True)
class EnvConfig:
    """Which environment and how it is wrapped (see `envs.make`)."""

    name: str = "two_rooms"
    episode_length: int | None = None
    action_repeat: int | None = None
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)

    def validate(self) -> None:
        check(bool(self.name), "name", "must be a non-empty env name")
        check(self.episode_length is None or self.episode_length >= 1, "episode_length", "must be >= 1")
        check(self.action_repeat is None or self.action_repeat >= 1, "action_repeat", "must be >= 1")


@dataclasses.dataclass(frozen=True)
class AgentConfig:
    """Which agent family runs (`ami.family.names()`): `ami`, the AMI agent of `ami.agent`;
    `dreamer`, the Dreamer-style baseline of `ami.baselines.dreamer` (its settings: `dreamer.*`);
    `ppo`, `sac`: Brax's model-free agents through `ami.baselines.brax_mf` (`brax.options`)."""

    name: str = "ami"

    def validate(self) -> None:
        known = family.names()
        check(self.name in known, "name", f"unknown agent family {self.name!r}; known: {', '.join(known)}")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """The replay buffer: `num_envs` environment streams of `steps_per_env` steps each.

    Offline, it is filled once by an exploration policy with smooth random actions,
    `a_t = clip(beta a_{t-1} + sqrt(1 - beta^2) eps_t)`, eps ~ N(0, I). Online (`online.*`),
    `num_envs` environments act in parallel and `steps_per_env` is the capacity of each
    stream (None: the configurator makes it hold the whole run). Its memory is checked
    against `max_replay_mb` before anything is allocated. `env_kwargs` are merged over
    `env.kwargs` for the offline exploration env only (e.g. a maze's `task: any` spreads the
    exploration's starts over every room while evaluation starts in an end room).
    """

    num_envs: int = 256
    steps_per_env: int | None = None
    smoothing: float = 0.8
    max_replay_mb: float = 2048.0
    env_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)

    def validate(self) -> None:
        check(self.num_envs >= 1, "num_envs", "must be >= 1")
        check(self.steps_per_env is None or self.steps_per_env >= 2, "steps_per_env", "must be >= 2")
        check(0.0 <= self.smoothing < 1.0, "smoothing", "must be in [0, 1)")
        check(self.max_replay_mb > 0, "max_replay_mb", "must be > 0")


@dataclasses.dataclass(frozen=True)
class PerceptionConfig:
    """The encoder: an MLP of widths `hidden` for vector observations, a CNN of stride-2
    convolutions with `channels` for images; `fourier_features > 0` adds random Fourier
    features of vector observations; `normalize` standardises them with the mean and std of
    the collected data (online: of the seed steps' transitions, fixed from then on)."""

    latent_size: int = 16
    hidden: tuple[int, ...] = (128, 128)
    channels: tuple[int, ...] = (32, 64, 64)
    activation: str = "mish"
    fourier_features: int = 0
    fourier_scale: float = 1.0
    normalize: bool = False

    def validate(self) -> None:
        check(self.latent_size >= 1, "latent_size", "must be >= 1")
        check(
            self.activation in ACTIVATIONS,
            "activation",
            f"must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}",
        )
        check(all(h >= 1 for h in self.hidden), "hidden", "widths must be >= 1")
        check(len(self.channels) >= 1 and all(c >= 1 for c in self.channels), "channels", "must be >= 1 each")
        check(self.fourier_features >= 0, "fourier_features", "must be >= 0")
        check(self.fourier_scale > 0, "fourier_scale", "must be > 0")


@dataclasses.dataclass(frozen=True)
class WorldModelConfig:
    """JEPA predictor and its loss; see `ami.world_model`."""

    hidden: tuple[int, ...] = (256, 256)
    activation: str = "mish"
    prediction_horizon: int = 8
    anti_collapse: Literal["vicreg", "sigreg", "ema", "none"] = "vicreg"
    variance_weight: float = 1.0
    covariance_weight: float = 0.04
    sigreg_weight: float = 1.0
    ema_tau: float = 0.99
    inverse_weight: float = 0.0
    contrastive_weight: float = 0.0
    contrastive_temperature: float = 1.0
    reward_weight: float = 1.0
    reward_hidden: tuple[int, ...] = (256,)
    reward_head: Literal["twohot", "symlog", "mse"] = "symlog"  # by return: benchmarks/heads.py

    def validate(self) -> None:
        check(self.reward_weight >= 0.0, "reward_weight", "must be >= 0")
        check(all(h >= 1 for h in self.reward_hidden), "reward_hidden", "widths must be >= 1")
        check(self.reward_head in scalars.KINDS, "reward_head", f"must be one of {scalars.KINDS}")
        check(self.prediction_horizon >= 1, "prediction_horizon", "must be >= 1")
        check(self.contrastive_temperature > 0, "contrastive_temperature", "must be > 0")
        check(
            self.activation in ACTIVATIONS,
            "activation",
            f"must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}",
        )
        check(0.0 <= self.ema_tau < 1.0, "ema_tau", "must be in [0, 1)")
        for name in ("variance_weight", "covariance_weight", "sigreg_weight", "inverse_weight", "contrastive_weight"):
            check(getattr(self, name) >= 0.0, name, "must be >= 0")


@dataclasses.dataclass(frozen=True)
class CriticConfig:
    """Goal-conditioned cost-to-go (`ami.cost`): expectile TD with hindsight goals (`td`), value
    iteration through the world model over `model_actions` random actions (`model`), or the
    constrained shortest-path distance (`distance`, metric critic only)."""

    enabled: bool = True
    kind: Literal["metric", "mlp"] = "metric"
    objective: Literal["td", "model", "distance"] = "td"
    model_actions: int = 16
    fourier_features: int = 0
    fourier_scale: float = 1.0
    max_distance: float = 100.0
    penalty: float = 100.0
    hidden: tuple[int, ...] = (256, 256)
    gamma: float = 0.98
    expectile: float = 0.1
    target_tau: float = 0.995
    max_goal_offset: int = 100
    random_goal_fraction: float = 0.3
    batch_size: int = 512

    def validate(self) -> None:
        check(0.0 < self.gamma < 1.0, "gamma", "must be in (0, 1)")
        check(0.0 < self.expectile < 1.0, "expectile", "must be in (0, 1)")
        check(0.0 <= self.target_tau < 1.0, "target_tau", "must be in [0, 1)")
        check(self.max_goal_offset >= 1, "max_goal_offset", "must be >= 1")
        check(0.0 <= self.random_goal_fraction <= 1.0, "random_goal_fraction", "must be in [0, 1]")
        check(self.batch_size >= 2, "batch_size", "must be >= 2")
        check(self.max_distance > 1.0, "max_distance", "must be > 1 (steps)")
        check(self.penalty > 0.0, "penalty", "must be > 0")
        check(self.fourier_features >= 0, "fourier_features", "must be >= 0")
        check(self.model_actions >= 1, "model_actions", "must be >= 1")
        check(self.objective == "td" or self.kind == "metric", "objective", "'distance' needs kind: metric")


@dataclasses.dataclass(frozen=True)
class ValueConfig:
    """The value critic of reward tasks (`ami.value`): `num_heads` Q heads on `[z, a]` with a
    `head` (`ami.scalars`), trained on TD(`lam`) targets of discount `gamma` (None: chosen by
    the configurator from the episode length) with a target copy updated at rate `1 - target_tau`.
    `weight` scales its loss in the world model's update (its gradient shapes the latent)."""

    num_heads: int = 2
    hidden: tuple[int, ...] = (256, 256)
    gamma: float | None = None
    lam: float = 0.0
    target_tau: float = 0.99
    weight: float = 1.0
    head: Literal["twohot", "symlog", "mse"] = "symlog"  # by return: benchmarks/heads.py

    def validate(self) -> None:
        check(self.num_heads >= 1, "num_heads", "must be >= 1")
        check(all(h >= 1 for h in self.hidden), "hidden", "widths must be >= 1")
        check(self.gamma is None or 0.0 < self.gamma < 1.0, "gamma", "must be in (0, 1)")
        check(0.0 <= self.lam <= 1.0, "lam", "must be in [0, 1]")
        check(0.0 <= self.target_tau < 1.0, "target_tau", "must be in [0, 1)")
        check(self.weight >= 0.0, "weight", "must be >= 0")
        check(self.head in scalars.KINDS, "head", f"must be one of {scalars.KINDS}")


@dataclasses.dataclass(frozen=True)
class PolicyConfig:
    """The amortised policy (`ami.policy`): trained on the planner's energy through the world
    model; when enabled it proposes `candidates` action sequences (noise std `noise`) to the
    planner at every decision. `objective`: `energy` trains it on the planner's energy of its
    imagined `planner.horizon`-step rollouts; `value` (reward tasks) maximises the value
    critic at its action, `mean_i Q_i(z, pi(z))`, on replayed latents (one step, no
    rollout: TD-MPC2's actor). None: the configurator enables it on reward tasks (the value
    term needs the policy's action) and not on goal tasks, picks `value` on reward tasks and
    `energy` on goal tasks, and sizes `candidates` to the planner's budget."""

    enabled: bool | None = None
    objective: Literal["energy", "value"] | None = None
    hidden: tuple[int, ...] = (256, 256)
    candidates: int | None = None
    noise: float = 0.3
    batch_size: int = 256

    def validate(self) -> None:
        check(all(h >= 1 for h in self.hidden), "hidden", "widths must be >= 1")
        check(self.candidates is None or self.candidates >= 1, "candidates", "must be >= 1")
        check(self.noise >= 0.0, "noise", "must be >= 0")
        check(self.batch_size >= 1, "batch_size", "must be >= 1")


@dataclasses.dataclass(frozen=True)
class CostConfig:
    """Weights of the energy (`ami.cost`); None: chosen by the configurator.

    `visit_weight > 0` adds the cost of revisiting the last `visit_history` latents held in
    short-term memory (a Gaussian of width `visit_scale` in latent units around each).
    `visit_fade > 0` (steps) fades it out near the goal: each imagined state's visit cost is
    scaled by `min(1, C(z, g) / visit_fade) ** visit_fade_power` with `C` the goal critic's steps to go, so the
    agent stays at a goal it reached (`ami.cost.visit_term`)."""

    goal_weight: float | None = None
    critic_weight: float | None = None
    action_weight: float = 0.0
    terminal: bool | None = None
    visit_weight: float = 0.0
    visit_scale: float = 1.0
    visit_history: int = 100
    visit_fade: float = 0.0
    visit_fade_power: float = 1.0
    reward_weight: float | None = None
    value_weight: float | None = None

    def validate(self) -> None:
        for name in ("goal_weight", "critic_weight", "action_weight", "visit_weight", "reward_weight", "value_weight"):
            value = getattr(self, name)
            check(value is None or value >= 0.0, name, "must be >= 0")
        check(self.visit_scale > 0.0, "visit_scale", "must be > 0")
        check(self.visit_history >= 1, "visit_history", "must be >= 1")
        check(self.visit_fade >= 0.0, "visit_fade", "must be >= 0 (steps to go; 0: off)")
        check(self.visit_fade_power > 0.0, "visit_fade_power", "must be > 0")


@dataclasses.dataclass(frozen=True)
class PlannerConfig:
    """The actor's planner and receding-horizon control; None: chosen by the configurator.

    `name` is a registered planner (`ami.actor.planner_names()`). `mode: policy` acts with the
    amortised policy alone, without planning (for speed and ablations). The common settings
    (`iterations`, `restarts`, `population`, `learning_rate`, `init`) reach the planner when
    its kind has that option; setting one the kind lacks is an error. `options` holds the
    kind's other options (`ami.actor.planner_defaults(name)`), checked here by name.
    """

    name: str = "gradient"
    horizon: int | None = None
    iterations: int | None = None
    restarts: int | None = None
    population: int | None = None
    learning_rate: float | None = None
    replan_every: int | None = None
    init: Literal["uniform", "constant", "zeros"] = "constant"
    mode: Literal["plan", "policy"] = "plan"
    options: dict[str, Any] = dataclasses.field(default_factory=dict)

    def validate(self) -> None:
        for name in ("horizon", "iterations", "restarts", "population", "replan_every"):
            value = getattr(self, name)
            check(value is None or value >= 1, name, "must be >= 1")
        check(self.learning_rate is None or self.learning_rate > 0, "learning_rate", "must be > 0")
        known = actor.planner_names()
        check(self.name in known, "name", f"unknown planner {self.name!r}; known planners: {', '.join(known)}")
        declared = actor.planner_defaults(self.name)
        for name in PLANNER_COMMON[:-1]:
            lacks = getattr(self, name) is not None and name not in declared
            check(not lacks, name, f"planner {self.name!r} has no option {name!r} (its options: {sorted(declared)})")
        common = sorted(set(self.options) & set(PLANNER_COMMON))
        check(not common, "options", f"set {', '.join(common)} as planner.<name>, not in planner.options")
        unknown = sorted(set(self.options) - set(declared))
        check(not unknown, "options", f"planner {self.name!r} has no option(s) {unknown}; known: {sorted(declared)}")

    def planner_options(self) -> dict[str, Any]:
        """The options `ami.actor.make_planner(self.name, ...)` receives (after the configurator)."""
        declared = actor.planner_defaults(self.name)
        common = {k: getattr(self, k) for k in PLANNER_COMMON if k in declared and getattr(self, k) is not None}
        return {**common, **self.options}


PLANNER_COMMON = ("iterations", "restarts", "population", "learning_rate", "init")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """World-model and critic updates, run in jitted chunks of `chunk` updates.

    A complete checkpoint (parameters, optimisers, key, step, replay) is written every
    `checkpoint_every` updates and at the end; a killed run resumes from the newest one.
    `compute_dtype: bfloat16` is mixed precision for accelerators: the AMI agent's networks
    compute in bf16 from float32 parameters (optimiser states float32 too), their outputs and
    every loss, target and energy in float32. The default float32 is the CPU's.

    Non-finite values are counted, not raised: a NaN or inf in the env's observations or
    rewards is zeroed before it is stored (metrics `nonfinite_obs`, `nonfinite_rewards`), an
    update whose gradients or new parameters are not finite is skipped (`nonfinite_updates`),
    and a re-plan that finds no finite energy keeps the planner's finite starting plan
    (`nonfinite_plans`); each count is per chunk in `metrics.jsonl` (the collect row for the
    offline data). `strict_finite: true` stops the run at the first one instead, with a
    `FloatingPointError` naming the env, the step (env step or updates) and the chunk's PRNG
    key (envs made from `package.module:factory` always stop at non-finite env data; see
    `envs.make(check_finite=)`). A resumed run may change `strict_finite`.
    """

    updates: int = 10000
    batch_size: int = 256
    learning_rate: float = 3e-4
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    chunk: int = 500
    checkpoint_every: int = 4000
    compute_dtype: Literal["float32", "bfloat16"] = "float32"
    strict_finite: bool = False

    def validate(self) -> None:
        check(self.updates >= 1, "updates", "must be >= 1")
        check(self.compute_dtype in ("float32", "bfloat16"), "compute_dtype", "must be 'float32' or 'bfloat16'")
        check(self.batch_size >= 2, "batch_size", "must be >= 2")
        finite = math.isfinite
        lr = self.learning_rate
        check(finite(lr) and lr > 0, "learning_rate", f"must be a finite number > 0, got {lr}")
        check(self.chunk >= 1, "chunk", "must be >= 1")
        check(self.updates % self.chunk == 0, "updates", f"must be a multiple of train.chunk ({self.chunk})")
        clip = self.grad_clip
        check(finite(clip) and clip > 0, "grad_clip", f"must be a finite number > 0, got {clip}")
        wd = self.weight_decay
        check(finite(wd) and wd >= 0, "weight_decay", f"must be a finite number >= 0, got {wd}")
        check(
            self.checkpoint_every >= 1 and self.checkpoint_every % self.chunk == 0,
            "checkpoint_every",
            f"must be a positive multiple of train.chunk ({self.chunk})",
        )


@dataclasses.dataclass(frozen=True)
class OnlineConfig:
    """Online learning (`ami.online`): act, store, update, repeat. None: the configurator turns it
    on for reward tasks and off for goal tasks (which learn from offline data).

    Steps are counted as the benchmark does: `env_steps` and the others below are env (control)
    steps, action repeat included; an agent decision is `env.action_repeat` env steps. The
    first `seed_steps` act uniformly at random; after them every decision of the
    `data.num_envs` envs is followed by `round(updates_per_step * num_envs)` updates.
    Acting adds Gaussian noise of std `action_noise`. `chunk` decisions run in one jitted
    `lax.scan`, so the loop's counters move by a chunk's env steps (`chunk * num_envs *
    action_repeat`): the run ends at the first chunk boundary at or past `env_steps`, and
    evaluates (checkpoints) at the first boundary past each multiple of `eval_every`
    (`checkpoint_every`) and at the end."""

    enabled: bool | None = None
    env_steps: int = 100_000
    seed_steps: int = 5_000
    updates_per_step: float = 1.0
    chunk: int = 250
    action_noise: float = 0.1
    eval_every: int = 10_000
    checkpoint_every: int = 10_000

    def validate(self) -> None:
        check(self.env_steps >= 1, "env_steps", "must be >= 1")
        check(self.seed_steps >= 0, "seed_steps", "must be >= 0")
        check(self.updates_per_step >= 0.0, "updates_per_step", "must be >= 0")
        check(self.chunk >= 1, "chunk", "must be >= 1")
        check(self.action_noise >= 0.0, "action_noise", "must be >= 0")
        check(self.eval_every >= 1, "eval_every", "must be >= 1")
        check(self.checkpoint_every >= 1, "checkpoint_every", "must be >= 1")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Evaluation by planning: all episodes batched, a fixed seed.

    `controllers`: which of `learned` (always), `true_dynamics` (the ground-truth twin) and
    `random` run on the same episodes (None: all three on goal tasks, `learned` and `random`
    on reward tasks). `success`: an episode counts as solved when the goal
    is reached at `any` step, or only when the `final` state is at the goal.
    """

    episodes: int = 200
    seed: int = 12345
    controllers: tuple[str, ...] | None = None
    success: Literal["any", "final"] = "any"
    budget: Literal["small", "medium", "large"] = "medium"

    def validate(self) -> None:
        check(self.episodes >= 1, "episodes", "must be >= 1")
        if self.controllers is None:
            return
        known = ("learned", "true_dynamics", "random")
        unknown = [c for c in self.controllers if c not in known]
        check(not unknown, "controllers", f"unknown {unknown}; choose from {list(known)}")
        check("learned" in self.controllers, "controllers", "must include 'learned'")
        check(len(set(self.controllers)) == len(self.controllers), "controllers", "must not repeat")


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    """Devices and hosts (`ami.distributed`). The run's devices form a `jax.sharding.Mesh` of
    `data` x `model` devices (`data` None: all devices over `model`); parameters and optimiser
    states are replicated, and envs, replay streams, batches and agent memories are split along
    `data`, so `data.num_envs`, `train.batch_size` and `eval.episodes` must divide by it. The
    `model` axis is reserved for sharding parameters (1 today). `coordinator` ("host:port"),
    `num_processes` and `process_id` start `jax.distributed` (None: JAX's detection of the
    cluster's environment where there is one, else one process). A resumed run may change all
    of these: checkpoints hold global arrays and move between device counts.
    `sample_groups` G > 1 draws each update batch stratified over G consecutive blocks of the
    replay's streams (`ami.replay.sample(..., groups=G)`); with G equal to the size of `data`
    every device samples its rows from its own streams and no replayed window crosses devices
    (with G = 1 the windows are gathered across them). `data.num_envs` and the batch sizes
    must divide by G. G changes which windows are drawn, so runs compare bit for bit only at
    the same G (1 device with G = 8 samples exactly as 8 devices with G = 8)."""

    data: int | None = None
    model: int = 1
    sample_groups: int = 1
    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None

    def validate(self) -> None:
        check(self.data is None or self.data >= 1, "data", "must be >= 1 or null (all devices)")
        check(self.model == 1, "model", "parameters are replicated: only 1 is supported")
        check(self.sample_groups >= 1, "sample_groups", "must be >= 1")
        check(self.num_processes is None or self.num_processes >= 1, "num_processes", "must be >= 1")
        check(self.process_id is None or self.process_id >= 0, "process_id", "must be >= 0")
        given = [x is not None for x in (self.coordinator, self.num_processes, self.process_id)]
        check(all(given) or not any(given), "coordinator", "coordinator, num_processes and process_id go together")


@dataclasses.dataclass(frozen=True)
class LogConfig:
    """What a run leaves beside `metrics.jsonl` (the record of the run, always written).
    `tensorboard`: event files in `RUN_DIR/tensorboard` (tags `train/`, `eval/`, `env/`,
    `plan/`). `wandb`: also to Weights & Biases (the optional `wandb` extra) under `wandb_project`;
    a missing package or a failing service is a warning, never a stopped run. `report`: `ami train`
    writes `RUN_DIR/report.html` at the end (`ami report`). A resumed run may change all of these."""

    tensorboard: bool = True
    wandb: bool = False
    wandb_project: str = "ami"
    report: bool = True

    def validate(self) -> None:
        check(bool(self.wandb_project.strip()), "wandb_project", "must not be empty")


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """A whole experiment: what `ami train CONFIG` runs."""

    seed: int = 0
    agent: AgentConfig = dataclasses.field(default_factory=AgentConfig)
    env: EnvConfig = dataclasses.field(default_factory=EnvConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    perception: PerceptionConfig = dataclasses.field(default_factory=PerceptionConfig)
    world_model: WorldModelConfig = dataclasses.field(default_factory=WorldModelConfig)
    critic: CriticConfig = dataclasses.field(default_factory=CriticConfig)
    cost: CostConfig = dataclasses.field(default_factory=CostConfig)
    value: ValueConfig = dataclasses.field(default_factory=ValueConfig)
    policy: PolicyConfig = dataclasses.field(default_factory=PolicyConfig)
    planner: PlannerConfig = dataclasses.field(default_factory=PlannerConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    online: OnlineConfig = dataclasses.field(default_factory=OnlineConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    hierarchy: HierarchyConfig = dataclasses.field(default_factory=HierarchyConfig)
    dreamer: DreamerConfig = dataclasses.field(default_factory=DreamerConfig)
    brax: BraxConfig = dataclasses.field(default_factory=BraxConfig)
    distributed: DistributedConfig = dataclasses.field(default_factory=DistributedConfig)
    log: LogConfig = dataclasses.field(default_factory=LogConfig)

    def validate(self) -> None:
        check(
            self.planner.mode == "plan" or self.policy.enabled is not False,
            "planner.mode",
            "'policy' acts with the amortised policy: it needs policy.enabled",
        )
        self._check_sample_groups()
        steps = self.data.steps_per_env
        if steps is None:
            return
        batch_key, batch = ("dreamer.batch_size", self.dreamer.batch_size)
        if self.agent.name != "dreamer":
            batch_key, batch = ("train.batch_size", self.train.batch_size)
        held = self.data.num_envs * steps
        check(
            held >= batch,
            "data.steps_per_env",
            f"the replay holds data.num_envs x data.steps_per_env = {self.data.num_envs} x {steps} = {held} "
            f"transitions, fewer than one batch ({batch_key} = {batch}): raise either, or lower {batch_key}",
        )
        check(
            self.world_model.prediction_horizon <= steps,
            "world_model.prediction_horizon",
            f"must be <= data.steps_per_env ({steps})",
        )
        if self.hierarchy.learned:
            span = self.hierarchy.steps * self.hierarchy.stride
            check(
                span <= steps,
                "hierarchy.steps",
                f"windows of steps x stride = {span} must fit data.steps_per_env ({steps})",
            )
        if not self.online.enabled:  # the goal critic's pairs come from the offline data (online: configurator)
            limit = f"must be <= data.steps_per_env ({steps})"
            check(self.critic.max_goal_offset <= steps, "critic.max_goal_offset", limit)

    def _check_sample_groups(self) -> None:
        groups = self.distributed.sample_groups
        if groups == 1:
            return
        name = self.agent.name
        check(name in ("ami", "dreamer"), "distributed.sample_groups", f"{name} does not sample ami's replay")
        counts = {"data.num_envs": self.data.num_envs}
        if self.agent.name == "dreamer":
            counts["dreamer.batch_size"] = self.dreamer.batch_size
        else:
            counts.update({"train.batch_size": self.train.batch_size, "critic.batch_size": self.critic.batch_size})
            if self.hierarchy.learned:
                counts["hierarchy.batch_size"] = self.hierarchy.batch_size
        for key, count in counts.items():
            check(count % groups == 0, key, f"{count} does not divide into distributed.sample_groups = {groups}")


def load_experiment(path_or_mapping, overrides=()) -> ExperimentConfig:
    """Loads and validates an experiment (YAML path or mapping) with dotted overrides."""
    return configlib.load(ExperimentConfig, path_or_mapping, overrides)


__all__ = [
    "AgentConfig",
    "BraxConfig",
    "ConfigError",
    "CostConfig",
    "CriticConfig",
    "DataConfig",
    "DistributedConfig",
    "DreamerConfig",
    "EnvConfig",
    "EvalConfig",
    "HierarchyConfig",
    "ExperimentConfig",
    "LogConfig",
    "PerceptionConfig",
    "OnlineConfig",
    "PlannerConfig",
    "PolicyConfig",
    "TrainConfig",
    "ValueConfig",
    "WorldModelConfig",
    "load_experiment",
]

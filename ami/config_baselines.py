"""Config sections of the baselines that share ami's run directory: the Dreamer-style agent and
Brax's model-free agents (re-exported by `ami.config`)."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from ami.configlib import check
from ami.nn import ACTIVATIONS


@dataclasses.dataclass(frozen=True)
class DreamerConfig:
    """The Dreamer-style baseline (`agent.name: dreamer`, `ami.baselines.dreamer`), DreamerV3's
    recipe for vector observations: an RSSM of a `deter`-unit GRU state and `stoch` categorical
    latents of `classes` classes (`unimix` uniform mixture, straight-through samples); MLPs of
    `layers` x `hidden`; decoder, reward and continue heads; KL balancing (`dyn_weight`,
    `rep_weight`) with `free_nats`; an actor and a critic trained in imagination over `horizon`
    steps on lambda-returns (`gamma`, `lam`) normalised by the EMA (`return_decay`) of their
    5-95 percentile range, with entropy bonus `entropy` and a slow critic (`slow_tau`,
    regulariser weight `slow_weight`). Replayed windows: `batch_size` x `length` decisions;
    imagination starts from `imagine_starts` of their posterior states drawn at random (None: all
    of them, as DreamerV3 does; fewer trade gradient noise for speed on a CPU).
    `actor_grad`: `reinforce` (the published recipe) or `backprop` through the model."""

    deter: int = 512
    stoch: int = 32
    classes: int = 16
    hidden: int = 256
    layers: int = 2
    activation: str = "silu"
    unimix: float = 0.01
    bins: int = 255
    free_nats: float = 1.0
    dyn_weight: float = 0.5
    rep_weight: float = 0.1
    horizon: int = 15
    gamma: float = 0.997
    lam: float = 0.95
    entropy: float = 3e-4
    return_decay: float = 0.99
    slow_tau: float = 0.98
    slow_weight: float = 1.0
    actor_grad: Literal["reinforce", "backprop"] = "reinforce"
    min_std: float = 0.1
    max_std: float = 1.0
    batch_size: int = 16
    length: int = 64
    imagine_starts: int | None = None
    model_lr: float = 1e-4
    actor_lr: float = 3e-5
    critic_lr: float = 3e-5
    model_clip: float = 1000.0
    actor_critic_clip: float = 100.0

    def validate(self) -> None:
        for name in ("deter", "stoch", "classes", "hidden", "layers", "horizon", "batch_size", "length"):
            check(getattr(self, name) >= 1, name, "must be >= 1")
        check(self.classes >= 2, "classes", "must be >= 2")
        check(self.bins >= 2, "bins", "must be >= 2")
        starts = self.batch_size * (self.length + 1)
        check(
            self.imagine_starts is None or 1 <= self.imagine_starts <= starts,
            "imagine_starts",
            f"must be in [1, batch_size * (length + 1) = {starts}]",
        )
        check(self.activation in ACTIVATIONS, "activation", f"must be one of {sorted(ACTIVATIONS)}")
        check(0.0 <= self.unimix < 1.0, "unimix", "must be in [0, 1)")
        for name in ("free_nats", "dyn_weight", "rep_weight", "entropy", "slow_weight"):
            check(getattr(self, name) >= 0.0, name, "must be >= 0")
        for name in ("gamma", "return_decay", "slow_tau"):
            check(0.0 <= getattr(self, name) < 1.0, name, "must be in [0, 1)")
        check(0.0 <= self.lam <= 1.0, "lam", "must be in [0, 1]")
        check(self.actor_grad in ("reinforce", "backprop"), "actor_grad", "must be 'reinforce' or 'backprop'")
        check(0.0 < self.min_std < self.max_std, "min_std", "need 0 < min_std < max_std")
        for name in ("model_lr", "actor_lr", "critic_lr", "model_clip", "actor_critic_clip"):
            check(getattr(self, name) > 0.0, name, "must be > 0")


@dataclasses.dataclass(frozen=True)
class BraxConfig:
    """Brax's model-free agents (`agent.name: ppo | sac`, `ami.baselines.brax_mf`): `options` are
    keyword arguments of Brax's train function over the adapter's defaults (checked by name when
    the run starts). Budget, seed, episode length, action repeat and evaluation episodes come from
    `online.env_steps`, `seed`, `env.*` and `eval.episodes`."""

    options: dict[str, Any] = dataclasses.field(default_factory=dict)

"""Networks: the only module that imports Flax.

Every network is an `(init, apply)` record of pure functions over a parameter pytree, so
the rest of ami uses plain `jax.jit` / `vmap` / `grad` and never sees a Flax object.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

Params = Any

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu,
    "gelu": nn.gelu,
    "silu": nn.silu,
    "tanh": jnp.tanh,
    "elu": nn.elu,
    "mish": lambda x: x * jnp.tanh(nn.softplus(x)),
}


class Network(NamedTuple):
    """`init(key, x) -> params`; `apply(params, x) -> y`, batched over leading axes of `x`."""

    init: Callable[[jax.Array, jax.Array], Params]
    apply: Callable[[Params, jax.Array], jax.Array]


class _MLP(nn.Module):
    hidden: Sequence[int]
    out: int
    activation: str
    layer_norm: bool
    dtype: Any = None  # compute dtype (None: that of the input); parameters stay float32

    @nn.compact
    def __call__(self, x):
        act = ACTIVATIONS[self.activation]
        for width in self.hidden:
            x = nn.Dense(width, dtype=self.dtype)(x)
            if self.layer_norm:
                x = nn.LayerNorm(dtype=self.dtype)(x)
            x = act(x)
        return nn.Dense(self.out, dtype=self.dtype)(x)


def patches_3x3_stride2(x: jax.Array) -> jax.Array:
    """The 3x3 patches of a stride-2 "SAME" convolution: `[B, H, W, C] -> [B, ceil(H/2), ceil(W/2), 9 C]`.

    Padding as `lax.conv_general_dilated(..., padding="SAME")`; the last axis runs over
    (row offset, column offset, channel), the order of a flattened `[3, 3, C, ...]` kernel.
    """
    _, h, w, _ = x.shape
    oh, ow = -(-h // 2), -(-w // 2)
    ph, pw = max(2 * oh + 1 - h, 0), max(2 * ow + 1 - w, 0)
    x = jnp.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    return jnp.concatenate(
        [x[:, i : i + 2 * oh - 1 : 2, j : j + 2 * ow - 1 : 2] for i in range(3) for j in range(3)], -1
    )


class _Conv3x3Stride2(nn.Module):
    """`nn.Conv(features, (3, 3), strides=(2, 2))` (same parameters and output) as patches times a matrix.

    XLA:CPU runs convolutions inside loop bodies on a slow path (jax-ml/jax#12868): a `lax.scan`
    of CNN training updates ran about 25 times slower than the same updates outside a loop.
    Slices and a matmul run as fast inside a loop as outside.
    """

    features: int

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (3, 3, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        return patches_3x3_stride2(x) @ kernel.reshape(-1, self.features) + bias


class _CNN(nn.Module):
    channels: Sequence[int]
    out: int
    activation: str

    @nn.compact
    def __call__(self, x):
        act = ACTIVATIONS[self.activation]
        lead = x.shape[:-3]
        x = x.reshape((-1, *x.shape[-3:]))
        for i, c in enumerate(self.channels):
            x = act(_Conv3x3Stride2(c, name=f"Conv_{i}")(x))
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(self.out)(x).reshape((*lead, self.out))


class _GRU(nn.Module):
    """The layer-normalised GRU of DreamerV3: one Dense of `[h, x]` into reset, candidate and
    update gates, LayerNorm, then `h' = u * tanh(r * c) + (1 - u) * h` with `u = sigmoid(. - 1)`
    (biased towards keeping the state)."""

    size: int

    @nn.compact
    def __call__(self, h, x):
        parts = nn.LayerNorm()(nn.Dense(3 * self.size, use_bias=False)(jnp.concatenate([h, x], -1)))
        reset, cand, update = jnp.split(parts, 3, axis=-1)
        reset, update = nn.sigmoid(reset), nn.sigmoid(update - 1.0)
        return update * jnp.tanh(reset * cand) + (1.0 - update) * h


class Recurrent(NamedTuple):
    """`init(key, h [..., H], x [..., I]) -> params`; `apply(params, h, x) -> h' [..., H]`."""

    init: Callable[[jax.Array, jax.Array, jax.Array], Params]
    apply: Callable[[Params, jax.Array, jax.Array], jax.Array]


def gru(size: int) -> Recurrent:
    """A layer-normalised GRU cell of `size` units (`_GRU`)."""
    if size < 1:
        raise ValueError(f"gru: size must be >= 1, got {size}")
    module = _GRU(int(size))
    return Recurrent(
        init=lambda key, h, x: module.init(key, h, x)["params"], apply=lambda p, h, x: module.apply({"params": p}, h, x)
    )


def _check_activation(activation: str) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; known: {sorted(ACTIVATIONS)}")


COMPUTE_DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}


def compute_dtype(name: str) -> Any:
    """The `dtype` of `mlp` for a config's `train.compute_dtype` (None: float32 throughout)."""
    if name not in COMPUTE_DTYPES:
        raise ValueError(f"unknown compute dtype {name!r}; known: {sorted(COMPUTE_DTYPES)}")
    return COMPUTE_DTYPES[name]


def mlp(
    hidden: Sequence[int], out: int, activation: str = "mish", layer_norm: bool = True, dtype: Any = None
) -> Network:
    """A multilayer perceptron `[..., I] -> [..., out]` (Dense, optional LayerNorm, activation).

    `dtype` (e.g. `jnp.bfloat16`): mixed precision, the matmuls and norms computed in `dtype`
    from float32 parameters, the output cast back to float32; None computes in the input's dtype.
    """
    _check_activation(activation)
    module = _MLP(tuple(hidden), int(out), activation, bool(layer_norm), dtype)

    def apply(p, x):
        y = module.apply({"params": p}, x)
        return y if dtype is None else y.astype(jnp.float32)

    return Network(init=lambda key, x: module.init(key, x)["params"], apply=apply)


def cnn(channels: Sequence[int], out: int, activation: str = "relu") -> Network:
    """A small convolutional encoder `[..., H, W, C] -> [..., out]` (stride-2 3x3 convolutions)."""
    _check_activation(activation)
    module = _CNN(tuple(channels), int(out), activation)
    return Network(init=lambda key, x: module.init(key, x)["params"], apply=lambda p, x: module.apply({"params": p}, x))


def num_params(params: Params) -> int:
    """Total number of scalars in a parameter pytree."""
    return int(sum(x.size for x in jax.tree.leaves(params)))


def fourier_features(size: int, num: int, scale: float, seed: int = 0) -> Callable[[jax.Array], jax.Array]:
    """`x [..., size] -> [..., size + 2 num]`: x with `sin`, `cos` of fixed random projections `scale * x B`.

    Lets a small MLP represent sharp changes in a low-dimensional input (a wall between two
    nearby positions), which plain MLPs learn only slowly (spectral bias). `num = 0` is the
    identity. `B [size, num]` ~ N(0, 1) is drawn from `seed`, so it is a fixed function.
    """
    if num == 0:
        return lambda x: x
    proj = scale * jax.random.normal(jax.random.key(seed), (size, num))
    return lambda x: jnp.concatenate([x, jnp.sin(x @ proj), jnp.cos(x @ proj)], axis=-1)

"""Shared fixtures: small pure-JAX environments and a uniform random policy."""

from __future__ import annotations

import jax
import pytest

NATIVE = ("two_rooms", "point_mass", "pendulum")


def uniform_policy(action_size: int):
    def policy(obs, key):
        del obs
        return jax.random.uniform(key, (action_size,), minval=-1.0, maxval=1.0)

    return policy


@pytest.fixture(params=NATIVE)
def native_name(request) -> str:
    return request.param

"""Shared fixtures: small pure-JAX environments and a uniform random policy."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import jax
import pytest

# XLA compilations are cached on disk for the session (and the next one on this machine): tests
# that build the same programs again (a run and its resumed copy, one env in several tests) then
# compile once. `AMI_TEST_JAX_CACHE` moves the folder; an empty value turns the cache off.
_CACHE = os.environ.get("AMI_TEST_JAX_CACHE", str(Path(tempfile.gettempdir()) / f"ami-jax-cache-{os.getuid()}"))
if _CACHE:
    jax.config.update("jax_compilation_cache_dir", _CACHE)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

NATIVE = ("two_rooms", "point_mass", "pendulum")

# The longest files run first (scripts/test.sh hands whole files to its 2 workers, in collection
# order), so that neither worker is left alone with a long file at the end of the run.
LONGEST_FIRST = ("test_distributed.py", "test_online.py", "test_preemption.py", "test_physics_envs.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


def uniform_policy(action_size: int):
    def policy(obs, key):
        del obs
        return jax.random.uniform(key, (action_size,), minval=-1.0, maxval=1.0)

    return policy


@pytest.fixture(params=NATIVE)
def native_name(request) -> str:
    return request.param

"""What every benchmark writes beside its numbers: the machine, the versions, and the JSON file."""

from __future__ import annotations

import json
import os
import platform
import time
from importlib import metadata
from pathlib import Path

PACKAGES = ("jax", "jaxlib", "flax", "optax", "mujoco", "mujoco-mjx", "playground")


def machine() -> dict:
    """The machine and the versions that produced the numbers (None for a package not installed)."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(), **versions}


def compile_and_run(jitted, *args, **kwargs) -> tuple[object, float, float]:
    """`(output, compile seconds, run seconds)` of a `jax.jit`-ed function: compiled ahead of time,
    then run once to completion."""
    import jax

    start = time.perf_counter()
    compiled = jitted.lower(*args, **kwargs).compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    out = jax.block_until_ready(compiled(*args, **kwargs))
    return out, compile_s, time.perf_counter() - start


def write_json(path: str | Path, record: dict) -> Path:
    """Writes `record` with `machine()` under key `machine` to `path` (folders made); prints and returns it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**record, "machine": machine()}, indent=2) + "\n")
    print(f"wrote {path}")
    return path

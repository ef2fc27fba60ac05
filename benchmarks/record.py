"""What every benchmark writes beside its numbers: the machine, the versions, and the JSON file."""

from __future__ import annotations

import json
import os
import platform
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


def write_json(path: str | Path, record: dict) -> Path:
    """Writes `record` with `machine()` under key `machine` to `path` (folders made); prints and returns it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**record, "machine": machine()}, indent=2) + "\n")
    print(f"wrote {path}")
    return path

#!/usr/bin/env bash
# The test command: sets up .venv (scripts/setup.sh), then runs the whole suite on 2 workers
# (a file's tests share a worker, so its module fixtures, trained runs among them, run once).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"
exec .venv/bin/python -m pytest -n 2 --dist loadfile --durations=10 "$@"

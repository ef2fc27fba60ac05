#!/usr/bin/env bash
# The test command: sets up .venv (scripts/setup.sh), then runs the whole suite on 2 workers.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"
exec .venv/bin/python -m pytest -n 2 --durations=10 "$@"

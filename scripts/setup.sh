#!/usr/bin/env bash
# Creates .venv with Python >= 3.12 and installs ami with its test extras, at the exact
# versions in constraints.txt. Safe to run again (it reuses a working .venv).
# Set AMI_PYTHON=/path/to/python to choose the interpreter yourself.
set -euo pipefail
cd "$(dirname "$0")/.."

usable() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; }

find_python() {
  local candidates=("${AMI_PYTHON:-}" python3.12 python3.13 python3)
  if command -v pyenv >/dev/null 2>&1; then
    candidates+=("$(pyenv root)"/versions/3.12*/bin/python3 "$(pyenv root)"/versions/3.13*/bin/python3)
  fi
  for c in "${candidates[@]}"; do
    if [ -n "$c" ] && usable "$c"; then command -v "$c" || echo "$c"; return 0; fi
  done
  echo "ami needs Python >= 3.12 (jax 0.12); none found. Set AMI_PYTHON=/path/to/python3.12" >&2
  return 1
}

if [ ! -x .venv/bin/python ] || ! usable .venv/bin/python; then
  python=$(find_python)
  echo "setup: creating .venv with $python ($("$python" --version))"
  rm -rf .venv
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -c constraints.txt -e ".[test]"
echo "setup: ready ($(.venv/bin/python --version), jax $(.venv/bin/python -c 'import jax; print(jax.__version__)'))"

#!/usr/bin/env bash
# Installs the integration-test dependencies: the npm packages from package-lock.json into
# tests/node_modules and the Python packages from python/requirements.txt into tests/.venv.
# Safe to run again: npm ci reinstalls exactly the locked versions, the venv is created only
# when missing, and pip skips packages that are already at the pinned version.
set -euo pipefail

tests_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$tests_dir"

npm ci --no-audit --no-fund

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --disable-pip-version-check --quiet -r python/requirements.txt

echo "test dependencies installed: node $(node --version), $(.venv/bin/python --version)"

#!/usr/bin/env bash
# The README's test command: set up from nothing, lint, then run the whole test suite.
# Extra arguments go to pytest (e.g. scripts/test.sh -k storage).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
echo "test: ruff check + format check"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "test: pytest"
exec .venv/bin/python -m pytest "$@"

#!/usr/bin/env bash
# The whole test suite: lint, types, and every test against real memcached servers.
# Extra arguments go to pytest (e.g. -k filesystem).
source "$(dirname "$0")/setup.sh"
ruff check .
ruff format --check .
mypy
python -m pytest "$@"

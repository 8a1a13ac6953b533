#!/usr/bin/env bash
# The whole test suite: lint, types, every test against real memcached and Redis servers,
# and the tests on the real tools (tests/tools, in .venv-tools).
# Extra arguments go to pytest (e.g. -k filesystem).
TOOLS="${TOOLS:-$(( $# == 0 ))}" source "$(dirname "$0")/setup.sh"
ruff check .
ruff format --check .
mypy
python -m pytest "$@"
# The suite on every other CPython from 3.10 to 3.13 the machine has, without the stress
# tests (scripts/matrix.sh names what it skipped); with arguments, only when MATRIX=1.
if [ "${MATRIX:-$(( $# == 0 ))}" = 1 ]; then
    bash scripts/matrix.sh "$@"
fi
# With arguments (a selection of tests), the tools run only when TOOLS=1 is asked for.
if [ "${TOOLS:-$(( $# == 0 ))}" = 1 ]; then
    TIERED_BCCACHE_TOOL_TESTS=1 .venv-tools/bin/python -m pytest tests/tools
fi

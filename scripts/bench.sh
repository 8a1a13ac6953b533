#!/usr/bin/env bash
# The main job: the benchmark on the embedded default corpus. Arguments go to `bench`.
NEED_MEMCACHED="${NEED_MEMCACHED:-1}" source "$(dirname "$0")/setup.sh"
tiered-bccache bench "$@"

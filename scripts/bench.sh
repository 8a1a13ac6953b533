#!/usr/bin/env bash
# The main job: the benchmark on the embedded default corpus. Arguments go to `bench`.
# The redis extra for the Redis rows; matplotlib only when asked (EXTRAS=redis,plot).
EXTRAS="${EXTRAS:-redis}" source "$(dirname "$0")/setup.sh"
tiered-bccache bench "$@"

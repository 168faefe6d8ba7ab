#!/usr/bin/env bash
# Reruns every number of docs/performance.md.
#   scripts/bench.sh            everything (about 15 minutes)
#   scripts/bench.sh floor      one of: floor, idle, memory, panel, pixel, slider, streams,
#                               stream-idle, ingest, store, cluster, openai, shadow,
#                               micro, scorer
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
scripts/install.sh --test
scripts/build.sh
cargo build --release -p tests --bins
what="${1:-all}"
if [ "$what" = "micro" ] || [ "$what" = "all" ]; then
  cargo bench -p server --bench service
fi
if [ "$what" = "scorer" ] || [ "$what" = "all" ]; then
  # The scorers' decision time on one core (taskset pins it to CPU 0).
  cargo bench -p server --bench scorer --no-run
  taskset -c 0 cargo bench -p server --bench scorer
fi
if [ "$what" != "micro" ] && [ "$what" != "scorer" ]; then
  target/release/bench "$what"
fi

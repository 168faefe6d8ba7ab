#!/usr/bin/env bash
# Builds the panel (Trunk, release, offline) and then the release server,
# which embeds it.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
trunk build --release --offline
cargo build --release -p server

#!/usr/bin/env bash
# Builds the panel (Trunk, release, offline) and then the release server,
# which embeds it.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
trunk build --release --offline
# The History page is a second bundle of its own, loaded only at /history.
trunk build panel/history.html --release --dist dist/history --public-url /history/ --offline
cargo build --release -p server

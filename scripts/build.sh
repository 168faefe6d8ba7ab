#!/usr/bin/env bash
# Builds the panel (release, offline: cargo, wasm-bindgen, wasm-opt; see
# build-panel.sh) and then the release server, which embeds it.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
scripts/build-panel.sh
cargo build --release -p server

#!/usr/bin/env bash
# Installs what is missing and runs every test: unit, handler, black-box
# (the release binary over HTTP and in headless Chromium), and the panel's
# component tests in Chromium.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
scripts/install.sh --test
scripts/build.sh
cargo test --workspace
cargo test -p panel --target wasm32-unknown-unknown

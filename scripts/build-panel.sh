#!/usr/bin/env bash
# Builds the release panel into dist/ without Trunk: cargo (wasm32, the
# wasm-release profile), wasm-bindgen and wasm-opt -Oz, then the layout
# Trunk makes, which the server embeds: dist/index.html loading
# /panel-<hash>.js and /panel-<hash>_bg.wasm, /style-<hash>.css, and the
# History and Keys pages' own bundles in dist/history/ and dist/keys/. Trunk stays for `trunk serve`
# (the edit loop); a first run need not compile it.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"

rustup target list --installed | grep -qx wasm32-unknown-unknown ||
  rustup target add wasm32-unknown-unknown
# The panel compiles while the tools it needs next install (on a first run,
# wasm-bindgen-cli compiles too): cargo install builds in a directory of its
# own, so the two share no lock and fill each other's single-threaded spells.
cargo build -p panel --bins --target wasm32-unknown-unknown --profile wasm-release &
build=$!
if ! scripts/install.sh; then
  kill "$build" 2>/dev/null || true
  exit 1
fi
wait "$build"
wasm_dir=target/wasm32-unknown-unknown/wasm-release
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/dist/history" "$stage/dist/keys"

# A short content hash, as Trunk names its files.
short_hash() { cat "$@" | sha256sum | cut -c1-16; }
# Subresource integrity of a file.
sri() { printf 'sha384-%s' "$(openssl dgst -sha384 -binary "$1" | base64 -w0)"; }

css="style-$(short_hash panel/style.css).css"

# page BIN HTML OUT_DIR PUBLIC_URL: one page and its bundle.
page() {
  local bin=$1 html=$2 out=$3 public=$4 work="$stage/$1"
  mkdir -p "$work"
  wasm-bindgen --target web --no-typescript --out-dir "$work" --out-name "$bin" \
    "$wasm_dir/$bin.wasm"
  # Until nothing shrinks more; no debug names or producer notes shipped;
  # bulk memory (every browser since 2020) and Rust's unused low memory
  # (its data starts past the stack) for smaller memory code.
  wasm-opt -Oz --converge --strip-debug --strip-producers --low-memory-unused --enable-bulk-memory --output "$work/opt.wasm" "$work/${bin}_bg.wasm"
  local base="$bin-$(short_hash "$work/$bin.js" "$work/opt.wasm")"
  cp "$work/$bin.js" "$out/$base.js"
  cp "$work/opt.wasm" "$out/${base}_bg.wasm"
  cp panel/style.css "$out/$css"
  local head
  head=$(cat <<HTML
    <link rel="stylesheet" href="$public$css" integrity="$(sri "$out/$css")"/>
<script type="module">
import init, * as bindings from '$public$base.js';
const wasm = await init({ module_or_path: '$public${base}_bg.wasm' });
window.wasmBindings = bindings;
</script>
  <link rel="modulepreload" href="$public$base.js" crossorigin="anonymous" integrity="$(sri "$out/$base.js")"><link rel="preload" href="$public${base}_bg.wasm" crossorigin="anonymous" integrity="$(sri "$out/${base}_bg.wasm")" as="fetch" type="application/wasm">
HTML
)
  # The page as written, its two data-trunk links replaced by the above.
  awk -v head="$head" '
    /data-trunk rel="css"/ { next }
    /data-trunk rel="rust"/ { print head; next }
    { print }
  ' "$html" > "$out/index.html"
}

page panel panel/index.html "$stage/dist" /
page history panel/history.html "$stage/dist/history" /history/
page keys panel/keys.html "$stage/dist/keys" /keys/
rm -rf dist
mv "$stage/dist" dist
echo "panel built into dist/ ($(du -sh dist | cut -f1))"

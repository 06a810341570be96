#!/usr/bin/env bash
# THE main job: builds the browser demo and serves it locally.
#   scripts/serve.sh [PORT]        (default 8000, or $PORT)
# Installs what is missing (scripts/setup.sh), builds build-wasm/ (the static site is
# build-wasm/site/: copy that folder to any static host), then serves it on 127.0.0.1.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
port=${1:-${PORT:-8000}}
case "$port" in ''|*[!0-9]*) echo "serve.sh: port must be a number, got '$port'" >&2; exit 2;; esac
# Debian's emscripten needs Debian's node modules (acorn, ...) for optimised links.
export NODE_PATH=/usr/share/nodejs

scripts/setup.sh
command -v ninja >/dev/null && export CMAKE_GENERATOR=Ninja  # for a new folder (faster; scripts/test.sh)
emcmake cmake -B build-wasm
cmake --build build-wasm -j"${EKVAE_JOBS:-2}"

echo
echo "ekvae: serving build-wasm/site on http://127.0.0.1:$port/   (Ctrl-C to stop)"
echo "       e.g. http://127.0.0.1:$port/?ui=minimal   (URL parameters: web/README.md)"
echo "       cross-origin isolated (COOP/COEP headers): training in the page uses several threads"
exec python3 scripts/serve_site.py "$port" build-wasm/site

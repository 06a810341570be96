#!/usr/bin/env bash
# Installs everything ekvae needs from Debian's archive (and playwright-core from npm).
# Idempotent and quick when everything is present. Run as root (or with sudo available).
#   scripts/setup.sh            native + wasm toolchain + browser-test tools
#   scripts/setup.sh --native   only what the native build and its tests need
# EKVAE_APT_UNSAFE_IO=1 (.ci/run sets it): for throw-away CI machines, dpkg skips its fsyncs and
# man-db does not re-index the new manual pages.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
mode=${1:-all}
case "$mode" in all|--native) ;; *) echo "setup.sh: unknown option '$mode' (--native or none)" >&2; exit 2;; esac

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi

# python3-munkres: matplotlib's python3-fonttools needs it or SciPy, and apt takes the first,
# SciPy (~60 MB installed), unless munkres (~50 kB) comes in the same install
native_pkgs="cmake g++ make ninja-build pkg-config time libeigen3-dev nlohmann-json3-dev doctest-dev libstb-dev python3 python3-numpy python3-munkres python3-matplotlib clang-14 libclang-rt-14-dev lld-14"
full_pkgs="$native_pkgs libsdl2-dev libimgui-dev emscripten chromium xvfb xauth dpkg-dev"
pkgs=$full_pkgs
# Node.js with npm may come from elsewhere (it does on these machines); only ask Debian when missing.
if [ "$mode" = all ] && ! { command -v node && command -v npm; } >/dev/null 2>&1; then pkgs="$pkgs nodejs npm"; fi
[ "$mode" = "--native" ] && pkgs=$native_pkgs
unsafe=()
[ "${EKVAE_APT_UNSAFE_IO:-}" = 1 ] && unsafe=(-o Dpkg::Options::=--force-unsafe-io)

missing=""
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "setup: installing$missing"
  # the package lists, unless they were fetched in the last hour (.ci/run has just done it)
  if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mmin -60 2>/dev/null | head -n 1)" ]; then
    $SUDO apt-get update -qq
  fi
  # man-db's trigger re-indexes every new manual page after the install unless this flag file is away
  mandb_flag=/var/lib/man-db/auto-update
  if [ ${#unsafe[@]} -gt 0 ] && [ -e "$mandb_flag" ]; then $SUDO mv "$mandb_flag" "$mandb_flag.ekvae"; fi
  rc=0
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${unsafe[@]}" $missing || rc=$?
  if [ -e "$mandb_flag.ekvae" ]; then $SUDO mv "$mandb_flag.ekvae" "$mandb_flag"; fi
  [ "$rc" -eq 0 ] || exit "$rc"
fi
[ "$mode" = "--native" ] && { echo "setup: native toolchain ready"; exit 0; }

# Debian sources of SDL2 and Dear ImGui, compiled with Emscripten for the browser app
# (the emscripten SDL2 port would be downloaded from the internet, which is not possible here).
deps="$top/.deps"
mkdir -p "$deps"
if [ ! -d "$deps/sdl2" ] || [ ! -d "$deps/imgui" ]; then
  if ! grep -rqs "deb-src" /etc/apt/sources.list.d/ /etc/apt/sources.list; then
    echo "setup: adding a deb-src entry for bookworm"
    $SUDO tee /etc/apt/sources.list.d/ekvae-src.sources >/dev/null <<SRC
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    $SUDO apt-get update -qq
  fi
  tmp=$(mktemp -d "$deps/src.XXXX")
  (cd "$tmp" && apt-get source -qq libsdl2 imgui >/dev/null 2>&1) || { echo "setup: apt-get source libsdl2 imgui failed" >&2; exit 1; }
  rm -rf "$deps/sdl2" "$deps/imgui"
  mv "$tmp"/libsdl2-2*/ "$deps/sdl2"
  mv "$tmp"/imgui-*/ "$deps/imgui"
  rm -rf "$tmp"
fi

# playwright-core drives Debian's chromium in the browser tests (never downloads a browser).
if [ ! -d "$top/web/node_modules/playwright-core" ]; then
  (cd "$top/web" && npm install --no-audit --no-fund --silent)
fi
echo "setup: ready"

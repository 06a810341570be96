#!/usr/bin/env bash
# Installs what the benchmark suite (scripts/bench.sh) needs beyond scripts/setup.sh: Debian's
# PyTorch (CPU) for the reference implementation, OpenBLAS made the system BLAS/LAPACK (Debian's
# torch calls whatever libblas.so.3 / liblapack.so.3 point at; the reference BLAS is ~2x slower
# for its matrix products, which no researcher would accept), threadpoolctl to check it, and
# valgrind for the profile. Never needed by the product or its tests.
#   scripts/setup_bench.sh
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
pkgs="python3 python3-torch python3-numpy python3-threadpoolctl libopenblas0-pthread valgrind time"
missing=""
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "setup_bench: installing$missing (python3-torch is ~500 MB)"
  log=$(mktemp /tmp/setup_bench.XXXX.log)
  if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing; } >"$log" 2>&1; then
    tail -20 "$log" >&2
    echo "setup_bench: apt-get install failed (full log: $log)" >&2
    exit 1
  fi
  rm -f "$log"
fi
# OpenBLAS (pthread flavour) as libblas.so.3 and liblapack.so.3
arch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)
for lib in libblas.so.3 liblapack.so.3; do
  target=/usr/lib/$arch/openblas-pthread/$lib
  [ -e "$target" ] || { echo "setup_bench: $target missing (libopenblas0-pthread)" >&2; exit 1; }
  cur=$(readlink -f /etc/alternatives/$lib-$arch 2>/dev/null || true)
  if [ "$cur" != "$(readlink -f "$target")" ]; then
    echo "setup_bench: $lib -> $target"
    $SUDO update-alternatives --set "$lib-$arch" "$target" >/dev/null
  fi
done
echo "setup_bench: ready (BLAS: $(readlink -f /usr/lib/$arch/libblas.so.3))"

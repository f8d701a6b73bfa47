#!/usr/bin/env bash
# scripts/layouts/tcmalloc.sh: regenerate common/allocators/data/tcmalloc-2.10-debian.json, the
# struct layouts heaplens uses for Debian's stripped gperftools libraries (no dbgsym exists).
#
# Rebuilds Debian's google-perftools source package with debug info (its default CXXFLAGS have -g;
# ~1.5 min on 2 cores) and reads the types' DWARF with tcmalloc_dwarf.py. The rebuild is not
# byte-identical to Debian's binaries (newer toolchain), but the types are the same source's; the
# walker finds the hidden globals' addresses in the stock library's own code (InitStaticVars),
# never in the rebuild. The table is keyed by the build-ids of the installed libraries, so
# install the exact packages first (libtcmalloc-minimal4, libgoogle-perftools4).
#
# Needs: a deb-src line for bookworm (e.g. /etc/apt/sources.list.d/debsrc.sources with
# "Types: deb-src", "Suites: bookworm bookworm-updates"), dpkg-dev, debhelper, build-essential,
# libunwind-dev, and <checkout>/.venv (pyelftools).
# Usage: scripts/layouts/tcmalloc.sh [WORKDIR]   (default: a temporary directory, removed after)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
OUT=$ROOT/common/allocators/data/tcmalloc-2.10-debian.json
LIBDIR=/usr/lib/x86_64-linux-gnu
WORK=${1:-}
if [ -z "$WORK" ]; then
    WORK=$(mktemp -d)
    trap 'rm -rf "$WORK"' EXIT
fi
mkdir -p "$WORK"

version=$(dpkg-query -W -f '${Version}' libtcmalloc-minimal4)
[ "$version" = "2.10-1" ] || echo "warning: libtcmalloc-minimal4 is $version, the table is for 2.10-1" >&2

cd "$WORK"
[ -d google-perftools-2.10 ] || apt-get source "google-perftools=$version"
cd google-perftools-2.10
if [ ! -e .libs/libtcmalloc_minimal.so.4 ]; then
    DEB_BUILD_OPTIONS="nocheck nodoc parallel=$(nproc)" nice -n 10 debian/rules build > "$WORK/build.log" 2>&1 ||
        { tail -30 "$WORK/build.log"; exit 1; }
fi

mkdir -p "$(dirname "$OUT")"
"$ROOT/.venv/bin/python" "$ROOT/scripts/layouts/tcmalloc_dwarf.py" --version 2.10 \
    --package "google-perftools $version" --out "$OUT" \
    "libtcmalloc_minimal=.libs/libtcmalloc_minimal.so.4=$LIBDIR/libtcmalloc_minimal.so.4" \
    "libtcmalloc=.libs/libtcmalloc.so.4=$LIBDIR/libtcmalloc.so.4" \
    "libtcmalloc_and_profiler=.libs/libtcmalloc_and_profiler.so.4=$LIBDIR/libtcmalloc_and_profiler.so.4"

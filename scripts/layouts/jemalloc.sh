#!/bin/sh
# Regenerate common/allocators/data/jemalloc-<version>-debian.json: the struct offsets and hidden
# global addresses of Debian's stripped libjemalloc.so.2, taken from a rebuild of the same source
# package with debug info.
#
# Debian's build is reproducible here except for one trap: configure reads the build machine's
# virtual-address width, and a host with 5-level paging gives LG_VADDR=57 (a different rtree).
# Forcing --with-lg-vaddr=48 (what Debian's buildd had) makes the stripped .so byte-identical to
# Debian's except the build-id note and .gnu_debuglink; this script checks that before writing.
#
# Usage: scripts/layouts/jemalloc.sh [WORKDIR]     (root, or sudo for apt; ~2.5 min on 2 cores)
# Needs: a deb-src line for the release (e.g. /etc/apt/sources.list.d/debsrc.sources with
# "Types: deb-src", the same URIs/Suites as the deb line), dpkg-dev, debhelper, build-essential.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=${1:-${TMPDIR:-/tmp}/heaplens-jemalloc-layout}
lib=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2
py=${PYTHON:-$root/.venv/bin/python}
[ -x "$py" ] || py=python3

[ -f "$lib" ] || { echo "no $lib: apt-get install libjemalloc2" >&2; exit 1; }
pkgver=$(dpkg-query -W -f '${Version}' libjemalloc2)
mkdir -p "$work"
cd "$work"
src=$(ls -d jemalloc-*/ 2>/dev/null | head -n1 || true)
if [ -z "$src" ]; then
    apt-get source "jemalloc=$pkgver" || {
        echo "apt-get source failed: add a deb-src line (see the header of $0)" >&2; exit 1; }
    src=$(ls -d jemalloc-*/ | head -n1)
fi
cd "$src"
if ! grep -q 'with-lg-vaddr=48' debian/rules; then
    # the first DEB_CONFIGOPTS line: pin the address width Debian's binary was built with
    sed -i '0,/^  DEB_CONFIGOPTS += /s//  DEB_CONFIGOPTS += --with-lg-vaddr=48 /' debian/rules
fi
if [ ! -f lib/libjemalloc.so.2 ] || [ ! -d debian/libjemalloc2 ]; then
    DEB_BUILD_OPTIONS="nocheck nodoc parallel=$(nproc)" DEB_BUILD_PROFILES=nodoc \
        nice -n 10 dpkg-buildpackage -b -uc -us >"$work/build.log" 2>&1 || {
        tail -n 30 "$work/build.log" >&2; exit 1; }
fi
built=debian/libjemalloc2/usr/lib/x86_64-linux-gnu/libjemalloc.so.2
unstripped=$(pwd)/lib/libjemalloc.so.2
"$py" "$here/jemalloc_extract.py" --debug "$unstripped" --stripped "$built" --system "$lib" \
    --package-version "$pkgver" --out "$root/common/allocators/data"

#!/usr/bin/env bash
# Batch use: check a core file (or several) and exit non-zero when the heap has a critical
# finding; the JSON report is written beside each core.
#   examples/check_core.sh PROG CORE [CORE...]
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
prog=$1; shift
status=0
for core in "$@"; do
    gdb -nx -batch -iex 'set debuginfod enabled off' -x "$here/gdb_plugin/gdbinit.py" \
        -ex "heap-check --json $core.heaplens.json --fail-on critical" "$prog" "$core" \
        || { echo "$core: critical heap findings (see $core.heaplens.json)"; status=1; }
done
exit $status

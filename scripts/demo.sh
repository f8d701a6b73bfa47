#!/usr/bin/env bash
# scripts/demo.sh: heaplens on a real program, live and on a core file.
#
#   1. scripts/setup.sh (system packages, .venv)
#   2. make -C examples                  -> examples/build/session_cache
#   3. gdb, plugin loaded, program stopped at heaplens_checkpoint:
#        heap-check; info alloc response (in report_done's frame); gcore
#   4. a second gdb on that core file: the same two commands
#
# Safe to run again: it rebuilds what changed and overwrites the core file.
# The gdb steps themselves are in scripts/demo_gdb.py.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"

EXE=examples/build/session_cache
CORE=examples/build/session_cache.core
PLUGIN=gdb_plugin/gdbinit.py
# -nx: no ~/.gdbinit (another heap plugin there would get in the way); no debuginfod prompt
# or downloads; a hung gdb is killed after 10 minutes.
GDB=(timeout --foreground -k 10 600 gdb -q -nx -batch -iex 'set debuginfod enabled off')

section() { printf '\n################ %s ################\n' "$*"; }
die() { printf 'demo: ERROR: %s\n' "$*" >&2; exit 1; }

section "Setup"
"$ROOT/scripts/setup.sh"

section "Building the example (make -C examples)"
[ -f examples/Makefile ] || die "examples/Makefile is missing"
make --no-print-directory -C examples
[ -x "$EXE" ] || die "make -C examples did not produce $EXE"
[ -f "$PLUGIN" ] || die "$PLUGIN is missing"

status=0
rm -f "$CORE"

section "Live: gdb -x $PLUGIN $EXE, stopped at heaplens_checkpoint"
HEAPLENS_DEMO_MODE=live HEAPLENS_DEMO_CORE="$ROOT/$CORE" \
    "${GDB[@]}" -x "$PLUGIN" -x scripts/demo_gdb.py "$EXE" </dev/null || status=1

if [ -f "$CORE" ]; then
    section "Core file: gdb -batch -x $PLUGIN $EXE $CORE -ex heap-check ..."
    HEAPLENS_DEMO_MODE=core \
        "${GDB[@]}" -x "$PLUGIN" -x scripts/demo_gdb.py "$EXE" "$CORE" </dev/null || status=1
    # the same core with no debugger at all; exit 1 = it found warnings or worse, as it should
    section "Core file without a debugger: .venv/bin/heaplens check $CORE"
    rc=0
    .venv/bin/heaplens check "$CORE" --exe "$EXE" || rc=$?
    [ "$rc" -le 1 ] || status=1
else
    echo "demo: no core file was written ($CORE), skipping the core-file part" >&2
    status=1
fi

echo
if [ "$status" = 0 ]; then
    echo "demo: done. The core file stays at $ROOT/$CORE; explore it with:"
    echo "  gdb -x $ROOT/$PLUGIN $ROOT/$EXE $ROOT/$CORE"
else
    echo "demo: FAILED (see the messages above)" >&2
fi
exit "$status"

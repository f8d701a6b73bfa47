#!/usr/bin/env bash
# scripts/test.sh: set everything up (scripts/setup.sh), then run the whole test suite:
#     .venv/bin/python -m pytest tests -q --durations=10 [ARGS...]
# Extra arguments go to pytest: ./scripts/test.sh -k glibc -x
# If an argument names an existing path (tests/test_x.py, tests/test_x.py::test_y), only that
# runs instead of the whole tests/ directory.
# "No tests collected" (pytest exit code 5) counts as a failure.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT" || exit 1

"$ROOT/scripts/setup.sh" || { echo "test: setup failed" >&2; exit 1; }

target=(tests)
for arg in "$@"; do
    case $arg in
        -*) ;;
        *) if [ -e "${arg%%::*}" ]; then target=(); break; fi ;;
    esac
done

# -rfEs: list failures, errors and skips (with their reasons: a missing lldb-16 shows up here).
cmd=(.venv/bin/python -m pytest "${target[@]+"${target[@]}"}" -q --durations=10 -rfEs "$@")
echo "test: ${cmd[*]}"
start=$(date +%s)
"${cmd[@]}"
rc=$?
elapsed=$(( $(date +%s) - start ))

if [ "$rc" = 5 ]; then
    echo "test: FAILED: pytest collected no tests (exit code 5)" >&2
    exit 1
fi
if [ "$rc" = 0 ]; then
    echo "test: passed in ${elapsed} s"
else
    echo "test: FAILED (pytest exit code $rc) after ${elapsed} s" >&2
fi
exit "$rc"

#!/usr/bin/env bash
# scripts/setup.sh: make this checkout ready for scripts/demo.sh and scripts/test.sh.
#
# Idempotent and non-interactive; meant for Debian 12, run as root (or with password-less sudo),
# from any directory. Each step prints one line; details go to a log shown only on failure.
#   1. system packages (apt): installs only the missing ones, running `apt-get update` once and
#      only when something has to be installed. The lldb-16 / jemalloc / tcmalloc / rustc extras
#      are optional: if they cannot be installed, a warning is printed and setup continues.
#   2. <checkout>/.venv, made by /usr/bin/python3: the interpreter gdb embeds (Python 3.11 on
#      Debian 12), so the gdb plugin can load the packages by putting .venv's site-packages on
#      gdb's sys.path (see scripts/venv_site.sh). A .venv made by another interpreter (pyenv...)
#      is recreated.
#   3. the Python packages of requirements.txt, installed only when requirements.txt changed.
#   4. the `heaplens` command (.venv/bin/heaplens): pyproject.toml's entry point as a small script
#      that runs this checkout's common.cli (rewritten only when missing or different).
#
# Environment: HEAPLENS_SKIP_APT=1 skips step 1 (for machines you do not administer).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
VENV=$ROOT/.venv
SYS_PY=/usr/bin/python3

# Needed by every test and by the demo: setup fails if these cannot be installed.
REQUIRED_PKGS=(gdb gcc libc6-dev make libc6-dbg python3 python3-venv python3-dev procps file)
# Needed only by the lldb / jemalloc / tcmalloc / Rust / remote (gdbserver) / Redis tests: a failure
# is a warning. (Debian's redis-server starts no daemon here: the Redis test runs its own.)
OPTIONAL_PKGS=(lldb-16 python3-lldb-16 liblldb-16-dev libjemalloc2 libjemalloc-dev
               libtcmalloc-minimal4 libgoogle-perftools-dev rustc gdbserver redis-server redis-tools)
# Optional packages that failed to install are remembered here (deleted with .venv) so that a
# machine without network access does not retry apt on every run.
APT_SKIP_FILE=$VENV/.heaplens-apt-skipped
REQ_STAMP=$VENV/.heaplens-requirements

T0=$(date +%s%N)
say()  { printf 'setup: %s\n' "$*"; }
warn() { printf 'setup: WARNING: %s\n' "$*" >&2; }
die()  { printf 'setup: ERROR: %s\n' "$*" >&2; exit 1; }

LOG=$(mktemp "${TMPDIR:-/tmp}/heaplens-setup.XXXXXX.log")
KEEP_LOG=0
trap '[ "$KEEP_LOG" = 1 ] || rm -f "$LOG"' EXIT
show_log() {  # the end of the log, for a failure message
    KEEP_LOG=1
    echo "---- last lines of $LOG ----" >&2
    tail -n 25 "$LOG" >&2 || true
    echo "----" >&2
}

# Two setups at once (demo and tests in two terminals) would fight over apt and pip.
if command -v flock >/dev/null 2>&1; then
    exec 9>"${TMPDIR:-/tmp}/heaplens-setup.$(id -u).lock"
    flock 9
fi

# ---------------------------------------------------------------- 1. system packages
# Prints the packages among "$@" that dpkg does not list as installed.
missing_pkgs() {
    local installed p
    installed=$(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "$@" 2>/dev/null |
                awk '$2 == "installed" { print $1 }') || true
    for p in "$@"; do
        grep -qxF -- "$p" <<<"$installed" || printf '%s\n' "$p"
    done
}

SUDO=()
APT_UPDATED=0
apt_get() {
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -y -q \
        -o DPkg::Lock::Timeout=600 \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "$@" </dev/null >>"$LOG" 2>&1
}
apt_update_once() {
    [ "$APT_UPDATED" = 1 ] && return 0
    APT_UPDATED=1
    apt_get update || warn "apt-get update failed; trying with the package lists already present"
}
apt_install() { apt_get install --no-install-recommends "$@"; }

APT_SKIPPED_NOW=()
setup_system_packages() {
    if [ "${HEAPLENS_SKIP_APT:-0}" = 1 ]; then
        say "system packages: skipped (HEAPLENS_SKIP_APT=1)"
        return
    fi
    if ! command -v dpkg-query >/dev/null 2>&1; then
        warn "no dpkg here (not Debian?): install gdb, gcc, make, glibc debug symbols and python3-venv yourself"
        return
    fi

    local -a req opt skipped=()
    mapfile -t req < <(missing_pkgs "${REQUIRED_PKGS[@]}")
    mapfile -t opt < <(missing_pkgs "${OPTIONAL_PKGS[@]}")
    if [ -f "$APT_SKIP_FILE" ] && [ ${#opt[@]} -gt 0 ]; then
        local -a still=()
        local p
        for p in "${opt[@]}"; do
            if grep -qxF -- "$p" "$APT_SKIP_FILE"; then skipped+=("$p"); else still+=("$p"); fi
        done
        opt=("${still[@]+"${still[@]}"}")
    fi
    if [ ${#req[@]} -eq 0 ] && [ ${#opt[@]} -eq 0 ]; then
        if [ ${#skipped[@]} -gt 0 ]; then
            say "system packages: present, except optional ${skipped[*]} (failed before; rm $APT_SKIP_FILE to retry)"
        else
            say "system packages: all present"
        fi
        return
    fi

    if [ "$(id -u)" != 0 ]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            SUDO=(sudo -n)
        elif [ ${#req[@]} -gt 0 ]; then
            die "missing ${req[*]}; run this script as root, or: apt-get install ${req[*]} ${opt[*]-}"
        else
            warn "not root: cannot install optional ${opt[*]} (their tests will be skipped)"
            return
        fi
    fi

    local -a todo=("${req[@]+"${req[@]}"}" "${opt[@]+"${opt[@]}"}")
    say "system packages: installing ${todo[*]}"
    apt_update_once
    if [ ${#req[@]} -gt 0 ]; then
        if ! apt_install "${req[@]}"; then
            show_log
            die "could not install required packages: ${req[*]}"
        fi
    fi
    if [ ${#opt[@]} -gt 0 ]; then
        # python3-lldb-16 conflicts with Debian's default python3-lldb(-14) (whose Python module
        # is broken on Debian 12 anyway): remove that first, or apt refuses the install.
        if printf '%s\n' "${opt[@]}" | grep -qE '^(python3-lldb-16|lldb-16|liblldb-16-dev)$'; then
            local -a conflicting
            mapfile -t conflicting < <(dpkg-query -W -f='${Package} ${db:Status-Status}\n' 'python3-lldb*' 2>/dev/null |
                awk '$2 == "installed" && $1 != "python3-lldb-16" { print $1 }' || true)
            if [ ${#conflicting[@]} -gt 0 ]; then
                say "system packages: removing ${conflicting[*]} (conflicts with python3-lldb-16)"
                apt_get remove "${conflicting[@]}" || warn "could not remove ${conflicting[*]}"
            fi
        fi
        if ! apt_install "${opt[@]}"; then
            # One at a time, to keep whatever can be installed.
            local p
            for p in "${opt[@]}"; do
                [ -z "$(missing_pkgs "$p")" ] && continue
                apt_install "$p" || APT_SKIPPED_NOW+=("$p")
            done
        fi
        if [ ${#APT_SKIPPED_NOW[@]} -gt 0 ]; then
            show_log
            warn "could not install optional ${APT_SKIPPED_NOW[*]}: the tests needing them will be skipped"
        fi
    fi
    local -a still_missing
    mapfile -t still_missing < <(missing_pkgs "${REQUIRED_PKGS[@]}")
    [ ${#still_missing[@]} -eq 0 ] || { show_log; die "still missing after apt: ${still_missing[*]}"; }
    say "system packages: done"
}

# ---------------------------------------------------------------- 2. virtual environment
SYS_VER=
cfg_value() {  # cfg_value KEY -> value of "KEY = value" in .venv/pyvenv.cfg
    sed -n "s/^$1[[:space:]]*=[[:space:]]*//p" "$VENV/pyvenv.cfg" | head -n 1
}
venv_problem() {  # prints why the existing .venv cannot be reused; empty = reusable
    [ -f "$VENV/pyvenv.cfg" ] || { echo "it has no pyvenv.cfg"; return; }
    [ -x "$VENV/bin/python" ] || { echo "it has no bin/python"; return; }
    local home exe ver
    home=$(cfg_value home); exe=$(cfg_value executable); ver=$(cfg_value version)
    [ "$home" = /usr/bin ] || { echo "it was made by an interpreter in ${home:-?}"; return; }
    if [ -n "$exe" ] && [ "$(readlink -f "$exe")" != "$(readlink -f "$SYS_PY")" ]; then
        echo "it was made by $exe"; return
    fi
    [ "${ver%.*}" = "${SYS_VER%.*}" ] || { echo "it was made by Python ${ver:-?}, not $SYS_VER"; return; }
    [ "$(readlink -f "$VENV/bin/python")" = "$(readlink -f "$SYS_PY")" ] ||
        { echo "its bin/python is not $SYS_PY"; return; }
}
setup_venv() {
    [ -x "$SYS_PY" ] || die "$SYS_PY not found (install python3)"
    SYS_VER=$("$SYS_PY" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')
    if [ -e "$VENV" ]; then
        local why
        why=$(venv_problem)
        if [ -z "$why" ]; then
            say ".venv: ok ($SYS_PY $SYS_VER)"
            return
        fi
        say ".venv: recreating with $SYS_PY ($why)"
        rm -rf "$VENV"
    else
        say ".venv: creating with $SYS_PY $SYS_VER"
    fi
    if ! "$SYS_PY" -m venv "$VENV" >>"$LOG" 2>&1; then
        show_log
        die "'$SYS_PY -m venv $VENV' failed (is python3-venv installed?)"
    fi
    [ -z "$(venv_problem)" ] || die "the new .venv is unusable: $(venv_problem)"
}

# ---------------------------------------------------------------- 3. Python packages
setup_python_packages() {
    local req=$ROOT/requirements.txt hash
    [ -f "$req" ] || die "$req not found"
    hash="$(sha256sum "$req" | cut -c1-16) $SYS_VER"
    # Quick check (no imports): the stamp matches and the top-level modules are still there.
    if [ "$(cat "$REQ_STAMP" 2>/dev/null)" = "$hash" ] &&
       "$VENV/bin/python" -c 'import importlib.util as u, sys
sys.exit(any(u.find_spec(m) is None for m in ("numpy", "elftools", "tabulate", "pygdbmi", "pytest")))' 2>/dev/null
    then
        say "python packages: up to date"
        return
    fi
    say "python packages: installing requirements.txt into .venv"
    rm -f "$REQ_STAMP"
    if ! PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 \
         "$VENV/bin/python" -m pip install -q -r "$req" >>"$LOG" 2>&1; then
        show_log
        die "pip install -r requirements.txt failed"
    fi
    printf '%s\n' "$hash" >"$REQ_STAMP"
}

# lldb-16 keeps its Python module outside any site-packages: a .pth file makes `import lldb`
# work from .venv/bin/python (pytest) as well. (Standalone use also needs
# LLDB_DEBUGSERVER_PATH=/usr/lib/llvm-16/bin/lldb-server; lldb's own `script` does not.)
setup_lldb_path() {
    local lldb=/usr/lib/llvm-16/bin/lldb site pth dir
    [ -x "$lldb" ] || return 0
    site=$VENV/lib/python${SYS_VER%.*}/site-packages
    pth=$site/heaplens-lldb16.pth
    if [ -f "$pth" ] && [ -d "$(head -n 1 "$pth")/lldb" ]; then
        return 0
    fi
    dir=$("$lldb" -P 2>/dev/null) || true
    if [ -n "$dir" ] && [ -d "$dir/lldb" ]; then
        printf '%s\n' "$dir" >"$pth"
        say "lldb: .venv can import lldb from $dir"
    else
        warn "lldb-16 -P gave no usable Python path; 'import lldb' will not work from .venv"
    fi
}

# The command line: the script pip would make from pyproject.toml's entry point, pointing at this
# checkout (no build step, no download: .venv has no `wheel` for an editable install).
setup_cli() {
    local bin=$VENV/bin/heaplens want
    want="#!$VENV/bin/python
# heaplens: made by scripts/setup.sh (pyproject.toml's entry point common.cli:main, run from the checkout)
import sys
sys.path.insert(0, '$ROOT')
from common.cli import main
sys.exit(main())"
    if [ -x "$bin" ] && [ "$(cat "$bin" 2>/dev/null)" = "$want" ]; then
        say "heaplens command: $bin"
        return
    fi
    printf '%s\n' "$want" >"$bin.tmp" && chmod 755 "$bin.tmp" && mv -f "$bin.tmp" "$bin" ||
        die "could not write $bin"
    say "heaplens command: installed $bin"
}

setup_system_packages
setup_venv
setup_python_packages
setup_cli
setup_lldb_path
if [ ${#APT_SKIPPED_NOW[@]} -gt 0 ]; then
    printf '%s\n' "${APT_SKIPPED_NOW[@]}" >>"$APT_SKIP_FILE"
fi
say "ready ($(( ($(date +%s%N) - T0) / 1000000 )) ms)"

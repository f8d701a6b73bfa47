#!/usr/bin/env bash
# Prints the site-packages directory of <checkout>/.venv, the directory the debugger plugins put
# on their embedded Python's sys.path to find numpy, pyelftools, tabulate and pygdbmi.
# scripts/setup.sh makes .venv with /usr/bin/python3, the interpreter gdb embeds, so the path is
#     <checkout>/.venv/lib/python<major>.<minor>/site-packages
# (in Python: os.path.join(root, ".venv", "lib", "python%d.%d" % sys.version_info[:2],
#  "site-packages")). Exits 1 if .venv has not been set up.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cfg=$ROOT/.venv/pyvenv.cfg
[ -f "$cfg" ] || { echo "venv_site: $ROOT/.venv is missing: run scripts/setup.sh" >&2; exit 1; }
version=$(sed -n 's/^version[[:space:]]*=[[:space:]]*//p' "$cfg" | head -n 1)
site=$ROOT/.venv/lib/python${version%.*}/site-packages
[ -d "$site" ] || { echo "venv_site: $site is missing: run scripts/setup.sh" >&2; exit 1; }
echo "$site"

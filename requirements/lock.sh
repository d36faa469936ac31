#!/usr/bin/env bash
# Regenerate requirements/lock.txt from a tested environment: every package lorahub installs, at the exact version
# that environment ran the tests with, and the SHA-256 of every file the index has for that version (so `make
# setup` installs in pip's hash-checking mode on any platform).
#
# torch is left out: its wheel differs between CPU and CUDA builds, so `make` installs it first from TORCH_SPEC
# (with the version pinned by this file's header comment in the Makefile), and its CUDA libraries come with it.
#
#   requirements/lock.sh [VENV]        (default .venv; needs pip-tools from the package index)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${1:-.venv}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

"$venv/bin/python" -m pip freeze --all --exclude-editable \
    | grep -v -i -E '^(pip|torch|lorahub)(==| @)' > "$work/pins.in"
python3 -m venv "$work/tools"
"$work/tools/bin/pip" install --quiet "pip-tools==7.7.0"
# The index alone decides the hashes: a machine's own pip configuration (local wheel folders, caps) must not.
PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS="" "$work/tools/bin/pip-compile" --quiet --generate-hashes \
    --allow-unsafe --unsafe-package torch --no-strip-extras --no-header --no-annotate \
    --output-file "$work/compiled.txt" "$work/pins.in"
python3 "$here/keep_pinned.py" "$work/pins.in" "$work/compiled.txt" > "$here/lock.txt"
echo "wrote $here/lock.txt ($(grep -c '==' "$here/lock.txt") packages)"

#!/usr/bin/env bash
# Makes (or reuses) the Python virtualenv of the API tests with the
# packages they need from PyPI, pinned: schemathesis.
#
#     tests/api/venv.sh DIR
set -euo pipefail
VENV=$1
PACKAGES=(schemathesis==4.32.5)
STAMP="$VENV/.essaim-packages"
if [ -x "$VENV/bin/python" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "${PACKAGES[*]}" ]; then
    exit 0
fi
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check "${PACKAGES[@]}"
echo "${PACKAGES[*]}" >"$STAMP"

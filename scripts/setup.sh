#!/usr/bin/env bash
# Creates .venv (Python 3.11) and installs the pinned requirements, plus any extra requirement
# files given as arguments (scripts/test.sh adds requirements-eval.txt, the evaluation's
# Poisson baseline). Safe to run again: an existing venv is reused and pip skips what is
# already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "error: $PYTHON not found; install Python 3.11 or set PYTHON=/path/to/python3.11" >&2
  exit 2
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# A requirements stamp skips pip entirely when nothing changed since the last install.
stamp=.venv/.requirements.sha256
want=$(cat requirements.txt "$@" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -r requirements.txt
  for extra in "$@"; do
    .venv/bin/python -m pip install --quiet -r "$extra"
  done
  echo "$want" > "$stamp"
fi

#!/usr/bin/env bash
# Runs the Blender extension tests (tests/test_blender.py) on a given bpy release.
#
#   bash scripts/test_blender.sh 5.2.3 [pytest args...]
#
# Creates .venv-bpy-<VERSION> with the Python that release needs (4.2 / 4.5 / 5.0: 3.11;
# 5.1 and newer: 3.13) and installs bpy==VERSION, numpy and pytest into it; a stamp makes a
# second run skip pip. The backend the add-on launches keeps running from the main .venv
# (Python 3.11 with torch) through ONET_BACKEND_PYTHON, so run scripts/setup.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION="${1:?usage: bash scripts/test_blender.sh BPY_VERSION [pytest args...]}"
shift
major_minor=$(echo "$VERSION" | cut -d. -f1-2)
case "$major_minor" in
  4.2|4.3|4.4|4.5|5.0) want_py=3.11 ;;
  *) want_py=3.13 ;;
esac
# numpy: Blender 4.2-5.0 ship numpy 1.26 (bpy 4.5/5.0 require it); 5.1+ ship numpy 2 on 3.13.
case "$major_minor" in
  4.2|4.3|4.4) numpy_req="numpy<2" ;;
  *) numpy_req="numpy" ;;
esac
find_python() {
  # The first candidate that really runs as Python $want_py (pyenv shims may not).
  local candidates=("${PYTHON:-}" "python$want_py")
  candidates+=("$HOME"/.pyenv/versions/"$want_py".*/bin/python"$want_py")
  for candidate in "${candidates[@]}"; do
    if [ -n "$candidate" ] && "$candidate" -c "import sys; sys.exit(sys.version_info[:2] != tuple(map(int, '$want_py'.split('.'))))" >/dev/null 2>&1; then
      command -v "$candidate"
      return
    fi
  done
}
if [ ! -x .venv/bin/python ]; then
  echo "error: .venv is missing; run 'bash scripts/setup.sh' first (the backend runs from it)" >&2
  exit 2
fi
venv=".venv-bpy-$VERSION"
if [ ! -x "$venv/bin/python" ]; then
  python=$(find_python)
  if [ -z "$python" ]; then
    echo "error: bpy $VERSION needs Python $want_py; install it or set PYTHON=/path/to/python$want_py" >&2
    exit 2
  fi
  "$python" -m venv "$venv"
fi
stamp="$venv/.requirements"
want="bpy==$VERSION $numpy_req pytest==8.4.2"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  # shellcheck disable=SC2086
  "$venv/bin/python" -m pip install --quiet "bpy==$VERSION" "$numpy_req" pytest==8.4.2
  echo "$want" > "$stamp"
fi
export ONET_BACKEND_PYTHON="${ONET_BACKEND_PYTHON:-$PWD/.venv/bin/python}"
exec "$venv/bin/python" -m pytest tests/test_blender.py -p no:cacheprovider "$@"

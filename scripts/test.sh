#!/usr/bin/env bash
# The whole test suite: set up .venv (Python 3.11: backend, training, bpy 5.0.1, pymeshlab for
# the Poisson baseline), run every
# test there (tests/test_blender.py included, on bpy 5.0.1), then the Blender tests again on
# the newest Blender, bpy 5.2.3 (Python 3.13, in .venv-bpy-5.2.3; about 400 MB to download
# the first time).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh requirements-eval.txt
.venv/bin/python -m pytest "$@"
bash scripts/test_blender.sh 5.2.3

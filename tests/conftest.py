"""Shared fixtures: the repository root and a helper that runs the CLI in a subprocess."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def run_cli():
    """Run ``python -m backend ARGS`` from the repository root; returns CompletedProcess."""

    def run(*args, timeout=300):
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        return subprocess.run([sys.executable, "-m", "backend", *map(str, args)], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=timeout)

    return run

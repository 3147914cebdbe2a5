"""The "Install backend environment" button: a venv in the extension's user folder with
the backend's pinned requirements (``install_environment``, run on a worker thread; its
progress is an ``InstallTask`` the preferences draw).
"""

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field

from .interpreters import COMPLETE_STAMP, VENV_NAME, child_env, venv_python

TORCH_INDEX = "https://download.pytorch.org/whl/"


@dataclass
class InstallTask:
    """Progress of "Install backend environment" (read by the preferences UI)."""

    log_path: str
    state: str = "running"  # running | done | error
    step: str = "starting"
    fraction: float = 0.0
    lines: int = 0
    message: str = ""
    process: object = None
    started: float = field(default_factory=time.monotonic)


def requirement_lines(path, variant):
    """Pins from the bundled requirements, adapted to the platform and torch variant."""
    lines = []
    with open(path) as handle:
        for raw in handle:
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            if line.lower().startswith("torch=="):
                version = line.split("==", 1)[1].split("+", 1)[0]
                # Local version tags (+cpu, +cu128) exist on PyTorch's Linux/Windows indexes.
                if variant == "cpu" and sys.platform != "darwin":
                    line = f"torch=={version}+cpu"
                else:
                    line = f"torch=={version}"
            if line.lower().startswith("numpy==1.") and sys.version_info >= (3, 12):
                line = "numpy>=2.1,<3"  # numpy 1.x has no wheels for Blender 5.1+'s Python
            lines.append(line)
    return lines


def install_environment(base_python, user_dir, requirements, variant="cpu", task=None):
    """Create ``<user_dir>/backend-venv`` and pip-install the backend's pinned requirements.

    Runs in a worker thread; progress goes to ``task`` and everything pip prints to
    ``task.log_path``. variant: cpu | cu128 (PyTorch index to take torch from). The venv is
    used only once the last step wrote its completion stamp (``COMPLETE_STAMP``): a failed
    install leaves a venv the add-on does not pick, and the next install starts it afresh.
    """
    folder = os.path.join(user_dir, VENV_NAME)
    stamp = os.path.join(folder, COMPLETE_STAMP)
    if os.path.exists(stamp):
        os.remove(stamp)  # reinstalling: unusable until this install finished
    pins = requirement_lines(requirements, variant)
    commands = [("creating the virtual environment",
                 [base_python, "-m", "venv", "--clear", folder])]
    python = venv_python(user_dir)
    if sys.platform == "darwin":
        index = []
    else:
        index = ["--extra-index-url", TORCH_INDEX + variant]
    commands.append(("upgrading pip", [python, "-m", "pip", "install", "--upgrade", "pip"]))
    commands.append((f"installing {len(pins)} packages (PyTorch is large: this can take"
                     " minutes)", [python, "-m", "pip", "install", *index, *pins]))
    expected_lines = 30 + 8 * len(pins)
    with open(task.log_path, "w", encoding="utf-8") as log:
        for number, (step, command) in enumerate(commands):
            task.step = step
            log.write(f"$ {' '.join(command)}\n")
            log.flush()
            try:
                process = subprocess.Popen(command, stdout=subprocess.PIPE,
                                           stderr=subprocess.STDOUT, text=True,
                                           env=child_env(), stdin=subprocess.DEVNULL)
            except OSError as exc:
                task.state, task.message = "error", f"cannot run {command[0]}: {exc}"
                log.write(task.message + "\n")
                return task
            task.process = process
            for line in process.stdout:
                log.write(line)
                log.flush()
                task.lines += 1
                if number == 2:
                    task.fraction = min(0.95, 0.1 + 0.85 * task.lines / expected_lines)
                    if line.startswith(("Collecting", "Downloading", "Installing")):
                        task.step = line.strip()[:80]
            code = process.wait()
            if code != 0:
                task.state = "error"
                task.message = (f"{step} failed (exit status {code}); see the log:"
                                f" {task.log_path}")
                return task
            task.fraction = max(task.fraction, 0.05 * (number + 1))
    with open(stamp, "w", encoding="utf-8") as handle:
        handle.write(" ".join(pins) + "\n")
    task.state, task.fraction = "done", 1.0
    task.message = f"installed into {folder}; the backend will use it"
    return task

"""Which Python runs the backend: discovery (``resolve_python``), the check button
(``check_python``) and the environment a child interpreter gets (``child_env``).

Nothing here touches bpy; ``check_python`` runs the interpreter, so call it off the main
thread (docs/design.md, "Process model").
"""

import importlib.util
import json
import os
import subprocess
import sys

ENV_PYTHON = "ONET_BACKEND_PYTHON"
VENV_NAME = "backend-venv"
COMPLETE_STAMP = ".onet-install-complete"  # written last by a successful install


def venv_complete(user_dir):
    """Whether "Install backend environment" finished in ``user_dir`` (a failed or
    interrupted install leaves a venv without the stamp, which is never used)."""
    return os.path.isfile(os.path.join(user_dir, VENV_NAME, COMPLETE_STAMP))


def venv_python(user_dir):
    """Path of the interpreter of the backend venv made by "Install backend environment"."""
    folder = os.path.join(user_dir, VENV_NAME)
    if sys.platform == "win32":
        return os.path.join(folder, "Scripts", "python.exe")
    return os.path.join(folder, "bin", "python")


_blender_has_torch = None


def blender_python_has_torch():
    """Whether Blender's own interpreter can import torch (found, not imported)."""
    global _blender_has_torch
    if _blender_has_torch is None:
        try:
            _blender_has_torch = importlib.util.find_spec("torch") is not None
        except (ImportError, ValueError):
            _blender_has_torch = False
    return _blender_has_torch


def resolve_python(preference, user_dir):
    """(interpreter, where it came from) in order: preference, $ONET_BACKEND_PYTHON, the
    installed backend environment, Blender's own Python. The backend picks its engine
    (``--engine auto``): PyTorch where the interpreter has it, else the bundled numpy
    engine on the CPU, which needs nothing beyond the numpy Blender ships."""
    if preference:
        return os.path.abspath(os.path.expanduser(preference)), "the add-on preferences"
    if os.environ.get(ENV_PYTHON):
        return os.path.abspath(os.environ[ENV_PYTHON]), f"${ENV_PYTHON}"
    installed = venv_python(user_dir) if user_dir else ""
    half_made = bool(installed) and os.path.isfile(installed) and not venv_complete(user_dir)
    if installed and os.path.isfile(installed) and not half_made:
        return installed, "the installed backend environment"
    if blender_python_has_torch():
        return sys.executable, "Blender's own Python (it has PyTorch)"
    if half_made:
        return sys.executable, (f"Blender's own Python: the bundled engine, CPU only (the "
                                f"backend environment in "
                                f"{os.path.dirname(os.path.dirname(installed))} is incomplete:"
                                " its install failed or was stopped; press \"Install backend"
                                " environment\" again for PyTorch)")
    return sys.executable, ("Blender's own Python: the bundled engine, CPU only (\"Install"
                            " backend environment\" adds PyTorch for a GPU)")


def decodes_image_files(settings):
    """Whether the backend these ConnectionSettings describe can decode PNG/JPEG bytes: not
    when it is Blender's own Python without Pillow (the bundled engine), which gets pixels
    decoded by Blender instead."""
    if settings.mode == "REMOTE" or settings.python != sys.executable:
        return True
    try:
        return importlib.util.find_spec("PIL") is not None
    except (ImportError, ValueError):
        return False


def child_env():
    """Environment of the child: Blender's Python variables would break another interpreter."""
    env = dict(os.environ)
    for name in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP"):
        env.pop(name, None)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


CHECK_SCRIPT = (
    "import json, sys\n"
    "out = {'python': sys.version.split()[0], 'executable': sys.executable}\n"
    "try:\n"
    "    import torch\n"
    "    out['torch'] = torch.__version__\n"
    "    out['cuda'] = bool(torch.cuda.is_available())\n"
    "    if out['cuda']:\n"
    "        out['gpu'] = torch.cuda.get_device_name(0)\n"
    "except Exception as exc:\n"
    "    out['error'] = f'{type(exc).__name__}: {exc}'\n"
    "try:\n"
    "    import numpy\n"
    "    out['numpy'] = numpy.__version__\n"
    "except Exception:\n"
    "    pass\n"
    "print(json.dumps(out))\n"
)


def check_python(python, timeout=120.0):
    """Run the interpreter: a one-line summary of its torch and CUDA, or of the numpy the
    bundled engine runs on when it has no torch (or why it cannot run the backend)."""
    if not python:
        return False, "No interpreter chosen."
    try:
        result = subprocess.run([python, "-c", CHECK_SCRIPT], capture_output=True, text=True,
                                timeout=timeout, env=child_env(), stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return False, f"{python} does not exist."
    except PermissionError:
        return False, f"{python} is not executable."
    except subprocess.TimeoutExpired:
        return False, f"{python} did not answer within {timeout:.0f} s."
    except OSError as exc:
        return False, f"cannot run {python}: {exc}"
    try:
        info = json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        lines = result.stderr.strip().splitlines()
        return False, f"{python} failed: {lines[-1] if lines else 'no output'}"
    if "error" in info and "numpy" in info:
        return True, (f"Python {info['python']}, numpy {info['numpy']}, no PyTorch: the "
                      "bundled engine (CPU)")
    if "error" in info:
        return False, (f"Python {info['python']}, but neither PyTorch nor numpy can be "
                       f"imported ({info['error']})")
    cuda = f"CUDA available ({info['gpu']})" if info.get("cuda") else "no CUDA (CPU only)"
    return True, f"Python {info['python']}, PyTorch {info['torch']}, {cuda}"

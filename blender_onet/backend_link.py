"""The connection to the inference backend: a child process we launch, or a remote URL.

Nothing here touches bpy: the main thread takes a ``Settings`` snapshot of the preferences
and hands it over; network and process work happens on worker threads.
"""

import http.client
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from .backend.service import client as wire

ADDON_DIR = os.path.dirname(os.path.abspath(__file__))  # holds the bundled ``backend`` package
ENV_PYTHON = "ONET_BACKEND_PYTHON"
VENV_NAME = "backend-venv"
TORCH_INDEX = "https://download.pytorch.org/whl/"


@dataclass(frozen=True)
class Settings:
    """What the backend connection depends on (a snapshot of the preferences)."""

    mode: str = "LOCAL"  # LOCAL | REMOTE
    python: str = ""  # resolved interpreter ("" when none)
    python_source: str = ""  # where it came from, in words
    device: str = "auto"
    url: str = ""
    token: str = ""
    model_dirs: tuple = ()
    user_dir: str = ""

    def launch_key(self):
        return (self.mode, self.python, self.device, self.model_dirs, self.url, self.token)


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
    installed backend environment, Blender's own Python if it has torch; ("", reason)."""
    if preference:
        return os.path.abspath(os.path.expanduser(preference)), "the add-on preferences"
    if os.environ.get(ENV_PYTHON):
        return os.path.abspath(os.environ[ENV_PYTHON]), f"${ENV_PYTHON}"
    installed = venv_python(user_dir) if user_dir else ""
    if installed and os.path.isfile(installed):
        return installed, "the installed backend environment"
    if blender_python_has_torch():
        return sys.executable, "Blender's own Python (it has PyTorch)"
    return "", ("no Python with PyTorch found: set one in the add-on preferences, set"
                f" ${ENV_PYTHON}, or press \"Install backend environment\"")


def child_env():
    """Environment of the child: Blender's Python variables would break another interpreter."""
    env = dict(os.environ)
    for name in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP"):
        env.pop(name, None)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def describe_exit(code):
    if code is None:
        return "is still running"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed ({name})"
    return f"exited with status {code}"


class Backend:
    """One backend connection, shared by all jobs. Thread-safe."""

    def __init__(self):
        self.lock = threading.RLock()
        self.server = None  # backend.client.LocalServer we launched
        self.client = None  # backend.client.Client
        self.key = None
        self.state = "stopped"  # stopped | starting | running | error
        self.message = "not started"
        self.health = {}
        self.models = []  # dicts from GET /v1/models
        self.generation = 0  # bumped on every change, so the UI knows to redraw
        self.stop_requested = False

    # -- state ----------------------------------------------------------------------------
    def _set(self, state, message):
        self.state, self.message = state, message
        self.generation += 1

    def process_alive(self):
        server = self.server
        return server is not None and server.process.poll() is None

    def status_text(self):
        """One line for the panel (never waits for the lock: a launch may hold it)."""
        state, server, client = self.state, self.server, self.client
        if state == "running" and server is not None and server.process.poll() is not None:
            return f"Stopped: the backend {describe_exit(server.process.poll())}"
        if state == "running" and client is not None:
            device = self.health.get("device", "?")
            if server is not None:
                return (f"Running locally on {device} (pid {server.process.pid},"
                        f" port {server.handshake['port']})")
            return f"Connected to {client.host}:{client.port} ({device})"
        if state == "starting":
            return "Starting…"
        if state == "error":
            return f"Stopped: {self.message}"
        return "Stopped"

    def is_running(self):
        return self.state == "running" and (self.server is None or self.process_alive())

    # -- start / stop -----------------------------------------------------------------------
    def ensure(self, settings):
        """A Client for the backend these settings describe, launching it when needed.

        Runs on worker threads (it may take seconds). Raises RuntimeError in plain words.
        """
        with self.lock:
            if (self.client is not None and self.key == settings.launch_key()
                    and (self.server is None or self.process_alive())):
                return self.client
            self._stop_locked()
            self.stop_requested = False
            self._set("starting", "starting")
            try:
                if settings.mode == "REMOTE":
                    client = self._connect(settings)
                else:
                    client = self._launch(settings)
                self.health = client.health()
                if self.health.get("protocol") != wire.protocol.PROTOCOL:
                    raise RuntimeError(f"the backend speaks protocol"
                                       f" {self.health.get('protocol')}, this add-on"
                                       f" {wire.protocol.PROTOCOL}: update one of them")
                self.models = client.models()
            except Exception as exc:
                self._stop_locked()
                message = plain_error(exc, settings)
                self._set("error", message)
                raise RuntimeError(message) from None
            if self.stop_requested:
                self.stop_requested = False
                self._stop_locked()
                self._set("stopped", "stopped by the user")
                raise RuntimeError("the backend was stopped while it started")
            self.client, self.key = client, settings.launch_key()
            self._set("running", "running")
            return client

    def _connect(self, settings):
        if not settings.url:
            raise RuntimeError("no backend URL set in the add-on preferences")
        try:
            return wire.Client(settings.url, settings.token)
        except ValueError as exc:
            raise RuntimeError(str(exc)) from None

    def _launch(self, settings):
        if not settings.python:
            raise RuntimeError(settings.python_source)
        if not os.path.isfile(settings.python):
            raise RuntimeError(f"the backend interpreter {settings.python} does not exist"
                               f" (set by {settings.python_source})")
        args = ["--device", settings.device]
        for folder in settings.model_dirs:
            args += ["--models", folder]
        try:
            self.server = wire.launch(settings.python, cwd=ADDON_DIR, extra_args=args,
                                      env=child_env(), timeout=120.0)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc} (interpreter: {settings.python})") from None
        except OSError as exc:
            raise RuntimeError(f"cannot run {settings.python}: {exc.strerror or exc}") from None
        return self.server.client

    def start_async(self, settings):
        """Start (or connect) in a thread; the panel shows the state."""
        def run():
            try:
                self.ensure(settings)
            except RuntimeError:
                pass  # state and message are set

        self._set("starting", "starting")
        threading.Thread(target=run, name="onet-backend-start", daemon=True).start()

    def _stop_locked(self):
        server, self.server, self.client, self.key = self.server, None, None, None
        self.health, self.models = {}, []
        if server is not None:
            server.stop(timeout=5.0)

    def stop(self):
        """Stop the backend we launched (or forget the remote one). Never blocks for long:
        while a launch is in progress, the launch stops itself when it completes."""
        if not self.lock.acquire(timeout=0.5):
            self.stop_requested = True
            return
        try:
            self._stop_locked()
            self._set("stopped", "stopped by the user")
        finally:
            self.lock.release()

    def failure_reason(self, exc, settings):
        """Plain words for an exception met while talking to the backend mid-job."""
        if isinstance(exc, wire.ServerError) and exc.code != "disconnected":
            return plain_error(exc, settings)
        server = self.server
        if server is not None:
            try:
                code = server.process.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                code = None
            if code is not None:
                with self.lock:
                    if self.server is server:
                        self._stop_locked()
                        self._set("error", f"the backend {describe_exit(code)}")
                return (f"The backend process {describe_exit(code)} during the job. Nothing"
                        " was changed in the scene; press Reconstruct to start it again.")
        return plain_error(exc, settings)

    def refresh_models(self):
        client = self.client
        if client is None:
            return
        models = client.models()
        with self.lock:
            self.models = models
            self.generation += 1


def plain_error(exc, settings=None):
    """An exception from the client/server path as one readable sentence."""
    where = settings.url if settings is not None and settings.mode == "REMOTE" else "backend"
    if isinstance(exc, wire.ServerError):
        if exc.status == 401:
            return "The backend refused the token: check the token in the add-on preferences."
        if exc.code == "unknown_model":
            return (f"{exc.message[:1].upper()}{exc.message[1:]}. Pick a model in the ONet"
                    " panel (Advanced > Show test shapes lists the analytic test models) or"
                    " add a model folder in the add-on preferences.")
        if exc.code == "disconnected":
            return "The backend closed the connection in the middle of the job."
        text = exc.message or str(exc)
        return text[:1].upper() + text[1:]
    if isinstance(exc, RuntimeError):
        return str(exc)
    if isinstance(exc, ConnectionRefusedError):
        return f"Cannot reach the {where}: connection refused (is it running?)."
    if isinstance(exc, TimeoutError):
        return f"The {where} did not answer in time."
    if isinstance(exc, (ConnectionError, http.client.HTTPException, EOFError)):
        return f"The connection to the {where} broke: {exc or type(exc).__name__}."
    if isinstance(exc, wire.protocol.ProtocolError):
        return f"The {where} sent a damaged answer: {exc}."
    if isinstance(exc, OSError):
        return f"Cannot talk to the {where}: {exc.strerror or exc}."
    return f"{type(exc).__name__}: {exc}"


# -- interpreter check and environment install ----------------------------------------------
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
    "print(json.dumps(out))\n"
)


def check_python(python, timeout=120.0):
    """Run the interpreter: a one-line summary of its torch and CUDA (or why it failed)."""
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
    if "error" in info:
        return False, f"Python {info['python']}, but PyTorch cannot be imported ({info['error']})"
    cuda = f"CUDA available ({info['gpu']})" if info.get("cuda") else "no CUDA (CPU only)"
    return True, f"Python {info['python']}, PyTorch {info['torch']}, {cuda}"


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
    ``task.log_path``. variant: cpu | cu128 (PyTorch index to take torch from).
    """
    folder = os.path.join(user_dir, VENV_NAME)
    pins = requirement_lines(requirements, variant)
    commands = [("creating the virtual environment", [base_python, "-m", "venv", folder])]
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
    task.state, task.fraction = "done", 1.0
    task.message = f"installed into {folder}; the backend will use it"
    return task

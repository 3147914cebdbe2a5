"""The connection to the inference backend: a child process we launch, or a remote URL
(``Backend``; the add-on's one connection is ``BACKEND``), and plain words for what goes wrong
on it (``plain_error``).

Nothing here touches bpy: the main thread takes a ``ConnectionSettings`` snapshot of the
preferences and hands it over; network and process work happens on worker threads
(docs/design.md, "Process model").
"""

import http.client
import ipaddress
import logging
import os
import signal
import subprocess
import threading
import urllib.parse
from dataclasses import dataclass

from .bundled import ADDON_DIR, wire
from .interpreters import child_env

STOP_GRACE_S = 5.0  # a stopped backend gets this long to exit before it is killed
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConnectionSettings:
    """What the backend connection depends on (a snapshot of the preferences)."""

    mode: str = "LOCAL"  # LOCAL | REMOTE
    python: str = ""  # resolved interpreter ("" when none)
    python_source: str = ""  # where it came from, in words
    device: str = "auto"
    url: str = ""
    token: str = ""
    model_dirs: tuple = ()
    user_dir: str = ""
    online_access: bool = True  # bpy.app.online_access: off allows only this machine's URLs

    def launch_key(self):
        return (self.mode, self.python, self.device, self.model_dirs, self.url, self.token)


def is_local_url(url):
    """Whether a backend URL points at this machine (localhost or a loopback address)."""
    host = urllib.parse.urlsplit(url if "//" in url else f"http://{url}").hostname or ""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def remote_problem(url, online_access):
    """Why the remote backend at ``url`` cannot be used (None when it can): Blender's
    "Allow Online Access" off forbids any address but this machine's."""
    if not url:
        return "Set the backend URL in the add-on preferences (Remote mode)"
    if not online_access and not is_local_url(url):
        return (f"Online access is disabled in Blender, so the add-on does not connect to"
                f" {url}: allow it in Preferences > System > Network, or use a backend on this"
                " machine (http://127.0.0.1:PORT)")
    return None


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
        self.health = {}  # GET /v1/health of the connected backend ({} when none)
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
            engine = (f"{self.health.get('engine', 'torch')} engine on"
                      f" {self.health.get('device', '?')}")
            if server is not None:
                return (f"Running locally: {engine} (pid {server.process.pid},"
                        f" port {server.handshake['port']})")
            return f"Connected to {client.host}:{client.port} ({engine})"
        if state == "starting":
            return "Starting…"
        if state == "error":
            return f"Stopped: {self.message}"
        return "Stopped"

    def is_running(self):
        return self.state == "running" and (self.server is None or self.process_alive())

    def limit(self, name):
        """One of the connected backend's request limits (``limits`` of /v1/health, the
        names of ``backend.engine.request.Limits``), or None while not connected."""
        if not self.is_running():
            return None
        value = self.health.get("limits", {}).get(name)
        return int(value) if isinstance(value, (int, float)) else None

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
        problem = remote_problem(settings.url, settings.online_access)
        if problem:
            raise RuntimeError(problem)
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
            stop_process(server)

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


def stop_process(server):
    """Ask a launched backend to exit now and return at once; a thread waits for it and
    kills it after STOP_GRACE_S (a hung backend must not freeze Blender's main thread)."""
    if server.process.poll() is not None:
        return
    log.info("stopping the backend (pid %d)", server.process.pid)
    server.process.terminate()
    threading.Thread(target=server.stop, kwargs={"timeout": STOP_GRACE_S},
                     name="onet-backend-stop", daemon=True).start()


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
        if exc.code == "http":  # an answer that is not the backend's JSON error
            reason = http.client.responses.get(exc.status, "error")
            body = " ".join(exc.message.split())
            return (f"The {where} answered HTTP {exc.status} ({reason})"
                    + (f": {body}" if body else " with no message")
                    + ". Is the URL that of an ONet backend (python -m backend serve)?")
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


BACKEND = Backend()

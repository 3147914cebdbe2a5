"""HTTP front of the service: authentication, body reading, JSON errors, frame streaming.

Every request is answered on its own thread; work goes to the ``Worker``
(backend/service/jobs.py); requests are parsed by backend/service/schema.py. The wire
format: docs/protocol.md.
"""

import base64
import json
import logging
import queue
import re
import secrets
import select
import socket
import threading
import time
from dataclasses import asdict
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .. import __version__
from ..engine.image_view import model_view
from ..engine.request import Blend, ReconstructRequest
from ..errors import UserError
from . import protocol
from .jobs import Worker
from .schema import (ApiError, bad_request, content_hash, is_number, request_from,
                     settings_from, user_error)

logger = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 5.0
LISTEN_BACKLOG = 128  # connections the kernel holds before accept; beyond, resets
WRITE_TIMEOUT = 60.0  # seconds one socket read or write may block
MIB = 1 << 20


def read_exactly(stream, length, what="request"):
    """``length`` bytes of ``stream`` read straight into one bytearray (no chunk list, no
    join: the body is in memory once). Raises ApiError 400 when the stream ends early."""
    buffer = bytearray(length)
    view, got = memoryview(buffer), 0
    try:
        while got < length:
            n = stream.readinto(view[got:got + MIB])
            if not n:
                break
            got += n
    except (socket.timeout, ConnectionError, OSError, ValueError):
        pass
    finally:
        view.release()
    if got < length:
        raise bad_request(f"truncated body: got {got:,} of {length:,} bytes of the {what}")
    return buffer


class Deadlines:
    """Closes connections whose deadline passed: a request line and headers must arrive
    within ``header_timeout`` (idle keep-alive wait included), a body within
    ``request_timeout`` + 1 s per MiB. Per-read timeouts alone let a client that sends a
    byte every few seconds hold a thread forever."""

    def __init__(self):
        self.lock = threading.Lock()
        self.due = {}  # handler -> monotonic deadline
        self.stopped = threading.Event()
        threading.Thread(target=self._watch, name="onet-deadlines", daemon=True).start()

    def set(self, handler, seconds):
        with self.lock:
            if seconds is None:
                self.due.pop(handler, None)
            else:
                self.due[handler] = time.monotonic() + seconds

    def _watch(self):
        while not self.stopped.wait(0.1):
            now = time.monotonic()
            with self.lock:
                late = [handler for handler, due in self.due.items() if due < now]
                for handler in late:
                    del self.due[handler]
            for handler in late:
                handler.timed_out = True
                try:  # wakes the blocked read; the answer (a 400 for a body) still goes out
                    handler.connection.shutdown(socket.SHUT_RD)
                except OSError:
                    pass


class Handler(BaseHTTPRequestHandler):
    """HTTP front of the service: authentication, limits, JSON errors, frame streaming."""

    protocol_version = "HTTP/1.1"
    server_version = f"onet-backend/{__version__}"
    service: Worker = None  # set on the subclass made by ``make_server``
    token: str = ""
    deadlines: Deadlines = None
    timeout = WRITE_TIMEOUT  # StreamRequestHandler: the socket's per-operation timeout
    timed_out = False
    body_pending = False  # a body announced and not (fully) read: never keep the connection

    def send_error(self, code, message=None, explain=None):
        """http.server's own errors (bad request line, 414, 431, unknown method) as JSON
        errors like every other answer; an unknown method is 405, not 501."""
        if code == HTTPStatus.NOT_IMPLEMENTED:
            code, message = HTTPStatus.METHOD_NOT_ALLOWED, f"method not allowed: {self.command}"
        names = {HTTPStatus.REQUEST_URI_TOO_LONG: "too_large",
                 HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE: "too_large",
                 HTTPStatus.METHOD_NOT_ALLOWED: "method_not_allowed"}
        self.close_connection = True
        try:
            self.send_json(code, {"error": names.get(code, "bad_request"),
                                  "message": message or HTTPStatus(code).phrase})
        except (OSError, ValueError):
            pass

    def handle_one_request(self):
        self.body_pending = False
        self.deadlines.set(self, self.service.service_limits.header_timeout)
        try:
            super().handle_one_request()
        finally:
            self.deadlines.set(self, None)
            if self.timed_out:
                self.close_connection = True

    def parse_request(self):
        self.deadlines.set(self, None)
        if self.timed_out:  # the watchdog cut the headers short: do not act on a fragment
            self.close_connection = True
            return False
        if not super().parse_request():
            return False
        length = self.headers.get("Content-Length", "")
        self.body_pending = (length.strip() not in ("", "0")
                             or "Transfer-Encoding" in self.headers)
        return True

    def log_message(self, format, *args):  # stdout carries the handshake only
        logger.debug("%s - %s", self.address_string(), format % args)

    # -- plumbing ----------------------------------------------------------------------
    def send_json(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def send_error_json(self, error):
        if self.body_pending or error.status >= 500:
            self.close_connection = True  # an unread body must not be parsed as a request
        self.send_json(error.status, {"error": error.code, "message": error.message})

    def authorize(self):
        given = self.headers.get("Authorization", "")
        if not secrets.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
            raise ApiError(HTTPStatus.UNAUTHORIZED, "unauthorized",
                           "missing or wrong token: send 'Authorization: Bearer <token>' with"
                           " the token from the server's handshake line")

    def read_body(self):
        """The body, read once into its final buffer, after the size and upload checks."""
        length = self.headers.get("Content-Length")
        if length is None:
            raise ApiError(HTTPStatus.LENGTH_REQUIRED, "length_required",
                           "send a Content-Length header")
        if not re.fullmatch(r"[0-9]{1,20}", length.strip()):
            raise bad_request(f"Content-Length must be a decimal number of bytes, got "
                              f"{length[:30]!r}")
        length = int(length)
        limit = self.service.service_limits.max_body_bytes
        if length > limit:
            raise ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too_large",
                           f"request body of {length:,} bytes is over the limit of {limit:,}")
        if not self.service.uploads.acquire(blocking=False):
            raise ApiError(HTTPStatus.TOO_MANY_REQUESTS, "busy",
                           f"{self.service.max_uploads} uploads are already being read; "
                           "retry shortly")
        try:
            self.deadlines.set(self, self.service.service_limits.request_timeout
                               + length / MIB)
            body = read_exactly(self.rfile, length, "body")
        except ApiError as exc:
            self.close_connection = True
            if self.timed_out:
                raise bad_request(f"{exc.message}: the body did not arrive within the "
                                  f"request timeout") from None
            raise
        finally:
            self.deadlines.set(self, None)
            self.service.uploads.release()
        self.body_pending = False
        return body

    def read_frame(self):
        body = self.read_body()
        if self.headers.get("Content-Type", "").startswith("application/json"):
            try:
                header = json.loads(body)
            except ValueError:
                raise bad_request("body is not valid JSON") from None
            except RecursionError:
                raise bad_request("JSON body is nested too deeply") from None
            if not isinstance(header, dict):
                raise bad_request("JSON body must be an object")
            return header, {}
        try:
            return protocol.decode_frame(body)
        except protocol.ProtocolError as exc:
            raise bad_request(f"malformed frame: {exc}") from None

    def client_gone(self):
        """True when the client closed its end (readable with nothing to read)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def stream(self, job, first):
        """Relay a job's frames; a client that disconnects cancels the job."""
        with self.service.relay_lock:
            self.service.relaying += 1
        try:
            self._stream(job, first)
        finally:
            job.abandoned = not job.frames.empty()
            with self.service.relay_lock:
                self.service.relaying -= 1

    def _stream(self, job, first):
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", protocol.CONTENT_TYPE)
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        try:
            self.wfile.write(protocol.encode_frame({**first, "job": job.id}))
            self.wfile.flush()
            last_write = time.monotonic()
            while True:
                try:
                    header, arrays = job.frames.get(timeout=0.25)
                except queue.Empty:
                    if self.client_gone():
                        job.cancel.set()
                        return
                    if time.monotonic() - last_write > HEARTBEAT_SECONDS:
                        # Keeps client read timeouts from firing while the job waits or
                        # works on a long level, and tells the user where it stands.
                        self.wfile.write(protocol.encode_frame({
                            "type": "progress", "job": job.id, "status": job.status,
                            "queue": self.service.queue_length()}))
                        self.wfile.flush()
                        last_write = time.monotonic()
                    continue
                last_write = time.monotonic()
                self.wfile.write(protocol.encode_frame(header, arrays))
                self.wfile.flush()
                if header["type"] == "end":
                    return
        except (BrokenPipeError, ConnectionError, OSError):
            job.cancel.set()

    # -- routes ------------------------------------------------------------------------
    def dispatch(self, method):
        try:
            self.authorize()
            path = self.path.split("?", 1)[0].rstrip("/")
            route = ROUTES.get((method, path))
            if route is None and path.startswith("/v1/jobs/") and method in ("GET", "DELETE"):
                job = self.service.job(path.rsplit("/", 1)[1])
                if method == "DELETE":
                    job.cancel.set()
                return self.send_json(HTTPStatus.OK, job.describe())
            if route is None:
                raise ApiError(HTTPStatus.NOT_FOUND, "not_found",
                               f"no endpoint {method} {path}; see docs/protocol.md")
            route(self)
        except ApiError as exc:
            self.send_error_json(exc)
        except UserError as exc:
            self.send_error_json(user_error(exc))
        except (BrokenPipeError, ConnectionError):
            self.close_connection = True
        except Exception as exc:  # a bug: answer 500 rather than hang the client
            self.send_error_json(ApiError(HTTPStatus.INTERNAL_SERVER_ERROR, "internal",
                                          f"{type(exc).__name__}: {exc}"))

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def health(self):
        service = self.service
        self.send_json(HTTPStatus.OK, {
            "status": "ok", "version": __version__, "protocol": protocol.PROTOCOL,
            "device": str(service.device), "engine": service.engine,
            "models_loaded": service.loaded_names(),
            "queue": service.queue_length(),
            "running": service.running.id if service.running else None,
            "limits": {**asdict(service.limits), **asdict(service.service_limits)}})

    def list_models(self):
        models = []
        for name, card in self.service.catalogue().items():
            card = {key: value for key, value in card.items() if key != "path"}
            config = card.get("config") if isinstance(card.get("config"), dict) else {}
            models.append({"name": name, "input_kind": card.get("input_kind",
                                                                config.get("input_kind")),
                           "threshold": card["threshold"],
                           "default_for": card.get("default_for", []), "card": card})
        self.send_json(HTTPStatus.OK, {"models": models})

    def reconstruct(self):
        self.service.check_room()  # before reading a body of up to max_body_bytes
        header, arrays = self.read_frame()
        service = self.service
        request = request_from(header, arrays, service.limits)
        name, model, card = service.model(request.model, request.kind, request.input_points)
        self.validate(request, model)
        job = service.reconstruct_job(request, name, model, card, {})
        self.stream(job, {"type": "accepted", "model": name, "queue": service.queue_length(),
                          "notes": []})

    def validate(self, request, model):
        try:
            request.validate(model, self.service.limits)
        except UserError as exc:
            raise user_error(exc) from None

    def encode(self):
        self.service.check_room()
        header, arrays = self.read_frame()
        service = self.service
        request = request_from(header, arrays, service.limits)
        name, model, _ = service.model(request.model, request.kind, request.input_points)
        request.model = name
        self.validate(request, model)
        latent, cached, notes = service.encode(request, content_hash(header, arrays))
        self.send_json(HTTPStatus.OK, {"latent": latent, "model": service.shapes[latent].model,
                                       "cached": cached, "notes": notes})

    def interpolate(self):
        self.service.check_room()
        header, _ = self.read_frame()
        service = self.service
        try:
            a, b = service.shapes[header["a"]], service.shapes[header["b"]]
        except (KeyError, TypeError):
            raise ApiError(HTTPStatus.NOT_FOUND, "unknown_latent",
                           "'a' and 'b' must be latent ids from /v1/encode (the cache keeps the"
                           f" last {service.service_limits.max_latents}); encode the inputs "
                           "again")
        t = header.get("t")
        if not is_number(t):
            raise bad_request("'t' must be a number in [0, 1]")
        if a.model != b.model:
            raise bad_request(f"latents come from different models ({a.model}, {b.model})")
        preview = header.get("preview", False)
        if not isinstance(preview, bool):
            raise bad_request("'preview' must be true or false")
        request = ReconstructRequest(Blend(a, b, float(t)), a.model,
                                     settings_from(header, preview))
        name, model, card = service.model(a.model, None)
        self.validate(request, model)
        job = service.reconstruct_job(request, name, model, card, {"t": t, "preview": preview})
        self.stream(job, {"type": "accepted", "model": name, "queue": service.queue_length(),
                          "t": t, "preview": preview})

    def image_view(self):
        """What the image model sees of an image frame (the crop preview): the 224 x 224
        RGB, base64 of its bytes row by row, with the crop box and the mask's source."""
        self.service.check_room()
        header, arrays = self.read_frame()
        request = request_from(header, arrays, self.service.limits)
        if request.kind != "image":
            raise bad_request("/v1/image_view takes an image frame ('image' or "
                              "'image_file', optionally 'mask')")
        view = model_view(request.source.rgba)
        self.send_json(HTTPStatus.OK, {
            "width": view.rgb.shape[1], "height": view.rgb.shape[0],
            "rgb": base64.b64encode(view.rgb.tobytes()).decode("ascii"),
            "box": list(view.box), "mask_source": view.mask_source, "notes": view.notes})


ROUTES = {
    ("GET", "/v1/health"): Handler.health,
    ("GET", "/v1/models"): Handler.list_models,
    ("POST", "/v1/reconstruct"): Handler.reconstruct,
    ("POST", "/v1/encode"): Handler.encode,
    ("POST", "/v1/interpolate"): Handler.interpolate,
    ("POST", "/v1/image_view"): Handler.image_view,
}



class Server(ThreadingHTTPServer):
    """A thread per connection, a long listen backlog (a burst of clients is answered,
    429 beyond the queue, never reset), and dropped connections logged, not printed."""

    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG

    def handle_error(self, request, client_address):
        logger.debug("connection from %s failed", client_address, exc_info=True)

    def server_close(self):
        super().server_close()
        self.deadlines.stopped.set()


def make_server(host, port, token, service):
    """A bound server whose handler talks to ``service``."""
    deadlines = Deadlines()
    handler = type("BoundHandler", (Handler,), {"service": service, "token": token,
                                                "deadlines": deadlines})
    server = Server((host, port), handler)
    server.deadlines = deadlines
    return server

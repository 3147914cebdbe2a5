"""Local inference service: ``python -m backend serve`` (HTTP API v1, docs/protocol.md).

Threads: the HTTP server answers every request on its own thread; one worker thread per
server owns the device and runs jobs one at a time from a bounded queue. A streaming request
thread relays the frames its job produces and cancels the job when the client goes away.
Models load once, on first use, and stay warm.
"""

import hashlib
import ipaddress
import json
import os
import queue
import secrets
import select
import signal
import socket
import sys
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional

import numpy as np

from .. import __version__
from . import protocol
from ..errors import UserError

PREVIEW_MISE = {"resolution0": 16, "upsampling_steps": 1}
HEARTBEAT_SECONDS = 5.0


@dataclass
class Limits:
    """What one request may ask for; each is a server option (see ``add_arguments``)."""

    max_body_bytes: int = 256 * 1024 * 1024
    max_points: int = 100_000  # larger clouds are subsampled to this many
    max_points_tiled: int = 2_000_000  # the same for tiled requests (a tile takes few)
    max_voxel_dim: int = 256
    max_image_pixels: int = 16_000_000
    max_resolution: int = 256  # finest MISE lattice, resolution0 * 2^steps
    max_upsampling_steps: int = 4
    max_queue: int = 4  # jobs waiting behind the running one; beyond it, 429
    max_latents: int = 64


class ApiError(Exception):
    """An error answered as JSON ``{"error": code, "message": ...}`` with an HTTP status."""

    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def bad_request(message):
    return ApiError(HTTPStatus.BAD_REQUEST, "bad_request", message)


@dataclass
class Job:
    """One unit of work for the device thread. ``frames`` carries (header, arrays) tuples."""

    kind: str  # reconstruct | interpolate | encode
    run: object  # callable(job) executed on the worker thread
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    frames: "queue.Queue" = field(default_factory=queue.Queue)
    cancel: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    status: str = "queued"  # queued | running | done | cancelled | error

    def describe(self):
        return {"job": self.id, "kind": self.kind, "status": self.status,
                "cancel_requested": self.cancel.is_set()}

    def emit(self, header, arrays=None):
        self.frames.put(({**header, "job": self.id}, arrays or {}))


@dataclass
class Latent:
    """A cached shape code and where its unit cube sits in its input's coordinates."""

    model: str
    code: object  # generation.ShapeCode
    center: np.ndarray
    scale: float


class Service:
    """Models, the job queue and the latent cache; the HTTP handler calls into it."""

    def __init__(self, device, limits, model_dirs=()):
        from ..engine.generation import resolve_device

        self.device = resolve_device(device)
        self.limits = limits
        self.model_dirs = tuple(model_dirs)
        self.models = {}
        self.models_lock = threading.Lock()
        self.latents = OrderedDict()
        self.jobs = {}
        self.pending = queue.Queue()
        self.waiting = 0  # jobs queued, not yet running
        self.count_lock = threading.Lock()
        self.running: Optional[Job] = None
        self.stopping = threading.Event()
        self.worker = threading.Thread(target=self._work, name="onet-device", daemon=True)
        self.worker.start()

    # -- models -----------------------------------------------------------------------
    def catalogue(self):
        from ..io import zoo

        return zoo.catalogue(self.model_dirs)

    def model(self, name, kind):
        """(name, model, card) for a model name (None: the default for ``kind``)."""
        from ..io import zoo

        try:
            name = name or zoo.default_model_name(kind, self.model_dirs)
            with self.models_lock:
                if name not in self.models:
                    self.models[name] = zoo.load(name, self.device, self.model_dirs)
        except UserError as exc:
            raise ApiError(HTTPStatus.NOT_FOUND, "unknown_model", str(exc)) from None
        return (name, *self.models[name])

    # -- jobs ---------------------------------------------------------------------------
    def submit(self, job):
        with self.count_lock:
            if self.waiting >= self.limits.max_queue:
                raise ApiError(HTTPStatus.TOO_MANY_REQUESTS, "busy",
                               f"{self.waiting} jobs are already waiting; retry shortly")
            self.waiting += 1
        self.jobs[job.id] = job
        self.pending.put(job)
        return job

    def job(self, job_id):
        job = self.jobs.get(job_id)
        if job is None:
            raise ApiError(HTTPStatus.NOT_FOUND, "unknown_job",
                           f"no job {job_id!r} (finished jobs are forgotten after a minute)")
        return job

    def queue_length(self):
        return self.waiting + (self.running is not None)

    def _work(self):
        from ..engine.generation import Cancelled

        while not self.stopping.is_set():
            try:
                job = self.pending.get(timeout=0.2)
            except queue.Empty:
                continue
            with self.count_lock:
                self.waiting -= 1
            self.running = job
            job.status = "running"
            try:
                if job.cancel.is_set():
                    raise Cancelled()
                job.run(job)
                job.status = "done"
            except Cancelled:
                job.status = "cancelled"
                job.emit({"type": "cancelled"})
            except (UserError, ApiError) as exc:
                job.status = "error"
                job.emit({"type": "error", "error": getattr(exc, "code", "bad_request"),
                          "message": str(exc)})
            except Exception as exc:  # a bug: report it, keep serving
                job.status = "error"
                job.emit({"type": "error", "error": "internal",
                          "message": f"{type(exc).__name__}: {exc}"})
            finally:
                self.running = None
                job.emit({"type": "end"})
                job.done.set()
                self._forget_later(job)
                self._free_memory()

    def _forget_later(self, job):
        # Keep finished jobs briefly so a late DELETE still finds them (404 after that).
        timer = threading.Timer(60.0, self.jobs.pop, (job.id, None))
        timer.daemon = True  # must not hold the process open after SIGTERM
        timer.start()

    def _free_memory(self):
        import gc

        gc.collect()
        if self.device.type == "cuda":
            import torch

            torch.cuda.empty_cache()

    # -- work run on the device thread ---------------------------------------------------
    def generator(self, model, card, mise, output):
        from ..engine.generation import Generator, Settings

        return Generator(model, card, self.device, Settings(
            resolution0=mise["resolution0"], upsampling_steps=mise["upsampling_steps"],
            threshold=mise["threshold"], normals=output["normals"],
            simplify_faces=output["simplify"], refine_steps=output["refine_steps"],
            fill_cavities=output["fill_cavities"]))

    def stream_meshes(self, job, generator, code, prepared, started, extra=None):
        """Run MISE for one code, emitting a mesh frame per level and the final summary."""
        from ..engine.pipeline import to_world

        last = None
        for frame in generator.frames(code, job.cancel.is_set, started):
            frame = to_world(frame, prepared)
            arrays = {"vertices": frame.vertices, "faces": frame.faces}
            if frame.normals is not None:
                arrays["normals"] = frame.normals.astype(np.float32)
            job.emit({"type": "mesh", "level": frame.level, "levels": frame.levels,
                      "resolution": frame.resolution, "evaluations": frame.evaluations,
                      "seconds": round(frame.seconds, 4), "final": frame.final}, arrays)
            last = frame
        job.emit({"type": "final", "vertices": len(last.vertices), "faces": len(last.faces),
                  "evaluations": last.evaluations, "resolution": last.resolution,
                  "seconds": round(time.perf_counter() - started, 4),
                  "threshold": generator.threshold, **(extra or {})})

    def stream_tiled(self, job, generator, points, tiling, card, started, extra):
        """Reconstruct a cloud tile by tile: a "tile" frame per tile, then the mesh as one
        final frame and the summary."""
        from ..engine.tiling import reconstruct_tiled

        def progress(done, total):
            job.emit({"type": "tile", "tile": done, "tiles": total})

        result = reconstruct_tiled(generator, card, points, tiling["tile_size"],
                                   tiling["overlap"], tiling["tile_points"], progress=progress,
                                   should_stop=job.cancel.is_set)
        vertices, faces = result.vertices, result.faces
        seconds = round(time.perf_counter() - started, 4)
        job.emit({"type": "mesh", "level": 0, "levels": 1, "resolution": result.grid.cells,
                  "evaluations": result.evaluations, "seconds": seconds, "final": True},
                 {"vertices": vertices, "faces": faces})
        job.emit({"type": "final", "vertices": len(vertices), "faces": len(faces),
                  "evaluations": result.evaluations, "resolution": result.grid.cells,
                  "seconds": seconds, "threshold": generator.threshold,
                  "tiles": list(result.grid.counts), "tiles_run": result.tiles_run, **extra})

    def encode(self, request):
        """Code for an input, cached by content hash: (latent id, cached?)."""
        key = request.content_hash()
        if key in self.latents:
            self.latents.move_to_end(key)
            return key, True
        job = Job("encode", lambda job: self._encode(job, request, key))
        self.submit(job)
        job.done.wait()
        header, _ = job.frames.get()
        if header["type"] == "error":
            raise ApiError(HTTPStatus.BAD_REQUEST, header["error"], header["message"])
        return key, False

    def _encode(self, job, request, key):
        from ..engine.generation import Generator
        from ..engine.pipeline import prepare

        name, model, card = self.model(request.model, request.inp.kind)
        prepared = prepare(request.inp, model, card)
        code = Generator(model, card, self.device).encode(prepared.tensor, request.occupancies)
        self.latents[key] = Latent(name, code, prepared.center, prepared.scale)
        while len(self.latents) > self.limits.max_latents:
            self.latents.popitem(last=False)
        job.emit({"type": "encoded"})

    def shutdown(self):
        self.stopping.set()
        for job in list(self.jobs.values()):
            job.cancel.set()


class InputRequest:
    """A decoded POST frame carrying an input (point cloud, voxels or image) and options."""

    def __init__(self, header, arrays, limits):
        from ..io import inputs

        self.header, self.arrays, self.limits = header, arrays, limits
        self.model = header.get("model")
        if self.model is not None and not isinstance(self.model, str):
            raise bad_request("'model' must be a model name (string) or null")
        self.notes = []
        try:
            self.inp = self._input(inputs)
        except UserError as exc:
            raise bad_request(str(exc)) from None
        self.occupancies = self._occupancies()

    def _input(self, inputs):
        kinds = [name for name in ("points", "voxels", "image", "image_file")
                 if name in self.arrays]
        if len(kinds) != 1:
            raise bad_request("send exactly one input buffer: 'points' (N, 3) float32,"
                              " 'voxels' (n, n, n) bool/uint8, 'image' (H, W, 3|4) uint8 or"
                              f" 'image_file' (encoded PNG/JPEG bytes); got {kinds or 'none'}")
        name = kinds[0]
        array = self.arrays[name]
        if name == "points":
            if array.dtype != np.float32:
                raise bad_request(f"'points' must be float32, got {array.dtype}")
            points = inputs.validate_points(array, "request points", max_points=10 ** 9)
            limit = (self.limits.max_points_tiled if self.header.get("tiling")
                     else self.limits.max_points)
            if len(points) > limit:
                keep = np.random.default_rng(0).choice(len(points), limit, replace=False)
                self.notes.append(f"subsampled {len(points):,} points to {limit:,} (server"
                                  " limit)")
                points = points[np.sort(keep)]
            return inputs.PointCloudInput(points)
        if name == "voxels":
            occupancy = inputs.validate_voxels(array.astype(bool) if array.dtype == np.uint8
                                               else array, "request voxels",
                                               max_dim=self.limits.max_voxel_dim)
            frame = self.header.get("voxel_frame", {})
            translate, scale = inputs.validate_voxel_frame(
                frame.get("translate", inputs.UNIT_CUBE_TRANSLATE),
                frame.get("scale", inputs.UNIT_CUBE_SCALE), "request voxel_frame")
            return inputs.VoxelInput(occupancy, translate, scale)
        rgba = self._image(name, array)
        if "mask" in self.arrays:
            mask = self.arrays["mask"]
            if mask.shape != rgba.shape[:2] or mask.dtype != np.uint8:
                raise bad_request(f"'mask' must be uint8 with the image's size {rgba.shape[:2]}")
            rgba = rgba.copy()
            rgba[..., 3] = mask
        return inputs.ImageInput(rgba)

    def _occupancies(self):
        """(1, N) tensor of 0/1 labels of the input points, for a generative model's
        q(z | points, occupancies); None when the request has none."""
        labels = self.arrays.get("occupancies")
        if labels is None:
            return None
        points = self.arrays.get("points")
        if points is None or labels.shape != (len(points),):
            raise bad_request("'occupancies' must be (N,) labels of the N 'points'")
        if labels.dtype not in (np.bool_, np.uint8) or labels.max(initial=0) > 1:
            raise bad_request("'occupancies' must be bool or uint8 0/1")
        if self.notes:  # the points were subsampled: the labels no longer line up
            raise ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too_large",
                           f"send at most {self.limits.max_points:,} points with occupancies")
        import torch

        return torch.from_numpy(labels.astype(np.float32))[None]

    def _image(self, name, array):
        limit = self.limits.max_image_pixels
        if name == "image_file":
            return decode_image(array.tobytes(), limit)
        if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] not in (3, 4):
            raise bad_request(f"'image' must be (H, W, 3|4) uint8, got {array.dtype}"
                              f" {tuple(array.shape)}")
        if array.shape[0] * array.shape[1] > limit:
            raise ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too_large",
                           f"image of {array.shape[0]}x{array.shape[1]} pixels is over the"
                           f" limit of {limit:,}")
        if array.shape[2] == 3:
            array = np.concatenate([array, np.full(array.shape[:2] + (1,), 255, np.uint8)], 2)
        return np.ascontiguousarray(array)

    def content_hash(self):
        """Stable key of model + input + frame: equal inputs share one cached latent."""
        digest = hashlib.sha256(json.dumps([self.model, self.inp.kind]).encode())
        for name in sorted(self.arrays):
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(self.arrays[name]).tobytes())
        digest.update(json.dumps(self.header.get("voxel_frame"), sort_keys=True).encode())
        return digest.hexdigest()[:24]


def decode_image(data, max_pixels):
    """Encoded PNG/JPEG bytes -> (H, W, 4) uint8, refusing decompression bombs."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > max_pixels:
                raise ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too_large",
                               f"image of {image.width}x{image.height} pixels is over the limit"
                               f" of {max_pixels:,}")
            return np.asarray(image.convert("RGBA"))
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, ValueError):
        raise bad_request("'image_file' is not a PNG or JPEG image") from None


def mise_options(header, limits, preview=False):
    """Validated MISE settings from a request header (defaults: the paper's 32 -> 128)."""
    options = {"resolution0": 32, "upsampling_steps": 2, "threshold": None}
    options.update(PREVIEW_MISE if preview else {})
    given = header.get("mise") or {}
    if not isinstance(given, dict):
        raise bad_request("'mise' must be an object")
    for key, value in given.items():
        if key not in options:
            raise bad_request(f"unknown mise option {key!r}; known: {', '.join(options)}")
        if key == "threshold":
            if value is not None and not (isinstance(value, (int, float))
                                          and 0 < value < 1):
                raise bad_request("mise.threshold must be a probability in (0, 1) or null")
        elif not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise bad_request(f"mise.{key} must be an integer >= 0")
        options[key] = value
    if options["resolution0"] < 2:
        raise bad_request("mise.resolution0 must be at least 2")
    if options["upsampling_steps"] > limits.max_upsampling_steps:
        raise ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too_large",
                       f"mise.upsampling_steps {options['upsampling_steps']} is over the limit"
                       f" of {limits.max_upsampling_steps}")
    finest = options["resolution0"] * 2 ** options["upsampling_steps"]
    if finest > limits.max_resolution:
        raise ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too_large",
                       f"finest resolution {finest} is over the limit of"
                       f" {limits.max_resolution}")
    return options


def tiling_options(header, model, inp, output):
    """Validated tiling settings ({tile_size, overlap, tile_points}) or None; see
    backend/tiling.py."""
    given = header.get("tiling")
    if given is None:
        return None
    if not isinstance(given, dict):
        raise bad_request("'tiling' must be an object or null")
    options = {"tile_size": None, "overlap": 0.2, "tile_points": None}
    for key, value in given.items():
        if key not in options:
            raise bad_request(f"unknown tiling option {key!r}; known: {', '.join(options)}")
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        valid = {"tile_size": number and value > 0, "overlap": number and 0 <= value <= 0.45,
                 "tile_points": value is None or (isinstance(value, int) and number
                                                  and value >= 1)}[key]
        if not valid:
            raise bad_request(f"bad value for tiling.{key}: {value!r}")
        options[key] = value
    if options["tile_size"] is None:
        raise bad_request("tiling.tile_size is required: the edge, in the input's units, "
                          "that the model sees as its unit cube")
    if inp.kind != "pointcloud":
        raise bad_request("tiling works on point clouds only")
    if not getattr(model, "local_features", False):
        raise bad_request("tiling needs a model with local features (a ConvONet)")
    if output["normals"] or output["refine_steps"]:
        raise bad_request("output.normals and output.refine_steps are not available with "
                          "tiling")
    return options


def output_options(header):
    """Validated post-processing options: normals, simplify (faces), refine_steps,
    fill_cavities."""
    options = {"normals": False, "simplify": None, "refine_steps": 0, "fill_cavities": True}
    given = header.get("output") or {}
    if not isinstance(given, dict):
        raise bad_request("'output' must be an object")
    for key, value in given.items():
        if key not in options:
            raise bad_request(f"unknown output option {key!r}; known: {', '.join(options)}")
        valid = (isinstance(value, bool) if key in ("normals", "fill_cavities") else
                 (value is None or (isinstance(value, int) and not isinstance(value, bool)
                                    and value >= (4 if key == "simplify" else 0))))
        if not valid or (key == "refine_steps" and value is None):
            raise bad_request(f"bad value for output.{key}: {value!r}")
        options[key] = value
    return options


class Handler(BaseHTTPRequestHandler):
    """HTTP front of the service: authentication, limits, JSON errors, frame streaming."""

    protocol_version = "HTTP/1.1"
    server_version = f"onet-backend/{__version__}"
    service: Service = None  # set on the subclass made by ``make_server``
    token: str = ""

    def log_message(self, format, *args):  # quiet: stdout carries the handshake only
        if os.environ.get("ONET_SERVER_LOG"):
            sys.stderr.write("%s - %s\n" % (self.address_string(), format % args))

    # -- plumbing ----------------------------------------------------------------------
    def send_json(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def send_error_json(self, error):
        if error.status == HTTPStatus.REQUEST_ENTITY_TOO_LARGE or error.status >= 500:
            self.close_connection = True  # the unread body must not be parsed as a request
        self.send_json(error.status, {"error": error.code, "message": error.message})

    def authorize(self):
        given = self.headers.get("Authorization", "")
        if not secrets.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
            raise ApiError(HTTPStatus.UNAUTHORIZED, "unauthorized",
                           "missing or wrong token: send 'Authorization: Bearer <token>' with"
                           " the token from the server's handshake line")

    def read_body(self):
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise ApiError(HTTPStatus.LENGTH_REQUIRED, "length_required",
                           "send a Content-Length header")
        length = int(length)
        limit = self.service.limits.max_body_bytes
        if length > limit:
            raise ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too_large",
                           f"request body of {length:,} bytes is over the limit of {limit:,}")
        self.connection.settimeout(30.0)  # a client that stalls mid-body gets a 400, not a hang
        chunks, remaining = [], length
        try:
            while remaining:
                chunk = self.rfile.read(min(remaining, 1 << 20))
                if not chunk:
                    break
                chunks.append(chunk)
                remaining -= len(chunk)
        except (socket.timeout, ConnectionError):
            pass
        finally:
            self.connection.settimeout(None)
        if remaining:
            self.close_connection = True
            raise bad_request(f"truncated body: got {length - remaining:,} of {length:,} bytes")
        return b"".join(chunks)

    def read_frame(self):
        body = self.read_body()
        if self.headers.get("Content-Type", "").startswith("application/json"):
            try:
                header = json.loads(body)
            except ValueError:
                raise bad_request("body is not valid JSON") from None
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
            self.send_error_json(bad_request(str(exc)))
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
            "device": str(service.device), "models_loaded": sorted(service.models),
            "queue": service.queue_length(),
            "running": service.running.id if service.running else None})

    def list_models(self):
        models = []
        for name, card in self.service.catalogue().items():
            card = {key: value for key, value in card.items() if key != "path"}
            models.append({"name": name, "input_kind": card.get("input_kind",
                                                                card["config"].get("input_kind")),
                           "threshold": card.get("threshold", 0.2),
                           "default_for": card.get("default_for", []), "card": card})
        self.send_json(HTTPStatus.OK, {"models": models})

    def reconstruct(self):
        header, arrays = self.read_frame()
        service = self.service
        request = InputRequest(header, arrays, service.limits)
        mise = mise_options(header, service.limits)
        output = output_options(header)
        name, model, card = service.model(request.model, request.inp.kind)
        tiling = tiling_options(header, model, request.inp, output)

        def run(job):
            from ..engine.pipeline import prepare

            started = time.perf_counter()
            generator = service.generator(model, card, mise, output)
            if tiling:
                service.stream_tiled(job, generator, request.inp.points, tiling, card, started,
                                     {"model": name, "notes": request.notes})
                return
            prepared = prepare(request.inp, model, card)
            code = generator.encode(prepared.tensor, request.occupancies)
            service.stream_meshes(job, generator, code, prepared, started,
                                  {"model": name, "notes": request.notes + prepared.notes})

        job = service.submit(Job("reconstruct", run))
        self.stream(job, {"type": "accepted", "model": name, "queue": service.queue_length(),
                          "notes": request.notes})

    def encode(self):
        header, arrays = self.read_frame()
        request = InputRequest(header, arrays, self.service.limits)
        latent, cached = self.service.encode(request)
        entry = self.service.latents[latent]
        self.send_json(HTTPStatus.OK, {"latent": latent, "model": entry.model,
                                       "cached": cached, "notes": request.notes})

    def interpolate(self):
        header, _ = self.read_frame()
        service = self.service
        try:
            a, b = service.latents[header["a"]], service.latents[header["b"]]
        except (KeyError, TypeError):
            raise ApiError(HTTPStatus.NOT_FOUND, "unknown_latent",
                           "'a' and 'b' must be latent ids from /v1/encode (the cache keeps the"
                           f" last {service.limits.max_latents}); encode the inputs again")
        t = header.get("t")
        if not isinstance(t, (int, float)) or isinstance(t, bool) or not 0 <= t <= 1:
            raise bad_request("'t' must be a number in [0, 1]")
        if a.model != b.model:
            raise bad_request(f"latents come from different models ({a.model}, {b.model})")
        preview = bool(header.get("preview", False))
        mise = mise_options(header, service.limits, preview)
        output = output_options(header)
        name, model, card = service.model(a.model, None)

        def run(job):
            from ..engine.pipeline import Prepared

            started = time.perf_counter()
            code = a.code.lerp(b.code, float(t))
            # The unit cube moves with t too: (1 - t) a + t b is exact at both ends.
            place = Prepared(None, (1 - t) * a.center + t * b.center, (1 - t) * a.scale
                             + t * b.scale)
            generator = service.generator(model, card, mise, output)
            service.stream_meshes(job, generator, code, place, started,
                                  {"model": name, "t": t, "preview": preview})

        job = service.submit(Job("interpolate", run))
        self.stream(job, {"type": "accepted", "model": name, "queue": service.queue_length(),
                          "t": t, "preview": preview})


ROUTES = {
    ("GET", "/v1/health"): Handler.health,
    ("GET", "/v1/models"): Handler.list_models,
    ("POST", "/v1/reconstruct"): Handler.reconstruct,
    ("POST", "/v1/encode"): Handler.encode,
    ("POST", "/v1/interpolate"): Handler.interpolate,
}


def is_loopback(host):
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False


def make_server(host, port, token, service):
    """A bound ThreadingHTTPServer whose handler talks to ``service``."""
    handler = type("BoundHandler", (Handler,), {"service": service, "token": token})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def watch_parent(pid, stop):
    """Call ``stop`` once process ``pid`` is gone (checked every half second)."""
    def alive():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def loop():
        while alive():
            time.sleep(0.5)
        stop()

    threading.Thread(target=loop, name="onet-parent-watch", daemon=True).start()


def add_arguments(parser):
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    tokens = parser.add_mutually_exclusive_group()
    tokens.add_argument("--token", help="required on every request (default: a random one,"
                        " printed in the handshake)")
    tokens.add_argument("--token-file", help="read the token from this file")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--models", action="append", default=[], metavar="DIR",
                        help="extra folder of .safetensors models (repeatable)")
    parser.add_argument("--parent-pid", type=int, help="exit when this process is gone")
    defaults = Limits()
    for name in Limits.__dataclass_fields__:
        parser.add_argument("--" + name.replace("_", "-"), type=int,
                            default=getattr(defaults, name))


def serve(args):
    """Run the server until SIGTERM/SIGINT or the parent process is gone."""
    if args.token_file:
        try:
            token = open(args.token_file).read().strip()
        except OSError as exc:
            raise UserError(f"cannot read token file {args.token_file}: {exc}") from None
        if not token:
            raise UserError(f"token file {args.token_file} is empty")
    else:
        token = args.token
    if not is_loopback(args.host) and not token:
        raise UserError(f"refusing to listen on {args.host} (not loopback) without --token"
                        " or --token-file: anyone on the network could use this machine")
    token = token or secrets.token_urlsafe(24)
    limits = Limits(**{name: getattr(args, name) for name in Limits.__dataclass_fields__})
    service = Service(args.device, limits, args.models)
    try:
        server = make_server(args.host, args.port, token, service)
    except OSError as exc:
        raise UserError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None

    def stop(*_):
        service.shutdown()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.parent_pid:
        watch_parent(args.parent_pid, stop)
    print(json.dumps({"port": server.server_address[1], "token": token,
                      "protocol": protocol.PROTOCOL, "device": str(service.device),
                      "version": __version__, "pid": os.getpid()}), flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()

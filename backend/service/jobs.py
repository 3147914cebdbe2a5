"""The server's work: one device thread runs queued jobs; models and encoded shapes are
cached.

``Worker`` owns the device. Each ``QueuedJob`` runs ``engine.pipeline.reconstruct`` (or
``encode``) on the worker thread and puts wire frames (header, arrays) on its queue, which
the HTTP thread that accepted it relays (backend/service/http.py). docs/design.md,
"Process model".
"""

import gc
import logging
import queue
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Callable, Optional

import numpy as np

from ..engine.request import LIMITS, Limits
from ..errors import UserError
from .schema import ApiError, user_error

logger = logging.getLogger(__name__)

FORGET_SECONDS = 60.0  # finished jobs stay visible to GET/DELETE this long


@dataclass(frozen=True)
class ServiceLimits:
    """What the service holds at once; each is a server option (``--max-queue`` ...)."""

    max_body_bytes: int = 256 * 1024 * 1024
    max_queue: int = 4  # jobs waiting behind the running one; beyond it, 429
    max_latents: int = 64  # encoded shapes kept for /v1/interpolate
    max_models: int = 8  # loaded models kept (least recently used dropped first)
    header_timeout: int = 20  # seconds for a request line and headers, idle wait included
    request_timeout: int = 60  # seconds for a body, plus 1 s per MiB of it

    @property
    def max_uploads(self) -> int:
        """Bodies read at once: one per job that can be queued or running; beyond, 429."""
        return self.max_queue + 1


@dataclass
class QueuedJob:
    """One unit of work for the device thread. ``frames`` carries (header, arrays) tuples."""

    kind: str  # reconstruct | sample | interpolate | encode
    run: Callable[["QueuedJob"], None]  # executed on the worker thread
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    frames: "queue.Queue" = field(default_factory=queue.Queue)
    cancel: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    status: str = "queued"  # queued | running | done | cancelled | error
    finished_at: Optional[float] = None
    abandoned: bool = False  # its stream ended without relaying every frame (client gone)

    def describe(self):
        return {"job": self.id, "kind": self.kind, "status": self.status,
                "cancel_requested": self.cancel.is_set()}

    def emit(self, header, arrays=None):
        self.frames.put(({**header, "job": self.id}, arrays or {}))


def emit_reconstruction(job: QueuedJob, events, extra: dict) -> None:
    """Relay ``pipeline.reconstruct``'s events as wire frames: "tile", "fit", "mesh",
    "final"."""
    from ..engine.pipeline import Finished, FitProgress, MeshFrame, TileProgress

    for event in events:
        if isinstance(event, TileProgress):
            job.emit({"type": "tile", "tile": event.done, "tiles": event.total})
        elif isinstance(event, FitProgress):
            job.emit({"type": "fit", "step": event.step, "steps": event.steps,
                      "loss": round(event.loss, 6), "seconds": round(event.seconds, 4)})
        elif isinstance(event, MeshFrame):
            arrays = {"vertices": event.vertices, "faces": event.faces}
            if event.normals is not None:
                arrays["normals"] = event.normals.astype(np.float32)
            job.emit({"type": "mesh", "level": event.level, "levels": event.levels,
                      "resolution": event.resolution, "evaluations": event.evaluations,
                      "seconds": round(event.seconds, 4), "final": event.final}, arrays)
        elif isinstance(event, Finished):
            summary = {**event.summary, **extra}
            summary["notes"] = extra.get("notes", []) + event.summary["notes"]
            job.emit({"type": "final", **summary})


class Worker:
    """Models, the job queue and the encoded-shape cache; the HTTP handler calls into it."""

    def __init__(self, device, limits: Limits = LIMITS,
                 service_limits: ServiceLimits = ServiceLimits(), model_dirs=(),
                 engine="auto"):
        from ..engine.runtime import resolve_device, resolve_engine

        self.engine = resolve_engine(engine, device)  # "torch" or "bundled"
        self.device = resolve_device(device, self.engine)
        self.limits = limits
        self.service_limits = service_limits
        self.model_dirs = tuple(model_dirs)
        self.models = OrderedDict()  # resolved file (or analytic:x) -> (name, model, card)
        self.models_lock = threading.Lock()
        self.max_uploads = service_limits.max_uploads
        self.uploads = threading.BoundedSemaphore(self.max_uploads)
        self.relaying = 0  # streams being relayed by HTTP threads
        self.relay_lock = threading.Lock()
        self.shapes = OrderedDict()  # latent id -> EncodedShape
        self.jobs = {}
        self.pending = queue.Queue()
        self.waiting = 0  # jobs queued, not yet running
        self.count_lock = threading.Lock()
        self.running: Optional[QueuedJob] = None
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._work, name="onet-device", daemon=True)
        self.thread.start()

    # -- models -----------------------------------------------------------------------
    def catalogue(self):
        from ..io import zoo

        return zoo.catalogue(self.model_dirs)

    def loaded_names(self):
        return sorted(name for name, _, _ in list(self.models.values()))

    def model(self, name, kind, points=None):
        """(name, model, card) for a model name (None: the default for ``kind`` and a cloud
        of ``points`` points, ``zoo.default_model_name``). Names are
        resolved against the model folders only (``zoo.resolve``): one cache entry per
        file, however it is spelled, and at most ``max_models`` of them."""
        from ..io import zoo

        try:
            name = name or zoo.default_model_name(kind, self.model_dirs, points)
            key, shown = zoo.resolve(name, self.model_dirs, allow_paths=False)
            with self.models_lock:
                if key in self.models:
                    self.models.move_to_end(key)
                else:
                    self.models[key] = (shown, *zoo.load_resolved(key, self.device,
                                                                       self.engine))
                    while len(self.models) > max(1, self.service_limits.max_models):
                        self.models.popitem(last=False)
                return self.models[key]
        except UserError as exc:
            status = (HTTPStatus.NOT_FOUND if str(exc).startswith(("unknown", "no bundled"))
                      else HTTPStatus.BAD_REQUEST)
            code = "unknown_model" if status == HTTPStatus.NOT_FOUND else "bad_model"
            raise ApiError(status, code, str(exc)) from None

    # -- jobs ---------------------------------------------------------------------------
    def check_room(self):
        """ApiError 503 while shutting down, 429 when the queue is full (checked before a
        body is read, and again by ``submit``)."""
        if self.stopping.is_set():
            raise ApiError(HTTPStatus.SERVICE_UNAVAILABLE, "shutting_down",
                           "the server is shutting down; start it again")
        if self.waiting >= self.service_limits.max_queue:
            raise ApiError(HTTPStatus.TOO_MANY_REQUESTS, "busy",
                           f"{self.waiting} jobs are already waiting; retry shortly")

    def submit(self, job: QueuedJob) -> QueuedJob:
        self._forget_finished()
        with self.count_lock:
            self.check_room()
            self.waiting += 1
            self.jobs[job.id] = job
            self.pending.put(job)
        return job

    def job(self, job_id):
        self._forget_finished()
        job = self.jobs.get(job_id)
        if job is None:
            raise ApiError(HTTPStatus.NOT_FOUND, "unknown_job",
                           f"no job {job_id!r} (finished jobs are forgotten after a minute)")
        return job

    def queue_length(self):
        return self.waiting + (self.running is not None)

    def _forget_finished(self):
        # Finished jobs stay briefly so a late DELETE still finds them (404 after that).
        now = time.monotonic()
        for job_id, job in list(self.jobs.items()):
            if job.finished_at is not None and now - job.finished_at > FORGET_SECONDS:
                self.jobs.pop(job_id, None)

    def _work(self):
        from ..engine.generation import Cancelled

        while True:
            # On shutdown, the jobs still queued run too: cancelled, each ends with its
            # "cancelled" and "end" frames (docs/protocol.md).
            with self.count_lock:
                if self.stopping.is_set() and self.pending.empty():
                    return
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
            except ApiError as exc:
                job.status = "error"
                job.emit({"type": "error", "error": exc.code, "message": str(exc)})
            except UserError as exc:
                job.status = "error"
                job.emit({"type": "error", "error": user_error(exc).code, "message": str(exc)})
            except Exception as exc:  # a bug: report it, keep serving
                logger.exception("job %s failed", job.id)
                job.status = "error"
                job.emit({"type": "error", "error": "internal",
                          "message": f"{type(exc).__name__}: {exc}"})
            finally:
                self.running = None
                job.run = None  # the closure holds the request and its input arrays
                job.emit({"type": "end"})
                job.finished_at = time.monotonic()
                job.done.set()
                self._free_memory()

    def _free_memory(self):
        gc.collect()
        trim_heap()
        if self.device.type == "cuda":
            import torch

            torch.cuda.empty_cache()

    # -- work run on the device thread ---------------------------------------------------
    def reconstruct_job(self, request, name, model, card, extra) -> QueuedJob:
        """A job streaming ``request``'s frames (``request`` validated for ``model``)."""
        from ..engine import pipeline

        def run(job):
            emit_reconstruction(job, pipeline.reconstruct(request, model, card, self.device,
                                                          job.cancel.is_set),
                                {"model": name, **extra})

        kind = {None: "interpolate", "sample": "sample"}.get(request.kind, "reconstruct")
        return self.submit(QueuedJob(kind, run))

    def encode(self, request, key):
        """Latent id of a validated input request, encoded on the worker thread and cached
        by content ``key``: (latent id, cached?, notes)."""
        if key in self.shapes:
            self.shapes.move_to_end(key)
            return key, True, []
        notes = []

        def run(job):
            from ..engine import pipeline

            name, model, card = self.model(request.model, request.kind, request.input_points)
            shape, prepared_notes = pipeline.encode(request, name, model, card, self.device)
            self.shapes[key] = shape
            notes.extend(prepared_notes)
            while len(self.shapes) > self.service_limits.max_latents:
                self.shapes.popitem(last=False)
            job.emit({"type": "encoded"})

        job = self.submit(QueuedJob("encode", run))
        job.done.wait()
        header, _ = job.frames.get()
        if header["type"] == "error":
            status = (HTTPStatus.REQUEST_ENTITY_TOO_LARGE if header["error"] == "too_large"
                      else HTTPStatus.BAD_REQUEST)
            raise ApiError(status, header["error"], header["message"])
        if header["type"] != "encoded":  # cancelled: the server is shutting down
            raise ApiError(HTTPStatus.SERVICE_UNAVAILABLE, "shutting_down",
                           "the server is shutting down; the input was not encoded")
        return key, False, notes

    def shutdown(self):
        """Refuse new jobs (503) and cancel every queued and running one."""
        with self.count_lock:
            self.stopping.set()
        for job in list(self.jobs.values()):
            job.cancel.set()

    def drain(self, timeout=30.0) -> bool:
        """After ``shutdown``: wait for the device thread to finish (each job ends with its
        frames) and for the HTTP threads to relay them. True when all did in ``timeout``."""
        deadline = time.monotonic() + timeout
        self.thread.join(timeout)

        def relayed():
            return not self.relaying and all(job.frames.empty() or job.abandoned
                                             for job in list(self.jobs.values()))

        while not relayed() and time.monotonic() < deadline:
            time.sleep(0.02)
        return not self.thread.is_alive() and relayed()


def trim_heap():
    """Give freed heap memory back to the system (glibc keeps it in its arenas, so each
    large request's buffers stayed in the process); a no-op elsewhere."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass

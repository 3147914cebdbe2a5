"""Jobs: one streamed request each (``StreamJob``), its states (``JobStatus``) and the one
function every state change goes through (``transition``).

A reader thread per job does the socket I/O and only fills the job's queue; ``pump_job``
applies the frames on the main thread. Only the main-thread functions touch bpy data
(docs/design.md, "Blender add-on"). ``active`` lists the jobs that have not finished.

A job knows its result object by a per-job id (``uid``) stored on the object and its mesh
as ``onet_job``, not by name: renaming the object keeps the job streaming into it, and an
object that undo brings back under the same name is never written by a job it is not
from. A result whose ``onet_status`` still says a job is at work while no live job owns it
(a file saved mid-job, an undo step from mid-job) is marked ``interrupted``
(``mark_interrupted``: on load, undo/redo and from the timer).
"""

import collections
import enum
import itertools
import logging
import queue
import threading
import time
import uuid

import bpy

from . import result_mesh
from .bundled import wire
from .connection import BACKEND
from .numeric import InputError
from .status import panel

ADDON = __package__
JOB_KEY = "onet_job"  # custom property on a result object and its mesh: the job's uid
INTERRUPTED = "interrupted"  # onet_status of a result whose job is gone
log = logging.getLogger(__name__)

active = []  # StreamJobs not finished yet (reconstructions and the interpolation in flight)
_ids = itertools.count(1)


class JobStatus(enum.Enum):
    """Where a job is; the value is what the result object's ``onet_status`` says."""

    STARTING = "starting"  # launching or reaching the backend, sending the input
    QUEUED = "queued"  # accepted, waiting behind other jobs on the backend
    RUNNING = "running"  # the backend works on it; mesh levels arrive
    DONE = "done"
    CANCELLED = "cancelled"
    FAILED = "failed"

    @property
    def finished(self):
        return self in (JobStatus.DONE, JobStatus.CANCELLED, JobStatus.FAILED)


WORKING = tuple(status.value for status in JobStatus if not status.finished)


def _addon_prefs():
    addon = bpy.context.preferences.addons.get(ADDON)
    return addon.preferences if addon is not None else None


class StreamJob:
    """One streamed request. Worker thread: ``thread``; everything else: main thread.

    ``status`` is read-only: it changes through ``transition`` only.
    """

    def __init__(self, kind, settings, request, place, name, scene, apply_every_level=True):
        self.id = next(_ids)
        self.uid = uuid.uuid4().hex  # unique across sessions and files (see JOB_KEY)
        self.kind = kind  # reconstruct | interpolate
        self.settings = settings  # connection.ConnectionSettings
        self.request = request  # callable(client, on_accepted) -> frames (runs on the thread)
        self.place = place  # Matrix: the result's matrix_world
        self.name = name  # base name of the result object
        self.scene = scene  # scene name to link the result in
        self.apply_every_level = apply_every_level
        self.collection = ""
        self.properties = {}  # custom properties for the result object
        self.queue = queue.Queue()
        self.inbox = collections.deque()
        self.cancel_event = threading.Event()
        self.server_job = None
        self.model = None
        self._status = JobStatus.STARTING
        self.message = ""  # what the user is told about the last state change
        self.queue_position = 0  # jobs ahead on the backend + this one (when queued)
        self.level, self.levels, self.evaluations, self.seconds = -1, 0, 0, 0.0
        self.tile, self.tiles = 0, 0  # tiled reconstructions: tiles done, in all
        self.fit_step, self.fit_steps = 0, 0  # fitting to the points: steps done, in all
        self.updates = 0
        self.result_name = None  # where the result object was last seen (a hint: see uid)
        self.mesh_name = None
        self.final = None
        self.started = time.monotonic()
        self.thread = threading.Thread(target=self._work, name=f"onet-job-{self.id}",
                                       daemon=True)

    @property
    def status(self):
        return self._status

    @property
    def finished(self):
        return self._status.finished

    def result_object(self):
        """The object this job writes: the one carrying its uid (None before the first level,
        once deleted, or when undo took it away). Found by its last name first; after a
        rename, by looking at every object once."""
        if not self.result_name:
            return None
        ob = bpy.data.objects.get(self.result_name)
        if ob is not None and ob.get(JOB_KEY) == self.uid:
            return ob
        for ob in bpy.data.objects:
            if ob.get(JOB_KEY) == self.uid:
                self.result_name = ob.name
                return ob
        return None

    def adopt(self, ob):
        """Make ``ob`` this job's result object (a new one, or the interpolation preview)."""
        ob[JOB_KEY] = self.uid
        if ob.type == "MESH":
            ob.data[JOB_KEY] = self.uid
            self.mesh_name = ob.data.name
        self.result_name = ob.name

    def progress(self):
        """(fraction, text) for UILayout.progress."""
        elapsed = time.monotonic() - self.started
        if self.status is JobStatus.STARTING:
            text = "Starting the backend…" if BACKEND.state == "starting" else "Sending…"
            return 0.0, f"{text} {elapsed:.0f} s"
        if self.status is JobStatus.QUEUED:
            return 0.0, (f"Waiting in the backend's queue ({self.queue_position - 1} ahead)…"
                         f" {elapsed:.0f} s")
        if self.level < 0 and self.fit_steps:
            return (self.fit_step / self.fit_steps,
                    f"Fitting to the points: step {self.fit_step} of {self.fit_steps},"
                    f" {elapsed:.0f} s")
        if self.level < 0 and self.tiles:
            return (self.tile / self.tiles,
                    f"Tile {self.tile} of {self.tiles}, {elapsed:.0f} s")
        if self.level < 0:
            return 0.02, f"Waiting for the first level… {elapsed:.0f} s"
        fraction = (self.level + 1) / max(1, self.levels)
        return fraction, (f"Level {self.level + 1} of {self.levels}, {self.evaluations:,}"
                          f" evaluations, {self.seconds:.1f} s")

    # -- worker thread --------------------------------------------------------------------------
    def _accepted(self, header):
        self.server_job = header.get("job")
        self.queue.put(("accepted", header, None))

    def _work(self):
        try:
            client = BACKEND.ensure(self.settings)
            if self.cancel_event.is_set():
                return
            stream = self.request(client, self._accepted)
            try:
                for header, arrays in stream:
                    if self.cancel_event.is_set():
                        return
                    self.queue.put((header["type"], header, arrays))
            finally:
                stream.close()
            self.queue.put(("finished", None, None))
        except wire.JobCancelled:
            self.queue.put(("cancelled", None, None))
        except InputError as exc:  # a large input prepared on this thread
            self.queue.put(("error", {"message": str(exc)}, None))
        except Exception as exc:
            if not self.cancel_event.is_set():
                self.queue.put(("error", {"message": BACKEND.failure_reason(exc, self.settings)},
                                None))


# -- the one state change ---------------------------------------------------------------------
def transition(job, status, message="", touch_scene=True):
    """Move ``job`` to ``status``: the job's status and message, the result object's
    ``onet_status`` and the panel's message line change here and nowhere else.

    A finished job stays finished (returns False). Finishing stops the reader thread and
    takes the job off ``active``. ``touch_scene=False``: leave bpy data alone (the file is
    being replaced).
    """
    if job.finished:
        return False
    job._status, job.message = status, message
    if touch_scene:
        _show_status(job, job.result_object())
    if status.finished:
        job.cancel_event.set()
        if job in active:
            active.remove(job)
    reconstruct = job.kind == "reconstruct"
    if status is JobStatus.FAILED:
        panel.show_error(message)
    elif status is JobStatus.DONE and reconstruct:
        panel.show_result(message, clear_error=True)
    elif status is JobStatus.CANCELLED and reconstruct:
        panel.show_result(message)
    elif status is JobStatus.STARTING and reconstruct:
        panel.clear_error()
    else:
        panel.generation += 1
    return True


def _show_status(job, ob):
    """The job's status on its result object (``onet_status``), the only place it is set."""
    if ob is not None:
        ob["onet_status"] = job.status.value


def start(job):
    active.append(job)
    transition(job, JobStatus.STARTING)
    job.thread.start()
    return job


def running(kind="reconstruct"):
    return [job for job in active if job.kind == kind and not job.finished]


# -- main thread ------------------------------------------------------------------------------
def _scene(job):
    return bpy.data.scenes.get(job.scene) or bpy.context.scene


LOST = "The result object was deleted or undone, so the job was stopped."


def _apply_mesh(job, header, arrays):
    ob = job.result_object()
    if job.result_name and ob is None:
        cancel(job, LOST)
        return
    if ob is None:
        ob = result_mesh.create_object(job.name, job.place, job.collection, _scene(job))
        job.adopt(ob)
        for key, value in job.properties.items():
            ob[key] = value
        if job.model:
            ob["onet_model"] = job.model
        _show_status(job, ob)
    if job.kind == "interpolate":
        ob.matrix_world = job.place
    result_mesh.write_mesh(ob.data, arrays["vertices"], arrays["faces"])
    ob["onet_level"] = int(header["level"])
    job.level, job.levels = int(header["level"]), int(header["levels"])
    job.evaluations, job.seconds = int(header["evaluations"]), float(header["seconds"])
    job.updates += 1


def pump_job(job):
    """Apply what arrived for one job: at most one mesh level per call (each level is seen),
    or only the newest level when ``apply_every_level`` is off. True if anything changed.
    A job whose object was deleted or undone away stops at once, not at its next level."""
    if job.result_name and not job.finished and job.result_object() is None:
        cancel(job, LOST)
        return True
    while True:
        try:
            job.inbox.append(job.queue.get_nowait())
        except queue.Empty:
            break
    if not job.apply_every_level:
        meshes = [i for i, item in enumerate(job.inbox) if item[0] == "mesh"]
        for _ in range(len(meshes) - 1):  # drop all but the newest mesh frame
            index = next(i for i, item in enumerate(job.inbox) if item[0] == "mesh")
            del job.inbox[index]
    changed = False
    while job.inbox and not job.finished:
        kind, header, arrays = job.inbox.popleft()
        changed = True
        if kind == "accepted":
            job.model = header.get("model")
            job.queue_position = int(header.get("queue") or 1)
            transition(job, JobStatus.QUEUED if job.queue_position > 1 else JobStatus.RUNNING)
            ob = job.result_object()
            if ob is not None:
                ob["onet_model"] = job.model
        elif kind in ("mesh", "tile", "fit") and job.status is JobStatus.QUEUED:
            transition(job, JobStatus.RUNNING)
        if kind == "mesh":
            _apply_mesh(job, header, arrays)
            break  # one level per call: the next ones (and the end) come with the next call
        elif kind == "tile":
            job.tile, job.tiles = header["tile"], header["tiles"]
        elif kind == "fit":
            job.fit_step, job.fit_steps = header["step"], header["steps"]
        elif kind == "final":
            job.final = header
        elif kind == "finished":
            _succeed(job)
        elif kind == "error":
            _fail(job, JobStatus.FAILED, header["message"])
        elif kind == "cancelled":
            _fail(job, JobStatus.CANCELLED, "The backend cancelled the job.")
    return changed


def _succeed(job):
    ob = job.result_object()
    final = job.final or {}
    if ob is None or not final.get("faces"):
        message = ("The model found no surface in this input (the mesh is empty): try another"
                   " model or a lower threshold under Advanced.")
        if job.result_name and ob is None:
            message = "The result object was deleted before the job finished."
        _fail(job, JobStatus.FAILED, message)
        return
    for key in ("evaluations", "seconds", "threshold", "resolution", "rotations"):
        if key in final:
            ob[f"onet_{key}"] = final[key]
    summary = (f"{ob.name}: {final.get('faces', 0):,} faces in {final.get('seconds', 0):.1f} s"
               f" ({job.updates} updates)")
    if final.get("notes"):
        ob["onet_notes"] = "; ".join(final["notes"])
        summary += ". Backend: " + "; ".join(final["notes"])
    transition(job, JobStatus.DONE, summary)
    if job.kind == "reconstruct":
        log.info("%s", summary)
        select_only(ob, job.properties.get("onet_source"))
        undo_push("ONet Reconstruct")


def select_only(ob, source):
    """Make the finished result the selected, active object (as Blender's Add menu does),
    unless the artist made another object active meanwhile (the active object is not the
    ``source`` object's name) or the result is not in the current view layer."""
    view_layer = bpy.context.view_layer
    if view_layer is None:
        return
    active = view_layer.objects.active
    if active is not None and active.name != source:
        return
    try:
        ob.select_set(True, view_layer=view_layer)
    except RuntimeError:  # not in this view layer (an excluded collection, another scene)
        return
    for other in view_layer.objects.selected:
        if other != ob:
            other.select_set(False, view_layer=view_layer)
    view_layer.objects.active = ob


def undo_push(message):
    """One undo step for what the job built (outside an operator, so pushed by hand)."""
    try:
        bpy.ops.ed.undo_push(message=message)
    except RuntimeError:
        pass  # no window (background / module mode): nothing to undo into


def _fail(job, status, message):
    """End a job that did not finish: the scene goes back to how it was (or the partial
    result stays, clearly named, when the preferences ask for it)."""
    if not transition(job, status, message):
        return
    if job.kind == "reconstruct" and job.result_name:
        prefs = _addon_prefs()
        ob = job.result_object()
        if ob is not None and prefs is not None and prefs.keep_partial and job.updates:
            ob.name = f"{job.name} (partial)"
            ob.data.name = ob.name
            job.result_name = ob.name
        else:
            if ob is not None:
                result_mesh.remove_object(ob.name)
            result_mesh.remove_orphan_mesh(job.mesh_name, JOB_KEY, job.uid)


def cancel(job, message="Cancelled; the scene is as it was."):
    """Stop a job now: the server is told in the background, the scene is restored here."""
    if job.finished:
        return
    tell_server(job)
    _fail(job, JobStatus.CANCELLED, message)


def tell_server(job):
    """Ask the backend to drop the job now (the reader thread may be waiting for a level)."""
    job.cancel_event.set()
    server_job, client = job.server_job, BACKEND.client
    if server_job and client is not None:
        def tell():
            try:
                client.cancel(server_job)
            except Exception:
                pass  # closing the stream cancels it too

        threading.Thread(target=tell, name="onet-cancel", daemon=True).start()


def cancel_all(message="Cancelled; the scene is as it was.", touch_scene=True):
    """Cancel every active job; ``touch_scene=False`` only stops the work (the file is being
    replaced, so its objects are left alone)."""
    for job in list(active):
        if touch_scene:
            cancel(job, message)
        else:
            tell_server(job)
            transition(job, JobStatus.CANCELLED, message, touch_scene=False)


def mark_interrupted():
    """Results that say a job is at work (``onet_status`` starting/queued/running) while no
    live job owns them become ``interrupted``: a file saved mid-job, an undo step pushed
    mid-job. Returns their names. Main thread; cheap (one look at every object)."""
    live = {job.uid for job in active}
    names = []
    for ob in bpy.data.objects:
        if ob.get("onet_status") in WORKING and ob.get(JOB_KEY) not in live:
            if ob.library is None:  # linked objects cannot be changed
                ob["onet_status"] = INTERRUPTED
                names.append(ob.name)
    if names:
        log.info("marked interrupted: %s", ", ".join(names))
    return names

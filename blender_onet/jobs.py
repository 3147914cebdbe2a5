"""Jobs: a reader thread per job does the socket I/O; ``pump`` applies frames on the main
thread. Only ``pump`` and the functions it calls touch bpy data.
"""

import collections
import itertools
import queue
import threading
import time

import bpy
from mathutils import Matrix

from . import backend_link, result_mesh
from .backend.service import client as wire

ADDON = __package__
INTERPOLATION_OBJECT = "ONet Interpolation"
IDLE_FULL_RESOLUTION_S = 0.35  # slider still for this long: refine the preview

backend = backend_link.Backend()
jobs = []  # running jobs (reconstructions and the interpolation in flight)
_ids = itertools.count(1)


class Status:
    """What the panel shows besides the running jobs (main thread only)."""

    last_error = ""
    last_result = ""
    check = None  # (ok, text) of the interpreter check
    check_running = False
    install = None  # backend_link.InstallTask
    generation = 0


def _addon_prefs():
    addon = bpy.context.preferences.addons.get(ADDON)
    return addon.preferences if addon is not None else None


class Job:
    """One streamed request. Worker thread: ``thread``; everything else: main thread."""

    def __init__(self, kind, settings, request, place, name, scene, apply_every_level=True):
        self.id = next(_ids)
        self.kind = kind  # reconstruct | interpolate
        self.settings = settings  # backend_link.Settings
        self.request = request  # callable(client) -> frame iterator (runs on the thread)
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
        self.status = "starting"  # starting | running | done | error | cancelled
        self.message = ""
        self.level, self.levels, self.evaluations, self.seconds = -1, 0, 0, 0.0
        self.tile, self.tiles = 0, 0  # tiled reconstructions: tiles done, in all
        self.updates = 0
        self.result_name = None
        self.final = None
        self.started = time.monotonic()
        self.thread = threading.Thread(target=self._work, name=f"onet-job-{self.id}",
                                       daemon=True)

    @property
    def finished(self):
        return self.status in ("done", "error", "cancelled")

    def progress(self):
        """(fraction, text) for UILayout.progress."""
        elapsed = time.monotonic() - self.started
        if self.status == "starting":
            text = "Starting the backend…" if backend.state == "starting" else "Sending…"
            return 0.0, f"{text} {elapsed:.0f} s"
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
            client = backend.ensure(self.settings)
            if self.cancel_event.is_set():
                return
            self.queue.put(("connected", None, None))
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
        except Exception as exc:
            if not self.cancel_event.is_set():
                self.queue.put(("error", {"message": backend.failure_reason(exc, self.settings)},
                                None))


def start(job):
    jobs.append(job)
    job.thread.start()
    return job


def running(kind="reconstruct"):
    return [job for job in jobs if job.kind == kind and not job.finished]


# -- main thread ------------------------------------------------------------------------------
def _scene(job):
    return bpy.data.scenes.get(job.scene) or bpy.context.scene


def _apply_mesh(job, header, arrays):
    ob = bpy.data.objects.get(job.result_name) if job.result_name else None
    if job.result_name and ob is None:
        cancel(job, "The result object was deleted or undone, so the job was stopped.")
        return
    if ob is None:
        ob = result_mesh.create_object(job.name, job.place, job.collection, _scene(job))
        job.result_name = ob.name
        for key, value in job.properties.items():
            ob[key] = value
        if job.model:
            ob["onet_model"] = job.model
    if job.kind == "interpolate":
        ob.matrix_world = job.place
    result_mesh.write_mesh(ob.data, arrays["vertices"], arrays["faces"])
    ob["onet_level"] = int(header["level"])
    job.level, job.levels = int(header["level"]), int(header["levels"])
    job.evaluations, job.seconds = int(header["evaluations"]), float(header["seconds"])
    job.updates += 1


def _pump_job(job):
    """Apply what arrived for one job: at most one mesh level per call (each level is seen),
    or only the newest level when ``apply_every_level`` is off. True if anything changed."""
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
        if kind == "connected":
            job.status = "running"
        elif kind == "accepted":
            job.status, job.model = "running", header.get("model")
            ob = bpy.data.objects.get(job.result_name) if job.result_name else None
            if ob is not None:
                ob["onet_model"] = job.model
        elif kind == "mesh":
            _apply_mesh(job, header, arrays)
            break  # one level per call: the next ones (and the end) come with the next call
        elif kind == "tile":
            job.tile, job.tiles = header["tile"], header["tiles"]
        elif kind == "final":
            job.final = header
        elif kind == "finished":
            _succeed(job)
        elif kind == "error":
            _fail(job, "error", header["message"])
        elif kind == "cancelled":
            _fail(job, "cancelled", "The backend cancelled the job.")
    return changed


def _succeed(job):
    ob = bpy.data.objects.get(job.result_name) if job.result_name else None
    final = job.final or {}
    if ob is None or not final.get("faces"):
        message = ("The model found no surface in this input (the mesh is empty): try another"
                   " model or a lower threshold under Advanced.")
        if job.result_name and ob is None:
            message = "The result object was deleted before the job finished."
        _fail(job, "error", message)
        return
    ob["onet_status"] = "done"
    for key in ("evaluations", "seconds", "threshold", "resolution"):
        if key in final:
            ob[f"onet_{key}"] = final[key]
    if final.get("notes"):
        ob["onet_notes"] = "; ".join(final["notes"])
    job.status = "done"
    if job.kind == "reconstruct":
        Status.last_result = (f"{ob.name}: {final.get('faces', 0):,} faces in"
                              f" {final.get('seconds', 0):.1f} s ({job.updates} updates)")
        Status.last_error = ""
        _remove(job)
        undo_push("ONet Reconstruct")
    else:
        _remove(job)


def undo_push(message):
    """One undo step for what the job built (outside an operator, so pushed by hand)."""
    try:
        bpy.ops.ed.undo_push(message=message)
    except RuntimeError:
        pass  # no window (background / module mode): nothing to undo into


def _fail(job, status, message):
    """End a job that did not finish: the scene goes back to how it was (or the partial
    result stays, clearly named, when the preferences ask for it)."""
    job.status, job.message = status, message
    job.cancel_event.set()
    if job.kind == "reconstruct" and job.result_name:
        prefs = _addon_prefs()
        ob = bpy.data.objects.get(job.result_name)
        if ob is not None and prefs is not None and prefs.keep_partial and job.updates:
            ob.name = f"{job.name} (partial)"
            ob.data.name = ob.name
            ob["onet_status"] = status
        else:
            result_mesh.remove_object(job.result_name)
    if status == "error":
        Status.last_error = message
    elif job.kind == "reconstruct":
        Status.last_result = message
    _remove(job)


def _remove(job):
    if job in jobs:
        jobs.remove(job)
    Status.generation += 1


def cancel(job, message="Cancelled; the scene is as it was."):
    """Stop a job now: the server is told in the background, the scene is restored here."""
    if job.finished:
        return
    _tell_server(job)
    _fail(job, "cancelled", message)


def _tell_server(job):
    """Ask the backend to drop the job now (the reader thread may be waiting for a level)."""
    job.cancel_event.set()
    server_job, client = job.server_job, backend.client
    if server_job and client is not None:
        def tell():
            try:
                client.cancel(server_job)
            except Exception:
                pass  # closing the stream cancels it too

        threading.Thread(target=tell, name="onet-cancel", daemon=True).start()


def cancel_all(message="Cancelled; the scene is as it was.", touch_scene=True):
    for job in list(jobs):
        if touch_scene:
            cancel(job, message)
        else:  # the file is being replaced: only stop the work
            _tell_server(job)
            job.status = "cancelled"
            _remove(job)
    interpolation.reset(touch_scene=touch_scene)


# -- latent interpolation -----------------------------------------------------------------------
def blend_matrices(a, b, t):
    """World matrix between a and b: location and scale linear, rotation slerped."""
    if t <= 0:
        return a.copy()
    if t >= 1:
        return b.copy()
    la, ra, sa = a.decompose()
    lb, rb, sb = b.decompose()
    return Matrix.LocRotScale(la.lerp(lb, t), ra.slerp(rb, t), sa.lerp(sb, t))


class Interpolation:
    """Shapes A and B, the slider's requests (coalesced: one job in flight, the newest
    request waits) and the preview object."""

    def __init__(self):
        self.a = self.b = None  # (SceneInput, model name or None)
        self.job = None
        self.wanted = None  # (t, preview) waiting for the job in flight
        self.changed_at = 0.0
        self.shown = None  # (t, preview) of the shape on screen
        self.refine = True
        self.settings = None
        self.mise = None
        self.output = None
        self.scene = ""
        self.jobs_started = 0
        self.object_name = ""

    def ready(self):
        return self.a is not None and self.b is not None

    def busy(self):
        return self.job is not None or self.wanted is not None or (
            self.refine and self.shown is not None and self.shown[1])

    def set_shape(self, which, scene_input, model):
        other = self.b if which == "a" else self.a
        name = "B" if which == "a" else "A"
        if other is not None and other[0].kind != scene_input.kind:
            raise ValueError(f"shape {name} is a {other[0].kind} input and this is a"
                             f" {scene_input.kind} input; both shapes must be the same kind")
        if other is not None and other[1] != model:
            raise ValueError(f"shape {name} was set with the model {other[1] or 'default'};"
                             " choose the same model for both shapes")
        setattr(self, which, (scene_input, model))
        self.shown = None

    def request(self, t, preview=True):
        """The slider moved (or the full shape is wanted): run it as soon as possible."""
        if not self.ready():
            return
        job = self.job
        if job is not None and (job.t, job.preview) == (float(t), preview):
            self.wanted = None  # already on its way
            return
        self.wanted = (float(t), preview)
        self.changed_at = time.monotonic()
        self._kick()

    def _kick(self):
        if self.job is not None or self.wanted is None or self.settings is None:
            return
        t, preview = self.wanted
        self.wanted = None
        (a, model), (b, _) = self.a, self.b
        mise, output = (None if preview else self.mise), self.output

        def request(client, on_accepted):
            latent_a = client.encode(model=model, **a.arrays)
            latent_b = client.encode(model=model, **b.arrays)
            return client.interpolate(latent_a, latent_b, t, preview=preview, mise=mise,
                                      output=output, on_accepted=on_accepted)

        job = Job("interpolate", self.settings, request, blend_matrices(a.matrix, b.matrix, t),
                  INTERPOLATION_OBJECT, self.scene, apply_every_level=False)
        job.t, job.preview = t, preview
        ob = self.preview_object()
        job.result_name = ob.name if ob is not None else None
        job.collection = a.collection
        job.properties = {"onet_interpolation": f"{a.source} → {b.source}"}
        self.job = job
        self.jobs_started += 1
        start(job)

    def preview_object(self):
        """The preview object (None until the first shape arrived or once deleted)."""
        return bpy.data.objects.get(self.object_name) if self.object_name else None

    def pump(self):
        job, changed = self.job, False
        if job is not None:
            changed = _pump_job(job)
            if job.result_name:
                self.object_name = job.result_name
                ob = bpy.data.objects.get(job.result_name)
                if ob is not None:
                    ob["onet_t"] = job.t
                    ob["onet_preview"] = job.preview
            if job.finished:
                self.job = None
                if job.status == "done":
                    self.shown = (job.t, job.preview)
                elif job.status == "error":
                    self.wanted = None
                    self.shown = None
        if self.job is None:
            if self.wanted is not None:
                self._kick()
                changed = True
            elif (self.refine and self.shown is not None and self.shown[1]
                  and time.monotonic() - self.changed_at > IDLE_FULL_RESOLUTION_S):
                self.wanted = (self.shown[0], False)
                self._kick()
                changed = True
        return changed

    def reset(self, touch_scene=True):
        if self.job is not None:
            if touch_scene:
                cancel(self.job)
            else:
                _tell_server(self.job)
        self.__init__()


interpolation = Interpolation()


def pump():
    """Main-thread step: apply received frames. Returns whether work is pending."""
    changed = False
    for job in list(jobs):
        if job.kind == "reconstruct":
            changed |= _pump_job(job)
    changed |= interpolation.pump()
    install = Status.install
    seen = (backend.generation, backend.state, Status.check, Status.check_running,
            install and (install.state, round(install.fraction, 3), install.step),
            Status.last_error, Status.last_result)
    if seen != getattr(pump, "_seen", None):  # something the panels show changed
        pump._seen = seen
        changed = True
    if changed:
        Status.generation += 1
        redraw()
    return bool(jobs) or interpolation.busy() or backend.state == "starting" or (
        Status.install is not None and Status.install.state == "running") or Status.check_running


def redraw():
    wm = bpy.context.window_manager
    for window in getattr(wm, "windows", ()):
        for area in window.screen.areas:
            if area.type in {"VIEW_3D", "PREFERENCES"}:
                area.tag_redraw()

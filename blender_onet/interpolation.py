"""The latent slider: shapes A and B, the coalesced requests the Blend slider makes, and the
preview object (``Interpolation``; the add-on's one is ``INTERPOLATION``), placed between
the two sources (``blend_matrices``). Its requests run as ordinary ``jobs.StreamJob``s.
"""

import time

import bpy
from mathutils import Matrix

from . import jobs
from .jobs import JobStatus

PREVIEW_OBJECT = "ONet Interpolation"
IDLE_FULL_RESOLUTION_S = 0.35  # slider still for this long: refine the preview


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
        self._forget()

    def _forget(self):
        """Nothing set up: no shapes, no request, no preview."""
        self.a = self.b = None  # (SceneInput, model name or None)
        self.job = None  # the StreamJob in flight
        self.wanted = None  # (t, preview) waiting for the job in flight
        self.changed_at = 0.0
        self.shown = None  # (t, preview) of the shape on screen
        self.refine = True
        self.settings = None  # connection.ConnectionSettings
        self.mise = None  # the wire's ``mise`` of the full-resolution shape
        self.output = None  # the wire's ``output``
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
        kinds = {scene_input.kind} | ({other[0].kind} if other is not None else set())
        if len(kinds - {"sample"}) > 1:  # a sample blends with any input of its model
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
            latent_a = client.encode(model=model, **a.wire_arrays())
            latent_b = client.encode(model=model, **b.wire_arrays())
            return client.interpolate(latent_a, latent_b, t, preview=preview, mise=mise,
                                      output=output, on_accepted=on_accepted)

        job = jobs.StreamJob("interpolate", self.settings, request,
                             blend_matrices(a.matrix, b.matrix, t), PREVIEW_OBJECT, self.scene,
                             apply_every_level=False)
        job.t, job.preview = t, preview
        ob = self.preview_object()
        if ob is not None:
            job.adopt(ob)
        job.collection = a.collection
        job.properties = {"onet_interpolation": f"{a.source} → {b.source}"}
        self.job = job
        self.jobs_started += 1
        jobs.start(job)

    def preview_object(self):
        """The preview object (None until the first shape arrived or once deleted)."""
        return bpy.data.objects.get(self.object_name) if self.object_name else None

    def pump(self):
        job, changed = self.job, False
        if job is not None:
            changed = jobs.pump_job(job)
            if job.result_name:
                self.object_name = job.result_name
                ob = job.result_object()
                if ob is not None:
                    ob["onet_t"] = job.t
                    ob["onet_preview"] = job.preview
            if job.finished:
                self.job = None
                if job.status is JobStatus.DONE:
                    self.shown = (job.t, job.preview)
                elif job.status is JobStatus.FAILED:
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
        """Stop the job in flight and forget the setup (the preview object stays)."""
        if self.job is not None:
            if touch_scene:
                jobs.cancel(self.job)
            else:
                jobs.tell_server(self.job)
        self._forget()


INTERPOLATION = Interpolation()

"""Operators: thin wrappers around the plain functions above them, which tests call too."""

import os
import threading

import bpy

from . import (installer, interpreters, jobs, prefs, props, result_mesh, sampling, scene_input,
               session)
from .bundled import BACKEND_DIR
from .connection import BACKEND
from .crop_preview import CROP_PREVIEW
from .interpolation import INTERPOLATION
from .numeric import InputError
from .status import panel

ADDON = __package__


# -- plain functions -------------------------------------------------------------------------
def input_problem(context):
    """Why the current input cannot be reconstructed (None when it can)."""
    return scene_input.describe(context, context.scene.onet).problem


def reconstruct_problem(context):
    problem = input_problem(context) or prefs.backend_problem(context)
    if problem:
        return problem
    source = scene_input.describe(context, context.scene.onet).source
    for job in jobs.running():
        if job.properties.get("onet_source") == source:
            return f"A reconstruction of {source!r} is already running; wait or cancel it"
    return None


def start_reconstruction(context):
    """Read the input and start streaming its reconstruction. Returns the StreamJob.

    Raises InputError (plain words) when the input cannot be used.
    """
    settings = context.scene.onet
    problem = prefs.backend_problem(context)
    if problem:
        raise InputError(problem)
    data = scene_input.read(context, settings)
    model = settings.model_name or None
    mise = props.mise_of(settings)
    output, tiling = props.output_of(settings), props.tiling_of(settings)
    fit_steps = settings.fit_steps or None  # None: left out of the request
    rotations = settings.rotations or None  # None: the model's own

    def request(client, on_accepted):
        return client.reconstruct(model=model, mise=mise, output=output, tiling=tiling,
                                  fit_steps=fit_steps, rotations=rotations,
                                  on_accepted=on_accepted, **data.wire_arrays())

    job = jobs.StreamJob("reconstruct", prefs.settings_snapshot(context), request, data.matrix,
                         f"{data.source} ONet", context.scene.name)
    job.collection = data.collection
    job.properties = {
        "onet_source": data.source, "onet_input": data.label, "onet_kind": data.kind,
        "onet_model": model or "default", "onet_resolution0": mise["resolution0"],
        "onet_upsampling_steps": mise["upsampling_steps"],
        "onet_threshold_requested": mise["threshold"] or 0.0,
        "onet_tile_size": settings.tile_size, "onet_fill_cavities": output["fill_cavities"]}
    return jobs.start(job)


def cancel_reconstructions():
    """Cancel every running reconstruction; the scene goes back to how it was."""
    for job in jobs.running():
        jobs.cancel(job)


def set_interpolation_shape(context, which):
    settings = context.scene.onet
    problem = prefs.backend_problem(context)
    if problem:
        raise InputError(problem)
    sampled = (sampling.sample_input(context.active_object) if settings.source == "OBJECT"
               else None)
    data, model = sampled or (scene_input.read(context, settings), settings.model_name or None)
    interpolation = INTERPOLATION
    try:
        interpolation.set_shape(which, data, model)
    except ValueError as exc:
        raise InputError(str(exc)[:1].upper() + str(exc)[1:]) from None
    interpolation.settings = prefs.settings_snapshot(context)
    interpolation.mise, interpolation.output = props.mise_of(settings), props.output_of(settings)
    interpolation.scene = context.scene.name
    if interpolation.ready():
        interpolation.request(settings.interp_t, preview=True)
    return data


def apply_interpolation(context):
    interpolation = INTERPOLATION
    ob = interpolation.preview_object()
    t = interpolation.shown[0] if interpolation.shown else context.scene.onet.interp_t
    a, b = interpolation.a[0].source, interpolation.b[0].source
    new = result_mesh.copy_object(ob.name, f"{a} to {b} ONet t={t:.2f}", context.scene)
    for key in ("onet_level", "onet_preview", "onet_interpolation", jobs.JOB_KEY):
        if key in new:
            del new[key]
    if jobs.JOB_KEY in new.data:
        del new.data[jobs.JOB_KEY]
    new["onet_status"] = "done"
    new["onet_t"] = t
    return new


def clear_interpolation():
    """Forget shapes A and B and remove the preview object."""
    ob = INTERPOLATION.preview_object()
    INTERPOLATION.reset()
    if ob is not None:
        result_mesh.remove_object(ob.name)


def check_python_async(context):
    python, _ = interpreters.resolve_python(prefs.prefs(context).python_path.strip(),
                                            prefs.user_dir())
    panel.check_running = True

    def run():
        panel.check = interpreters.check_python(python)
        panel.check_running = False

    threading.Thread(target=run, name="onet-check-python", daemon=True).start()


def install_problem():
    if not bpy.app.online_access:
        requirements = os.path.join(BACKEND_DIR, "requirements.txt")
        return ("Online access is disabled, so nothing can be downloaded. Allow it in"
                " Preferences > System > Network, or install the backend's requirements"
                f" yourself: python -m pip install -r \"{requirements}\", then choose that"
                " Python in these preferences")
    if panel.install_running():
        return "The backend environment is being installed"
    return None


def install_backend_async(context, base_python=None, requirements=None):
    """Create the venv under the extension's user folder and pip-install the pins."""
    problem = install_problem()
    if problem:
        raise InputError(problem)
    folder = prefs.user_dir()
    task = installer.InstallTask(log_path=os.path.join(folder, "install-backend.log"))
    panel.install = task
    base = base_python or _venv_base_python()
    requirements = requirements or os.path.join(BACKEND_DIR, "requirements.txt")
    variant = prefs.prefs(context).torch_variant

    def run():
        try:
            installer.install_environment(base, folder, requirements, variant, task)
        except Exception as exc:
            task.state, task.message = "error", f"{type(exc).__name__}: {exc}"

    threading.Thread(target=run, name="onet-install", daemon=True).start()
    return task


def _venv_base_python():
    import sys

    return sys.executable


# -- operators ---------------------------------------------------------------------------------
class _Checked:
    """Mixin: an operator is available when ``problem(context)`` is None; otherwise its text
    is the poll message Blender shows (F3 search, greyed-out buttons)."""

    @classmethod
    def problem(cls, context):
        return None

    @classmethod
    def poll(cls, context):
        problem = cls.problem(context)
        if problem:
            cls.poll_message_set(problem)
        return not problem

    def fail(self, error):
        """Show an input problem in the panel and as a report; the operator is cancelled."""
        panel.show_error(str(error))
        self.report({"ERROR"}, str(error))
        return {"CANCELLED"}


class ONET_OT_reconstruct(_Checked, bpy.types.Operator):
    bl_idname = "onet.reconstruct"
    bl_label = "Reconstruct"
    bl_description = ("Reconstruct a closed mesh from the active object or the chosen image"
                      " with an Occupancy Network; the new object refines level by level")
    bl_options = {"REGISTER"}

    @classmethod
    def problem(cls, context):
        return reconstruct_problem(context)

    def execute(self, context):
        warning = scene_input.describe(context, context.scene.onet).warning
        try:
            job = start_reconstruction(context)
        except InputError as exc:
            return self.fail(exc)
        if warning:
            self.report({"WARNING"}, warning)
        self.report({"INFO"}, f"Reconstructing {job.properties['onet_source']}…")
        return {"FINISHED"}


class ONET_OT_cancel(_Checked, bpy.types.Operator):
    bl_idname = "onet.cancel"
    bl_label = "Cancel Reconstruction"
    bl_description = "Stop the running reconstruction and remove its unfinished result"
    bl_options = {"REGISTER"}

    @classmethod
    def problem(cls, context):
        return None if jobs.running() else "No reconstruction is running"

    def execute(self, context):
        cancel_reconstructions()
        self.report({"INFO"}, "Reconstruction cancelled")
        return {"FINISHED"}


class ONET_OT_backend_start(_Checked, bpy.types.Operator):
    bl_idname = "onet.backend_start"
    bl_label = "Start Backend"
    bl_description = ("Launch the reconstruction backend (or connect to the remote one) now,"
                      " so the first reconstruction does not wait for it")
    bl_options = {"REGISTER"}

    @classmethod
    def problem(cls, context):
        if BACKEND.state == "starting":
            return "The backend is starting"
        if BACKEND.is_running():
            return "The backend is already running"
        return prefs.backend_problem(context)

    def execute(self, context):
        BACKEND.start_async(prefs.settings_snapshot(context))
        return {"FINISHED"}


class ONET_OT_backend_stop(_Checked, bpy.types.Operator):
    bl_idname = "onet.backend_stop"
    bl_label = "Stop Backend"
    bl_description = ("Stop the backend this add-on launched (or disconnect from the remote"
                      " one); running jobs are cancelled")
    bl_options = {"REGISTER"}

    @classmethod
    def problem(cls, context):
        if BACKEND.state not in ("running", "starting"):
            return "The backend is not running"
        return None

    def execute(self, context):
        session.cancel_everything("Cancelled: the backend was stopped.")
        BACKEND.stop()
        return {"FINISHED"}


class ONET_OT_check_python(_Checked, bpy.types.Operator):
    bl_idname = "onet.check_python"
    bl_label = "Check"
    bl_description = ("Run the backend's Python interpreter and show its PyTorch version and"
                      " whether CUDA is available")
    bl_options = {"REGISTER"}

    @classmethod
    def problem(cls, context):
        return "A check is running" if panel.check_running else None

    def execute(self, context):
        check_python_async(context)
        return {"FINISHED"}


class ONET_OT_install_backend(_Checked, bpy.types.Operator):
    bl_idname = "onet.install_backend"
    bl_label = "Install Backend Environment"
    bl_description = ("Optional (GPU, official checkpoints): create a Python environment in"
                      " the extension's user folder and install PyTorch and the backend's"
                      " other pinned requirements (downloads)")
    bl_options = {"REGISTER"}

    def execute(self, context):
        try:
            task = install_backend_async(context)
        except InputError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Installing the backend environment; log: {task.log_path}")
        return {"FINISHED"}


class _SetShape(_Checked):
    bl_options = {"REGISTER"}
    which = "a"

    @classmethod
    def problem(cls, context):
        return input_problem(context) or prefs.backend_problem(context)

    def execute(self, context):
        try:
            data = set_interpolation_shape(context, self.which)
        except InputError as exc:
            return self.fail(exc)
        self.report({"INFO"}, f"Shape {self.which.upper()}: {data.source} ({data.label})")
        return {"FINISHED"}


class ONET_OT_sample(_Checked, bpy.types.Operator):
    bl_idname = "onet.sample"
    bl_label = "New Shape"
    bl_description = ("Draw a new shape from a generative model's prior with the seed (the"
                      " same seed gives the same shape) into a new object at the 3D cursor;"
                      " it refines level by level")
    bl_options = {"REGISTER"}

    @classmethod
    def problem(cls, context):
        return prefs.backend_problem(context)

    def execute(self, context):
        try:
            job = sampling.start_sample(context)
        except InputError as exc:
            return self.fail(exc)
        self.report({"INFO"}, f"Sampling {job.properties['onet_source']}…")
        return {"FINISHED"}


class ONET_OT_preview_crop(_Checked, bpy.types.Operator):
    bl_idname = "onet.preview_crop"
    bl_label = "Preview Crop"
    bl_description = ("Show the picture the image model sees: the object cut out by the"
                      " image's alpha (or mask, or a foreground estimate on a plain"
                      " background), centred and scaled as in training")
    bl_options = {"REGISTER"}

    @classmethod
    def problem(cls, context):
        if CROP_PREVIEW.busy():
            return "A crop preview is on its way"
        return CROP_PREVIEW.problem(context) or prefs.backend_problem(context)

    def execute(self, context):
        try:
            CROP_PREVIEW.start(context)
        except InputError as exc:
            return self.fail(exc)
        return {"FINISHED"}


class ONET_OT_interpolate_set_a(_SetShape, bpy.types.Operator):
    bl_idname = "onet.interpolate_set_a"
    bl_label = "Set Shape A"
    bl_description = ("Use the current input as shape A of the latent interpolation (Blend"
                      " 0); a shape made by New Shape is used as its sample")
    which = "a"


class ONET_OT_interpolate_set_b(_SetShape, bpy.types.Operator):
    bl_idname = "onet.interpolate_set_b"
    bl_label = "Set Shape B"
    bl_description = ("Use the current input as shape B of the latent interpolation (Blend"
                      " 1); a shape made by New Shape is used as its sample")
    which = "b"


class ONET_OT_interpolate_apply(_Checked, bpy.types.Operator):
    bl_idname = "onet.interpolate_apply"
    bl_label = "Apply Blend"
    bl_description = "Keep the interpolated shape as a new object"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def problem(cls, context):
        if not INTERPOLATION.ready():
            return "Set shapes A and B first"
        if INTERPOLATION.preview_object() is None:
            return "No interpolated shape yet: move the Blend slider"
        return None

    def execute(self, context):
        new = apply_interpolation(context)
        self.report({"INFO"}, f"Created {new.name}")
        return {"FINISHED"}


class ONET_OT_interpolate_clear(_Checked, bpy.types.Operator):
    bl_idname = "onet.interpolate_clear"
    bl_label = "Clear Interpolation"
    bl_description = "Forget shapes A and B and remove the interpolation preview object"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def problem(cls, context):
        if INTERPOLATION.a is None and INTERPOLATION.b is None:
            return "No interpolation is set up"
        return None

    def execute(self, context):
        clear_interpolation()
        return {"FINISHED"}


CLASSES = (ONET_OT_reconstruct, ONET_OT_cancel, ONET_OT_backend_start, ONET_OT_backend_stop,
           ONET_OT_check_python, ONET_OT_install_backend, ONET_OT_sample,
           ONET_OT_preview_crop, ONET_OT_interpolate_set_a,
           ONET_OT_interpolate_set_b, ONET_OT_interpolate_apply, ONET_OT_interpolate_clear)


register, unregister = bpy.utils.register_classes_factory(CLASSES)

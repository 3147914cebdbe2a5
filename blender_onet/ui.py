"""The ONet tab of the 3D View sidebar (N panel): the input, the options, the running jobs,
the panel's messages (``status.panel``), the latent slider and the backend's state."""

import bpy

from . import jobs, prefs, props, scene_input
from .connection import BACKEND
from .crop_preview import CROP_PREVIEW, PREVIEW_IMAGE
from .interpolation import INTERPOLATION
from .prefs import wrap
from .status import panel


class _Sidebar:
    """Panels in the 3D View's sidebar (N), tab "ONet"."""

    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "ONet"


def _draw_crop_preview(layout):
    """The Preview Crop button, and the last preview with its caption (or its error)."""
    layout.operator("onet.preview_crop", icon="IMAGE_DATA")
    if CROP_PREVIEW.error:
        for i, line in enumerate(wrap(CROP_PREVIEW.error)):
            layout.label(text=line, icon="ERROR" if i == 0 else "BLANK1")
        return
    image = bpy.data.images.get(PREVIEW_IMAGE)
    if image is not None and image.preview is not None and CROP_PREVIEW.text:
        layout.template_icon(icon_value=image.preview.icon_id, scale=8.0)
        for line in wrap(CROP_PREVIEW.text):
            layout.label(text=line)


class ONET_PT_reconstruct(_Sidebar, bpy.types.Panel):
    bl_label = "ONet Reconstruct"

    def draw(self, context):
        layout = self.layout
        settings = context.scene.onet
        col = layout.column()
        col.prop(settings, "source")
        if settings.source == "IMAGE":
            col.template_ID(settings, "image", open="image.open")
        elif settings.source == "FILE":
            col.prop(settings, "image_path")
        description = scene_input.describe(context, settings)
        if description.kind == "image":
            col.prop(settings, "mask_image")
            _draw_crop_preview(col)
        ob = context.active_object
        if settings.source == "OBJECT" and ob is not None and ob.type in scene_input.MESH_LIKE:
            col.prop(settings, "mesh_mode")
            if settings.mesh_mode == "SURFACE":
                col.prop(settings, "surface_points")
        box = layout.box()
        if description.problem:
            for i, line in enumerate(wrap(description.problem)):
                box.label(text=line, icon="ERROR" if i == 0 else "BLANK1")
        else:
            for i, line in enumerate(wrap(description.text)):
                icon = "ERROR" if description.warning else "CHECKMARK"
                box.label(text=line, icon=icon if i == 0 else "BLANK1")
            for line in wrap(description.warning) if description.warning else ():
                box.label(text=line, icon="BLANK1")

        layout.prop(settings, "model")
        if not BACKEND.is_running():
            row = layout.row()
            row.label(text="Start the backend to list its models", icon="INFO")
            row.operator("onet.backend_start", text="Start", icon="PLAY")
        layout.prop(settings, "preset")
        fold = layout.column()
        fold.prop(settings, "show_advanced", icon="TRIA_DOWN" if settings.show_advanced
                  else "TRIA_RIGHT", emboss=False)
        if settings.show_advanced:
            grid = fold.column(align=True)
            grid.prop(settings, "resolution0")
            grid.prop(settings, "upsampling_steps")
            finest = settings.resolution0 * 2 ** settings.upsampling_steps
            grid.label(text=f"MISE {settings.resolution0} → {finest} (final grid {finest}³)")
            fold.prop(settings, "threshold")
            own = props.model_threshold(settings, description.kind)
            if settings.threshold == 0 and own is not None:
                fold.label(text=f"0: the model's own threshold, {own:g}")
            fold.prop(settings, "tile_size")
            fold.prop(settings, "fill_cavities")
            fold.prop(settings, "smooth_steps")
            own = props.model_own(settings, description.kind, "smooth_steps", 0)
            if settings.smooth_steps < 0 and own is not None:
                fold.label(text=f"-1: the model's own smoothing, {own}")
            fold.prop(settings, "drop_floaters")
            fold.prop(settings, "fit_steps")
            fold.prop(settings, "rotations")
            own = props.model_own(settings, description.kind, "rotations", 1)
            if settings.rotations == 0 and own is not None:
                fold.label(text=f"0: the model's own rotations, {own}")
            fold.prop(settings, "show_test_shapes")

        running = jobs.running()
        if running:
            for job in running:
                fraction, text = job.progress()
                layout.progress(factor=fraction, text=text)
            layout.operator("onet.cancel", icon="CANCEL")
        else:
            layout.operator("onet.reconstruct", icon="MESH_ICOSPHERE")
        if panel.last_error:
            box = layout.box()
            for i, line in enumerate(wrap(panel.last_error)):
                box.label(text=line, icon="ERROR" if i == 0 else "BLANK1")
        elif panel.last_result and not running:
            for line in wrap(panel.last_result):
                layout.label(text=line)


class ONET_PT_interpolate(_Sidebar, bpy.types.Panel):
    bl_label = "Latent Interpolation"
    bl_parent_id = "ONET_PT_reconstruct"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        interpolation = INTERPOLATION
        row = layout.row(align=True)
        row.operator("onet.interpolate_set_a", text="Set A")
        row.operator("onet.interpolate_set_b", text="Set B")
        names = [shape[0].source if shape else "—" for shape in (interpolation.a,
                                                                   interpolation.b)]
        layout.label(text=f"A: {names[0]}    B: {names[1]}")
        col = layout.column()
        col.enabled = interpolation.ready()
        col.prop(context.scene.onet, "interp_t", slider=True)
        row = layout.row(align=True)
        row.prop(context.scene.onet, "seed")
        row.operator("onet.sample", icon="OUTLINER_OB_META")
        job = interpolation.job
        if job is not None:
            fraction, text = job.progress()
            layout.progress(factor=fraction, text=("Preview: " if job.preview else "") + text)
        elif interpolation.shown is not None:
            t, preview = interpolation.shown
            layout.label(text=f"Showing t = {t:.2f}" + (" (preview)" if preview else ""))
        row = layout.row(align=True)
        row.operator("onet.interpolate_apply", icon="CHECKMARK")
        row.operator("onet.interpolate_clear", text="", icon="X")


class ONET_PT_backend(_Sidebar, bpy.types.Panel):
    bl_label = "Backend"
    bl_parent_id = "ONET_PT_reconstruct"

    def draw(self, context):
        layout = self.layout
        for i, line in enumerate(wrap(BACKEND.status_text())):
            layout.label(text=line, icon=("CHECKMARK" if BACKEND.is_running() else
                                          "DOT") if i == 0 else "BLANK1")
        problem = prefs.backend_problem(context)
        if problem and not BACKEND.is_running():
            for i, line in enumerate(wrap(problem)):
                layout.label(text=line, icon="ERROR" if i == 0 else "BLANK1")
        row = layout.row(align=True)
        row.operator("onet.backend_start", icon="PLAY", text="Start")
        row.operator("onet.backend_stop", icon="PAUSE", text="Stop")
        layout.operator("preferences.addon_show", text="Preferences",
                        icon="PREFERENCES").module = prefs.ADDON


CLASSES = (ONET_PT_reconstruct, ONET_PT_interpolate, ONET_PT_backend)


register, unregister = bpy.utils.register_classes_factory(CLASSES)

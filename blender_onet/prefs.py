"""Add-on preferences: how to reach the backend and the environment it runs in, and the
snapshot of them a connection is made with (``settings_snapshot``)."""

import os

import bpy
from bpy.props import BoolProperty, EnumProperty, StringProperty

from .connection import ConnectionSettings, remote_problem
from .interpreters import resolve_python
from .status import panel

ADDON = __package__


def user_dir():
    """The extension's own writable folder (venv, logs)."""
    return bpy.utils.extension_path_user(ADDON, create=True)


def prefs(context=None):
    return (context or bpy.context).preferences.addons[ADDON].preferences


def settings_snapshot(context=None):
    """A ConnectionSettings from the preferences (main thread)."""
    p = prefs(context)
    folder = user_dir()
    python, source = resolve_python(p.python_path.strip(), folder)
    model_dirs = tuple(os.path.normpath(bpy.path.abspath(p.model_dir))
                       for _ in [0] if p.model_dir.strip())
    return ConnectionSettings(mode=p.backend_mode, python=python, python_source=source,
                              device=p.device.lower(), url=p.url.strip(),
                              token=p.token.strip(), model_dirs=model_dirs, user_dir=folder,
                              online_access=bool(bpy.app.online_access))


def backend_problem(context=None):
    """Why no backend can be used with the current preferences (None when one can)."""
    p = prefs(context)
    if p.backend_mode == "REMOTE":
        return remote_problem(p.url.strip(), bpy.app.online_access)
    python, source = resolve_python(p.python_path.strip(), user_dir())
    if not python:
        return source[:1].upper() + source[1:]
    return None


class ONET_AP_preferences(bpy.types.AddonPreferences):
    bl_idname = ADDON

    backend_mode: EnumProperty(
        name="Backend", default="LOCAL",
        items=[("LOCAL", "Launch Locally", "Start the backend as a child process of Blender"
                " (it stops with Blender)"),
               ("REMOTE", "Connect to URL", "Use a backend already running elsewhere, for"
                " example on a GPU machine")])
    python_path: StringProperty(
        name="Python", subtype="FILE_PATH",
        description="Interpreter that runs the backend (one with PyTorch for a GPU). Empty:"
        " $ONET_BACKEND_PYTHON,"
        " else the installed backend environment, else Blender's own Python (the bundled engine,"
        " CPU; no PyTorch needed)")
    device: EnumProperty(
        name="Device", default="AUTO",
        items=[("AUTO", "Auto", "The GPU when PyTorch sees one, else the CPU"),
               ("CPU", "CPU", "Always the CPU"),
               ("CUDA", "CUDA", "An NVIDIA GPU (fails if PyTorch has no CUDA)")])
    model_dir: StringProperty(
        name="Model Folder", subtype="DIR_PATH",
        description="Extra folder of models (.safetensors with their .json cards) the backend"
        " offers besides the bundled ones")
    url: StringProperty(name="URL", default="http://127.0.0.1:8765",
                        description="Address of a running backend (python -m backend serve)")
    token: StringProperty(name="Token", subtype="PASSWORD",
                          description="The token the remote backend was started with")
    keep_partial: BoolProperty(
        name="Keep Partial Results", default=False,
        description="When a job is cancelled or fails, keep the last level received as"
        " \"<name> ONet (partial)\" instead of removing it")
    torch_variant: EnumProperty(
        name="PyTorch Build", default="cpu",
        items=[("cpu", "CPU", "Small download; works everywhere"),
               ("cu128", "CUDA 12.8", "For NVIDIA GPUs with a recent driver (large download)")])

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        layout.prop(self, "backend_mode")
        if self.backend_mode == "REMOTE":
            layout.prop(self, "url")
            layout.prop(self, "token")
        else:
            layout.prop(self, "python_path")
            python, source = resolve_python(self.python_path.strip(), user_dir())
            box = layout.box()
            col = box.column(align=True)
            if python:
                col.label(text=f"Uses {python}", icon="CHECKMARK")
                col.label(text=f"(from {source})")
            else:
                col.label(text=source, icon="ERROR")
            row = box.row()
            row.operator("onet.check_python", icon="VIEWZOOM")
            if panel.check_running:
                row.label(text="Checking…")
            elif panel.check is not None:
                ok, text = panel.check
                box.label(text=text, icon="CHECKMARK" if ok else "ERROR")
            layout.prop(self, "device")
            layout.prop(self, "model_dir")
            self._draw_install(layout)
        layout.prop(self, "keep_partial")

    def _draw_install(self, layout):
        box = layout.box()
        box.label(text="Optional, for a GPU: a venv with PyTorch in the extension's folder")
        row = box.row()
        row.prop(self, "torch_variant")
        row.operator("onet.install_backend", icon="IMPORT")
        task = panel.install
        if task is not None:
            if task.state == "running":
                box.progress(factor=task.fraction, text=task.step[:70])
            else:
                for line in wrap(task.message, 90):
                    box.label(text=line, icon="CHECKMARK" if task.state == "done" else "ERROR")
            box.label(text=f"Log: {task.log_path}")
        if not bpy.app.online_access:
            box.label(text="Online access is off (Preferences > System): installing needs it",
                      icon="INFO")


def wrap(text, width=48):
    import textwrap

    return textwrap.wrap(text, width) or [""]


CLASSES = (ONET_AP_preferences,)


register, unregister = bpy.utils.register_classes_factory(CLASSES)

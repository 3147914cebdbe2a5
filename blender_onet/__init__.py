"""ONet Reconstruct: closed meshes from point clouds, voxels and images, in Blender.

The networks run in a separate backend process (``python -m backend serve``, bundled in
this extension's ``backend`` folder, launched with Blender's own Python, which runs the
bundled numpy engine, or with one that has PyTorch for a GPU) or on a remote machine; this
add-on only reads the scene, talks HTTP and writes meshes (stdlib + Blender's numpy).
``pump()`` is the main-thread step that applies what arrived: the ``bpy.app.timers`` timer
(``timer_step``, a plain function) calls it in the GUI; scripts and tests call either
directly (timers never fire in module mode).

Modules (docs/design.md, "Blender add-on"): ``bundled`` (the one import of the bundled
backend), ``interpreters`` (which Python runs the backend), ``installer`` (the backend
venv), ``connection`` (launching or reaching the backend), ``jobs`` (streamed requests and
their states), ``interpolation`` (the latent slider), ``crop_preview`` (what the image
model sees), ``status`` (the panel's messages),
``session`` (the main-thread pump), ``scene_input`` and ``numeric`` (reading the input),
``result_mesh`` (writing meshes), ``props``, ``prefs``, ``operators`` and ``ui``.
"""

import bpy
from bpy.app.handlers import persistent

from . import jobs, operators, prefs, props, session, ui
from .connection import BACKEND
from .status import panel

_MODULES = (prefs, props, operators, ui)
BUSY_INTERVAL = 0.05
IDLE_INTERVAL = 0.5


def pump():
    """Apply received frames (main thread). Returns True while work is pending."""
    return session.pump()


def timer_step():
    """The timer's body: one ``pump``; returns the seconds until the next call (the timer
    never dies: an error is shown in the panel and printed)."""
    try:
        busy = session.pump()
    except Exception as exc:  # never let the timer die silently
        panel.show_error(f"Internal error while applying results: {exc}")
        import traceback

        traceback.print_exc()
        busy = False
    return BUSY_INTERVAL if busy else IDLE_INTERVAL


@persistent
def _on_load_pre(*_args):
    """Opening another file: stop the jobs (their objects belong to the old file)."""
    session.cancel_everything("Cancelled: another file was opened.", touch_scene=False)


@persistent
def _on_load_post(*_args):
    """A file was opened: results it saved mid-job are marked interrupted, and the panel
    forgets the previous file's messages."""
    panel.clear_messages()
    jobs.mark_interrupted()


@persistent
def _on_undo_redo(*_args):
    """Undo/redo may bring back a result from mid-job whose job is gone: mark it."""
    jobs.mark_interrupted()


_HANDLERS = (("load_pre", _on_load_pre), ("load_post", _on_load_post),
             ("undo_post", _on_undo_redo), ("redo_post", _on_undo_redo))


def register():
    for module in _MODULES:
        module.register()
    for name, handler in _HANDLERS:
        getattr(bpy.app.handlers, name).append(handler)
    if not bpy.app.timers.is_registered(timer_step):
        bpy.app.timers.register(timer_step, first_interval=IDLE_INTERVAL, persistent=True)


def unregister():
    if bpy.app.timers.is_registered(timer_step):
        bpy.app.timers.unregister(timer_step)
    for name, handler in _HANDLERS:
        if handler in getattr(bpy.app.handlers, name):
            getattr(bpy.app.handlers, name).remove(handler)
    try:
        session.cancel_everything("Cancelled: the add-on was disabled.")
    except Exception:  # restricted context while Blender quits: stopping work is enough
        session.cancel_everything("Cancelled: the add-on was disabled.", touch_scene=False)
    BACKEND.stop()
    for module in reversed(_MODULES):
        module.unregister()

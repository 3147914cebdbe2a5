"""ONet Reconstruct: closed meshes from point clouds, voxels and images, in Blender.

The networks run in a separate backend process (``python -m backend serve``, bundled in
this extension's ``backend`` folder, launched with an interpreter that has PyTorch) or on a
remote machine; this add-on only reads the scene, talks HTTP and writes meshes (stdlib +
Blender's numpy). ``pump()`` is the main-thread step that applies what arrived: a
``bpy.app.timers`` timer calls it in the GUI; scripts and tests call it directly.
"""

import bpy
from bpy.app.handlers import persistent

from . import jobs, operators, prefs, props, ui

_MODULES = (prefs, props, operators, ui)
BUSY_INTERVAL = 0.05
IDLE_INTERVAL = 0.5


def pump():
    """Apply received frames (main thread). Returns True while work is pending."""
    return jobs.pump()


def _timer():
    try:
        busy = jobs.pump()
    except Exception as exc:  # never let the timer die silently
        jobs.Status.last_error = f"Internal error while applying results: {exc}"
        import traceback

        traceback.print_exc()
        busy = False
    return BUSY_INTERVAL if busy else IDLE_INTERVAL


@persistent
def _on_load_pre(*_args):
    """Opening another file: stop the jobs (their objects belong to the old file)."""
    jobs.cancel_all(touch_scene=False)


def register():
    for module in _MODULES:
        module.register()
    bpy.app.handlers.load_pre.append(_on_load_pre)
    if not bpy.app.timers.is_registered(_timer):
        bpy.app.timers.register(_timer, first_interval=IDLE_INTERVAL, persistent=True)


def unregister():
    if bpy.app.timers.is_registered(_timer):
        bpy.app.timers.unregister(_timer)
    if _on_load_pre in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.remove(_on_load_pre)
    try:
        jobs.cancel_all("Cancelled: the add-on was disabled.")
    except Exception:  # restricted context while Blender quits: stopping work is enough
        jobs.cancel_all(touch_scene=False)
    jobs.backend.stop()
    for module in reversed(_MODULES):
        module.unregister()

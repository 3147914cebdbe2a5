"""The main-thread step of the add-on (``pump``: apply received frames, redraw the panels
when what they show changed) and stopping everything at once (``cancel_everything``).

A ``bpy.app.timers`` timer calls ``pump`` in the GUI; scripts and tests call it directly
(the timer never fires in module mode).
"""

import time

import bpy

from . import jobs
from .connection import BACKEND
from .crop_preview import CROP_PREVIEW
from .interpolation import INTERPOLATION
from .status import panel

_seen = [None]  # what the panels showed at the last pump
INTERRUPTED_CHECK_S = 2.0  # how often pump looks for results left working with no job
_checked_at = [0.0]


def pump():
    """Main-thread step: apply received frames. Returns whether work is pending."""
    changed = False
    for job in list(jobs.active):
        if job.kind == "reconstruct":
            changed |= jobs.pump_job(job)
    changed |= INTERPOLATION.pump()
    changed |= CROP_PREVIEW.pump()
    now = time.monotonic()
    if now - _checked_at[0] > INTERRUPTED_CHECK_S:
        _checked_at[0] = now
        changed |= bool(jobs.mark_interrupted())
    install = panel.install
    seen = (BACKEND.generation, BACKEND.state, panel.check, panel.check_running,
            install and (install.state, round(install.fraction, 3), install.step),
            panel.last_error, panel.last_result, panel.generation)
    if seen != _seen[0]:  # something the panels show changed
        _seen[0] = seen
        changed = True
    if changed:
        redraw()
    return (bool(jobs.active) or INTERPOLATION.busy() or CROP_PREVIEW.busy()
            or BACKEND.state == "starting"
            or panel.install_running() or panel.check_running)


def cancel_everything(message="Cancelled; the scene is as it was.", touch_scene=True):
    """Cancel every job and forget the interpolation set-up (``touch_scene=False``: the
    file is being replaced, so only the work stops)."""
    jobs.cancel_all(message, touch_scene=touch_scene)
    INTERPOLATION.reset(touch_scene=touch_scene)


def redraw():
    """Tag the 3D Views and the preferences for redrawing; returns how many areas."""
    tagged = 0
    wm = bpy.context.window_manager
    for window in getattr(wm, "windows", ()):
        for area in window.screen.areas:
            if area.type in {"VIEW_3D", "PREFERENCES"}:
                area.tag_redraw()
                tagged += 1
    return tagged

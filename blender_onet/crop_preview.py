"""Preview Crop: the picture the image model will see of the chosen image, from the backend
(``POST /v1/image_view``: the object cut out by its alpha, its mask or a foreground
estimate, centred and scaled as in training, on white), shown in the panel.

The request runs on a worker thread (the backend may have to start); ``pump`` moves a
finished answer into the image datablock ``PREVIEW_IMAGE`` on the main thread. Only that
datablock, which the add-on owns, is ever written.
"""

import logging
import threading

import bpy
import numpy as np

from . import prefs, scene_input
from .connection import BACKEND, plain_error
from .numeric import InputError

logger = logging.getLogger(__name__)

PREVIEW_IMAGE = "ONet Model View"


class CropPreview:
    """The one preview request in flight (or its answer), and what the panel says of it."""

    def __init__(self):
        self.thread = None
        self.answer = None  # dict from Client.image_view, until pump applies it
        self.error = ""
        self.error_new = False  # an error the panel has not been redrawn for
        self.text = ""  # the shown preview's caption ("" before the first)

    def busy(self):
        return self.thread is not None

    @staticmethod
    def problem(context):
        """Why the current input cannot be previewed (None when it can)."""
        description = scene_input.describe(context, context.scene.onet)
        if description.problem:
            return description.problem
        if description.kind != "image":
            return ("Preview Crop needs an image input (an image, an image file or an image"
                    " empty)")
        return None

    def start(self, context):
        """Read the image input and ask the backend for its model view. Raises InputError
        (plain words) when the input is not an image or the backend cannot be used."""
        settings = context.scene.onet
        problem = self.problem(context) or prefs.backend_problem(context)
        if problem:
            raise InputError(problem)
        data = scene_input.read(context, settings)
        snapshot = prefs.settings_snapshot(context)
        self.error, self.answer = "", None

        def run():
            try:
                client = BACKEND.ensure(snapshot)
                self.answer = client.image_view(**data.wire_arrays())
            except Exception as exc:  # shown in the panel, in plain words
                self.error, self.error_new = plain_error(exc, snapshot), True
            finally:
                self.thread = None

        self.thread = threading.Thread(target=run, name="onet-crop-preview", daemon=True)
        self.thread.start()

    def wait(self, timeout=60.0):
        """Block until the request in flight ends (tests and scripts)."""
        thread = self.thread
        if thread is not None:
            thread.join(timeout)

    def pump(self):
        """Apply a finished answer (main thread). True when the panel should redraw."""
        answer, self.answer = self.answer, None
        if answer is None:
            fresh, self.error_new = self.error_new, False
            return fresh
        show(answer["rgb"])
        how = {"alpha": "cut out by its alpha / mask", "estimated":
               "cut out from its plain background (estimated)",
               "none": "whole frame (no cut-out found)"}[answer["mask_source"]]
        self.text = "; ".join([f"What the model sees: {how}", *answer["notes"]])
        return True


def show(rgb):
    """Write (H, W, 3) uint8 rows top to bottom into the ``PREVIEW_IMAGE`` datablock
    (created, or resized when its size differs); returns it."""
    height, width = rgb.shape[:2]
    image = bpy.data.images.get(PREVIEW_IMAGE)
    if image is not None and tuple(image.size) != (width, height):
        bpy.data.images.remove(image)
        image = None
    if image is None:
        image = bpy.data.images.new(PREVIEW_IMAGE, width, height, alpha=False)
    pixels = np.ones((height, width, 4), np.float32)
    pixels[..., :3] = rgb[::-1].astype(np.float32) / 255.0  # Blender stores rows bottom up
    image.pixels.foreach_set(pixels.ravel())
    image.update()
    image.preview_ensure()
    return image


def model_view_pixels():
    """(H, W, 3) uint8 rows top to bottom of the shown preview, or None (tests)."""
    image = bpy.data.images.get(PREVIEW_IMAGE)
    if image is None:
        return None
    width, height = image.size
    pixels = np.empty(width * height * 4, np.float32)
    image.pixels.foreach_get(pixels)
    rgb = pixels.reshape(height, width, 4)[::-1, :, :3]
    return np.round(rgb * 255).astype(np.uint8)


CROP_PREVIEW = CropPreview()

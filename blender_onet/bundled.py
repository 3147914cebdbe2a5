"""The bundled backend package (``./backend``), imported here and nowhere else.

Only the modules that need no torch are imported: the wire client and frame format
(``backend.service.client``/``protocol``: stdlib + numpy) and the input kinds' names
(``backend.io.inputs``: numpy at module level). The add-on takes these names from the
backend instead of keeping copies (docs/design.md, "Blender add-on").
"""

import os

from .backend.io.inputs import KIND_NAMES
from .backend.service import client as wire
from .backend.service import protocol

BACKEND_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "backend")
ADDON_DIR = os.path.dirname(BACKEND_DIR)  # the working directory of a launched backend

__all__ = ("ADDON_DIR", "BACKEND_DIR", "KIND_NAMES", "protocol", "wire")

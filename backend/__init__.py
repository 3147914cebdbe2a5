"""ONet Reconstruct inference backend: engine, models, file I/O, CLI and the local server.

Heavy dependencies (torch, trimesh, PyMCubes) are imported lazily inside the modules that
need them, so argument errors and the wire protocol work without them.
"""

__version__ = "0.1.0"

"""Per-scene settings of the ONet panel (``scene.onet``) and the wire options they make.

Each option keeps one name from the property to the wire and the CLI flag
(``resolution0``, ``upsampling_steps``, ``threshold``, ``tile_size``, ``fill_cavities``,
``smooth_steps``, ``drop_floaters``, ``fit_steps``, ``rotations``; docs/design.md, "One
request"): ``mise_of``, ``output_of`` and ``tiling_of`` build the request's ``mise``,
``output`` and ``tiling`` objects; ``fit_steps`` and ``rotations`` are sent at the header's top
level.
"""

import bpy
from bpy.props import (BoolProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty,
                       StringProperty)

from . import scene_input
from .bundled import KIND_NAMES
from .connection import BACKEND
from .interpolation import INTERPOLATION
from .numeric import FEW_POINTS

PRESETS = {"PREVIEW": (16, 1), "STANDARD": (32, 2), "HIGH": (32, 3)}
DEFAULT_MODEL = "__default__"
_model_items = []  # Blender needs Python to keep the enum strings alive


def model_items(self, context):
    """Models from the backend that fit the input kind (+ analytic shapes when asked)."""
    description = scene_input.describe(context or bpy.context, self)
    kind = description.kind
    by_size = ", chosen by the cloud's size" if kind == "pointcloud" else ""
    items = [(DEFAULT_MODEL, "Default", "The backend's default model for "
              + KIND_NAMES.get(kind, "this input") + by_size, 0)]
    for model in BACKEND.models:
        fits = model.get("input_kind") == kind and kind is not None
        test = model.get("input_kind") is None and self.show_test_shapes
        if fits or test:
            card = model.get("card") or {}
            text = card.get("description") or card.get("provenance") or model["name"]
            items.append((model["name"], model["name"], str(text), len(items)))
    if self.model_name and all(item[0] != self.model_name for item in items):
        items.append((self.model_name, f"{self.model_name} (not listed)",
                      "Not offered by the running backend for this input", len(items)))
    _model_items[:] = items
    return _model_items


def _get_model(self):
    items = model_items(self, bpy.context)
    for item in items:
        if item[0] == (self.model_name or DEFAULT_MODEL):
            return item[3]
    return 0


def _set_model(self, value):
    for item in _model_items or model_items(self, bpy.context):
        if item[3] == value:
            self.model_name = "" if item[0] == DEFAULT_MODEL else item[0]
            return


_syncing = []


def _preset_update(self, context):
    if self.preset in PRESETS and not _syncing:
        _syncing.append(True)
        try:
            self.resolution0, self.upsampling_steps = PRESETS[self.preset]
        finally:
            _syncing.pop()


def _numbers_update(self, context):
    if _syncing:
        return
    match = next((name for name, numbers in PRESETS.items()
                  if numbers == (self.resolution0, self.upsampling_steps)), "CUSTOM")
    if self.preset != match:
        _syncing.append(True)
        try:
            self.preset = match
        finally:
            _syncing.pop()


def _t_update(self, context):
    if INTERPOLATION.ready():
        INTERPOLATION.mise, INTERPOLATION.output = mise_of(self), output_of(self)
        INTERPOLATION.request(self.interp_t, preview=True)


def mise_of(settings):
    """The wire's ``mise`` (threshold None: the model's own)."""
    return {"resolution0": settings.resolution0, "upsampling_steps": settings.upsampling_steps,
            "threshold": settings.threshold if settings.threshold > 0 else None}


def output_of(settings):
    """The wire's ``output`` (the options the panel sets; the backend's defaults for the
    rest)."""
    return {"fill_cavities": settings.fill_cavities, "drop_floaters": settings.drop_floaters,
            "smooth_steps": settings.smooth_steps if settings.smooth_steps >= 0 else None}


def tiling_of(settings):
    """The wire's ``tiling`` (None: the input is one object)."""
    return {"tile_size": settings.tile_size} if settings.tile_size > 0 else None


def chosen_model(settings, kind):
    """The connected backend's listing of the chosen model (or of the default one for
    ``kind``): {name, threshold, card, ...}; None when not known."""
    for model in BACKEND.models:
        if (model["name"] == settings.model_name if settings.model_name
                else kind in model.get("default_for", ())):
            return model
    return None


def model_threshold(settings, kind):
    """The threshold the chosen model uses when the panel's is 0; None when not known."""
    model = chosen_model(settings, kind)
    return None if model is None else model.get("threshold")


def model_own(settings, kind, option, off):
    """What the chosen model's card asks for ``option`` (``smooth_steps`` when the panel's
    is -1, ``rotations`` when it is 0); ``off`` when the card names none, None when the model
    is not known."""
    model = chosen_model(settings, kind)
    return None if model is None else (model.get("card") or {}).get(option, off)


class ONET_PG_scene(bpy.types.PropertyGroup):
    source: EnumProperty(
        name="Input", description="What to reconstruct from",
        items=[("OBJECT", "Active Object", "The active object: a mesh (its vertices, points on"
                " its faces or its voxels), a point cloud, a volume or an image empty"),
               ("IMAGE", "Image", "An image datablock of this file; the result goes to the 3D"
                " cursor"),
               ("FILE", "Image File", "An image file on disk; the result goes to the 3D"
                " cursor")])
    image: PointerProperty(name="Image", type=bpy.types.Image,
                           description="Reference image to reconstruct from")
    image_path: StringProperty(name="Image File", subtype="FILE_PATH",
                               description="PNG or JPEG (or any format Blender reads)")
    mask_image: PointerProperty(name="Mask", type=bpy.types.Image,
                                description="Optional mask: white (or opaque) is the object."
                                " Without it the image's alpha is used")
    mesh_mode: EnumProperty(
        name="Mesh As", description="How a mesh object is turned into a network input",
        items=[("AUTO", "Auto", "Voxels for meshes built from cubes (voxel art), points on the"
                f" faces for meshes with under {FEW_POINTS} vertices, else the vertices"),
               ("VERTICES", "Vertices", "The mesh's vertices as a point cloud"),
               ("SURFACE", "Surface Points", "Points sampled evenly on the faces (for meshes"
                " whose vertices are sparse or uneven)"),
               ("VOXELS", "Voxels", "Voxelise the mesh at 32³ in its bounding cube (surface"
                " and interior) for voxel models")])
    surface_points: IntProperty(name="Points", default=10000, min=100, max=1_000_000,
                                description="How many points to sample on the faces")
    model_name: StringProperty(name="Model Name", description="Chosen model ('' = default)")
    model: EnumProperty(name="Model", items=model_items, get=_get_model, set=_set_model,
                        description="Network that reconstructs the shape (only models for"
                        " this kind of input are listed)")
    show_test_shapes: BoolProperty(
        name="Show Test Shapes", default=False,
        description="List the analytic test models (closed-form shapes that ignore the input;"
        " for checking the pipeline without trained weights)")
    preset: EnumProperty(
        name="Resolution", default="STANDARD", update=_preset_update,
        description="Multi-resolution isosurface extraction (MISE): start grid → final grid",
        items=[("PREVIEW", "Preview (16 → 32)", "Fast, coarse"),
               ("STANDARD", "Standard (32 → 128)", "The paper's setting"),
               ("HIGH", "High (32 → 256)", "Fine detail, about 4x slower than standard"),
               ("CUSTOM", "Custom", "Numbers set under Advanced")])
    resolution0: IntProperty(name="Start Grid", default=32, min=4, max=128,
                             update=_numbers_update,
                             description="MISE start resolution (cells per edge)")
    upsampling_steps: IntProperty(name="Refinements", default=2, min=0, max=4,
                                  update=_numbers_update,
                                  description="Times MISE halves the cells near the surface"
                                  " (final grid = start × 2^refinements)")
    threshold: FloatProperty(name="Threshold", default=0.0, min=0.0, max=0.99,
                             description="Occupancy probability of the surface (0: the chosen"
                             " model's own, from its card)")
    tile_size: FloatProperty(
        name="Tile Size", default=0.0, min=0.0, soft_max=100.0, subtype="DISTANCE",
        description="0: the input is one object. Above 0: a large scan (a room, a street) is"
        " reconstructed tile by tile; this is the size (in the object's own units) that the"
        " model sees as one object. Needs a ConvONet model")
    fit_steps: IntProperty(
        name="Fit to Points", default=0, min=0, soft_max=100,
        description="Point clouds: optimisation steps fitting the model's shape code to the"
        " input points before meshing, so the surface follows the scan closely (about 30; a"
        " few seconds). 0: the model's prediction as it is")
    rotations: IntProperty(
        name="Rotations", default=0, min=0, soft_max=8, max=16,
        description="Point clouds and voxels: average the surface over the input and this"
        " many - 1 rotated copies of it (about 4, for models trained on rotated shapes like"
        " the defaults): smoother and closer to the input, that many times the time. 0: the"
        " model's own (from its card); 1: off")
    fill_cavities: BoolProperty(
        name="Fill Enclosed Cavities", default=True,
        description="Make cavities sealed inside the shape solid: no scan sees them, so they"
        " are the network's guess. Off: keep the raw surface")
    smooth_steps: IntProperty(
        name="Smoothing", default=-1, min=-1, soft_max=20, max=100,
        description="Taubin smoothing of the final mesh, in shrink-inflate steps: it takes"
        " out the marching-cubes ripples without shrinking the shape. -1: the model's own"
        " (from its card); 0: the raw surface")
    drop_floaters: BoolProperty(
        name="Drop Floaters", default=True,
        description="Point clouds: remove pieces of the result that no input point is near"
        " (blobs the model guessed where it saw nothing). Off: keep every piece")
    show_advanced: BoolProperty(name="Advanced", default=False)
    seed: IntProperty(name="Seed", default=0, min=0,
                      description="New Shape draws the shape of this seed from the"
                      " generative model's prior: the same seed gives the same shape")
    interp_t: FloatProperty(name="Blend", default=0.0, min=0.0, max=1.0, subtype="FACTOR",
                            update=_t_update,
                            description="0 = shape A, 1 = shape B; the preview follows the"
                            " slider at low resolution and refines when it rests")


CLASSES = (ONET_PG_scene,)


def register():
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.onet = PointerProperty(type=ONET_PG_scene)


def unregister():
    del bpy.types.Scene.onet
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)

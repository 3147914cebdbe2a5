"""What the user wants reconstructed, read from the scene (main thread only).

``describe`` is cheap (counts only) and drives the panel and the operators' poll messages;
``read`` gathers the arrays that go to the backend. Everything is read in the object's local
coordinates; the result is placed with the source's ``matrix_world`` (docs/design.md,
"Coordinates"). Point clouds are sent whole: the backend subsamples them to its model's
input size itself, and refuses more than its ``max_points`` limit, which is read from the
connected backend's /v1/health.
"""

import os
from dataclasses import dataclass, field

import bpy
import numpy as np
from mathutils import Matrix

from . import interpreters, numeric, prefs
from .connection import BACKEND
from .numeric import InputError

MESH_LIKE = {"MESH", "CURVE", "SURFACE", "FONT", "META"}
POINT_LIKE = {"POINTCLOUD": "point cloud", "CURVES": "hair curves"}  # read "position"
IMAGE_FILE_TYPES = (".png", ".jpg", ".jpeg")
VOLUME_MAX_VOXELS = 300 ** 3
TYPE_NAMES = {"CAMERA": "a camera", "LIGHT": "a light", "ARMATURE": "an armature",
              "LATTICE": "a lattice", "EMPTY": "an empty", "SPEAKER": "a speaker",
              "LIGHT_PROBE": "a light probe", "GPENCIL": "a grease pencil object",
              "GREASEPENCIL": "a grease pencil object"}


@dataclass
class Description:
    """What the panel shows about the input: ``problem`` is set when it cannot be used."""

    kind: str = None  # pointcloud | voxels | image
    text: str = ""
    problem: str = None
    source: str = ""


@dataclass
class SceneInput:
    """An input ready to send: ``arrays`` are keyword arguments of Client.reconstruct."""

    kind: str
    arrays: dict
    source: str
    label: str
    matrix: Matrix
    collection: str = ""
    notes: list = field(default_factory=list)


def _mesh_mode(settings, ob):
    mode = settings.mesh_mode
    if mode != "AUTO":
        return mode
    data = ob.data if ob.type == "MESH" else None
    if data is not None and len(data.polygons) == 0:
        return "VERTICES"
    if data is not None and _looks_like_voxels(ob):
        return "VOXELS"
    return "VERTICES"


_voxel_cache = {}


def _looks_like_voxels(ob):
    data = ob.data
    key = (ob.name, data.name, len(data.vertices), len(data.polygons), data.is_editmode)
    if key not in _voxel_cache:
        vertices = np.empty(len(data.vertices) * 3, np.float32)
        data.vertices.foreach_get("co", vertices)
        data.calc_loop_triangles()
        triangles = np.empty(len(data.loop_triangles) * 3, np.int32)
        data.loop_triangles.foreach_get("vertices", triangles)
        if len(_voxel_cache) > 64:
            _voxel_cache.clear()
        _voxel_cache[key] = numeric.looks_like_voxels(vertices.reshape(-1, 3), triangles)
    return _voxel_cache[key]


def image_of(settings, context):
    """(image datablock or None, file path or "", placing object or None) of an image input."""
    ob = context.active_object if settings.source == "OBJECT" else None
    if ob is not None and ob.type == "EMPTY" and ob.empty_display_type == "IMAGE":
        return ob.data, "", ob
    if settings.source == "IMAGE":
        return settings.image, "", None
    if settings.source == "FILE":
        return None, bpy.path.abspath(settings.image_path) if settings.image_path else "", None
    return None, "", None


def describe(context, settings):
    """A Description of the input the Reconstruct button would use (cheap)."""
    if settings.source != "OBJECT":
        image, path, _ = image_of(settings, context)
        if settings.source == "IMAGE" and image is None:
            return Description(problem="Choose an image in the ONet panel")
        if settings.source == "FILE":
            if not path:
                return Description(problem="Choose an image file in the ONet panel")
            if not os.path.isfile(path):
                return Description(problem=f"The image file {path} does not exist")
            return Description("image", f"Image file {os.path.basename(path)} → image model",
                               source=os.path.basename(path))
        return Description("image", _image_text(image, settings), source=image.name)
    ob = context.active_object
    if ob is None:
        return Description(problem="Select an object to reconstruct (a mesh, point cloud,"
                                   " voxel mesh, volume or image empty)")
    if ob.type == "EMPTY":
        if ob.empty_display_type == "IMAGE":
            if ob.data is None:
                return Description(problem=f"The image empty {ob.name!r} has no image")
            return Description("image", _image_text(ob.data, settings), source=ob.name)
        return Description(problem=f"{ob.name!r} is an empty without an image; select a mesh,"
                                   " point cloud, volume or image empty")
    if ob.type in POINT_LIKE:
        what = POINT_LIKE[ob.type]
        position = ob.data.attributes.get("position")
        count = len(position.data) if position is not None else 0
        if not count:
            return Description(problem=f"The {what} {ob.name!r} has no points")
        problem = too_many_points(count, f"The {what} {ob.name!r}")
        if problem:
            return Description(problem=problem)
        return Description("pointcloud", f"{what[:1].upper()}{what[1:]}: {count:,} points →"
                           f" {_sent(count)}", source=ob.name)
    if ob.type == "VOLUME":
        return Description("voxels", "Volume → 32³ occupancy grid", source=ob.name)
    if ob.type in MESH_LIKE:
        if ob.type == "MESH":
            count, faces = len(ob.data.vertices), len(ob.data.polygons)
            if not count and not ob.modifiers:
                return Description(problem=f"The mesh {ob.name!r} has no vertices")
        else:
            count, faces = None, None
        what = "Mesh" if ob.type == "MESH" else ob.type.title()
        extra = " (with modifiers)" if ob.type == "MESH" and ob.modifiers else ""
        mode = _mesh_mode(settings, ob)
        if mode == "VOXELS":
            verts = f"{count:,} vertices" if count is not None else "its surface"
            return Description("voxels", f"Voxel {what.lower()}: {verts}{extra} → 32³"
                               " occupancy grid", source=ob.name)
        if mode == "SURFACE":
            if faces == 0 and not extra:
                return Description(problem=f"The mesh {ob.name!r} has no faces to sample;"
                                           " use its vertices")
            n = settings.surface_points
            problem = too_many_points(n, "Surface Points")
            if problem:
                return Description(problem=problem)
            faces_text = f"{faces:,} faces" if faces is not None else "surface"
            return Description("pointcloud", f"{what}: {faces_text}{extra} →"
                               f" {_sent(n)} sampled on the faces", source=ob.name)
        if count is None:
            return Description("pointcloud", f"{what}: vertices of its mesh → points",
                               source=ob.name)
        problem = too_many_points(count, f"The mesh {ob.name!r}")
        if problem:
            return Description(problem=problem)
        return Description("pointcloud", f"{what}: {count:,} vertices{extra} → {_sent(count)}",
                           source=ob.name)
    name = TYPE_NAMES.get(ob.type, f"a {ob.type.lower()} object")
    return Description(problem=f"{ob.name!r} is {name}, which cannot be reconstructed; select"
                               " a mesh, point cloud, voxel mesh, volume or image empty")


def _sent(count):
    """What is sent: every point (the backend subsamples to its model's input size)."""
    return f"{count:,} points"


def too_many_points(count, subject):
    """Why ``count`` points cannot be sent (over the connected backend's ``max_points``),
    or None (also while no backend is connected: then the backend checks on arrival)."""
    limit = BACKEND.limit("max_points")
    if limit is None or count <= limit:
        return None
    return (f"{subject} has {count:,} points, more than the backend accepts ({limit:,}, its"
            " --max-points): use fewer points (Surface Points, or decimate the mesh) or start"
            " the backend with a higher --max-points")


def _image_text(image, settings):
    width, height = image.size[:]
    size = f" {width}×{height}" if width else ""
    mask = (f", mask {settings.mask_image.name!r}" if settings.mask_image is not None
            else ", alpha as mask")
    return f"Image {image.name!r}{size}{mask} → image model"


# -- reading -------------------------------------------------------------------------------
def read(context, settings):
    """A SceneInput for the current input; raises InputError in plain words."""
    description = describe(context, settings)
    if description.problem:
        raise InputError(description.problem)
    if description.kind == "image":
        return _read_image(context, settings, description)
    ob = context.active_object
    collection = ob.users_collection[0].name if ob.users_collection else ""
    matrix = ob.matrix_world.copy()
    if ob.type in POINT_LIKE:
        data = ob.evaluated_get(context.evaluated_depsgraph_get()).data
        position = data.attributes.get("position")
        if position is None:
            raise InputError(f"The {POINT_LIKE[ob.type]} {ob.name!r} has no positions")
        buffer = np.empty(len(position.data) * 3, np.float32)
        position.data.foreach_get("vector", buffer)
        points = numeric.finite_points(buffer, f"The {POINT_LIKE[ob.type]} {ob.name!r}")
        _check_count(points, f"The {POINT_LIKE[ob.type]} {ob.name!r}")
        return SceneInput("pointcloud", {"points": points}, ob.name, description.text, matrix,
                          collection)
    if ob.type == "VOLUME":
        occupancy, translate, edge = _read_volume(ob)
        return SceneInput("voxels", {"voxels": occupancy, "voxel_frame": {
            "translate": [float(v) for v in translate], "scale": edge}}, ob.name,
            description.text, matrix, collection)
    vertices, triangles = _evaluated_mesh(context, ob)
    what = f"The {'mesh' if ob.type == 'MESH' else ob.type.lower()} {ob.name!r}"
    if not len(vertices):
        raise InputError(f"{what} has no vertices")
    mode = _mesh_mode(settings, ob)
    if mode == "VOXELS":
        numeric.finite_points(vertices, what)
        occupancy, translate, edge = numeric.voxelize(vertices, triangles)
        return SceneInput("voxels", {"voxels": occupancy, "voxel_frame": {
            "translate": [float(v) for v in translate], "scale": edge}}, ob.name,
            description.text, matrix, collection)
    if mode == "SURFACE":
        numeric.finite_points(vertices, what)
        points = numeric.sample_surface(vertices, triangles, settings.surface_points)
    else:
        points = vertices
    points = numeric.finite_points(points, what)
    _check_count(points, what)
    return SceneInput("pointcloud", {"points": points}, ob.name, description.text, matrix,
                      collection)


def _check_count(points, what):
    """InputError when the points read (modifiers may add some) are over the limit."""
    problem = too_many_points(len(points), what)
    if problem:
        raise InputError(problem)


def _evaluated_mesh(context, ob):
    """Vertices (V, 3) float32 and triangles (T, 3) int32 of the object as displayed."""
    evaluated = ob.evaluated_get(context.evaluated_depsgraph_get())
    try:
        mesh = evaluated.to_mesh()
    except RuntimeError as exc:
        raise InputError(f"{ob.name!r} cannot be turned into a mesh: {exc}") from None
    try:
        if mesh is None:
            return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32)
        vertices = np.empty(len(mesh.vertices) * 3, np.float32)
        mesh.vertices.foreach_get("co", vertices)
        mesh.calc_loop_triangles()
        triangles = np.empty(len(mesh.loop_triangles) * 3, np.int32)
        mesh.loop_triangles.foreach_get("vertices", triangles)
    finally:
        evaluated.to_mesh_clear()
    return vertices.reshape(-1, 3), triangles.reshape(-1, 3)


def _read_volume(ob):
    """A Volume object's first grid (density, or a level set's inside) -> 32^3 occupancy."""
    expose = getattr(bpy.utils, "expose_bundled_modules", None)
    if expose is None:
        raise InputError(f"Blender {bpy.app.version_string} gives add-ons no access to volume"
                         " voxels (5.0 or newer does); convert the volume to a mesh (Volume"
                         " to Mesh modifier, then apply it) and reconstruct that")
    expose()
    try:
        import openvdb
    except ImportError:
        raise InputError("this Blender build has no OpenVDB Python module, so volume voxels"
                         " cannot be read; convert the volume to a mesh (Volume to Mesh"
                         " modifier) and reconstruct that") from None
    volume = ob.data
    if volume.packed_file is not None:
        raise InputError(f"the volume {volume.name!r} is packed into the .blend file; unpack"
                         " it (File > External Data > Unpack) so it can be read")
    path = bpy.path.abspath(volume.filepath, library=volume.library)
    if not os.path.isfile(path):
        raise InputError(f"the volume file {path} does not exist (generated volumes, such as"
                         " Mesh to Volume results, are not readable: apply them to a mesh)")
    try:
        grids, _ = openvdb.readAll(path)
    except Exception as exc:  # openvdb raises its own types
        raise InputError(f"cannot read the volume file {path}: {exc}") from None
    grids = [g for g in grids if hasattr(g, "copyToArray")]
    if not grids:
        raise InputError(f"the volume file {path} has no scalar grid")
    grid = next((g for g in grids if g.name == "density"), grids[0])
    lo, hi = grid.evalActiveVoxelBoundingBox()
    shape = tuple(int(h - l + 1) for l, h in zip(lo, hi))
    if min(shape) <= 0 or grid.activeVoxelCount() == 0:
        raise InputError(f"the volume {volume.name!r} has no active voxels")
    if shape[0] * shape[1] * shape[2] > VOLUME_MAX_VOXELS:
        raise InputError(f"the volume grid {grid.name!r} is {shape[0]}×{shape[1]}×{shape[2]}"
                         " voxels, too large to read here; resample it coarser first")
    dense = np.zeros(shape, dtype=np.float32)
    grid.copyToArray(dense, ijk=tuple(int(v) for v in lo))
    level_set = str(getattr(grid, "gridClass", "")).lower().replace("_", " ") == "level set"
    if level_set:
        occupied = dense < 0
    else:
        occupied = dense > max(1e-6, 1e-3 * float(dense.max()))
    index = np.argwhere(occupied).astype(np.float64) + np.asarray(lo, np.float64)
    if not len(index):
        raise InputError(f"the volume {volume.name!r} has no voxels with density")
    origin = np.asarray(grid.transform.indexToWorld((0, 0, 0)), np.float64)
    axes = np.array([np.asarray(grid.transform.indexToWorld(tuple(e)), np.float64) - origin
                     for e in np.eye(3)])
    centres = origin + index @ axes
    voxel_size = float(np.linalg.norm(axes, axis=1).max())
    return numeric.occupancy_points_to_grid(centres, voxel_size)


def _image_pixels(image):
    """(H, W, 4) uint8 rows top to bottom of an Image datablock."""
    if image.source == "FILE" and not image.has_data:
        image.pixels[0:1]  # loads the file (reading one value is enough)
    width, height = image.size[:]
    if not width or not height:
        raise InputError(f"the image {image.name!r} has no pixels (is its file missing?)")
    channels = image.channels
    buffer = np.empty(width * height * channels, np.float32)
    image.pixels.foreach_get(buffer)
    return numeric.pixels_to_rgba8(buffer, width, height, channels)


def _read_image(context, settings, description):
    image, path, empty = image_of(settings, context)
    arrays, temporary = {}, None
    try:
        if image is None:
            if (path.lower().endswith(IMAGE_FILE_TYPES) and settings.mask_image is None
                    and interpreters.decodes_image_files(prefs.settings_snapshot(context))):
                with open(path, "rb") as handle:
                    arrays["image_file"] = handle.read()
            else:  # other formats (and masks, which need the size): read with Blender
                temporary = bpy.data.images.load(path, check_existing=False)
                image = temporary
        if image is not None:
            rgba = _image_pixels(image)
            if settings.mask_image is not None:
                mask = _image_pixels(settings.mask_image)
                arrays["mask"] = numeric.mask_from_rgba(mask, rgba.shape[:2])
            arrays["image"] = rgba
    except OSError as exc:
        raise InputError(f"cannot read the image file {path}: {exc.strerror or exc}") from None
    except RuntimeError as exc:  # bpy.data.images.load on unreadable files
        raise InputError(f"cannot read the image {path}: {exc}") from None
    finally:
        if temporary is not None:
            bpy.data.images.remove(temporary)
    if empty is not None:
        # In front of the image (its +Z side), scaled to the image's displayed size; the
        # unit cube's +y (up in the training renders) follows the image's up.
        size = empty.empty_display_size
        matrix = (empty.matrix_world @ Matrix.Translation((0.0, 0.0, 0.6 * size))
                  @ Matrix.Scale(size, 4))
        collection = empty.users_collection[0].name if empty.users_collection else ""
        source = empty.name
    else:
        # At the 3D cursor, y-up (the training renders) turned into Blender's z-up.
        matrix = context.scene.cursor.matrix @ Matrix.Rotation(np.pi / 2, 4, "X")
        collection, source = "", description.source
    return SceneInput("image", arrays, source, description.text, matrix, collection)

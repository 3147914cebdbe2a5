"""What the user wants reconstructed, read from the scene (main thread only).

``describe`` is cheap (counts and a cached check of the points) and drives the panel and
the operators' poll messages; ``read`` gathers the arrays that go to the backend. Meshes are
read as displayed (modifiers, Edit Mode) through fast attribute access; sampling or
voxelising a mesh of more than MAIN_THREAD_FACES faces runs on the job's thread
(``SceneInput.wire_arrays``), so Blender does not freeze. Everything is read in the object's
local coordinates; the result is placed with the source's ``matrix_world`` (docs/design.md,
"Coordinates"). Point clouds are sent whole: the backend subsamples them to its model's
input size itself, and refuses more than its ``max_points`` limit, which is read from the
connected backend's /v1/health.
"""

import contextlib
import os
import threading
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
MAIN_THREAD_FACES = 200_000  # larger meshes are sampled / voxelised on the job's thread
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
    warning: str = None  # it can be used, but the result will disappoint (and what to do)


@dataclass
class SceneInput:
    """An input ready to send: ``arrays`` are keyword arguments of Client.reconstruct."""

    kind: str
    arrays: dict
    source: str
    label: str
    matrix: Matrix
    collection: str = ""
    prepare: object = None  # callable -> arrays: the heavy part, run once by wire_arrays
    _lock: object = field(default_factory=threading.Lock, repr=False, compare=False)

    def wire_arrays(self):
        """The arrays to send; runs ``prepare`` (seconds for millions of faces) the first
        time, on the calling (job) thread. Raises InputError in plain words."""
        with self._lock:
            if self.prepare is not None:
                self.arrays, self.prepare = self.prepare(), None
            return self.arrays


@dataclass
class Facts:
    """What ``describe`` needs of an object's points as displayed (cached per state)."""

    points: int
    faces: int = 0
    voxels: bool = False  # a mesh built from cubes on one lattice (voxel art)
    problem: str = None  # numeric.points_report's, ignoring the count
    warning: str = None


def mesh_positions(data):
    """Positions (N, 3) float32 of a Mesh, PointCloud or Curves datablock (fast path)."""
    position = data.attributes.get("position")
    count = len(position.data) if position is not None else len(data.vertices)
    buffer = np.empty(count * 3, np.float32)
    if position is not None and position.data_type == "FLOAT_VECTOR":
        position.data.foreach_get("vector", buffer)
    else:
        data.vertices.foreach_get("co", buffer)
    return buffer.reshape(-1, 3)


def mesh_polygons(mesh):
    """(corner vertices (L,) int32, polygon starts (P,) int32, or None when every polygon
    is a triangle) of a Mesh, for ``numeric.fan_triangles`` (``loop_triangles`` is many
    times slower for millions of faces)."""
    corner = mesh.attributes.get(".corner_vert")
    corners = np.empty(len(mesh.loops), np.int32)
    if corner is not None:
        corner.data.foreach_get("value", corners)
    else:
        mesh.loops.foreach_get("vertex_index", corners)
    if len(corners) == 3 * len(mesh.polygons):  # every polygon has 3+ corners: triangles
        return corners, None
    starts = np.empty(len(mesh.polygons), np.int32)
    mesh.polygons.foreach_get("loop_start", starts)
    return corners, starts


def mesh_triangles(mesh):
    """Triangles (T, 3) int32 of a Mesh (each polygon a fan)."""
    return numeric.fan_triangles(*mesh_polygons(mesh))


def _mesh_mode(settings, facts):
    """The Mesh As mode to use; Auto: voxels for voxel art, points on the faces for meshes
    with fewer than FEW_POINTS vertices (the default cube), else the vertices."""
    mode = settings.mesh_mode
    if mode != "AUTO":
        return mode
    if facts is None or not facts.faces:
        return "VERTICES"
    if facts.voxels:
        return "VOXELS"
    if facts.points < numeric.FEW_POINTS:
        return "SURFACE"
    return "VERTICES"


_facts_cache = {}


@contextlib.contextmanager
def displayed_data(context, ob):
    """The object's data as displayed: the evaluated Mesh (modifiers applied), PointCloud or
    Curves. In Edit Mode without modifiers the evaluated mesh only wraps the edit mesh (no
    vertices through Python), so a converted copy is used (``to_mesh``, freed after)."""
    evaluated = ob.evaluated_get(context.evaluated_depsgraph_get())
    data = evaluated.data
    if not (ob.type == "MESH" and ob.data.is_editmode and not len(data.vertices)):
        yield evaluated, data
        return
    try:
        yield evaluated, evaluated.to_mesh()
    finally:
        evaluated.to_mesh_clear()


def facts_of(context, ob):
    """Facts of a mesh or point object as displayed (modifiers, Edit Mode), cached by the
    object's session uid, counts and bounds (a rename or a redraw reads nothing again)."""
    with displayed_data(context, ob) as (evaluated, data):
        mesh = ob.type == "MESH"
        position = data.attributes.get("position")
        count = (len(data.vertices) if mesh else len(position.data) if position is not None
                 else 0)
        faces = len(data.polygons) if mesh else 0
        bounds = tuple(tuple(evaluated.bound_box[i]) for i in (0, 6))
        key = (ob.session_uid, ob.type, count, faces, len(data.loops) if mesh else 0,
               getattr(ob.data, "is_editmode", False), repr(bounds))
        facts = _facts_cache.get(key)
        if facts is None:
            what = f"The {'mesh' if mesh else POINT_LIKE[ob.type]} {ob.name!r}"
            facts = Facts(count, faces)
            if count:
                positions = mesh_positions(data)
                facts.problem, facts.warning = numeric.points_report(positions, what,
                                                                     count_matters=False)
                facts.voxels = bool(faces and not facts.problem
                                    and numeric.on_few_lattice_values(positions)
                                    and numeric.looks_like_voxels(positions,
                                                                  mesh_triangles(data)))
            if len(_facts_cache) > 64:
                _facts_cache.clear()
            _facts_cache[key] = facts
    return facts


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
        facts = facts_of(context, ob)
        count = facts.points
        if not count:
            return Description(problem=f"The {what} {ob.name!r} has no points")
        problem = facts.problem or too_many_points(count, f"The {what} {ob.name!r}")
        if problem:
            return Description(problem=problem)
        return Description("pointcloud", f"{what[:1].upper()}{what[1:]}: {count:,} points →"
                           f" {_sent(count)}", source=ob.name,
                           warning=_joined(numeric.few_points_warning(count), facts.warning))
    if ob.type == "VOLUME":
        return Description("voxels", "Volume → 32³ occupancy grid", source=ob.name)
    if ob.type in MESH_LIKE:
        facts = facts_of(context, ob) if ob.type == "MESH" else None
        if facts is not None:
            count, faces = facts.points, facts.faces
            if not count:
                after = " after its modifiers" if ob.modifiers else ""
                return Description(problem=f"The mesh {ob.name!r} has no vertices{after}")
            if facts.problem:
                return Description(problem=facts.problem)
        else:
            count, faces = None, None
        what = "Mesh" if ob.type == "MESH" else ob.type.title()
        extra = " (with modifiers)" if ob.type == "MESH" and ob.modifiers else ""
        mode = _mesh_mode(settings, facts)
        shape_warning = facts.warning if facts is not None else None
        if mode == "VOXELS":
            verts = f"{count:,} vertices" if count is not None else "its surface"
            return Description("voxels", f"Voxel {what.lower()}: {verts}{extra} → 32³"
                               " occupancy grid", source=ob.name, warning=shape_warning)
        if mode == "SURFACE":
            if faces == 0:
                return Description(problem=f"The mesh {ob.name!r} has no faces to sample;"
                                           " use its vertices")
            n = settings.surface_points
            problem = too_many_points(n, "Surface Points")
            if problem:
                return Description(problem=problem)
            faces_text = f"{faces:,} faces" if faces is not None else "surface"
            return Description("pointcloud", f"{what}: {faces_text}{extra} →"
                               f" {_sent(n)} sampled on the faces", source=ob.name,
                               warning=shape_warning)
        if count is None:
            return Description("pointcloud", f"{what}: vertices of its mesh → points",
                               source=ob.name)
        problem = too_many_points(count, f"The mesh {ob.name!r}")
        if problem:
            return Description(problem=problem)
        return Description("pointcloud", f"{what}: {count:,} vertices{extra} → {_sent(count)}",
                           source=ob.name,
                           warning=_joined(numeric.few_points_warning(count), shape_warning))
    name = TYPE_NAMES.get(ob.type, f"a {ob.type.lower()} object")
    return Description(problem=f"{ob.name!r} is {name}, which cannot be reconstructed; select"
                               " a mesh, point cloud, voxel mesh, volume or image empty")


def _joined(*warnings):
    return " ".join(filter(None, warnings)) or None


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
def at_cursor(context):
    """The matrix of a result with no source object: at the 3D cursor, the unit cube's y-up
    (the training renders) turned into Blender's z-up."""
    return context.scene.cursor.matrix @ Matrix.Rotation(np.pi / 2, 4, "X")


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
        points = numeric.finite_points(mesh_positions(data),
                                       f"The {POINT_LIKE[ob.type]} {ob.name!r}")
        _check_count(points, f"The {POINT_LIKE[ob.type]} {ob.name!r}")
        return SceneInput("pointcloud", {"points": points}, ob.name, description.text, matrix,
                          collection)
    if ob.type == "VOLUME":
        occupancy, translate, edge = _read_volume(ob)
        return SceneInput("voxels", {"voxels": occupancy, "voxel_frame": {
            "translate": [float(v) for v in translate], "scale": edge}}, ob.name,
            description.text, matrix, collection)
    what = f"The {'mesh' if ob.type == 'MESH' else ob.type.lower()} {ob.name!r}"
    mode = _mesh_mode(settings, facts_of(context, ob) if ob.type == "MESH" else None)
    vertices, polygons = _evaluated_mesh(context, ob, mode != "VERTICES")
    if not len(vertices):
        raise InputError(f"{what} has no vertices")
    vertices = numeric.finite_points(vertices, what)
    if mode == "VERTICES":
        _check_count(vertices, what)
        return SceneInput("pointcloud", {"points": vertices}, ob.name, description.text,
                          matrix, collection)
    if mode == "VOXELS":
        kind = "voxels"

        def prepare():
            triangles = numeric.fan_triangles(*polygons)
            occupancy, translate, edge = numeric.voxelize(vertices, triangles)
            return {"voxels": occupancy, "voxel_frame": {
                "translate": [float(v) for v in translate], "scale": edge}}
    else:
        kind, count = "pointcloud", settings.surface_points

        def prepare():
            triangles = numeric.fan_triangles(*polygons)
            return {"points": numeric.sample_surface(vertices, triangles, count)}
    data = SceneInput(kind, {}, ob.name, description.text, matrix, collection, prepare)
    corners, starts = polygons
    if (len(starts) if starts is not None else len(corners) // 3) <= MAIN_THREAD_FACES:
        data.wire_arrays()  # small: now, so its problems stop the operator right away
    return data


def _check_count(points, what):
    """InputError when the points read (modifiers may add some) are over the limit."""
    problem = too_many_points(len(points), what)
    if problem:
        raise InputError(problem)


def _evaluated_mesh(context, ob, polygons=True):
    """Vertices (V, 3) float32 and ``mesh_polygons`` (None unless asked for) of the object
    as displayed: a mesh's evaluated data, other types through to_mesh."""
    if ob.type == "MESH":
        with displayed_data(context, ob) as (_, mesh):
            return mesh_positions(mesh), mesh_polygons(mesh) if polygons else None
    evaluated = ob.evaluated_get(context.evaluated_depsgraph_get())
    try:
        mesh = evaluated.to_mesh()
    except RuntimeError as exc:
        raise InputError(f"{ob.name!r} cannot be turned into a mesh: {exc}") from None
    try:
        if mesh is None:
            return np.zeros((0, 3), np.float32), (np.zeros(0, np.int32), None)
        return mesh_positions(mesh), mesh_polygons(mesh) if polygons else None
    finally:
        evaluated.to_mesh_clear()


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
        matrix = at_cursor(context)
        collection, source = "", description.source
    return SceneInput("image", arrays, source, description.text, matrix, collection)

"""Read and validate the user's reconstruction input: a point cloud, a voxel grid or an image.

Every problem the user can fix raises ``UserError`` with a one-line message that names the
file (or the request field) and says what to do. ``validate_points`` and
``validate_voxels`` are public because the server checks arrays from the wire with the
same messages. Only numpy is imported at module level; trimesh and Pillow load lazily.
"""

from __future__ import annotations

import io
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from .binvox import MAX_VOXEL_DIM, read_binvox
from ..errors import LimitError, UserError

# Size limits: the defaults of engine.request.Limits. 10M float32 points are 120 MB.
MAX_POINTS = 10_000_000
MAX_IMAGE_PIXELS = 40_000_000

POINT_EXTENSIONS = (".ply", ".xyz", ".txt", ".npy", ".npz")
VOXEL_EXTENSIONS = (".binvox",)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
SUPPORTED_EXTENSIONS = POINT_EXTENSIONS + VOXEL_EXTENSIONS + IMAGE_EXTENSIONS

# What each input kind is called in messages ("this model reconstructs from a point cloud").
KIND_NAMES = {"pointcloud": "a point cloud", "voxels": "a voxel grid", "image": "an image",
              "sample": "sampling"}  # the last: a request drawn from a prior (no input)

# The rules a voxel grid may follow (``VoxelInput.voxelisation``): "touching" sets every voxel
# the solid touches (binvox, the official ONet data), "centres" the voxels whose centre is
# inside (a remesher's or a volume's grid). The first is the default.
VOXELISATIONS = ("touching", "centres")

# A bare .npy/.npz voxel grid covers the ONet unit cube [-0.5, 0.5]^3.
UNIT_CUBE_TRANSLATE = (-0.5, -0.5, -0.5)
UNIT_CUBE_SCALE = 1.0


@dataclass(eq=False)
class PointCloudInput:
    """A point cloud in the user's coordinates: ``points`` (N, 3) float32, N >= 2, finite."""

    points: np.ndarray
    kind: ClassVar[str] = "pointcloud"


@dataclass(eq=False)
class VoxelInput:
    """An occupancy grid ``occupancy`` (n, n, n) bool indexed [x, y, z].

    Voxel i's centre lies at ``translate + (i + 0.5) / n * scale`` (world units):
    ``translate`` (3,) float64 is the grid's minimum corner, ``scale`` its edge length.
    ``voxelisation``: the rule that made the grid, one of ``VOXELISATIONS``.
    """

    occupancy: np.ndarray
    translate: np.ndarray
    scale: float
    voxelisation: str = VOXELISATIONS[0]
    kind: ClassVar[str] = "voxels"

    def __post_init__(self):
        check_voxelisation(self.voxelisation, "voxelisation")


@dataclass(eq=False)
class ImageInput:
    """A reference image ``rgba`` (H, W, 4) uint8."""

    rgba: np.ndarray
    kind: ClassVar[str] = "image"


Input = PointCloudInput | VoxelInput | ImageInput


def read_input(
    path: str | os.PathLike,
    *,
    max_points: int = MAX_POINTS,
    max_voxel_dim: int = MAX_VOXEL_DIM,
    max_pixels: int = MAX_IMAGE_PIXELS,
    voxelisation: str = VOXELISATIONS[0],
) -> Input:
    """Read and validate a reconstruction input, dispatching on the file extension.

    Point clouds: ``.ply`` (vertices of a cloud or mesh), ``.xyz``/``.txt`` (3 or 6
    numeric columns), ``.npy``/``.npz`` ((N, 3) array; a 3-D array is a voxel grid on the
    unit cube). Voxels: ``.binvox``. Images: ``.png``/``.jpg``/``.jpeg``. A voxel grid
    follows the rule ``voxelisation`` (``VOXELISATIONS``; files do not record it).
    Raises ``UserError`` naming the file for anything wrong with it.
    """
    path = require_readable(path)
    source = str(path)
    ext = path.suffix.lower()
    if ext in (".ply", ".xyz", ".txt"):
        points = _read_ply_vertices(path) if ext == ".ply" else _read_text_points(path)
        return PointCloudInput(validate_points(points, source, max_points=max_points))
    if ext in (".npy", ".npz"):
        array = _read_npy(path) if ext == ".npy" else _read_npz(path)
        return _array_input(array, source, max_points, max_voxel_dim, voxelisation)
    if ext == ".binvox":
        occupancy, translate, scale = read_binvox(path, max_dim=max_voxel_dim)
        occupancy = validate_voxels(occupancy, source, max_dim=max_voxel_dim)
        return VoxelInput(occupancy, translate, scale, voxelisation)
    if ext in IMAGE_EXTENSIONS:
        return ImageInput(decode_image(path, source, max_pixels))
    raise UserError(
        f"{path}: unsupported file type '{path.suffix}'; "
        f"supported: {' '.join(SUPPORTED_EXTENSIONS)}"
    )


def require_readable(path: str | os.PathLike) -> Path:
    """Return ``path`` as a Path if it is a file this process can open, else ``UserError``."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: file not found; check the path")
    if path.is_dir():
        raise UserError(f"{path}: is a directory; give a file")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise UserError(f"{path}: cannot be read ({exc.strerror}); check its permissions") from exc
    return path


def exception_summary(exc: BaseException) -> str:
    """An exception's text on one line, shortened, for embedding in a UserError message."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:120]


def validate_points(
    points: np.ndarray, source: str, *, max_points: int = MAX_POINTS
) -> np.ndarray:
    """Check a point array from ``source`` (a file name or request field, used in messages).

    Requires a real-valued (N, 3) array with 2 <= N <= ``max_points`` and finite values
    (also after conversion to float32). Returns the points as contiguous ``(N, 3) float32``.
    """
    points = np.asarray(points)
    n = len(points) if points.ndim else 0
    if points.dtype.kind not in "fiu":
        raise UserError(f"{source}: point coordinates must be real numbers, got {points.dtype}")
    if points.ndim != 2 or points.shape[1] != 3:
        raise UserError(f"{source}: points must have shape (N, 3), one x y z per row, "
                        f"got {points.shape}")
    if n < 2:
        raise UserError(f"{source}: has {n} point(s); a point cloud needs at least 2 points")
    if n > max_points:
        raise LimitError(f"{source}: has {n} points, above the limit of {max_points}; subsample it")
    with np.errstate(over="ignore"):  # float64 beyond float32 range becomes inf, reported below
        points = np.ascontiguousarray(points, dtype=np.float32)
    bad_rows = int((~np.isfinite(points).all(axis=1)).sum())
    if bad_rows:
        raise UserError(f"{source}: {bad_rows} of {n} points have NaN or infinite coordinates; "
                        "remove those rows")
    return points


def validate_voxels(
    occupancy: np.ndarray, source: str, *, max_dim: int = MAX_VOXEL_DIM
) -> np.ndarray:
    """Check a voxel grid from ``source`` (a file name or request field, used in messages).

    Requires a cubic (n, n, n) array, n <= ``max_dim``, of bools or numbers that are all 0
    or 1, with at least one occupied and one empty voxel (otherwise there is no surface).
    Returns ``(n, n, n) bool``.
    """
    occupancy = np.asarray(occupancy)
    shape = occupancy.shape
    if occupancy.ndim != 3:
        raise UserError(f"{source}: a voxel grid must be a 3-D array, got shape {shape}")
    if len(set(shape)) != 1:
        raise UserError(f"{source}: voxel grid is {shape}; only cubic (n, n, n) grids work")
    if shape[0] > max_dim:
        raise UserError(f"{source}: voxel grid {shape[0]}^3 exceeds the limit of {max_dim}^3; "
                        "downsample it")
    if occupancy.dtype != bool:
        if occupancy.dtype.kind not in "fiu" or not ((occupancy == 0) | (occupancy == 1)).all():
            raise UserError(f"{source}: voxel values must be booleans or 0/1 numbers; "
                            "threshold the grid first")
        occupancy = occupancy.astype(bool)
    occupied = int(np.count_nonzero(occupancy))
    if occupied == 0:
        raise UserError(f"{source}: voxel grid is empty (no occupied voxel); "
                        "nothing to reconstruct")
    if occupied == occupancy.size:
        raise UserError(f"{source}: every voxel is occupied, so the grid has no surface; "
                        "pad it with empty voxels")
    return occupancy


def check_voxelisation(value, source: str) -> str:
    """``value`` if it names one of ``VOXELISATIONS``, else UserError naming ``source``."""
    if value not in VOXELISATIONS:
        raise UserError(f"{source}: the voxelisation must be one of {', '.join(VOXELISATIONS)} "
                        f"(touching: every voxel the surface passes through is set, as binvox "
                        f"writes them; centres: the voxels whose centre is inside), got {value!r}")
    return value


def validate_voxel_frame(translate, scale, source: str) -> tuple[np.ndarray, float]:
    """Check a voxel grid's placement: ``translate`` 3 finite numbers, ``scale`` finite > 0.

    Returns ``(translate (3,) float64, scale float)`` in world units.
    """
    try:
        translate = np.asarray(translate, dtype=np.float64)
        scale = float(scale)
    except (TypeError, ValueError, OverflowError) as exc:
        raise UserError(f"{source}: voxel translate/scale must be numbers") from exc
    if translate.shape != (3,) or not np.isfinite(translate).all():
        raise UserError(f"{source}: voxel translate must be 3 finite numbers, "
                        f"got {translate.tolist()}")
    if not (math.isfinite(scale) and scale > 0):
        raise UserError(f"{source}: voxel scale must be a finite number > 0, got {scale}")
    return translate, scale


def _array_input(array: np.ndarray, source: str, max_points: int, max_voxel_dim: int,
                 voxelisation: str) -> Input:
    """Interpret a loaded array: (N, 3) -> point cloud, 3-D -> voxel grid on the unit cube."""
    if array.ndim == 3:
        return VoxelInput(
            validate_voxels(array, source, max_dim=max_voxel_dim),
            np.array(UNIT_CUBE_TRANSLATE, dtype=np.float64),
            UNIT_CUBE_SCALE,
            voxelisation,
        )
    if array.ndim == 2 and array.shape[1] == 3:
        return PointCloudInput(validate_points(array, source, max_points=max_points))
    raise UserError(f"{source}: array of shape {array.shape} is neither an (N, 3) point cloud "
                    "nor an (n, n, n) voxel grid")


def _read_npy(path: Path) -> np.ndarray:
    """Load a .npy array without pickle."""
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise _numpy_load_error(path, exc, "numpy.save") from exc


def _read_npz(path: Path) -> np.ndarray:
    """Load the ``points`` array (official ONet pointcloud.npz) or the only array of a .npz."""
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.keys())
            if "points" in keys:
                return archive["points"]
            if len(keys) == 1:
                return archive[keys[0]]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise _numpy_load_error(path, exc, "numpy.savez") from exc
    raise UserError(f"{path}: has arrays {keys or 'none'} but no 'points'; "
                    "name the point array 'points' or store only one array")


def _numpy_load_error(path: Path, exc: Exception, saver: str) -> UserError:
    """The UserError for a .npy/.npz that numpy could not load without pickle."""
    if "allow_pickle" in str(exc):
        return UserError(f"{path}: holds Python objects (pickle), refused for safety; "
                         "save plain numeric arrays")
    return UserError(f"{path}: not a valid {path.suffix} file ({exception_summary(exc)}); "
                     f"save it with {saver}")


def _read_ply_vertices(path: Path) -> np.ndarray:
    """Vertices (N, 3) of a PLY point cloud or mesh, via trimesh (or, where trimesh is not
    installed, as Blender's Python, ``read_ply_vertices_numpy``)."""
    _check_ascii_ply_rows(path)
    try:
        import trimesh
    except ImportError:
        return read_ply_vertices_numpy(path)

    try:
        loaded = trimesh.load(path, file_type="ply", process=False)
    # trimesh's parsers raise many exception types on malformed files; all mean "unreadable".
    except Exception as exc:
        raise UserError(f"{path}: cannot be read as PLY ({exception_summary(exc)}); "
                        "re-export it as a PLY point cloud or mesh") from exc
    vertices = getattr(loaded, "vertices", None)  # a PLY without vertices loads as a Scene
    vertices = np.zeros((0, 3)) if vertices is None else np.asarray(vertices)
    if vertices.size == 0:
        raise UserError(f"{path}: has no vertices; a point cloud needs at least 2 points")
    return vertices


PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2",
             "int16": "i2", "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4",
             "uint": "u4", "uint32": "u4", "float": "f4", "float32": "f4", "double": "f8",
             "float64": "f8"}


def read_ply_vertices_numpy(path: Path) -> np.ndarray:
    """Vertices (N, 3) float64 of a PLY file whose first element is ``vertex`` with scalar
    properties x, y, z among others (ASCII or binary, either byte order), in numpy alone.
    UserError for anything else, naming trimesh as the reader that takes more."""
    data = path.read_bytes()
    end = data.find(b"end_header")
    newline = data.find(b"\n", end)
    if not data.startswith(b"ply") or end < 0 or newline < 0:
        raise UserError(f"{path}: not a PLY file (no 'ply' ... 'end_header' header)")
    lines = [line.split() for line in data[:end].decode("latin-1").splitlines()]
    formats = [words[1] for words in lines if words[:1] == ["format"] and len(words) > 1]
    elements = [i for i, words in enumerate(lines) if words[:1] == ["element"]]
    more = ("; install trimesh (pip install trimesh) to read other PLY layouts, or save the "
            "cloud as .npy or .xyz")
    if not formats or not elements or lines[elements[0]][1:2] != ["vertex"]:
        raise UserError(f"{path}: the numpy PLY reader takes files whose first element is "
                        f"'vertex'" + more)
    count = int(lines[elements[0]][2])
    stop = elements[1] if len(elements) > 1 else len(lines)
    properties = [words for words in lines[elements[0] + 1:stop] if words[:1] == ["property"]]
    if any(len(p) != 3 or p[1] not in PLY_TYPES for p in properties):
        raise UserError(f"{path}: its vertices have list or unknown properties" + more)
    names = [p[2] for p in properties]
    if not {"x", "y", "z"} <= set(names):
        raise UserError(f"{path}: its vertices have no x, y, z properties")
    body = data[newline + 1:]
    if formats[0] == "ascii":
        rows = body.decode("latin-1").split("\n")[:count]
        table = np.array([row.split()[:len(names)] for row in rows], np.float64)
    else:
        order = "<" if formats[0] == "binary_little_endian" else ">"
        dtype = np.dtype([(name, order + PLY_TYPES[p[1]]) for name, p in zip(names, properties)])
        if len(body) < count * dtype.itemsize:
            raise UserError(f"{path}: the file is truncated ({count:,} vertices declared); "
                            "re-export it")
        records = np.frombuffer(body, dtype, count)
        table = np.stack([records[name].astype(np.float64) for name in names], axis=1)
    return table[:, [names.index(axis) for axis in "xyz"]]


def _check_ascii_ply_rows(path: Path) -> None:
    """UserError when an ASCII PLY holds fewer data rows than its header declares (trimesh
    reads such a file without complaint and pads or drops what is missing)."""
    with open(path, "rb") as f:
        head = f.read(65536)
        end = head.find(b"end_header")
        if not head.startswith(b"ply") or end < 0:
            return  # not a header we can read: trimesh reports it
        lines = head[:end].decode("latin-1").splitlines()
        if not any(line.split()[:2] == ["format", "ascii"] for line in lines if line.strip()):
            return
        declared = {}
        for line in lines:
            words = line.split()
            if len(words) == 3 and words[0] == "element":
                try:
                    declared[words[1]] = int(words[2])
                except ValueError:
                    raise UserError(f"{path}: PLY header line {line.strip()!r} has no element "
                                    "count; re-export it") from None
        newline = head.find(b"\n", end)
        f.seek(newline + 1 if newline >= 0 else len(head))
        rows = sum(1 for row in f if row.strip())
    total = sum(declared.values())
    if rows < total:
        what = " + ".join(f"{count:,} {name!r}" for name, count in declared.items())
        vertex = declared.get("vertex")
        raise UserError(f"{path}: its header declares {what} rows but the file holds only "
                        f"{rows:,} data rows" + (f" (of {vertex:,} vertices)" if vertex else "")
                        + "; the file is truncated, re-export it")


def _read_text_points(path: Path) -> np.ndarray:
    """Points (N, 3) from a text table: 3 or 6 columns split by spaces or commas, # comments."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: is not a UTF-8 text file; "
                        "give x y z numbers, one point per line") from exc
    text = text.replace(",", " ")
    # loadtxt warns (not raises) on input without data; detect that case first.
    if not re.search(r"^[ \t]*[^#\s]", text, re.MULTILINE):
        raise UserError(f"{path}: contains no points; a point cloud needs at least 2 points")
    try:
        table = np.loadtxt(io.StringIO(text), dtype=np.float64, comments="#", ndmin=2)
    except ValueError as exc:
        raise _text_table_error(path, text) from exc
    if table.shape[1] not in (3, 6):
        raise UserError(f"{path}: found {table.shape[1]} columns; "
                        "expected 3 (x y z) or 6 (x y z nx ny nz)")
    return table[:, :3]


def _text_table_error(path: Path, text: str) -> UserError:
    """Locate the first bad line of a text table that numpy refused (slow path, errors only)."""
    first: tuple[int, int] | None = None  # (column count, line number) of the first data line
    for number, line in enumerate(text.split("\n"), start=1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        for field in fields:
            try:
                float(field)
            except ValueError:
                return UserError(f"{path}: line {number}: '{field[:20]}' is not a number; "
                                 "comment out header lines with '#'")
        if first is None:
            first = (len(fields), number)
        elif len(fields) != first[0]:
            return UserError(
                f"{path}: line {number} has {len(fields)} columns but line {first[1]} has "
                f"{first[0]}; every line needs 3 (x y z) or 6 (x y z nx ny nz) columns"
            )
    return UserError(f"{path}: cannot be read as a table of numbers; give x y z per line")


def decode_image(file, source: str, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decode a PNG/JPEG (a path or a binary file object) to (H, W, 4) uint8 RGBA, upright
    (EXIF rotation applied), refusing more than ``max_pixels`` pixels before decoding.
    ``source`` names the file or request field in messages."""
    try:
        from PIL import Image, ImageOps, UnidentifiedImageError
    except ImportError:
        raise UserError(f"{source}: decoding PNG/JPEG files needs Pillow, which this Python "
                        "lacks (the bundled engine in Blender's Python): send decoded pixels "
                        "(the wire's 'image' buffer, as the add-on does), or use a Python "
                        "with Pillow") from None
    try:
        # open() reads only the header, so the size check happens before any decoding.
        with Image.open(file) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise LimitError(f"{source}: image is {width} x {height} = {width * height} "
                                 f"pixels, above the limit of {max_pixels}; downscale it")
            if width * height == 0:
                raise UserError(f"{source}: image has no pixels ({width} x {height})")
            # Phone photos store their rotation in EXIF; apply it so the view matches the photo.
            rgba = ImageOps.exif_transpose(image).convert("RGBA")
            return np.asarray(rgba, dtype=np.uint8)
    except UnidentifiedImageError as exc:
        raise UserError(f"{source}: is not a readable PNG or JPEG image; "
                        "re-save it as PNG or JPEG") from exc
    except Image.DecompressionBombError as exc:
        raise LimitError(f"{source}: image is too large to decode safely; downscale it") from exc
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt image data
        raise UserError(f"{source}: image data is corrupt ({exception_summary(exc)}); "
                        "re-save it as PNG or JPEG") from exc


def image_array(array: np.ndarray, source: str, max_pixels: int = MAX_IMAGE_PIXELS,
                mask: np.ndarray | None = None) -> np.ndarray:
    """Check a decoded image (H, W, 3|4) uint8 and return it as (H, W, 4) uint8 RGBA; a
    ``mask`` (H, W) uint8 replaces its alpha."""
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] not in (3, 4):
        raise UserError(f"{source}: must be (H, W, 3|4) uint8, got {array.dtype} "
                        f"{tuple(array.shape)}")
    height, width = array.shape[:2]
    if height * width == 0:
        raise UserError(f"{source}: image has no pixels ({height} x {width})")
    if height * width > max_pixels:
        raise LimitError(f"{source}: image of {height}x{width} pixels is over the limit of "
                         f"{max_pixels:,}")
    if array.shape[2] == 3:
        array = np.concatenate([array, np.full((height, width, 1), 255, np.uint8)], 2)
    array = np.array(array, order="C")
    if mask is not None:
        if mask.shape != (height, width) or mask.dtype != np.uint8:
            raise UserError(f"{source}: the mask must be uint8 with the image's size "
                            f"{(height, width)}")
        array[..., 3] = mask
    return array

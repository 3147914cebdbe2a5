"""Array work of the add-on that needs numpy only (no bpy): sampling, voxelising, images.

Everything here is a plain function of numpy arrays so it can be tested outside Blender.
"""

import math

import numpy as np

VOXEL_GRID = 32  # the ONet voxel encoder's grid
FEW_POINTS = 100  # fewer input points than this: the network guesses (fragments, blobs)
STRAY_FACTOR = 50  # a point this many median distances from the median point is a stray
FAR_COORDINATE = 1e6  # coordinates beyond this (object units) are taken for a mistake
CHECK_SAMPLE = 200_000  # points looked at by the cheap checks (evenly spread)
VOXEL_CHUNK = 250_000  # triangles voxelised at once (bounds the memory of large meshes)


class InputError(ValueError):
    """A problem with the user's input, in plain words (shown in the panel / as a report)."""


def finite_points(points, what):
    """points (N, 3) -> float32, raising InputError for the problems ``points_report`` names
    (NaN/Inf, fewer than two points, all in one place)."""
    points = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    problem, _ = points_report(points, what, count_matters=False)
    if problem:
        raise InputError(problem)
    return points


def points_report(points, what, count_matters=True):
    """(problem, warning) about a cloud (N, 3) before it is sent, in plain words with what
    to do; each None when there is nothing to say. Problems stop the reconstruction (NaN or
    infinite coordinates, fewer than two points, all points in one place); warnings do not
    (fewer than FEW_POINTS points when ``count_matters``, stray or absurdly far points).
    Looks at CHECK_SAMPLE points at most, except for the NaN count (all of them)."""
    points = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    finite = bool(np.isfinite(points.ravel()).all())  # flat: 10x faster than per row
    bad = np.zeros(0, bool) if finite else ~np.isfinite(points).all(axis=1)
    if bad.any():
        return (f"{what} has {int(bad.sum()):,} of {len(points):,} points with NaN or infinite"
                " coordinates; delete or move those vertices (Edit Mode) and try again"), None
    if len(points) < 2:
        return (f"{what} has {'no' if not len(points) else 'only one'} point; a"
                " reconstruction needs at least two (a few hundred for a good one)"), None
    lo, hi = bounds(points)
    extent = float((hi - lo).max())
    if not extent > 0:
        return f"All points of {what} coincide, so it has no size to reconstruct", None
    warnings = [few_points_warning(len(points))] if count_matters else []
    sample = points[:: max(1, len(points) // CHECK_SAMPLE)].astype(np.float64)
    middle = np.median(sample, axis=0)
    typical = float(np.median(np.linalg.norm(sample - middle, axis=1)))
    farthest = float(max(np.abs(lo - middle).max(), np.abs(hi - middle).max()))
    if len(points) > 2 and farthest > STRAY_FACTOR * max(typical, 1e-12 * extent):
        warnings.append(f"Some points lie far from the rest ({farthest:.3g} units from the"
                        f" middle, most within {typical:.3g}): the result fills the box around"
                        " all of them. Delete the stray points (Edit Mode).")
    far = float(max(np.abs(lo).max(), np.abs(hi).max()))
    if far > FAR_COORDINATE:
        warnings.append(f"Coordinates reach {far:.3g} units: the result will be that far out"
                        " and that large. Check the object's scale or stray vertices.")
    return None, " ".join(filter(None, warnings)) or None


def bounds(points):
    """(min corner, max corner) float64 (3,) of points (N, 3), column by column (numpy's
    axis-0 reduction over three columns is ten times slower on millions of points)."""
    lo = np.array([points[:, axis].min() for axis in range(3)], dtype=np.float64)
    hi = np.array([points[:, axis].max() for axis in range(3)], dtype=np.float64)
    return lo, hi


def few_points_warning(count):
    """The warning for a cloud of ``count`` points (None from FEW_POINTS on)."""
    if count >= FEW_POINTS:
        return None
    return (f"Only {count:,} points: too few for the network to see the shape (it needs a few"
            " hundred spread over the surface; with fewer it guesses, which gives fragments"
            " or a blob). Sample the faces (Mesh As > Surface Points) or use a denser cloud.")


def on_few_lattice_values(vertices, limit=1025, max_check=200_000):
    """Whether every axis of the vertices (V, 3) takes at most ``limit`` distinct values (to
    1e-5 of the extent), as vertices of voxel art do: a cheap test that rules out smooth
    meshes before ``looks_like_voxels`` needs their triangles."""
    sample = np.asarray(vertices)[:: max(1, len(vertices) // max_check)].astype(np.float64)
    if not len(sample):
        return False
    lo = sample.min(axis=0)
    extent = float((sample.max(axis=0) - lo).max())
    if not extent > 0:
        return False
    steps = np.round((sample - lo) / extent * 1e5)
    return all(len(np.unique(steps[:, axis])) <= limit for axis in range(3))


def fan_triangles(corner_verts, loop_starts=None):
    """Triangles (T, 3) int32 of polygons given as Blender stores them: the vertex of every
    corner (L,) and each polygon's first corner (P,), ascending; polygon i has corners
    ``loop_starts[i]`` to the next start (None: every polygon is a triangle). Each polygon
    becomes a fan around its first corner (exact for convex polygons; close enough for
    sampling and voxelising). Seconds for millions of polygons: call off the main thread."""
    corner_verts = np.asarray(corner_verts, dtype=np.int32)
    if loop_starts is None:
        return corner_verts.reshape(-1, 3)
    starts = np.asarray(loop_starts, dtype=np.int64)
    counts = np.diff(starts, append=len(corner_verts)) - 2
    if len(counts) and (counts == 2).all():  # quads: two triangles each, no index maths
        quads = corner_verts.reshape(-1, 4)
        return np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])
    first = np.repeat(starts, counts)
    k = np.arange(len(first)) - np.repeat(np.cumsum(counts) - counts, counts)
    return np.stack([corner_verts[first], corner_verts[first + k + 1],
                     corner_verts[first + k + 2]], axis=1)


def triangle_areas(vertices, triangles):
    a, b, c = (vertices[triangles[:, i]] for i in range(3))
    return 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)


def sample_surface(vertices, triangles, count, seed=0):
    """``count`` points on triangles (T, 3), area-weighted, reproducible. (count, 3) float32."""
    vertices = np.asarray(vertices, dtype=np.float64)
    triangles = np.asarray(triangles, dtype=np.int64).reshape(-1, 3)
    if not len(triangles):
        raise InputError("the mesh has no faces to sample points on; use its vertices instead")
    areas = triangle_areas(vertices, triangles)
    total = areas.sum()
    if not total > 0:
        raise InputError("the mesh's faces have no area; use its vertices instead")
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(triangles), size=count, p=areas / total)
    u, v = rng.random(count), rng.random(count)
    flip = u + v > 1
    u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
    tri = triangles[chosen]
    a, b, c = vertices[tri[:, 0]], vertices[tri[:, 1]], vertices[tri[:, 2]]
    return (a + (b - a) * u[:, None] + (c - a) * v[:, None]).astype(np.float32)


def looks_like_voxels(vertices, triangles, max_check=200_000):
    """True for meshes built from axis-aligned cubes on one lattice (imported voxel art).

    Every face must be axis-aligned and every vertex must sit on a lattice whose step is the
    shortest edge. Checks at most ``max_check`` vertices/triangles (evenly spread).
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    triangles = np.asarray(triangles, dtype=np.int64).reshape(-1, 3)
    if len(triangles) < 12 or len(vertices) < 8:
        return False
    tri = triangles[:: max(1, len(triangles) // max_check)]
    a, b, c = (vertices[tri[:, i]] for i in range(3))
    normals = np.cross(b - a, c - a)
    length = np.linalg.norm(normals, axis=1)
    keep = length > 0
    if not keep.any():
        return False
    normals = np.abs(normals[keep] / length[keep, None])
    if not (normals.max(axis=1) > 0.999).all():
        return False
    edges = np.concatenate([np.abs(b - a), np.abs(c - b), np.abs(a - c)]).ravel()
    lo, hi = bounds(vertices)
    extent = float((hi - lo).max())
    edges = edges[edges > 1e-6 * extent]
    if not len(edges):
        return False
    step = float(edges.min())
    if not 2 <= extent / step <= 1024:  # one cube (a box), or a smooth mesh
        return False
    sample = vertices[:: max(1, len(vertices) // max_check)]
    lattice = (sample - lo) / step
    return bool((np.abs(lattice - np.round(lattice)) < 1e-3).all())


def cube_frame(points):
    """The cube (min corner, edge) around points' bounding box: centred, longest edge."""
    lo, hi = bounds(points)
    edge = float((hi - lo).max())
    if not edge > 0:
        raise InputError("the object has no size (all vertices coincide)")
    return ((lo + hi) / 2 - edge / 2).astype(np.float64), edge


def surface_lattice_points(vertices, triangles, spacing, max_points=8_000_000):
    """Points covering every triangle at most ``spacing`` apart (barycentric lattices),
    each pushed a hair inwards (against the face normal and towards the triangle's centre),
    so faces and edges lying exactly on voxel boundaries (voxel art) land in the solid's
    voxel. (P, 3) float64; the corners are included (nudged)."""
    vertices = np.asarray(vertices, dtype=np.float64)
    triangles = np.asarray(triangles, dtype=np.int64).reshape(-1, 3)
    a, b, c = (vertices[triangles[:, i]] for i in range(3))
    longest = np.maximum.reduce([np.linalg.norm(b - a, axis=1), np.linalg.norm(c - b, axis=1),
                                 np.linalg.norm(a - c, axis=1)])
    steps = np.maximum(1, np.ceil(longest / spacing)).astype(np.int64)
    total = int(((steps + 1) * (steps + 2) // 2).sum())
    if total > max_points:  # very fine faces relative to the grid: cap the work evenly
        steps = np.maximum(1, (steps * math.sqrt(max_points / total)).astype(np.int64))
    normals = np.cross(b - a, c - a)
    norm = np.linalg.norm(normals, axis=1, keepdims=True)
    normals = np.divide(normals, norm, out=np.zeros_like(normals), where=norm > 0)
    chunks = []
    for k in np.unique(steps):
        idx = np.nonzero(steps == k)[0]
        i, j = np.meshgrid(np.arange(k + 1), np.arange(k + 1), indexing="ij")
        keep = i + j <= k
        u, v = i[keep] / k, j[keep] / k  # (m,)
        pa, pb, pc = a[idx], b[idx], c[idx]
        pts = (pa[:, None] + (pb - pa)[:, None] * u[None, :, None]
               + (pc - pa)[:, None] * v[None, :, None])
        towards = (pa + pb + pc)[:, None] / 3 - pts
        length = np.linalg.norm(towards, axis=2, keepdims=True)
        towards = np.divide(towards, length, out=np.zeros_like(towards),
                            where=length > 1e-6 * spacing)
        pts += (towards - normals[idx][:, None]) * (spacing * 0.02)
        chunks.append(pts.reshape(-1, 3))
    return np.concatenate(chunks)


def flood_fill_interior(surface):
    """Occupancy from a surface shell: voxels not reachable from outside are inside."""
    n = surface.shape
    padded = np.zeros(tuple(s + 2 for s in n), dtype=bool)
    padded[1:-1, 1:-1, 1:-1] = surface
    free = ~padded
    outside = np.zeros_like(padded)
    outside[0, :, :] = outside[-1, :, :] = True
    outside[:, 0, :] = outside[:, -1, :] = True
    outside[:, :, 0] = outside[:, :, -1] = True
    outside &= free
    while True:
        grown = outside.copy()
        grown[1:] |= outside[:-1]
        grown[:-1] |= outside[1:]
        grown[:, 1:] |= outside[:, :-1]
        grown[:, :-1] |= outside[:, 1:]
        grown[:, :, 1:] |= outside[:, :, :-1]
        grown[:, :, :-1] |= outside[:, :, 1:]
        grown &= free
        if np.array_equal(grown, outside):
            break
        outside = grown
    return ~outside[1:-1, 1:-1, 1:-1]


def voxelize(vertices, triangles, n=VOXEL_GRID):
    """Occupancy (n, n, n) bool indexed [x, y, z] of a mesh in the cube around its bounding
    box (centred, longest edge): a voxel is occupied when a face or vertex lies in it or it is
    enclosed by such voxels. Returns (occupancy, translate (3,), edge) so that voxel i's
    centre is ``translate + (i + 0.5) / n * edge`` (the backend's ``voxel_frame``)."""
    vertices = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    translate, edge = cube_frame(vertices)
    surface = np.zeros((n, n, n), dtype=bool)
    triangles = np.asarray(triangles, dtype=np.int64).reshape(-1, 3)
    chunks = [vertices] if not len(triangles) else (
        triangles[i:i + VOXEL_CHUNK] for i in range(0, len(triangles), VOXEL_CHUNK))
    share = 8_000_000 * min(1.0, VOXEL_CHUNK / max(1, len(triangles)))
    for chunk in chunks:  # chunk by chunk: a mesh of millions of faces stays in bounds
        if len(triangles):
            points = surface_lattice_points(vertices, chunk, 0.5 * edge / n, int(share))
        else:
            points = chunk
        index = np.clip(np.floor((points - translate) / edge * n).astype(np.int64), 0, n - 1)
        surface[index[:, 0], index[:, 1], index[:, 2]] = True
    occupancy = flood_fill_interior(surface)
    if occupancy.all():
        raise InputError("voxelised, the object fills its whole bounding cube (it is a plain"
                         " box), which leaves no surface inside the grid; reconstruct it from"
                         " its vertices or surface points instead")
    return occupancy, translate, edge


def occupancy_points_to_grid(centres, voxel_size, n=VOXEL_GRID):
    """Voxel centres of an occupied set (P, 3) -> (occupancy (n,)*3, translate, edge) in the
    cube around their boxes (each point stands for a cube of ``voxel_size``)."""
    centres = np.asarray(centres, dtype=np.float64).reshape(-1, 3)
    if not len(centres):
        raise InputError("the volume has no active voxels")
    half = 0.5 * float(voxel_size)
    lo, hi = centres.min(0) - half, centres.max(0) + half
    edge = float((hi - lo).max())
    translate = (lo + hi) / 2 - edge / 2
    grid = np.zeros((n, n, n), dtype=bool)
    # Mark every target voxel a source cube overlaps (sample each cube at its corners/centre).
    offsets = np.array([[dx, dy, dz] for dx in (-0.49, 0, 0.49) for dy in (-0.49, 0, 0.49)
                        for dz in (-0.49, 0, 0.49)]) * float(voxel_size)
    for offset in offsets:
        index = np.clip(np.floor((centres + offset - translate) / edge * n).astype(np.int64),
                        0, n - 1)
        grid[index[:, 0], index[:, 1], index[:, 2]] = True
    return grid, translate, edge


def pixels_to_rgba8(pixels, width, height, channels):
    """Blender ``Image.pixels`` (floats, rows bottom to top) -> (H, W, 4) uint8 top to bottom."""
    array = np.asarray(pixels, dtype=np.float32).reshape(height, width, channels)[::-1]
    if channels == 1:
        array = np.repeat(array, 3, axis=2)
    if channels == 2:  # grey + alpha
        array = np.concatenate([np.repeat(array[..., :1], 3, axis=2), array[..., 1:]], axis=2)
    if array.shape[2] == 3:
        array = np.concatenate([array, np.ones(array.shape[:2] + (1,), np.float32)], axis=2)
    array = np.nan_to_num(array[..., :4], nan=0.0, posinf=1.0, neginf=0.0)
    return np.ascontiguousarray((np.clip(array, 0, 1) * 255 + 0.5).astype(np.uint8))


def mask_from_rgba(rgba, size):
    """A mask (H, W) uint8 for an image of ``size`` (H, W): the mask image's alpha where it
    has transparency, else its brightness; resampled (nearest) to the image's size."""
    alpha = rgba[..., 3]
    mask = alpha if alpha.min() < 255 else rgba[..., :3].max(axis=2)
    h, w = size
    if mask.shape != (h, w):
        rows = np.minimum((np.arange(h) + 0.5) * mask.shape[0] / h, mask.shape[0] - 1)
        cols = np.minimum((np.arange(w) + 0.5) * mask.shape[1] / w, mask.shape[1] - 1)
        mask = mask[rows.astype(np.int64)][:, cols.astype(np.int64)]
    return np.ascontiguousarray(mask, dtype=np.uint8)

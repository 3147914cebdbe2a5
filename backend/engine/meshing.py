"""From a lattice of logits to a clean, closed triangle mesh, plus optional post-processing.

All vertex coordinates here are in the unit cube of the network (docs/design.md, "Coordinates"); undoing the
input's normalisation is the caller's job.
"""

import logging

import numpy as np

from ..errors import Cancelled, UserError
from .mise import lattice_to_unit

logger = logging.getLogger(__name__)


def check_stop(should_stop):
    """Raise ``Cancelled`` when the caller's ``should_stop()`` says so (every long loop)."""
    if should_stop is not None and should_stop():
        raise Cancelled()


def marching_cubes(values, threshold):
    """Closed mesh of the iso-surface ``values == threshold``.

    values: (R + 1, R + 1, R + 1) float32 logits on the MISE lattice (inside is >= threshold).
    Returns vertices (V, 3) float32 in unit-cube coordinates (lattice index i at
    -0.55 + 1.1 * i / R) and faces (F, 3) int32, counter-clockwise seen from outside.
    """
    resolution = values.shape[0] - 1
    vertices, faces = lattice_marching_cubes(values, threshold)
    return lattice_to_unit(vertices, resolution, np.float64).astype(np.float32), faces


def outside_value(threshold):
    """The logit of points beyond the lattice: far below the threshold, yet not so far that
    a surface reaching the lattice's edge closes *on* the edge points (logits are within tens
    of the threshold, so the closing vertices lie about 1% of a cell beyond the edge; with an
    extreme value they would coincide in float32 and leave zero-area faces). A constant, so
    that blocks of one lattice meshed apart pad alike."""
    return float(threshold) - 1000.0


def lattice_marching_cubes(values, threshold):
    """Closed mesh of ``values == threshold`` on any (X, Y, Z) lattice of logits, with
    vertices (V, 3) float64 in lattice index units and faces (F, 3) int32, counter-clockwise
    seen from outside. Everything beyond the lattice counts as outside."""
    inside = values >= threshold
    if not inside.any():
        return np.zeros((0, 3)), np.zeros((0, 3), np.int32)
    # Marching cubes only sees the inside's bounding box plus one layer of real outside
    # values: everything beyond is outside anyway, and the crop is several times smaller.
    box = inside_box(inside)
    vertices, faces = block_marching_cubes(values[box], threshold, ((True, True),) * 3)
    return vertices + np.array([b.start for b in box]), faces


def inside_box(inside):
    """Slices of the bounding box of the True points of a non-empty (X, Y, Z) bool lattice,
    grown by one layer where the lattice goes on: that layer is all False."""
    box = []
    for axis in range(3):
        present = np.flatnonzero(inside.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append(slice(max(present[0] - 1, 0), min(present[-1] + 2, inside.shape[axis])))
    return tuple(box)


def block_marching_cubes(values, threshold, closed):
    """Marching cubes of one block of a larger lattice: (X, Y, Z) logits -> vertices (V, 3)
    float64 in the block's index units, faces (F, 3) int32.

    closed: per axis (low side, high side), True where the surface must close (the lattice
    ends there: one layer of ``outside_value`` is added), False where a neighbouring block
    goes on.
    Open sides leave the surface open along them; a neighbour sharing that face plane computes
    the very same vertices there (same values, same arithmetic), so the pieces join exactly.
    """
    if not (values >= threshold).any():
        return np.zeros((0, 3)), np.zeros((0, 3), np.int32)
    pad = [(int(low), int(high)) for low, high in closed]
    padded = np.pad(values, pad, mode="constant", constant_values=outside_value(threshold))
    vertices, faces = _marching_cubes()(padded, float(threshold))
    return vertices - np.array([low for low, _ in pad]), faces.astype(np.int32)


def _marching_cubes():
    """PyMCubes' ``marching_cubes`` where it is installed, else the numpy one that gives the
    same triangles (``marching``: Blender 5.1+'s Python 3.13 has no PyMCubes wheel)."""
    try:
        import mcubes
    except ImportError:
        from .marching import marching_cubes

        return marching_cubes
    return mcubes.marching_cubes


def exterior(outside):
    """The points of the bool lattice ``outside`` (X, Y, Z) connected through faces to its
    border, as a bool lattice (numpy alone: each pass spreads reachability along whole
    runs of outside points on one axis, until three passes in a row change nothing)."""
    reach = np.zeros_like(outside)
    for axis in range(3):
        border = [slice(None)] * 3
        for end in (0, -1):
            border[axis] = end
            reach[tuple(border)] = outside[tuple(border)]
    unchanged = 0
    axis = 0
    while unchanged < 3:
        along = np.moveaxis(outside, axis, -1)
        starts = along.copy()
        starts[..., 1:] &= ~along[..., :-1]
        runs = np.cumsum(starts.ravel()).reshape(along.shape) * along  # run id, 0 = inside
        reached = np.zeros(int(runs.max()) + 1, bool)
        reached[runs[np.moveaxis(reach, axis, -1)]] = True
        reached[0] = False
        spread = np.moveaxis(reached[runs], -1, axis)
        unchanged = unchanged + 1 if np.array_equal(spread, reach) else 1
        reach = spread
        axis = (axis + 1) % 3
    return reach


def fill_enclosed(values, threshold):
    """``values`` with every enclosed void made inside: (X, Y, Z) logits -> a copy.

    A scan only ever sees outer surfaces, so a void sealed inside a solid is the network's
    guess (ConvONet's plane features cannot tell a box's centre from its faces) and is
    invisible, yet it breaks volumes, booleans and 3D prints. Outside lattice points not
    connected (through faces) to the lattice's border are set inside (``threshold + 1``,
    clear of the iso-level), so marching cubes meshes neither the void nor anything floating
    in it. Open pockets (a mug's inside) reach the border and stay.

    Only the inside's bounding box (``inside_box``) is labelled: its added layer is outside
    and touches the rest of the outside, which reaches the border, so a void is enclosed in
    the whole lattice exactly when it touches no side of the box (3x less work on a
    typical object at 256^3).
    """
    inside = values >= threshold
    if not inside.any():
        return values
    box = inside_box(inside)
    outside = ~inside[box]
    enclosed = outside & ~exterior(outside)
    if not enclosed.any():
        return values
    filled = values.copy()
    filled[box][enclosed] = threshold + 1.0
    return filled


# Taubin's lambda|mu smoothing (Taubin 1995): a shrinking step then an inflating one, so the
# mesh loses its marching-cubes ripples without losing volume (mu < -lambda; the pass band
# 1/lambda + 1/mu = 0.11, as in trimesh's filter_taubin).
TAUBIN_LAMBDA, TAUBIN_MU = 0.5, -0.53
# A shell of the mesh with no input point within this distance (unit cube) is dropped as a
# floater (``drop_floaters``): 0.1 is 13 cells of the 128 lattice, far beyond the input's noise
# and sampling gaps at 300 points, and short of the 0.2-0.4 at which point-latent models
# leave blobs where there are no points (docs/design.md, "Floaters").
FLOATER_DISTANCE = 0.1


def taubin(vertices, faces, steps, lamb=TAUBIN_LAMBDA, mu=TAUBIN_MU):
    """Taubin-smoothed vertices (V, 3) float32 after ``steps`` (lambda, mu) pairs of the
    uniform Laplacian (each vertex towards the mean of its edge neighbours), faces fixed.
    vertices (V, 3) float, faces (F, 3) int; numpy alone."""
    v = np.asarray(vertices, np.float64).copy()
    if steps <= 0 or len(faces) == 0:
        return v.astype(np.float32)
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]).astype(np.int64)
    edges = np.sort(edges, axis=1)
    unique = np.unique(edges[:, 0] * len(v) + edges[:, 1])  # each edge once
    edges = np.stack([unique // len(v), unique % len(v)], axis=1)
    ends = np.concatenate([edges, edges[:, ::-1]])  # both directions
    ends = ends[np.argsort(ends[:, 0], kind="stable")]  # grouped by the vertex moved
    moved, starts, degree = np.unique(ends[:, 0], return_index=True, return_counts=True)
    neighbours, degree = ends[:, 1], degree[:, None].astype(np.float64)

    def move(factor):
        mean = np.add.reduceat(v[neighbours], starts, axis=0) / degree
        v[moved] += factor * (mean - v[moved])

    for _ in range(int(steps)):
        move(lamb)
        move(mu)
    return v.astype(np.float32)


def drop_floaters(vertices, faces, points, distance=FLOATER_DISTANCE):
    """Drop the shells of a mesh that have no vertex within about ``distance`` of an input
    point: blobs a model put where it saw nothing. Returns (vertices, faces) with the kept
    faces' vertices in their order. vertices (V, 3), points (N, 3) float in the same units.

    "Within" is tested on a grid of ``distance`` cells: a vertex is supported when a point
    lies in its cell or one of the 26 around it, so every point closer than ``distance``
    counts and none further than 2 sqrt(3) ``distance`` does. Shells hold the closed unseen
    side of a partial scan together with the seen side, so only detached pieces go.
    """
    if len(faces) == 0 or points is None or len(points) == 0:
        return vertices, faces
    labels, volumes = shells(vertices, faces)
    if len(volumes) == 1:
        return vertices, faces
    lo = np.minimum(np.min(points, axis=0), np.min(vertices, axis=0)) - 2 * distance
    hi = np.maximum(np.max(points, axis=0), np.max(vertices, axis=0)) + 2 * distance
    dims = np.ceil((hi - lo) / distance).astype(np.int64) + 1

    def keys(p):  # one int64 per grid cell of each point (P, 3)
        c = np.floor((np.asarray(p, np.float64) - lo) / distance).astype(np.int64)
        return (c[:, 0] * dims[1] + c[:, 1]) * dims[2] + c[:, 2]

    occupied = np.unique(keys(points))
    supported = np.zeros(len(vertices), bool)
    for offset in np.stack(np.meshgrid(*[[-1, 0, 1]] * 3, indexing="ij"), -1).reshape(-1, 3):
        probe = keys(vertices + offset * distance)
        found = np.searchsorted(occupied, probe)
        supported |= occupied[np.minimum(found, len(occupied) - 1)] == probe
    keep = np.zeros(len(volumes), bool)
    keep[labels[supported]] = True
    if keep.all() or not keep.any():  # nothing near the points at all: not ours to judge
        return vertices, faces
    kept = faces[keep[labels[faces[:, 0]]]]
    logger.info("dropped %d of %d shells with no input point within %g", (~keep).sum(),
                len(keep), distance)
    return only_used(vertices, kept)


def connected_components(n, edges):
    """(count, labels (n,) int64 in [0, count)) of the graph of n nodes and edges (E, 2),
    in numpy alone: every edge hooks the larger of its two roots under the smaller, then
    pointers jump to their roots, until no edge joins two roots. Labels are numbered in
    the order of each component's smallest node (as SciPy's ``connected_components``)."""
    parent = np.arange(n)
    edges = np.asarray(edges, np.int64).reshape(-1, 2)
    while True:
        a, b = parent[edges[:, 0]], parent[edges[:, 1]]
        split = a != b
        if not split.any():
            break
        a, b = a[split], b[split]
        np.minimum.at(parent, np.maximum(a, b), np.minimum(a, b))
        while True:
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped
    roots, labels = np.unique(parent, return_inverse=True)
    return len(roots), labels.reshape(-1)


def shells(vertices, faces):
    """The connected pieces of a mesh (faces sharing vertices): (labels (V,) int, the piece
    of each vertex; volumes (S,) float64, each piece's signed volume, negative for the shell
    of a void (closed pieces oriented counter-clockwise from outside); vertices no face uses
    are pieces of volume 0)."""
    edges = np.concatenate([faces[:, :2], faces[:, 1:]])
    count, labels = connected_components(len(vertices), edges)
    corners = np.asarray(vertices, np.float64)[faces]
    # Each face's signed volume against the origin, summed per piece.
    volume = np.einsum("ij,ij->i", corners[:, 0], np.cross(corners[:, 1], corners[:, 2])) / 6
    return labels, np.bincount(labels[faces[:, 0]], weights=volume, minlength=count)


def drop_void_shells(vertices, faces):
    """Drop the shells of a closed mesh that bound enclosed voids, and the pieces floating in
    them (see ``fill_enclosed``, which does this on the lattice where the whole lattice is at
    hand); returns (vertices, faces) with the vertices the kept faces use, in their order.

    Every shell of our meshes is closed and oriented counter-clockwise from outside, so a
    void's shell is the one whose signed volume is negative; a piece floats in a void when
    one of its vertices lies inside the void shells. vertices (V, 3) float, faces (F, 3) int.
    """
    if len(faces) == 0:
        return vertices, faces
    labels, volumes = shells(vertices, faces)
    void = volumes < 0
    if not void.any():
        return vertices, faces
    shell = labels[faces[:, 0]]
    dropped = void.copy()
    dropped[floating_in(vertices, faces, labels, shell, void)] = True
    return only_used(vertices, faces[~dropped[shell]])


def only_used(vertices, faces):
    """(vertices the faces (F, 3) use, in their order; the faces renumbered to them)."""
    used = np.zeros(len(vertices), bool)
    used[faces] = True
    remap = np.cumsum(used) - 1
    return vertices[used], remap[faces].astype(faces.dtype)


def floating_in(vertices, faces, labels, shell, void):
    """Ids of the solid shells that lie inside a void shell: one vertex of each is tested
    against the void shells whose bounding box holds it. labels (V,) shell of each vertex,
    shell (F,) shell of each face, void (S,) bool per shell."""
    from .inside import contains

    order = np.argsort(labels, kind="stable")  # vertices grouped by shell
    starts = np.flatnonzero(np.r_[True, np.diff(labels[order]) != 0])
    present = labels[order[starts]]
    probes = np.full(len(void), -1)
    probes[present] = order[starts]  # one vertex of each shell
    grouped = vertices[order]
    lo = np.full((len(void), 3), np.inf)
    hi = np.full((len(void), 3), -np.inf)
    lo[present] = np.minimum.reduceat(grouped, starts)
    hi[present] = np.maximum.reduceat(grouped, starts)
    solid = np.flatnonzero(~void & (probes >= 0))
    voids = np.flatnonzero(void)
    points = vertices[probes[solid]]
    lo, hi = lo[voids], hi[voids]
    floating = np.zeros(len(solid), bool)
    for start in range(0, len(voids), 256):  # (probes, 256 voids) boxes at a time
        box = slice(start, start + 256)
        within = ((points[:, None] >= lo[None, box]) & (points[:, None] <= hi[None, box])).all(-1)
        candidates = np.flatnonzero(within.any(axis=1) & ~floating)
        if len(candidates):
            near = np.zeros(len(void), bool)
            near[voids[box][within[candidates].any(axis=0)]] = True
            floating[candidates] |= contains(vertices, faces[near[shell]], points[candidates],
                                             closed=True)
    return solid[floating]


def gradient_normals(decoder, vertices, device="cpu", batch_points=65536, should_stop=None):
    """Outward unit normals (V, 3) float32 from the gradient of the network at each vertex.

    decoder: maps (N, 3) float32 tensors to logits (N,) and is differentiable. Logits grow
    inwards, so the outward normal is minus the normalised gradient. should_stop is
    polled at every batch (raises ``Cancelled``).
    """
    import torch

    normals = np.empty_like(vertices, dtype=np.float32)
    for start in range(0, len(vertices), batch_points):
        check_stop(should_stop)
        p = torch.from_numpy(vertices[start:start + batch_points]).to(device)
        with torch.enable_grad():
            p.requires_grad_(True)
            (grad,) = torch.autograd.grad(decoder(p).sum(), p)
        grad = -grad / (grad.norm(dim=1, keepdim=True) + 1e-10)
        normals[start:start + batch_points] = grad.cpu().numpy()
    return normals


def simplify(vertices, faces, face_count):
    """Quadric edge-collapse decimation to about ``face_count`` faces (fast-simplification)."""
    try:
        import trimesh
    except ImportError:
        raise UserError("simplify needs trimesh and fast-simplification, which this Python "
                        "lacks (the bundled engine in Blender's Python has neither): use "
                        "Blender's Decimate modifier, or a backend environment") from None

    if face_count >= len(faces):
        return vertices, faces
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    small = mesh.simplify_quadric_decimation(face_count=int(face_count))
    return (np.asarray(small.vertices, dtype=np.float32),
            np.asarray(small.faces, dtype=np.int32))


def refine(decoder, vertices, faces, threshold, steps=30, device="cpu", lr=1e-4,
           normal_weight=0.01, seed=0, should_stop=None):
    """The paper's mesh refinement: move vertices so the surface sits on the threshold.

    For a random point on every face (Dirichlet(0.5) barycentrics) the loss asks the occupancy
    probability to equal ``threshold`` (a probability) and the face normal to match the
    network's normalised negative gradient. RMSprop on the vertex positions, faces fixed.
    decoder: differentiable (N, 3) -> logits (N,). Returns new vertices (V, 3) float32.
    should_stop is polled at every step (raises ``Cancelled``).
    """
    import torch

    generator = np.random.default_rng(seed)
    v = torch.nn.Parameter(torch.from_numpy(vertices).to(device, torch.float32).clone())
    face_index = torch.from_numpy(faces.astype(np.int64)).to(device)
    optimizer = torch.optim.RMSprop([v], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            check_stop(should_stop)
            optimizer.zero_grad()
            corners = v[face_index]  # (F, 3, 3)
            weights = torch.from_numpy(generator.dirichlet(
                (0.5, 0.5, 0.5), size=len(faces)).astype(np.float32)).to(device)
            point = (corners * weights[:, :, None]).sum(dim=1)
            normal = torch.linalg.cross(corners[:, 1] - corners[:, 0],
                                        corners[:, 2] - corners[:, 1])
            normal = normal / (normal.norm(dim=1, keepdim=True) + 1e-10)
            occupancy = torch.sigmoid(decoder(point))
            (grad,) = torch.autograd.grad(occupancy.sum(), point, create_graph=True)
            target = -grad / (grad.norm(dim=1, keepdim=True) + 1e-10)
            loss = ((occupancy - threshold) ** 2).mean() \
                + normal_weight * ((normal - target) ** 2).sum(dim=1).mean()
            loss.backward()
            optimizer.step()
    return v.detach().cpu().numpy()

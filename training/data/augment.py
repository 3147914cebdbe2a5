"""Training augmentations that make real scans look familiar (config ``data.augment``).

Applied to point-cloud *training* samples only (never validation), in the dataset's sample
step before ``normalize_to_inputs``; every draw comes from the sample's generator, so a
sample stays a function of (seed, epoch, shape index). All options are off by default::

    rotation:            none | up | any. ``up`` rotates about the up axis, which is y in
                         our corpus (ShapeNet is y-up), not z; ``any`` draws a uniform
                         random rotation (a normalised Gaussian quaternion).
    anisotropic_scale:   [min, max]: one factor per axis, log-uniform in [min, max].
    points_range:        [min, max]: a scan's density. Each sample draws a count n
                         log-uniformly and keeps n distinct surface points (all of them when
                         it has fewer); ``sparse_fill`` says how it reaches
                         ``data.input_points``.
    sparse_fill:         resample (default): draw ``data.input_points`` points *with
                         replacement* from the n, so sparse samples carry repeated points
                         (as inference prepares sparse inputs for such a card). none: keep
                         ``data.input_points`` distinct points in random order and record n
                         as ``inputs.count``; ``collate`` trims the batch to its first
                         sample's count, so no neighbourhood holds copies of a point.
    noise_range:         [min, max]: Gaussian noise std drawn uniformly per sample
                         (replaces ``data.input_noise``).
    partial_views:       [min, max]: with probability ``partial_probability`` (default 1)
                         keep only the surface points seen from 1..k random viewpoints on a
                         sphere of radius 2 around the shape (see ``visible_points``).

Rotation and scale move the query points (``points``, ``points_iou``) with the cloud:
occupancy is invariant when shape and points undergo the same transform, so the labels stay
valid. Normals follow with the inverse transpose.

When any option is on, the input field loads the whole surface cloud (with normals) and
``augment_sample`` does the subsampling and noise that the field does otherwise:
transform -> partial views -> density -> ``input_points`` -> noise.
"""

import numpy as np

from backend.engine.transforms import uniform_rotation

CAMERA_DISTANCE = 2.0
GRID = 128  # z-buffer cells per side
DEPTH_TOLERANCE = 0.02  # a point is visible within this of its cell's nearest depth

_OFF = {"rotation": "none", "anisotropic_scale": None, "points_range": None,
        "noise_range": None, "partial_views": None, "sparse_fill": "resample"}


def augment_options(data):
    """The options ``augment_sample`` takes for the config's ``data`` section (training
    split), or None when augmentation is off or the input is not a point cloud."""
    augment = data.get("augment") or {}
    if data.get("input") != "pointcloud" or all(
            augment.get(key, off) == off for key, off in _OFF.items()):
        return None
    return {**augment, "input_points": data["input_points"],
            "input_noise": data["input_noise"]}


def random_rotation(rng, mode):
    """(3, 3) float64 rotation: identity (``none``), about y (``up``) or uniform (``any``)."""
    if mode == "none":
        return np.eye(3)
    if mode == "up":
        angle = rng.uniform(0, 2 * np.pi)
        c, s = np.cos(angle), np.sin(angle)
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    if mode == "any":
        return uniform_rotation(rng)
    raise ValueError(f"rotation must be none, up or any, got {mode!r}")


def random_scale(rng, bounds):
    """(3,) per-axis factors, log-uniform in ``bounds`` ([min, max]; None: ones)."""
    if bounds is None:
        return np.ones(3)
    low, high = np.log(bounds[0]), np.log(bounds[1])
    return np.exp(rng.uniform(low, high, 3))


def visible_points(points, normals, camera, grid=GRID, tolerance=DEPTH_TOLERANCE):
    """Mask (N,) of the points a perspective camera at ``camera`` (looking at the origin)
    sees: the normal faces the camera (normal . (camera - point) > 0) and the point lies
    within ``tolerance`` of the nearest depth of its cell in a ``grid`` x ``grid``
    z-buffer over the projected points. The whole surface cloud (100k points in the
    official files) is dense enough to fill the cells; in a sparse cloud occluded points
    can show through empty cells (the facing test still removes back faces)."""
    camera = np.asarray(camera, np.float64)
    forward = -camera / np.linalg.norm(camera)
    helper = np.array([0.0, 1.0, 0.0]) if abs(forward[1]) < 0.9 else np.array([1.0, 0, 0])
    right = np.cross(forward, helper)
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    offset = points.astype(np.float64) - camera
    depth = offset @ forward
    facing = np.einsum("ij,ij->i", normals, -offset) > 0
    ahead = depth > 1e-6
    mask = np.zeros(len(points), bool)
    if not np.any(ahead & facing):
        return mask
    safe = np.where(ahead, depth, 1.0)
    image = np.stack([offset @ right / safe, offset @ up / safe], axis=1)
    low = image[ahead].min(axis=0)
    extent = max(float((image[ahead].max(axis=0) - low).max()), 1e-9)
    cells = np.clip(((image - low) / extent * grid).astype(np.int64), 0, grid - 1)
    cell = cells[:, 0] * grid + cells[:, 1]
    nearest = np.full(grid * grid, np.inf)
    # Only front-facing points occlude: a closed surface's back faces are never nearer.
    np.minimum.at(nearest, cell[ahead & facing], depth[ahead & facing])
    mask = ahead & facing & (depth <= nearest[cell] + tolerance)
    return mask


def partial_scan(points, normals, rng, views):
    """Mask (N,) of the points seen from a random number (``views`` [min, max]) of
    viewpoints drawn uniformly on the sphere of radius ``CAMERA_DISTANCE``."""
    count = int(rng.integers(views[0], views[1] + 1))
    mask = np.zeros(len(points), bool)
    for _ in range(count):
        direction = rng.standard_normal(3)
        camera = CAMERA_DISTANCE * direction / np.linalg.norm(direction)
        mask |= visible_points(points, normals, camera)
    return mask


def resample_density(count, input_points, rng, points_range=None):
    """Indices (input_points,) into a cloud of ``count`` points: without ``points_range``
    drawn with replacement from all (as ``SubsamplePointcloud``); with it, from a subset
    of n distinct points, n log-uniform in ``points_range`` (at most ``count``)."""
    if points_range is None:
        return rng.integers(count, size=input_points)
    n = density_count(count, rng, points_range)
    subset = rng.choice(count, size=n, replace=False)
    return subset[rng.integers(n, size=input_points)]


def density_count(count, rng, points_range):
    """A scan's point count: log-uniform in ``points_range``, in [1, count]."""
    low, high = np.log(points_range[0]), np.log(points_range[1])
    return min(count, max(1, int(round(np.exp(rng.uniform(low, high))))))


def distinct_subset(count, input_points, rng, points_range=None):
    """``(indices, n)``: min(count, input_points) distinct indices in random order, so any
    prefix is a uniform subset, and the scan's drawn count n (log-uniform in
    ``points_range``; all of them without it), which ``collate`` trims the batch to."""
    index = rng.choice(count, size=min(count, input_points), replace=False)  # shuffled
    n = len(index) if points_range is None else min(len(index), density_count(
        count, rng, points_range))
    return index, n


def augment_sample(sample, rng, options):
    """Augment a point-cloud sample in place (and return it): ``options`` as
    ``augment_options`` builds them (the ``data.augment`` keys, plus ``input_points`` and
    ``input_noise``; without ``input_points`` only rotation and scale are applied, to the
    cloud as it is)."""
    rotation = random_rotation(rng, options.get("rotation", "none"))
    scale = random_scale(rng, options.get("anisotropic_scale"))
    moves = options.get("rotation", "none") != "none" or bool(options.get("anisotropic_scale"))
    matrix = rotation * scale  # R @ diag(scale)
    normal_matrix = rotation / scale  # (R diag(s))^-T = R diag(1/s)

    def move(points, normals):
        """(points, normals) under the transform (normals None stays None)."""
        if not moves:
            return points, normals
        points = (points.astype(np.float64) @ matrix.T).astype(np.float32)
        if normals is not None:
            normals = normals.astype(np.float64) @ normal_matrix.T
            norms = np.linalg.norm(normals, axis=1, keepdims=True)
            normals = (normals / np.maximum(norms, 1e-12)).astype(np.float32)
        return points, normals

    for key in ("points", "points_iou"):
        if key in sample:
            sample[key] = move(sample[key], None)[0]
    points, normals = sample["inputs"], sample.get("inputs.normals")
    if "input_points" not in options:
        sample["inputs"], normals = move(points, normals)
        if normals is not None:
            sample["inputs.normals"] = normals
        return sample

    keep = np.arange(len(points))
    moved = False  # the transform is linear per point: only partial scans need it first
    views = options.get("partial_views")
    if views is not None and normals is not None and \
            rng.random() < options.get("partial_probability", 1.0):
        points, normals = move(points, normals)
        moved = True
        seen = np.flatnonzero(partial_scan(points, normals, rng, views))
        if len(seen):  # nothing seen (degenerate normals): keep the whole cloud
            keep = seen
    if options.get("sparse_fill", "resample") == "none":
        index, sample["inputs.count"] = distinct_subset(
            len(keep), options["input_points"], rng, options.get("points_range"))
        index = keep[index]
    else:
        index = keep[resample_density(len(keep), options["input_points"], rng,
                                      options.get("points_range"))]
    chosen = points[index]
    chosen_normals = None if normals is None else normals[index]
    if not moved:
        chosen, chosen_normals = move(chosen, chosen_normals)
    noise_range = options.get("noise_range")
    std = rng.uniform(*noise_range) if noise_range else options.get("input_noise", 0.0)
    sample["inputs"] = (chosen + std * rng.standard_normal(chosen.shape)).astype(np.float32)
    if chosen_normals is not None:
        sample["inputs.normals"] = chosen_normals
    return sample

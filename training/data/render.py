"""Sphere-traced views of an SDF in the unit cube, stored like ONet's ``img_choy2016`` folder.

Camera convention (a pinhole camera as in the official ``cameras.npz``): a world point
``X (3,)`` maps to camera coordinates ``x = R X + t`` with ``world_mat_i = [R | t] (3, 4)``
(x right, y down, z forward: the depth), then to pixels ``(u, v) = (K x)[:2] / x[2]`` with
``camera_mat_i = K = [[f, 0, W / 2], [0, f, H / 2], [0, 0, 1]] (3, 3)``. ``u`` is the
column and ``v`` the row, measured from the top-left corner of the image: pixel (row i,
column j) covers ``u`` in [j, j + 1) and ``v`` in [i, i + 1). This is the pixel frame that
im2mesh's ``fix_K_camera`` maps to [-1, 1] (with ``img_size`` = W).

Views look at the origin from ``VIEW_DISTANCE`` with y up, at evenly spread azimuths (a random
offset per shape) and random elevations; the focal length makes the unit cube's circumsphere
fill the image, so a normalised shape is never cut off. Shading follows a ``looks.Look``:
the ``plain`` look of the original corpus by default; the ``photo`` and ``novel`` looks also
draw the camera's distance (``PHOTO_DISTANCE``, the focal length following it, so the
framing stays and the perspective changes) and a wider range of elevations.
"""

from __future__ import annotations

import numpy as np

from .looks import Look, plain_look, random_look
from .sdf import SDF
from .surface import value_and_gradient

VIEW_DISTANCE = 2.0
ELEVATION_RANGE = (np.radians(10), np.radians(40))
PHOTO_DISTANCE = (1.6, 3.0)
PHOTO_ELEVATION_RANGE = (np.radians(-5), np.radians(50))
# Direction of a novel look's stripes, in world coordinates.
STRIPE_AXIS = np.array([0.3, 1.0, 0.2]) / np.linalg.norm([0.3, 1.0, 0.2])
MAX_STEPS = 128
# A ray hits when the SDF falls below this fraction of a pixel's footprint at its depth.
HIT_PIXELS = 0.25
BOUND = 0.5 + 1e-3  # rays are traced inside this cube only


def camera(azimuth: float, elevation: float, size: int,
           distance: float = VIEW_DISTANCE) -> tuple[np.ndarray, np.ndarray]:
    """``(world_mat (3, 4), camera_mat (3, 3))`` float32 of a camera at ``distance``
    looking at the origin from ``azimuth`` (about y, from +z towards +x) and ``elevation``
    (radians), for a ``size`` x ``size`` image."""
    centre = distance * np.array([np.cos(elevation) * np.sin(azimuth), np.sin(elevation),
                                       np.cos(elevation) * np.cos(azimuth)])
    forward = -centre / np.linalg.norm(centre)
    right = np.cross(forward, (0.0, 1.0, 0.0))
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    rotation = np.stack([right, down, forward])
    world_mat = np.concatenate([rotation, -rotation @ centre[:, None]], axis=1)
    focal = size / 2 / np.tan(np.arcsin(np.sqrt(3) / 2 / distance))
    camera_mat = np.array([[focal, 0, size / 2], [0, focal, size / 2], [0, 0, 1]])
    return world_mat.astype(np.float32), camera_mat.astype(np.float32)


def render(sdf: SDF, world_mat: np.ndarray, camera_mat: np.ndarray, size: int,
           look: Look | None = None) -> np.ndarray:
    """Image ``(size, size, 4) uint8`` RGBA of the SDF shaded by ``look`` (default: the
    plain light grey Lambert + ambient), alpha 255 where a pixel's central ray hits the
    surface, white transparent elsewhere (so an RGB conversion shows a white background,
    like ShapeNet renders)."""
    look = look or plain_look()
    rotation = world_mat[:, :3].astype(np.float64)
    origin = -rotation.T @ world_mat[:, 3]
    focal, cx, cy = camera_mat[0, 0], camera_mat[0, 2], camera_mat[1, 2]
    v, u = np.mgrid[:size, :size] + 0.5
    rays = np.stack([(u.ravel() - cx) / focal, (v.ravel() - cy) / focal, np.ones(size * size)])
    directions = np.einsum("ji,jn->in", rotation, rays)
    directions /= np.linalg.norm(directions, axis=0)

    depth, hit = _trace(sdf, origin, directions, HIT_PIXELS / focal)
    points = (origin[:, None] + directions[:, hit] * depth[hit]).T.astype(np.float32)
    _, gradient = value_and_gradient(sdf, points)
    normals = gradient / np.maximum(np.linalg.norm(gradient, axis=1, keepdims=True), 1e-12)
    light = rotation.T @ look.light
    lambert = np.clip(np.einsum("nj,j->n", normals, light), 0, None)
    albedo = np.broadcast_to(look.albedo, (len(points), 3))
    if look.stripes > 0:
        band = np.floor(2 * (points @ STRIPE_AXIS) / look.stripes) % 2 == 1
        albedo = np.where(band[:, None], look.second, look.albedo)
    shade = albedo * (look.ambient + (1 - look.ambient) * lambert)[:, None]
    if look.specular > 0:
        half = light[None] - directions[:, hit].T
        half /= np.maximum(np.linalg.norm(half, axis=1, keepdims=True), 1e-12)
        highlight = np.clip(np.einsum("nj,nj->n", normals, half), 0, None) ** look.shininess
        shade = shade + (look.specular * highlight * (lambert > 0))[:, None]

    image = np.full((size * size, 4), 255, dtype=np.uint8)
    image[:, 3] = 0
    image[hit, :3] = np.round(255 * np.clip(shade, 0, 1)).astype(np.uint8)
    image[hit, 3] = 255
    return image.reshape(size, size, 4)


def _trace(sdf: SDF, origin: np.ndarray, directions: np.ndarray,
           eps_per_depth: float) -> tuple[np.ndarray, np.ndarray]:
    """Sphere tracing of unit ``directions (3, M)`` from ``origin (3,)``, inside the cube
    ``[-BOUND, BOUND]^3``. Returns ``(depth (M,), hit (M,) bool)``; a ray hits when the SDF
    is below ``eps_per_depth * depth``. Steps by the SDF value, which never overshoots since
    ``|sdf|`` is a lower bound of the distance. Only live rays are evaluated."""
    with np.errstate(divide="ignore"):
        inverse = 1 / directions
    near = (-BOUND - origin[:, None]) * inverse
    far = (BOUND - origin[:, None]) * inverse
    t_in = np.maximum(np.minimum(near, far).max(axis=0), 0)
    t_out = np.maximum(near, far).min(axis=0)

    depth = np.zeros(directions.shape[1])
    hit = np.zeros(directions.shape[1], dtype=bool)
    live = np.flatnonzero(t_in < t_out)
    t = t_in[live]
    for _ in range(MAX_STEPS):
        if len(live) == 0:
            break
        points = (origin[:, None] + directions[:, live] * t).astype(np.float32)
        distance = sdf.field(points)
        done = distance < eps_per_depth * t
        hit[live[done]] = True
        depth[live[done]] = t[done]
        t = t + distance
        keep = ~done & (t < t_out[live])
        live, t = live[keep], t[keep]
    return depth, hit


def render_views(sdf: SDF, views: int, size: int, rng: np.random.Generator,
                 look: str = "plain") -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    """``views`` RGBA images ``(size, size, 4) uint8`` at evenly spread azimuths (random
    offset) and random elevations, and their cameras as ``{"world_mat_i", "camera_mat_i"}``.
    ``look`` (``looks.LOOKS``): plain, or a look drawn per view with the camera's distance
    and a wider elevation range."""
    offset = rng.uniform(0, 2 * np.pi)
    if look == "plain":
        elevations = rng.uniform(*ELEVATION_RANGE, size=views)
        distances = np.full(views, VIEW_DISTANCE)
    else:
        elevations = rng.uniform(*PHOTO_ELEVATION_RANGE, size=views)
        distances = rng.uniform(*PHOTO_DISTANCE, size=views)
    images, cameras = [], {}
    for i in range(views):
        world_mat, camera_mat = camera(offset + 2 * np.pi * i / views, elevations[i], size,
                                       distances[i])
        images.append(render(sdf, world_mat, camera_mat, size, random_look(look, rng)))
        cameras[f"world_mat_{i}"] = world_mat
        cameras[f"camera_mat_{i}"] = camera_mat
    return images, cameras

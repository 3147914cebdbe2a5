"""A small software renderer: meshes and point clouds to RGBA images, numpy and Pillow only.

Orthographic views, auto-fitted: a ``View`` looks at the geometry from an azimuth (degrees,
about the y axis, from +z towards +x) and an elevation (degrees above the xz plane), y up,
the convention of the training renders. Meshes are rasterised triangle by triangle with
barycentric edge functions over each triangle's pixel bounding box (vectorised over batches
of triangles) and a z-buffer, then shaded with two-sided Lambert lighting from the face
normals. Points are splatted as small discs, z-buffered, coloured from near (dark blue) to
far (light blue). Pixels nothing covers are transparent white.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Rasteriser batch: candidate pixels per batch (about 100 MB of temporaries).
PIXEL_BATCH = 1_000_000
MESH_COLOUR = np.array([0.72, 0.76, 0.84])
AMBIENT = 0.3
# Towards the light in view coordinates (x right, y up, z towards the viewer): upper left.
LIGHT = np.array([-0.4, 0.6, 0.7]) / np.linalg.norm([-0.4, 0.6, 0.7])
NEAR_COLOUR, FAR_COLOUR = np.array([30, 70, 170]), np.array([160, 200, 245])
LABEL_HEIGHT = 16  # pixels above each panel of side_by_side, for PIL's default font


@dataclass
class View:
    """An orthographic camera. ``rotation`` (3, 3) has rows right, up and towards the
    viewer; ``center`` (3,) is the world point at the image centre; ``pixels_per_unit``
    the zoom; images are ``size`` x ``size`` pixels."""

    rotation: np.ndarray
    center: np.ndarray
    pixels_per_unit: float
    size: int

    @classmethod
    def fit(cls, points: np.ndarray, size: int = 512, azimuth: float = 30.0,
            elevation: float = 20.0, margin: float = 0.05) -> "View":
        """The view from ``azimuth``/``elevation`` (degrees) that frames ``points`` (N, 3)
        with ``margin`` (a fraction of the image) on every side."""
        # Straight up or down leaves "right" undefined: stop just short of the poles.
        a, e = np.radians(azimuth), np.radians(np.clip(elevation, -89.9, 89.9))
        back = np.array([np.cos(e) * np.sin(a), np.sin(e), np.cos(e) * np.cos(a)])
        right = np.cross((0.0, 1.0, 0.0), back)
        right /= np.linalg.norm(right)
        rotation = np.stack([right, np.cross(back, right), back])
        points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        if len(points) == 0:
            return cls(rotation, np.zeros(3), size / 2, size)
        lo, hi = points.min(axis=0), points.max(axis=0)
        center = (lo + hi) / 2
        projected = (points - center) @ rotation[:2].T
        extent = 2 * max(float(np.abs(projected).max()), 1e-9)
        return cls(rotation, center, size * (1 - 2 * margin) / extent, size)

    def project(self, points: np.ndarray) -> np.ndarray:
        """Points (N, 3) -> (N, 3): pixel column, pixel row (from the top left; pixel
        (r, c) spans [c, c + 1) x [r, r + 1)) and depth (world units, larger is farther)."""
        local = (np.asarray(points, dtype=np.float64) - self.center) @ self.rotation.T
        return np.stack([self.size / 2 + local[:, 0] * self.pixels_per_unit,
                         self.size / 2 - local[:, 1] * self.pixels_per_unit,
                         -local[:, 2]], axis=1)


def render_mesh(vertices: np.ndarray, faces: np.ndarray, size: int = 512,
                azimuth: float = 30.0, elevation: float = 20.0, view: View | None = None):
    """A shaded RGBA ``PIL.Image`` of a triangle mesh (V, 3)/(F, 3); ``view`` defaults to
    one fitted to the vertices (pass a shared view to compare meshes at the same scale)."""
    vertices = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    faces = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    view = view or View.fit(vertices, size, azimuth, elevation)
    depth, face = rasterize(view.project(vertices), faces, view.size)
    covered = face >= 0
    corners = vertices[faces[face[covered]]]
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-20)
    lambert = np.abs(normals @ view.rotation.T @ LIGHT)  # two-sided: orientation-free
    shade = AMBIENT + (1 - AMBIENT) * lambert
    return _image(covered, shade[:, None] * MESH_COLOUR * 255, view.size)


def rasterize(projected: np.ndarray, faces: np.ndarray, size: int) -> tuple[np.ndarray,
                                                                               np.ndarray]:
    """Z-buffer of triangles: ``projected`` (V, 3) vertices from ``View.project``, faces
    (F, 3). Returns (depth (size, size) float64, inf where empty; face index (size, size)
    int64, -1 where empty). A pixel is covered when its centre is inside a triangle."""
    zbuffer = np.full(size * size, np.inf)
    owner = np.full(size * size, -1, dtype=np.int64)
    tri = projected[faces]  # (F, 3, 3)
    area = _edge(tri[:, 0], tri[:, 1], tri[:, 2])
    lo = np.clip(np.ceil(tri[:, :, :2].min(axis=1) - 0.5), 0, size).astype(np.int64)
    hi = np.clip(np.floor(tri[:, :, :2].max(axis=1) - 0.5), -1, size - 1).astype(np.int64)
    span = np.maximum(hi - lo + 1, 0)
    keep = np.flatnonzero((area != 0) & (span[:, 0] > 0) & (span[:, 1] > 0))
    count = span[keep, 0] * span[keep, 1]
    start = 0
    while start < len(keep):
        stop = start + max(int(np.searchsorted(np.cumsum(count[start:]), PIXEL_BATCH,
                                               side="right")), 1)
        n = count[start:stop]
        index = np.repeat(keep[start:stop], n)
        k = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
        col = lo[index, 0] + k % span[index, 0]
        row = lo[index, 1] + k // span[index, 0]
        p = np.stack([col + 0.5, row + 0.5], axis=1)
        t = tri[index]
        # Barycentric weights, signed by the triangle's orientation so inside is >= 0.
        w = np.stack([_edge(t[:, 1], t[:, 2], p), _edge(t[:, 2], t[:, 0], p),
                      _edge(t[:, 0], t[:, 1], p)], axis=1) / area[index, None]
        inside = (w >= 0).all(axis=1)
        depth = (w[inside] * t[inside][:, :, 2]).sum(axis=1)
        _keep_nearest(zbuffer, owner, row[inside] * size + col[inside], depth, index[inside])
        start = stop
    return zbuffer.reshape(size, size), owner.reshape(size, size)


def _edge(a: np.ndarray, b: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Twice the signed area of (a, b, p) in the xy plane; arrays (..., >= 2)."""
    return (b[..., 0] - a[..., 0]) * (p[..., 1] - a[..., 1]) \
        - (b[..., 1] - a[..., 1]) * (p[..., 0] - a[..., 0])


def _keep_nearest(zbuffer: np.ndarray, owner: np.ndarray, pixel: np.ndarray,
                  depth: np.ndarray, ident: np.ndarray) -> None:
    """Write the nearest of the fragments (pixel, depth, ident) (N,) into the flat buffers
    where it beats what is there."""
    order = np.lexsort((depth, pixel))
    pixel, depth, ident = pixel[order], depth[order], ident[order]
    first = np.ones(len(pixel), dtype=bool)
    first[1:] = pixel[1:] != pixel[:-1]
    pixel, depth, ident = pixel[first], depth[first], ident[first]
    nearer = depth < zbuffer[pixel]
    zbuffer[pixel[nearer]] = depth[nearer]
    owner[pixel[nearer]] = ident[nearer]


def render_points(points: np.ndarray, size: int = 512, azimuth: float = 30.0,
                  elevation: float = 20.0, view: View | None = None,
                  radius: float | None = None):
    """An RGBA ``PIL.Image`` of a point cloud (N, 3): discs of ``radius`` pixels (default
    size / 160, at least 1.5), shaded like small spheres, coloured by depth."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    view = view or View.fit(points, size, azimuth, elevation)
    radius = max(view.size / 160, 1.5) if radius is None else radius
    projected = view.project(points)
    r = int(np.ceil(radius))
    dy, dx = np.mgrid[-r:r + 1, -r:r + 1]
    disc = dx * dx + dy * dy <= radius * radius
    dx, dy = dx[disc], dy[disc]
    bulge = np.sqrt(np.maximum(1 - (dx * dx + dy * dy) / radius ** 2, 0))

    centre = np.floor(projected[:, :2]).astype(np.int64)
    col = (centre[:, 0, None] + dx).ravel()
    row = (centre[:, 1, None] + dy).ravel()
    ident = np.repeat(np.arange(len(points)), len(dx))
    fragment = np.tile(np.arange(len(dx)), len(points))
    depth = projected[ident, 2] - bulge[fragment] * radius / view.pixels_per_unit
    on = (col >= 0) & (col < view.size) & (row >= 0) & (row < view.size)
    zbuffer = np.full(view.size ** 2, np.inf)
    owner = np.full(view.size ** 2, -1, dtype=np.int64)
    # Identify each fragment (point, disc offset) so its shading survives the z-test.
    _keep_nearest(zbuffer, owner, row[on] * view.size + col[on], depth[on],
                  np.flatnonzero(on))
    covered = owner >= 0
    hit = owner[covered]
    near, far = projected[:, 2].min(initial=0), projected[:, 2].max(initial=1)
    t = (projected[ident[hit], 2] - near) / max(far - near, 1e-12)
    colour = NEAR_COLOUR + t[:, None] * (FAR_COLOUR - NEAR_COLOUR)
    colour = colour * (0.6 + 0.4 * bulge[fragment[hit]])[:, None]
    return _image(covered.reshape(view.size, view.size), colour, view.size)


def _image(covered: np.ndarray, rgb: np.ndarray, size: int):
    """RGBA image: ``rgb`` (K, 3) in 0..255 at the K covered pixels of ``covered``
    (size, size) bool, transparent white elsewhere."""
    from PIL import Image

    pixels = np.full((size, size, 4), 255, dtype=np.uint8)
    pixels[..., 3] = 0
    pixels[covered, :3] = np.clip(np.round(rgb), 0, 255).astype(np.uint8)
    pixels[covered, 3] = 255
    return Image.fromarray(pixels)


def side_by_side(images, labels=None):
    """Images (PIL, any mode) in a row on white, each under its label (PIL's default font),
    as one RGBA ``PIL.Image``."""
    from PIL import Image, ImageDraw, ImageFont

    images = [image.convert("RGBA") for image in images]
    labels = list(labels) if labels is not None else []
    top = LABEL_HEIGHT if labels else 0
    width = sum(image.width for image in images)
    height = top + max((image.height for image in images), default=0)
    canvas = Image.new("RGBA", (max(width, 1), max(height, 1)), (255, 255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    x = 0
    for i, image in enumerate(images):
        canvas.alpha_composite(image, (x, top))
        if i < len(labels):
            draw.text((x + 4, 2), str(labels[i]), fill=(0, 0, 0, 255), font=font)
        x += image.width
    return canvas


def stack(images):
    """Images (PIL) one above the other on white, left-aligned, as one RGBA ``PIL.Image``."""
    from PIL import Image

    images = [image.convert("RGBA") for image in images]
    width = max((image.width for image in images), default=1)
    canvas = Image.new("RGBA", (width, max(sum(i.height for i in images), 1)),
                       (255, 255, 255, 255))
    y = 0
    for image in images:
        canvas.alpha_composite(image, (0, y))
        y += image.height
    return canvas


def input_points(inp) -> np.ndarray | None:
    """What a reconstruction input looks like as points (N, 3) in its own coordinates:
    the cloud itself, or the centres of a grid's occupied voxels; None for an image."""
    if inp.kind == "pointcloud":
        return inp.points
    if inp.kind == "voxels":
        n = inp.occupancy.shape[0]
        return inp.translate + (np.argwhere(inp.occupancy) + 0.5) / n * inp.scale
    return None


def input_and_result(inp, vertices: np.ndarray, faces: np.ndarray, size: int = 512):
    """``input | result``: a backend input (point cloud, voxel grid or image) next to the
    mesh reconstructed from it, both framed by one view for clouds and grids."""
    from PIL import Image

    points = input_points(inp)
    if points is None:
        left = Image.fromarray(inp.rgba)
        left.thumbnail((size, size))
        view = None
    else:
        view = View.fit(np.concatenate([points, np.asarray(vertices).reshape(-1, 3)]), size)
        left = render_points(points, view=view)
    return side_by_side([left, render_mesh(vertices, faces, size, view=view)],
                        ["input", "result"])


def gallery(meshes, labels, columns: int, size: int = 256):
    """Meshes ``[(vertices (V, 3), faces (F, 3)), ...]`` in panels of ``size`` pixels,
    ``columns`` per row, each under its label, all seen through one view fitted to every
    mesh (so their sizes compare); an empty mesh is a blank panel. One RGBA ``PIL.Image``."""
    points = [np.asarray(v, dtype=np.float64).reshape(-1, 3) for v, _ in meshes]
    view = View.fit(np.concatenate(points) if points else np.zeros((0, 3)), size)
    panels = [render_mesh(v, f, size, view=view) for v, f in meshes]
    rows = [side_by_side(panels[i:i + columns], labels[i:i + columns])
            for i in range(0, len(panels), columns)]
    return stack(rows)

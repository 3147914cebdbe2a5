"""Vectorised signed distance functions (SDFs): primitives and the operators that compose them.

An ``SDF`` maps points ``(N, 3) float32`` to signed distances ``(N,) float32``, negative
inside. Every SDF built here is 1-Lipschitz with the right sign and zero set, so ``|sdf(p)|``
never exceeds the true distance from ``p`` to the surface: a *lower bound*, which is what
sphere tracing and the narrow-band lattice in ``surface.py`` need. Where a primitive is
*exact* (equal to the true distance everywhere) its docstring says so. The operators keep the
bound: min, max, negation, rigid motions, uniform scaling, offsets and the polynomial smooth
minimum all preserve 1-Lipschitz continuity. Union and intersection of exact SDFs are exact
outside (union) or inside (intersection) and lower bounds on the other side.

Internally points are coordinate-major ``(3, N)`` contiguous float32 arrays: numpy ops on
contiguous rows run several times faster than on the strided columns of an ``(N, 3)`` array.
Small matrix products use ``np.einsum`` rather than BLAS, whose rounding can depend on its
thread count: a seed gives bit-identical results in any process.
Conventions: y is up; primitives are centred at the origin; lengths are in shape units.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from backend.engine.transforms import uniform_rotation

Field = Callable[[np.ndarray], np.ndarray]  # (3, N) float32 -> (N,) float32
SMALL_BATCH = 1 << 20  # point-segment pairs ``polyline`` measures in one vectorised pass


class SDF:
    """A signed distance function; call it on points ``(N, 3)`` to get ``(N,) float32``.

    ``field`` works on coordinate-major points ``(3, N) float32``. Operators: ``a | b`` union,
    ``a & b`` intersection, ``a - b`` subtraction; methods return transformed copies.
    """

    def __init__(self, field: Field):
        self.field = field

    def __call__(self, points: np.ndarray) -> np.ndarray:
        return self.field(np.ascontiguousarray(np.asarray(points, dtype=np.float32).T))

    def __or__(self, other: SDF) -> SDF:
        return union(self, other)

    def __and__(self, other: SDF) -> SDF:
        return SDF(lambda q: np.maximum(self.field(q), other.field(q)))

    def __sub__(self, other: SDF) -> SDF:
        return SDF(lambda q: np.maximum(self.field(q), -other.field(q)))

    def translate(self, offset) -> SDF:
        """The shape moved by ``offset`` (3,)."""
        c = _vec3(offset)[:, None]
        return SDF(lambda q: self.field(q - c))

    def rotate(self, matrix) -> SDF:
        """The shape rotated by the 3x3 rotation ``matrix`` (about the origin)."""
        inverse = np.ascontiguousarray(np.asarray(matrix, dtype=np.float32).T)
        return SDF(lambda q: self.field(np.einsum("ij,jn->in", inverse, q)))

    def scale(self, factor: float) -> SDF:
        """The shape scaled uniformly by ``factor`` about the origin; stays exact if it was."""
        s = np.float32(factor)
        return SDF(lambda q: self.field(q / s) * s)

    def round(self, radius: float) -> SDF:
        """The shape grown by ``radius`` (rounds convex edges)."""
        r = np.float32(radius)
        return SDF(lambda q: self.field(q) - r)

    def shell(self, thickness: float) -> SDF:
        """A wall of total thickness at least ``2 * thickness`` centred on the surface."""
        t = np.float32(thickness)
        return SDF(lambda q: np.abs(self.field(q)) - t)


def _vec3(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float32).reshape(3)


def _length(*components: np.ndarray) -> np.ndarray:
    return np.sqrt(sum(c * c for c in components))


def rotation(axis, angle: float) -> np.ndarray:
    """Rotation matrix (3, 3) float32 by ``angle`` radians about ``axis`` (right-handed)."""
    x, y, z = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    c, s = np.cos(angle), np.sin(angle)
    return np.array([
        [c + x * x * (1 - c), x * y * (1 - c) - z * s, x * z * (1 - c) + y * s],
        [y * x * (1 - c) + z * s, c + y * y * (1 - c), y * z * (1 - c) - x * s],
        [z * x * (1 - c) - y * s, z * y * (1 - c) + x * s, c + z * z * (1 - c)],
    ], dtype=np.float32)


# Primitives ---------------------------------------------------------------------------------

def sphere(radius: float) -> SDF:
    """Sphere of ``radius``. Exact."""
    r = np.float32(radius)
    return SDF(lambda q: _length(q[0], q[1], q[2]) - r)


def box(size) -> SDF:
    """Axis-aligned box with full edge lengths ``size`` (3,). Exact."""
    half = _vec3(size)[:, None] / 2

    def field(q):
        d = np.abs(q) - half
        outside = _length(*np.maximum(d, 0))
        return outside + np.minimum(np.maximum(np.maximum(d[0], d[1]), d[2]), 0)

    return SDF(field)


def rounded_box(size, radius: float) -> SDF:
    """Box with full edge lengths ``size`` (3,) whose edges are rounded by ``radius``. Exact."""
    radius = min(float(radius), float(np.min(size)) / 2)
    return box(_vec3(size) - 2 * radius).round(radius)


def ellipsoid(radii) -> SDF:
    """Axis-aligned ellipsoid with semi-axes ``radii`` (3,). Lower bound (exact for a sphere).

    ``(|p / r| - 1) * min(r)`` is 1-Lipschitz because ``|p / r|`` is ``1 / min(r)``-Lipschitz.
    """
    r = _vec3(radii)[:, None]
    r_min = np.float32(r.min())
    return SDF(lambda q: (_length(*(q / r)) - 1) * r_min)


def capsule(a, b, radius: float) -> SDF:
    """Rod of ``radius`` around the segment from ``a`` (3,) to ``b`` (3,). Exact."""
    a, b = _vec3(a)[:, None], _vec3(b)[:, None]
    ba = b - a
    inv_len2 = np.float32(1 / float((ba * ba).sum()))
    r = np.float32(radius)

    def field(q):
        pa = q - a
        h = np.clip((pa * ba).sum(axis=0) * inv_len2, 0, 1)
        return _length(*(pa - ba * h)) - r

    return SDF(field)


def cylinder(radius: float, height: float) -> SDF:
    """Capped cylinder along y of ``radius`` and full ``height``. Exact."""
    r, h = np.float32(radius), np.float32(height / 2)

    def field(q):
        dx = _length(q[0], q[2]) - r
        dy = np.abs(q[1]) - h
        return (np.minimum(np.maximum(dx, dy), 0)
                + _length(np.maximum(dx, 0), np.maximum(dy, 0)))

    return SDF(field)


def torus(major: float, minor: float) -> SDF:
    """Torus around the y axis: ring ``major`` radius in the xz-plane, tube ``minor``. Exact."""
    big, small = np.float32(major), np.float32(minor)
    return SDF(lambda q: _length(_length(q[0], q[2]) - big, q[1]) - small)


def cone(height: float, bottom_radius: float, top_radius: float) -> SDF:
    """Capped cone (frustum) along y from ``-height/2`` (``bottom_radius``) to ``+height/2``
    (``top_radius``). Exact."""
    h = np.float32(height / 2)
    r1, r2 = np.float32(bottom_radius), np.float32(top_radius)
    k2x, k2y = r2 - r1, 2 * h
    inv_k2 = np.float32(1 / (k2x * k2x + k2y * k2y))

    def field(q):
        qx, qy = _length(q[0], q[2]), q[1]
        # Distance to the flat caps (ca) and to the slanted side (cb), in the (radius, y) plane.
        ca_x = qx - np.minimum(qx, np.where(qy < 0, r1, r2))
        ca_y = np.abs(qy) - h
        t = np.clip(((r2 - qx) * k2x + (h - qy) * k2y) * inv_k2, 0, 1)
        cb_x = qx - r2 + k2x * t
        cb_y = qy - h + k2y * t
        sign = np.where((cb_x < 0) & (ca_y < 0), np.float32(-1), np.float32(1))
        return sign * np.sqrt(np.minimum(ca_x * ca_x + ca_y * ca_y, cb_x * cb_x + cb_y * cb_y))

    return SDF(field)


def half_space(normal, offset: float) -> SDF:
    """Points with ``normal . p < offset`` (``normal`` is normalised). Exact."""
    n = _vec3(normal)
    n = (n / np.linalg.norm(n))[:, None]
    d = np.float32(offset)
    return SDF(lambda q: (q * n).sum(axis=0) - d)


def revolution(heights, radii) -> SDF:
    """Solid of revolution around the y axis: radius ``radii[i]`` at height ``heights[i]``.

    ``heights`` (K,) increasing, ``radii`` (K,) > 0; the profile is linear between samples
    (pass a dense, smooth profile) and the solid is capped flat at both ends. Lower bound:
    ``rho - r(y)`` is ``sqrt(1 + L^2)``-Lipschitz for profile slope ``|r'| <= L``, so it is
    divided by that constant (exact where the wall is vertical).
    """
    hs = np.asarray(heights, dtype=np.float64)
    rs = np.asarray(radii, dtype=np.float64)
    slope = np.max(np.abs(np.diff(rs) / np.diff(hs)))
    inv_lipschitz = np.float32(1 / np.sqrt(1 + slope * slope))
    mid, half = np.float32((hs[0] + hs[-1]) / 2), np.float32((hs[-1] - hs[0]) / 2)

    def field(q):
        profile = np.interp(q[1], hs, rs).astype(np.float32)
        side = (_length(q[0], q[2]) - profile) * inv_lipschitz
        return np.maximum(side, np.abs(q[1] - mid) - half)

    return SDF(field)


# Operators ---------------------------------------------------------------------------------

def union(*parts: SDF) -> SDF:
    """Union of ``parts``: exact outside when the parts are exact, a lower bound inside."""
    fields = [part.field for part in parts]

    def field(q):
        d = fields[0](q)
        for f in fields[1:]:
            d = np.minimum(d, f(q))
        return d

    return SDF(field)


def smooth_union(a: SDF, b: SDF, k: float) -> SDF:
    """Union of ``a`` and ``b`` with a fillet of width about ``k`` (polynomial smooth min).

    Lower bound: the blend's gradient is a convex combination of the parts' gradients.
    """
    k = np.float32(k)

    def field(q):
        da, db = a.field(q), b.field(q)
        h = np.maximum(k - np.abs(da - db), 0) / k
        return np.minimum(da, db) - h * h * k * np.float32(0.25)

    return SDF(field)


def blend(parts: list[SDF], k: float) -> SDF:
    """Smooth union of ``parts`` in order (``smooth_union`` folded left), evaluated in one
    pass without nested calls. Lower bound, like ``smooth_union``."""
    fields = [part.field for part in parts]
    k = np.float32(k)

    def field(q):
        d = fields[0](q)
        for f in fields[1:]:
            other = f(q)
            h = np.maximum(k - np.abs(d - other), 0) / k
            d = np.minimum(d, other) - h * h * k * np.float32(0.25)
        return d

    return SDF(field)


def wave_noise(amplitudes, wave_vectors, phases) -> tuple[Field, float]:
    """A sum of plane waves ``n(q) = sum_k a_k sin(v_k . q + phi_k)`` as a field on points
    ``(3, N) float32``, with its Lipschitz constant ``sum_k |a_k| |v_k|``.

    ``amplitudes`` (K,) in shape units, ``wave_vectors`` (K, 3) in radians per shape unit,
    ``phases`` (K,) radians. One wave at a time, so memory stays (N,) whatever K is.
    """
    a = np.asarray(amplitudes, dtype=np.float32)
    v = np.asarray(wave_vectors, dtype=np.float32).reshape(len(a), 3)
    phi = np.asarray(phases, dtype=np.float32)
    lipschitz = float(np.sum(np.abs(a.astype(np.float64)) * np.linalg.norm(v, axis=1)))

    def field(q):
        total = np.zeros(q.shape[1], dtype=np.float32)
        for ak, vk, pk in zip(a, v, phi):
            total += ak * np.sin(vk[0] * q[0] + vk[1] * q[1] + vk[2] * q[2] + pk)
        return total

    return field, lipschitz


def displace(base: SDF, noise: Field, lipschitz: float) -> SDF:
    """``base`` with its surface moved inwards by ``noise`` (outwards where it is negative):
    ``(base + noise) / (1 + lipschitz)``, a 1-Lipschitz lower bound with the sign of
    ``base + noise`` (so labels taken from its sign are exact) when ``noise`` is
    ``lipschitz``-Lipschitz."""
    inv = np.float32(1 / (1 + lipschitz))
    return SDF(lambda q: (base.field(q) + noise(q)) * inv)


def polyline(points, radius: float, chunk: int = 8) -> SDF:
    """Tube of ``radius`` around the polyline through ``points`` (K, 3), K >= 2, with round
    ends: the union of its segments' capsules. Exact.

    Segments are grouped ``chunk`` at a time in bounding spheres: a chunk's segments are
    measured only for the points its sphere could bring closer than the best distance so
    far (the result is the same as measuring every segment, several times faster on long
    curves); batches of at most ``SMALL_BATCH`` point-segment pairs are measured at once.
    Memory (max(K / chunk, chunk), N).
    """
    knots = np.asarray(points, dtype=np.float32)
    starts, steps = knots[:-1], np.diff(knots, axis=0)
    inv_len2 = (1 / np.maximum((steps.astype(np.float64) ** 2).sum(axis=1), 1e-12)).astype(
        np.float32)
    groups = [np.arange(i, min(i + chunk, len(steps))) for i in range(0, len(steps), chunk)]
    centres = np.stack([knots[g[0]:g[-1] + 2].mean(axis=0) for g in groups])
    reach = np.array([np.linalg.norm(knots[g[0]:g[-1] + 2] - c, axis=1).max()
                      for g, c in zip(groups, centres)], dtype=np.float32) * np.float32(1.0001)
    r = np.float32(radius)

    def segment_d2(p, index):  # squared distances (len(index), n) of p (3, n) to segments
        a, ba = starts[index][:, :, None], steps[index][:, :, None]
        pa0, pa1, pa2 = p[0] - a[:, 0], p[1] - a[:, 1], p[2] - a[:, 2]
        h = np.clip((pa0 * ba[:, 0] + pa1 * ba[:, 1] + pa2 * ba[:, 2])
                    * inv_len2[index][:, None], 0, 1)
        return (pa0 - ba[:, 0] * h) ** 2 + (pa1 - ba[:, 1] * h) ** 2 + (pa2 - ba[:, 2] * h) ** 2

    def field(q):
        if q.shape[1] * len(steps) <= SMALL_BATCH:  # few points: all segments at once
            return np.sqrt(segment_d2(q, np.arange(len(steps))).min(axis=0)) - r
        to_centre = np.sqrt(np.einsum("cjn->cn", (q[None] - centres[:, :, None]) ** 2))
        best = (to_centre + reach[:, None]).min(axis=0) ** 2  # an upper bound to begin with
        for group, near, far in zip(groups, to_centre, reach):
            index = np.nonzero(near - far < np.sqrt(best))[0]
            best[index] = np.minimum(best[index], segment_d2(q[:, index], group).min(axis=0))
        return np.sqrt(best) - r

    return SDF(field)


def repeat_around_y(part: SDF, count: int) -> SDF:
    """``count`` copies of ``part`` evenly spaced around the y axis, the first one as given.

    The point is folded into the sector ``|angle| <= pi / count`` around +x (angle measured
    in the xz-plane). Exact (the distance to the nearest copy) when ``part`` is symmetric
    under ``z -> -z`` and lies inside that sector, as teeth, spokes and bolt holes do.
    """
    sector = np.float32(2 * np.pi / count)
    half = sector / 2

    def field(q):
        rho = _length(q[0], q[2])
        angle = np.mod(np.arctan2(q[2], q[0]) + half, sector) - half
        folded = np.stack([rho * np.cos(angle), q[1], rho * np.sin(angle)])
        return part.field(folded.astype(np.float32))

    return SDF(field)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A rotation (3, 3) float32 uniform on SO(3) (``transforms.uniform_rotation``)."""
    return uniform_rotation(rng).astype(np.float32)

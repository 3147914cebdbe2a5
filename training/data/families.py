"""Corpus v2 shape families: the local geometry of real objects, as ``make_<family>(rng) ->
SDF`` makers like the categories of ``shapes.py``.

Organic shapes (``organic``: smooth unions of many blobs; ``displaced``: blobs whose surface
is moved by plane-wave noise at several frequencies; ``creature``: torso, head, 2-6 limbs
and a tail blended from capsules and ellipsoids; ``relief``: a slab or dome under a noisy
height field), mechanical parts (``bracket``, ``flange``, ``gear``: CSG with drilled holes,
fillets, chamfers, slots, ribs, bosses and teeth), thin sheets and shells (``shell``: a cut,
hollowed curved shell; ``sheet``: a bent or curved plate) and revolved or swept profiles
(``lathe``: turned parts; ``tube``: solid or hollow tubes along smooth random curves and
knots).

Conventions as in ``shapes.py``: y is up, shape units, about 1 to 2.4 across and inside
[-2.5, 2.5]^3, one connected solid (``procedural.build_shape`` redraws the rare draw that
falls apart), every random draw from ``rng``. Every SDF is a 1-Lipschitz lower bound with
the exact sign, so labels are exact and the narrow-band meshing of ``surface.py`` applies;
noisy surfaces are divided by their Lipschitz constant (``sdf.displace``). Walls, rods and
plates are at least 2% of the shape's longest edge, as in ``shapes.py``.

Seconds per shape of every family and the size of corpus v2 are in ``procedural.py``'s
docstring.
"""

from __future__ import annotations

import numpy as np

from . import sdf as S
from .shapes import profile_table


def _unit(vector) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float64)
    return vector / np.linalg.norm(vector)


def _extrude(d2: np.ndarray, dz: np.ndarray) -> np.ndarray:
    """Exact SDF of a 2-D shape (distance ``d2``) extruded to a slab (``dz = |z| - h``)."""
    return (np.minimum(np.maximum(d2, dz), 0)
            + np.sqrt(np.maximum(d2, 0) ** 2 + np.maximum(dz, 0) ** 2))


def _stadium(half_length: float, radius: float, height: float) -> S.SDF:
    """Slot prism: a 2-D stadium in the xz-plane (segment of ``half_length`` along x, grown
    by ``radius``) extruded along y to full ``height``. Exact."""
    hl, r, h = np.float32(half_length), np.float32(radius), np.float32(height / 2)

    def field(q):
        dx = np.maximum(np.abs(q[0]) - hl, 0)
        return _extrude(np.sqrt(dx * dx + q[2] * q[2]) - r, np.abs(q[1]) - h)

    return S.SDF(field)


def _arc_plate(radius: float, half_angle: float, thickness: float, width: float) -> S.SDF:
    """A plate bent into a circular arc: in the xy-plane, the arc of mid ``radius`` around
    the origin within ``half_angle`` of +y, ``thickness`` thick with round ends, extruded
    along z to full ``width`` (the 2-D ring sector distance of Quilez). Exact."""
    sin_a, cos_a = np.float32(np.sin(half_angle)), np.float32(np.cos(half_angle))
    ra, rb, w = np.float32(radius), np.float32(thickness / 2), np.float32(width / 2)

    def field(q):
        x, y = np.abs(q[0]), q[1]
        to_end = np.sqrt((x - sin_a * ra) ** 2 + (y - cos_a * ra) ** 2)
        to_ring = np.abs(np.sqrt(x * x + y * y) - ra)
        d2 = np.where(cos_a * x > sin_a * y, to_end, to_ring) - rb
        return _extrude(d2, np.abs(q[2]) - w)

    return S.SDF(field)


def _octave_waves(rng: np.random.Generator, octaves: int, per_octave: int, frequency: float,
                  amplitude: float, planar: bool = False) -> tuple[S.Field, float]:
    """Plane-wave noise: ``per_octave`` waves in random directions per octave, frequency
    (radians per unit) doubling and amplitude halving from one octave to the next. With
    ``planar`` the waves vary in x and z only (a height field). Returns (field, Lipschitz)."""
    count = octaves * per_octave
    directions = rng.normal(size=(count, 3))
    if planar:
        directions[:, 1] = 0
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    octave = np.repeat(np.arange(octaves), per_octave)
    vectors = directions * (frequency * 2.0 ** octave * rng.uniform(0.8, 1.25, count))[:, None]
    amplitudes = amplitude * 0.5 ** octave * rng.uniform(0.5, 1.0, count)
    return S.wave_noise(amplitudes, vectors, rng.uniform(0, 2 * np.pi, count))


def _blob_cluster(rng: np.random.Generator, count: int, size: float, spread: float = 0.6,
                  reach: tuple[float, float] = (0.5, 0.85)) -> list[S.SDF]:
    """``count`` rotated ellipsoids (semi-axes ``spread`` to 1 times ``size``), each centred
    inside an earlier one, ``reach`` of the way to its surface, so the cluster is connected;
    centred on the mean of their centres."""
    centres, radii, spins = [], [], []
    for i in range(count):
        r = size * rng.uniform(spread, 1.0) * rng.uniform(0.6, 1.4, size=3)
        spin = S.rotation(rng.normal(size=3), rng.uniform(0, np.pi))
        if i == 0:
            centre = np.zeros(3)
        else:
            j = int(rng.integers(0, i))
            centre = centres[j] + spins[j] @ (radii[j] * _unit(rng.normal(size=3))
                                              * rng.uniform(*reach))
        centres.append(centre)
        radii.append(r)
        spins.append(spin)
    mean = np.mean(centres, axis=0)
    return [S.ellipsoid(r).rotate(spin).translate(c - mean)
            for c, r, spin in zip(centres, radii, spins)]


# Organic ------------------------------------------------------------------------------------

def make_organic(rng: np.random.Generator) -> S.SDF:
    """A smooth union of 6-14 rotated ellipsoids of several sizes, each centred near the
    surface of an earlier one (lumps, lobes, knobbly tubers)."""
    parts = _blob_cluster(rng, int(rng.integers(6, 15)), rng.uniform(0.25, 0.4), spread=0.35,
                          reach=(0.75, 0.95))
    return S.blend(parts, rng.uniform(0.03, 0.12))


def make_displaced(rng: np.random.Generator) -> S.SDF:
    """An ellipsoid or a blend of 2-4 ellipsoids whose surface is displaced by 3-4 octaves
    of plane-wave noise (bumps, ridges and dents at several scales)."""
    if rng.random() < 0.4:
        radii = rng.uniform(0.5, 1.0, size=3)
        base, depth = S.ellipsoid(radii), radii.min()
    else:
        base, depth = S.blend(_blob_cluster(rng, int(rng.integers(2, 5)), 0.5), 0.25), 0.3
    octaves = int(rng.integers(3, 5))
    per_octave = 4
    # The noise's largest value, sum of amplitudes, stays below 60% of the base's depth.
    total = depth * rng.uniform(0.3, 0.6)
    amplitude = total / (per_octave * 0.75 * sum(0.5 ** o for o in range(octaves)))
    noise, lipschitz = _octave_waves(rng, octaves, per_octave, rng.uniform(2.0, 5.0), amplitude)
    return S.displace(base, noise, lipschitz)


def make_creature(rng: np.random.Generator) -> S.SDF:
    """A standing animal: ellipsoid torso (pitched up for bipeds), neck and head, 1-3 pairs of
    two-segment legs, maybe horns or ears, a tail of 2-6 tapering capsules; all blended."""
    pairs = int(rng.integers(1, 4))
    length, girth = rng.uniform(0.7, 1.3), rng.uniform(0.16, 0.28)
    body_r = np.array([length / 2, girth * rng.uniform(0.8, 1.1), girth * rng.uniform(0.8, 1.2)])
    pitch = rng.uniform(0.4, 1.0) if pairs == 1 else rng.uniform(-0.15, 0.2)
    tilt = S.rotation((0, 0, 1), pitch).astype(np.float64)
    hip_y = rng.uniform(0.45, 0.9)
    centre = np.array([0, hip_y + 0.3 * body_r[1], 0])

    def on_body(local) -> np.ndarray:
        return tilt @ np.asarray(local, dtype=np.float64) + centre

    parts = [S.ellipsoid(body_r).rotate(tilt).translate(centre)]
    front = on_body((0.75 * body_r[0], 0.2 * body_r[1], 0))
    neck_up = rng.uniform(0.2, 1.2)
    head = front + rng.uniform(0.15, 0.45) * np.array([np.cos(neck_up), np.sin(neck_up), 0])
    head_r = girth * rng.uniform(0.7, 1.1) * np.array([rng.uniform(1.0, 1.7), 1,
                                                        rng.uniform(0.8, 1.0)])
    parts += [S.capsule(front, head, girth * rng.uniform(0.35, 0.6)),
              S.ellipsoid(head_r).rotate(S.rotation((0, 0, 1), rng.uniform(-0.5, 0.3)))
              .translate(head)]
    if rng.random() < 0.6:  # horns or ears
        spread, rise = rng.uniform(0.3, 0.8), rng.uniform(0.12, 0.3)
        lean = rng.uniform(-0.15, 0.1)
        for s in (-1, 1):
            root = head + np.array([0, 0.7 * head_r[1], s * 0.4 * head_r[2]])
            tip = root + np.array([lean, rise, s * spread * rise])
            parts.append(S.capsule(root, tip, rng.uniform(0.025, 0.045)))

    thick = rng.uniform(0.04, 0.08)
    xs = np.linspace(-0.6, 0.6, pairs) * body_r[0] if pairs > 1 else np.zeros(1)
    for x in xs:
        knee_dx, foot_dx = rng.uniform(-0.15, 0.15), rng.uniform(-0.1, 0.1)
        splay = rng.uniform(0, 0.12)
        for s in (-1, 1):
            hip = on_body((x, -0.3 * body_r[1], s * 0.6 * body_r[2]))
            knee = np.array([hip[0] + knee_dx, hip[1] * 0.5, hip[2] + s * splay])
            foot = np.array([knee[0] + foot_dx, thick, knee[2] + s * splay / 2])
            parts += [S.capsule(hip, knee, thick * 1.3), S.capsule(knee, foot, thick)]

    start = on_body((-0.8 * body_r[0], 0, 0))
    direction = -tilt[:, 0]
    radius = girth * rng.uniform(0.25, 0.45)
    for _ in range(int(rng.integers(2, 7))):
        turn = S.rotation(rng.normal(size=3) * (0.2, 0.2, 1.0), rng.uniform(0.1, 0.5))
        direction = turn.astype(np.float64) @ direction
        end = start + direction * rng.uniform(0.1, 0.22)
        parts.append(S.capsule(start, end, radius))
        start, radius = end, max(radius * 0.8, 0.03)
    return S.blend(parts, rng.uniform(0.04, 0.1))


def make_relief(rng: np.random.Generator) -> S.SDF:
    """A slab (disc or rounded rectangle) whose top is a dome plus a noisy height field
    (terrain, embossing); the bottom is flat."""
    width, depth = rng.uniform(1.2, 2.0), rng.uniform(0.8, 2.0)
    if rng.random() < 0.5:
        reach = max(width, depth) / 2
        footprint = S.cylinder(reach, 10.0)
    else:
        footprint = S.rounded_box((width, 10.0, depth), rng.uniform(0.05, 0.3))
        reach = max(width, depth) / 2
    base = rng.uniform(0.1, 0.25)  # slab thickness below the lowest height
    dome = rng.uniform(0.0, 0.5) if rng.random() < 0.7 else 0.0
    dome_r = reach * rng.uniform(0.7, 1.1)
    total = rng.uniform(0.05, 0.25)  # bound on the noise, raised by it: heights >= 0
    octaves, per_octave = 3, 5
    amplitude = total / (per_octave * 0.75 * sum(0.5 ** o for o in range(octaves)))
    noise, noise_slope = _octave_waves(rng, octaves, per_octave, rng.uniform(2.0, 5.0), amplitude,
                                       planar=True)
    inv = np.float32(1 / np.sqrt(1 + (noise_slope + dome * np.pi / (2 * dome_r)) ** 2))
    h0, r0, b, lift = (np.float32(v) for v in (dome / 2, dome_r, base, total))

    def field(q):
        rho = np.sqrt(q[0] * q[0] + q[2] * q[2])
        height = (h0 * (1 + np.cos(np.float32(np.pi) * np.minimum(rho / r0, 1))) + lift
                  + noise(q))
        top = (q[1] - height) * inv
        return np.maximum(np.maximum(footprint.field(q), top), -q[1] - b)

    return S.SDF(field)


# Mechanical ---------------------------------------------------------------------------------

def make_bracket(rng: np.random.Generator) -> S.SDF:
    """An angle bracket: base plate and upright filleted together, chamfered upright corners,
    0-3 triangular ribs, drilled holes and maybe a slot in the base, holes in the upright."""
    width, depth, t = rng.uniform(0.8, 1.6), rng.uniform(0.6, 1.2), rng.uniform(0.08, 0.16)
    height = rng.uniform(0.5, 1.2)
    edge = t * rng.uniform(0.1, 0.4)
    base = S.rounded_box((width, t, depth), edge).translate((0, t / 2, 0))
    upright = S.rounded_box((width, height, t), edge).translate((0, height / 2, -depth / 2 + t / 2))
    solid = S.smooth_union(base, upright, rng.uniform(0.04, 0.12))
    chamfer = rng.uniform(0.0, 0.3) * min(width / 2, height - t)
    if chamfer > 0.02:
        for sx in (-1, 1):
            solid = solid & S.half_space((sx, 1, 0), (width / 2 - chamfer + height) / np.sqrt(2))

    inner_z = -depth / 2 + t
    rib_depth = (depth - t) * rng.uniform(0.3, 0.5)
    rib_height = (height - t) * rng.uniform(0.4, 0.8)
    rib_t = rng.uniform(0.05, 0.09)
    ribs = int(rng.integers(0, 4))
    for x in (np.linspace(-1, 1, ribs) * (width / 2 - rib_t) if ribs > 1 else np.zeros(ribs)):
        block = S.box((rib_t, rib_height + 0.02, rib_depth + 0.02)).translate(
            (x, t + rib_height / 2 - 0.01, inner_z + rib_depth / 2 - 0.01))
        normal = np.array([0, rib_depth, rib_height])
        corner = np.array([0, t + rib_height, inner_z])
        solid = solid | (block & S.half_space(normal, float(_unit(normal) @ corner)))

    cutters = []
    hole_r = rng.uniform(0.035, 0.08)
    front_z = inner_z + rib_depth + hole_r + 0.05
    columns = int(rng.integers(1, 3))
    xs = np.linspace(-1, 1, columns) * (width / 2 - hole_r - 0.08) if columns > 1 else [0.0]
    if rng.random() < 0.3 and depth / 2 - front_z > 3 * hole_r:  # a slot across the base
        z = (front_z + depth / 2 - hole_r - 0.05) / 2
        slot = _stadium(width * rng.uniform(0.15, 0.3), hole_r, 1.0)
        cutters.append(slot.translate((0, t / 2, z)))
    else:
        for x in xs:
            z = rng.uniform(front_z, max(front_z, depth / 2 - hole_r - 0.05))
            cutters.append(S.cylinder(hole_r, 1.0).translate((x, t / 2, z)))
    if rng.random() < 0.6 and height - t > 4 * hole_r:
        across = S.rotation((1, 0, 0), np.pi / 2)
        y = (t + height) / 2
        for x in xs:
            cutters.append(S.cylinder(hole_r, 1.0).rotate(across).translate((x, y, -depth / 2)))
    return solid - S.union(*cutters)


def make_flange(rng: np.random.Generator) -> S.SDF:
    """A flanged hub: disc (maybe chamfered), filleted boss with a chamfered top, a bore
    (maybe keyed) through both, a circle of bolt holes and maybe ribs between them."""
    radius, t = rng.uniform(0.6, 1.0), rng.uniform(0.1, 0.2)
    hub_r = radius * rng.uniform(0.25, 0.45)
    hub_h = rng.uniform(0.3, 0.9) + t
    bore = hub_r * rng.uniform(0.35, 0.65)
    if rng.random() < 0.5:
        disc = S.cone(t, radius, radius - t * rng.uniform(0.3, 0.8))
    else:
        disc = S.cylinder(radius, t)
    top = hub_r - min(0.3 * (hub_r - bore), rng.uniform(0.02, 0.08))
    hub = S.cylinder(hub_r, hub_h) & S.cone(hub_h, top + hub_h, top)
    solid = S.smooth_union(disc.translate((0, t / 2, 0)), hub.translate((0, hub_h / 2, 0)),
                           rng.uniform(0.04, 0.12))

    ring = (hub_r + radius) / 2
    hole_r = rng.uniform(0.035, min(0.09, 0.35 * (radius - hub_r)))
    count = int(rng.integers(3, min(9, int(np.pi / np.arcsin(hole_r / ring) * 0.6) + 1)))
    holes = S.repeat_around_y(S.cylinder(hole_r, 1.0).translate((ring, 0, 0)), count)
    if rng.random() < 0.5:  # ribs half-way between the holes
        rib_t, rib_h = rng.uniform(0.05, 0.08), (hub_h - t) * rng.uniform(0.4, 0.9)
        span = (radius - hub_r) * rng.uniform(0.6, 0.9)
        block = S.box((span + 0.02, rib_h + 0.02, rib_t)).translate(
            (hub_r + span / 2 - 0.01, t + rib_h / 2 - 0.01, 0))
        normal = np.array([rib_h, span, 0])
        rib = block & S.half_space(normal, float(_unit(normal) @ (hub_r, t + rib_h, 0)))
        spin = S.rotation((0, 1, 0), np.pi / count)
        solid = solid | S.repeat_around_y(rib, count).rotate(spin)
    cutter = holes | S.cylinder(bore, 4.0)
    if rng.random() < 0.4:
        key = rng.uniform(0.2, 0.4) * bore
        cutter = cutter | S.box((2 * key, 4.0, 2 * key)).translate((bore, 0, 0))
    return solid - cutter


def make_gear(rng: np.random.Generator) -> S.SDF:
    """A spur gear: disc with 10-32 trapezoidal teeth, a boss on one or both sides, a bore
    (maybe keyed) and maybe a circle of lightening holes."""
    radius, t = rng.uniform(0.7, 1.0), rng.uniform(0.12, 0.3)
    count = int(rng.integers(10, 33))
    tooth_h = radius * rng.uniform(0.08, 0.15)
    pitch = 2 * np.pi * radius / count
    base_w, tip_w = pitch * rng.uniform(0.4, 0.5), pitch * rng.uniform(0.2, 0.35)
    inner = radius * 0.95
    run = radius + tooth_h - inner
    tooth = S.box((run, t, base_w)).translate(((inner + radius + tooth_h) / 2, 0, 0))
    for s in (-1, 1):
        normal = np.array([base_w / 2 - tip_w / 2, 0, s * run])
        tooth = tooth & S.half_space(normal, float(_unit(normal) @ (inner, 0, s * base_w / 2)))
    solid = S.cylinder(radius, t) | S.repeat_around_y(tooth, count)

    hub_r = radius * rng.uniform(0.25, 0.4)
    bore = hub_r * rng.uniform(0.35, 0.65)
    sides = int(rng.integers(0, 3))
    if sides:
        boss_h = t + sides * rng.uniform(0.1, 0.4)
        shift = (boss_h - t) / 2 if sides == 1 else 0.0  # one side: flush with the bottom
        solid = solid | S.cylinder(hub_r, boss_h).translate((0, shift, 0))
    cutter = S.cylinder(bore, 4.0)
    if rng.random() < 0.4:
        key = rng.uniform(0.2, 0.4) * bore
        cutter = cutter | S.box((2 * key, 4.0, 2 * key)).translate((bore, 0, 0))
    web = radius * 0.9 - hub_r
    if rng.random() < 0.5 and web > 0.2:
        ring, hole_r = hub_r + web / 2, web * rng.uniform(0.2, 0.35)
        holes = int(rng.integers(3, min(8, int(np.pi / np.arcsin(hole_r / ring) * 0.6) + 1) + 1))
        cutter = cutter | S.repeat_around_y(S.cylinder(hole_r, 4.0).translate((ring, 0, 0)), holes)
    return solid - cutter


# Sheets and shells --------------------------------------------------------------------------

def make_shell(rng: np.random.Generator) -> S.SDF:
    """A hollowed curved shell cut open by a (tilted) plane: bowl, helmet, husk, scoop; the
    outer form is an ellipsoid, maybe blended with a second one, maybe gently displaced."""
    radii = rng.uniform(0.6, 1.0, size=3)
    radii[1] *= rng.uniform(0.6, 1.2)
    base = S.ellipsoid(radii)
    if rng.random() < 0.4:
        second = S.ellipsoid(radii * rng.uniform(0.4, 0.7, size=3))
        base = S.smooth_union(base, second.translate(radii * rng.uniform(-0.5, 0.5, size=3)), 0.2)
    if rng.random() < 0.5:
        noise, lipschitz = _octave_waves(rng, 2, 3, rng.uniform(1.5, 3.0), 0.04 * radii.min())
        base = S.displace(base, noise, lipschitz)
    extent = 2 * radii.max()
    wall = extent * rng.uniform(0.012, 0.025)  # half-wall: the wall is >= 2.4% of the extent
    tilt = rng.normal(scale=0.3, size=2)
    cut = S.half_space((tilt[0], 1, tilt[1]), rng.uniform(-0.5, 0.6) * radii[1])
    return base.shell(wall) & cut


def make_sheet(rng: np.random.Generator) -> S.SDF:
    """A thin plate: sheet metal bent in an arc between two straight legs with holes, or a
    curved plate (bowl, saddle or corrugated height field) with holes."""
    if rng.random() < 0.5:
        return _bent_sheet(rng)
    return _curved_plate(rng)


def _bent_sheet(rng: np.random.Generator) -> S.SDF:
    """Arc of mid radius 0.15-0.6 and half-angle 0.3-1.4 rad, legs tangent at both ends."""
    t, width = rng.uniform(0.05, 0.09), rng.uniform(0.5, 1.4)
    radius, half_angle = rng.uniform(0.15, 0.6), rng.uniform(0.3, 1.4)
    parts = [_arc_plate(radius, half_angle, t, width)]
    for s in (-1, 1):
        leg = rng.uniform(0.3, 0.9)
        end = radius * np.array([s * np.sin(half_angle), np.cos(half_angle), 0])
        tangent = np.array([s * np.cos(half_angle), -np.sin(half_angle), 0])
        plate = S.box((leg, t, width))
        hole_r = rng.uniform(0.04, min(0.1, leg / 4, width / 5))
        if rng.random() < 0.7:
            across = S.cylinder(hole_r, 1.0)
            plate = plate - S.union(*[across.translate((rng.uniform(-0.1, 0.2) * leg, 0, z))
                                      for z in (width / 4, -width / 4)])
        spin = S.rotation((0, 0, 1), np.arctan2(tangent[1], tangent[0]))
        parts.append(plate.rotate(spin).translate(end + tangent * leg / 2))
    return S.union(*parts)


def _curved_plate(rng: np.random.Generator) -> S.SDF:
    """Plate over a rounded rectangle whose mid-surface is ``y = a x^2 + b z^2 + A sin(k x)``
    (coordinates clamped to the footprint, so the slope stays bounded), with 0-4 holes."""
    width, depth = rng.uniform(1.0, 2.0), rng.uniform(0.6, 1.6)
    a, b = rng.uniform(-0.5, 0.5, size=2)
    wave, k = (rng.uniform(0.03, 0.12), rng.uniform(4, 10)) if rng.random() < 0.5 else (0.0, 0.0)
    phase = rng.uniform(0, 2 * np.pi)
    slope = abs(a) * width + abs(b) * depth + wave * k
    t = 0.025 * max(width, depth) * np.sqrt(1 + slope ** 2) * rng.uniform(1.0, 1.6)
    inv = np.float32(1 / np.sqrt(1 + slope ** 2))
    hw, hd = np.float32(width / 2), np.float32(depth / 2)
    a, b, wave, k = (np.float32(v) for v in (a, b, wave, k))
    footprint = S.rounded_box((width, 10.0, depth), rng.uniform(0.02, 0.3))
    half_t, phase = np.float32(t / 2), np.float32(phase)

    def field(q):
        x, z = np.clip(q[0], -hw, hw), np.clip(q[2], -hd, hd)
        mid = a * x * x + b * z * z + wave * np.sin(k * x + phase)
        return np.maximum(footprint.field(q), (np.abs(q[1] - mid) - half_t) * inv)

    plate = S.SDF(field)
    holes = int(rng.integers(0, 5))
    if holes:
        hole_r = rng.uniform(0.04, 0.1)
        span = np.array([width / 2 - 2 * hole_r, 0, depth / 2 - 2 * hole_r])
        cutters = [S.cylinder(hole_r, 10.0).translate(rng.uniform(-1, 1, size=3) * span)
                   for _ in range(holes)]
        plate = plate - S.union(*cutters)
    return plate


# Revolved and swept -------------------------------------------------------------------------

def make_lathe(rng: np.random.Generator) -> S.SDF:
    """A turned part: a smooth profile through 5-9 random knots revolved about y, with 0-3
    grooves or beads (tori) and maybe an axial bore through it."""
    height = rng.uniform(1.2, 2.2)
    knots = int(rng.integers(5, 10))
    jitter = np.concatenate([[0], rng.uniform(-0.3, 0.3, knots - 2), [0]])
    knots_y = (np.arange(knots) + jitter) * height / (knots - 1)  # gaps >= 0.4 of even
    knots_r = rng.uniform(0.12, 0.55, knots)
    heights, radii = profile_table(knots_y, knots_r)
    solid = S.revolution(heights, radii)
    bore = radii.min() * rng.uniform(0.3, 0.6) if rng.random() < 0.3 else 0.0
    for _ in range(int(rng.integers(0, 4))):
        y = rng.uniform(0.1, 0.9) * height
        r = float(np.interp(y, heights, radii))
        minor = rng.uniform(0.025, 0.06)
        ring = S.torus(r, minor).translate((0, y, 0))
        if rng.random() < 0.5 and minor < 0.4 * (r - bore):  # a groove leaves 60% of the wall
            solid = solid - ring
        else:
            solid = solid | ring
    if bore:
        solid = solid - S.cylinder(bore, 2 * height + 1)
    return solid


def make_tube(rng: np.random.Generator) -> S.SDF:
    """A tube swept along a smooth random curve (solid, or a hollow pipe open at both ends)
    or along a torus knot."""
    if rng.random() < 0.3:
        p, q = [(2, 3), (2, 5), (3, 4), (3, 5), (3, 2)][int(rng.integers(0, 5))]
        phi = np.linspace(0, 2 * np.pi, 97)
        major, minor = rng.uniform(0.6, 0.9), rng.uniform(0.25, 0.4)
        ring = major + minor * np.cos(q * phi)
        curve = np.stack([ring * np.cos(p * phi), minor * np.sin(q * phi) * rng.uniform(1, 2),
                          ring * np.sin(p * phi)], axis=1)
        return S.polyline(curve, rng.uniform(0.06, 0.11))
    t = np.linspace(0, 1, 49)[:, None]
    curve = rng.normal(size=3) * t
    for frequency in (0.5, 1.0, 1.5, 2.0):
        curve = curve + rng.normal(size=3) / frequency * np.sin(
            2 * np.pi * frequency * t + rng.uniform(0, 2 * np.pi, 3))
    curve -= (curve.min(axis=0) + curve.max(axis=0)) / 2
    extent = rng.uniform(1.5, 2.2)
    curve *= extent / np.abs(curve.max(axis=0) - curve.min(axis=0)).max()
    radius = extent * rng.uniform(0.025, 0.07)
    tube = S.polyline(curve, radius)
    wall = extent * rng.uniform(0.024, 0.032)  # >= 2% of the tube's extent with its radius
    if rng.random() < 0.4 and radius > 1.6 * wall:  # hollow, the bore open at both ends
        ends = [curve[0] + _unit(curve[0] - curve[1]) * 2 * radius,
                curve[-1] + _unit(curve[-1] - curve[-2]) * 2 * radius]
        bore = S.polyline(np.concatenate([[ends[0]], curve, [ends[1]]]), radius - wall)
        tube = tube - bore
    return tube


FAMILIES = {
    "organic": make_organic,
    "displaced": make_displaced,
    "creature": make_creature,
    "relief": make_relief,
    "bracket": make_bracket,
    "flange": make_flange,
    "gear": make_gear,
    "shell": make_shell,
    "sheet": make_sheet,
    "lathe": make_lathe,
    "tube": make_tube,
}

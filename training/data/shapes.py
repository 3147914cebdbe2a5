"""Procedural shape categories: ``make_<category>(rng) -> SDF`` with randomised parts.

Each maker builds one connected solid (its parts overlap) in y-up shape units, about 1 to
2.4 across and inside [-2.5, 2.5]^3; ``procedural.normalize`` then rescales it to the ONet
unit cube, and ``procedural.build_shape`` redraws the rare draw that falls apart. Part sizes
are bounded so that the thinnest wall, leg, rod or wing is at least 2% of the shape's
longest edge, i.e. at least 0.02 after normalisation (ShapeNet-like proportions without
paper-thin parts). Exception: the optional carve of ``make_blob`` can leave a thin rim.
"""

from __future__ import annotations

import numpy as np

from . import sdf as S


def profile_table(knots_y, knots_r, samples: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Dense smooth profile (heights, radii) through control knots (monotone cubic, no
    overshoot), for ``sdf.revolution``."""
    from scipy.interpolate import PchipInterpolator

    heights = np.linspace(knots_y[0], knots_y[-1], samples)
    return heights, PchipInterpolator(knots_y, knots_r)(heights)


def rotation_x(angle: float) -> np.ndarray:
    """Rotation (3, 3) about the x axis by ``angle`` radians."""
    return S.rotation((1, 0, 0), angle)


def _bar(a, b, thickness: float, round_legs: bool) -> S.SDF:
    """A leg or post between points ``a`` and ``b`` on a vertical line: a square bar or a rod."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    length = float(np.linalg.norm(b - a))
    centre = (a + b) / 2
    if round_legs:
        return S.cylinder(thickness / 2, length).translate(centre)
    return S.box((thickness, length, thickness)).translate(centre)


def make_chair(rng: np.random.Generator) -> S.SDF:
    """Seat, four legs (bars or rods), a back (panel or slats, maybe tilted), maybe arms."""
    width, depth = rng.uniform(0.8, 1.1), rng.uniform(0.75, 1.05)
    seat_y, seat_t = rng.uniform(0.8, 1.0), rng.uniform(0.07, 0.12)
    leg_t, inset = rng.uniform(0.06, 0.1), rng.uniform(0.0, 0.06)
    round_legs = rng.random() < 0.4
    parts = [S.rounded_box((width, seat_t, depth), seat_t / 4).translate((0, seat_y, 0))]
    for sx in (-1, 1):
        for sz in (-1, 1):
            x = sx * (width / 2 - leg_t / 2 - inset)
            z = sz * (depth / 2 - leg_t / 2 - inset)
            parts.append(_bar((x, 0, z), (x, seat_y, z), leg_t, round_legs))

    back_h, back_t = rng.uniform(0.6, 1.1), rng.uniform(0.05, 0.09)
    back_z = -depth / 2 + back_t / 2
    if rng.random() < 0.5:
        back = S.box((width, back_h, back_t)).translate((0, back_h / 2, 0))
    else:  # two posts, a top rail and vertical slats
        post = rng.uniform(0.05, 0.08)
        rail = rng.uniform(0.08, 0.16)
        back = S.union(
            *[S.box((post, back_h, back_t)).translate((sx * (width - post) / 2, back_h / 2, 0))
              for sx in (-1, 1)],
            S.box((width, rail, back_t)).translate((0, back_h - rail / 2, 0)),
            *[S.box((rng.uniform(0.045, 0.07), back_h, back_t))
              .translate((x, back_h / 2, 0))
              for x in np.linspace(-width / 2, width / 2, rng.integers(3, 7))[1:-1]])
    # Tilt backwards about the seat's back edge, which stays inside the seat.
    tilt = rotation_x(-rng.uniform(0.0, 0.3))
    parts.append(back.rotate(tilt).translate((0, seat_y, back_z)))

    if rng.random() < 0.4:
        arm_y = seat_y + rng.uniform(0.2, 0.3)
        arm_t = rng.uniform(0.06, 0.1)
        for sx in (-1, 1):
            x = sx * (width / 2 - arm_t / 2)
            parts.append(S.box((arm_t, arm_t * 0.8, depth)).translate((x, arm_y, 0)))
            parts.append(_bar((x, seat_y, depth / 2 - arm_t / 2), (x, arm_y, depth / 2 - arm_t / 2),
                              arm_t * 0.8, round_legs))
    return S.union(*parts)


def make_table(rng: np.random.Generator) -> S.SDF:
    """Rectangular or round top on four legs (maybe with a shelf) or on a pedestal."""
    height, top_t = rng.uniform(0.6, 1.0), rng.uniform(0.05, 0.1)
    top_y = height - top_t / 2
    round_top = rng.random() < 0.35
    if round_top:
        radius = rng.uniform(0.5, 0.9)
        width = depth = 2 * radius
        parts = [S.cylinder(radius, top_t).translate((0, top_y, 0))]
    else:
        width, depth = rng.uniform(1.2, 2.0), rng.uniform(0.6, 1.1)
        parts = [S.rounded_box((width, top_t, depth), top_t / 3).translate((0, top_y, 0))]

    if round_top or rng.random() < 0.25:  # pedestal: column and a foot plate or cross
        column = rng.uniform(0.05, 0.1)
        parts.append(S.cylinder(column, height).translate((0, height / 2, 0)))
        foot = rng.uniform(0.25, 0.45) * min(width, depth)
        foot_t = rng.uniform(0.05, 0.08)
        if rng.random() < 0.5:
            parts.append(S.cone(foot_t * 2, foot, foot * 0.6).translate((0, foot_t, 0)))
        else:
            for angle in (0, np.pi / 2):
                bar = S.box((2 * foot, foot_t, foot_t * 1.5)).translate((0, foot_t / 2, 0))
                parts.append(bar.rotate(S.rotation((0, 1, 0), angle)))
        return S.union(*parts)

    leg_t, inset = rng.uniform(0.05, 0.1), rng.uniform(0.02, 0.12)
    round_legs = rng.random() < 0.4
    corners = [(sx * (width / 2 - leg_t / 2 - inset), sz * (depth / 2 - leg_t / 2 - inset))
               for sx in (-1, 1) for sz in (-1, 1)]
    parts += [_bar((x, 0, z), (x, top_y, z), leg_t, round_legs) for x, z in corners]
    if rng.random() < 0.5:  # lower shelf or stretchers joining the legs
        shelf_y = rng.uniform(0.12, 0.35) * height
        inner_w = width - 2 * inset - leg_t
        inner_d = depth - 2 * inset - leg_t
        if rng.random() < 0.5:
            parts.append(S.box((inner_w, top_t * 0.8, inner_d)).translate((0, shelf_y, 0)))
        else:
            bar = max(leg_t * 0.7, 0.045)
            parts += [S.box((inner_w, bar, bar)).translate((0, shelf_y, sz * inner_d / 2))
                      for sz in (-1, 1)]
            parts += [S.box((bar, bar, inner_d)).translate((sx * inner_w / 2, shelf_y, 0))
                      for sx in (-1, 1)]
    return S.union(*parts)


def make_sofa(rng: np.random.Generator) -> S.SDF:
    """Upholstered base, back, two arms, seat cushions, short feet; maybe L-shaped."""
    length, depth = rng.uniform(1.6, 2.4), rng.uniform(0.75, 1.0)
    foot_h, seat_y = rng.uniform(0.05, 0.12), rng.uniform(0.35, 0.5)
    back_h, back_t = rng.uniform(0.35, 0.6), rng.uniform(0.15, 0.25)
    arm_t, arm_h = rng.uniform(0.12, 0.25), rng.uniform(0.12, 0.3)
    soft = rng.uniform(0.03, 0.08)
    base_h = seat_y - foot_h
    body = S.union(
        S.rounded_box((length, base_h, depth), soft).translate((0, foot_h + base_h / 2, 0)),
        S.rounded_box((length, base_h + back_h, back_t), soft)
        .translate((0, foot_h + (base_h + back_h) / 2, -(depth - back_t) / 2)),
        *[S.rounded_box((arm_t, base_h + arm_h, depth), soft)
          .translate((sx * (length - arm_t) / 2, foot_h + (base_h + arm_h) / 2, 0))
          for sx in (-1, 1)])
    if rng.random() < 0.25:  # chaise on one side
        side = rng.choice((-1, 1))
        extra = rng.uniform(0.5, 0.9)
        chaise_w = rng.uniform(0.6, 0.9)
        body = body | S.rounded_box((chaise_w, base_h, depth + extra), soft).translate(
            (side * (length - chaise_w) / 2, foot_h + base_h / 2, extra / 2))

    # Seat cushions overlap each other, the arms and the back, and sit half inside the base,
    # so the grooves between their rounded edges are buried or open: nearly touching
    # surfaces (or a smooth union of them) leave tiny closed voids.
    count = int(rng.integers(1, 4))
    cushion_t = rng.uniform(0.12, 0.24)
    seat_w = (length - 2 * arm_t) / count
    cushion = S.rounded_box((seat_w + 0.03, cushion_t, depth - back_t + 0.03), cushion_t / 4)
    cushions = [cushion.translate((-length / 2 + arm_t + seat_w * (i + 0.5), seat_y,
                                   (back_t - 0.03) / 2))
                for i in range(count)]
    foot = S.cylinder(rng.uniform(0.03, 0.05), foot_h + soft)
    feet = [foot.translate((sx * (length / 2 - 0.1), (foot_h + soft) / 2, sz * (depth / 2 - 0.1)))
            for sx in (-1, 1) for sz in (-1, 1)]
    return S.union(body, *cushions, *feet)


def make_cabinet(rng: np.random.Generator) -> S.SDF:
    """Open bookshelf (compartments cut out of a block) or closed cabinet with doors, handles
    and a plinth."""
    width, height, depth = rng.uniform(0.6, 1.4), rng.uniform(0.8, 2.0), rng.uniform(0.3, 0.6)
    wall = rng.uniform(0.045, 0.07)
    block = S.box((width, height, depth)).translate((0, height / 2, 0))
    if rng.random() < 0.55:  # bookshelf: rows x columns of compartments open at the front
        rows, cols = int(rng.integers(2, 6)), int(rng.integers(1, 3))
        cell_w = (width - wall * (cols + 1)) / cols
        cell_h = (height - wall * (rows + 1)) / rows
        cells = [S.box((cell_w, cell_h, depth)).translate(
            (-width / 2 + wall + (cell_w + wall) * (c + 0.5),
             wall + (cell_h + wall) * (r + 0.5), wall))  # back panel `wall` thick stays
            for r in range(rows) for c in range(cols)]
        return block - S.union(*cells)

    plinth = rng.uniform(0.05, 0.12)
    body_h = height - plinth
    parts = [S.box((width, body_h, depth)).translate((0, plinth + body_h / 2, 0)),
             S.box((width - 2 * wall, plinth + 0.01, depth - 2 * wall))
             .translate((0, (plinth + 0.01) / 2, 0))]
    if rng.random() < 0.5:  # top overhang
        parts.append(S.box((width + 2 * wall, wall, depth + wall))
                     .translate((0, height + wall / 2 - 0.005, wall / 2)))
    # One or two door panels standing proud of the front, each with a knob.
    doors, gap = int(rng.integers(1, 3)), 0.04
    door_w, door_t = (width - gap * (doors + 1)) / doors, 0.02
    knob = rng.uniform(0.025, 0.04)
    for d in range(doors):
        x = -width / 2 + gap + (door_w + gap) * (d + 0.5)
        parts.append(S.box((door_w, body_h - 2 * gap, door_t + 0.01))
                     .translate((x, plinth + body_h / 2, depth / 2)))
        knob_x = x + (door_w / 2 - 0.08) * (1 - 2 * d)  # beside the gap between doors
        parts.append(S.sphere(knob).translate((knob_x, plinth + body_h * 0.55,
                                               depth / 2 + door_t / 2 + knob * 0.5)))
    return S.union(*parts)


def make_lamp(rng: np.random.Generator) -> S.SDF:
    """Floor or table lamp (base, pole, open shade) or desk lamp (base, jointed arm, head)."""
    base_r, base_t = rng.uniform(0.15, 0.3), rng.uniform(0.04, 0.08)
    if rng.random() < 0.5:
        base = S.cylinder(base_r, base_t).translate((0, base_t / 2, 0))
    else:
        base = S.cone(base_t * 1.5, base_r, base_r * 0.6).translate((0, base_t * 0.75, 0))
    pole_r = rng.uniform(0.02, 0.035)
    wall = rng.uniform(0.02, 0.03)

    if rng.random() < 0.6:  # straight pole with a shade on top
        pole_h = rng.uniform(0.8, 1.5)
        shade_h = rng.uniform(0.25, 0.45)
        bottom = rng.uniform(0.2, 0.4)
        top = rng.uniform(0.4, 0.9) * bottom
        shade_y = pole_h + shade_h / 2 - 0.3 * shade_h
        shade = _open_shade(shade_h, bottom, top, wall).translate((0, shade_y, 0))
        pole_top = shade_y + shade_h / 2  # inside the shade's closed top
        pole = S.cylinder(pole_r, pole_top).translate((0, pole_top / 2, 0))
        return S.union(base, pole, shade)

    # Desk lamp: two arm segments with a ball joint, the head pointing down and forward.
    lower, upper = rng.uniform(0.5, 0.9), rng.uniform(0.4, 0.8)
    a1, a2 = rng.uniform(-0.5, 0.3), rng.uniform(0.6, 1.4)
    joint0 = np.array([0.0, base_t, 0.0])
    joint1 = joint0 + lower * np.array([np.sin(a1), np.cos(a1), 0.0])
    joint2 = joint1 + upper * np.array([np.sin(a2), np.cos(a2), 0.0])
    head_h = rng.uniform(0.18, 0.3)
    head_r = rng.uniform(0.1, 0.2)
    head = _open_shade(head_h, head_r, head_r * rng.uniform(0.3, 0.6), wall)
    # Turn the opening (local -y) down and forward; the closed top's wall holds joint2.
    tilt = S.rotation((0, 0, 1), rng.uniform(0.2, 0.9))
    head_centre = joint2 - tilt @ np.array([0, head_h / 2, 0])
    arm_r = pole_r * 0.9
    return S.union(
        base,
        S.capsule(joint0, joint1, arm_r),
        S.sphere(arm_r * 1.6).translate(joint1),
        S.capsule(joint1, joint2, arm_r),
        S.sphere(arm_r * 1.6).translate(joint2),
        head.rotate(tilt).translate(head_centre),
    )


def _open_shade(height: float, bottom: float, top: float, wall: float) -> S.SDF:
    """Hollow frustum along y, open at the bottom, closed at the top, walls ``2 * wall``."""
    shell = S.cone(height, bottom, top).shell(wall)
    # The bottom cap's wall spans y = -h/2 +- wall; cutting above it opens the shade (a cut
    # exactly on its inner face would leave a zero-thickness membrane).
    return shell & S.half_space((0, -1, 0), height / 2 - 2 * wall)


def make_vase(rng: np.random.Generator) -> S.SDF:
    """Hollow solid of revolution from a random smooth profile, open at the top."""
    height = rng.uniform(0.8, 1.6)
    foot = rng.uniform(0.12, 0.3)
    belly = rng.uniform(0.2, 0.45)
    neck = rng.uniform(0.08, 0.25)
    lip = neck * rng.uniform(1.0, 1.8)
    knots_y = np.array([0.0, rng.uniform(0.25, 0.5), rng.uniform(0.65, 0.85), 1.0]) * height
    heights, radii = profile_table(knots_y, [foot, belly, neck, lip])
    wall = rng.uniform(0.012, 0.02) * max(height, 2 * belly)
    solid = S.revolution(heights, radii)
    # The shell also wraps the top cap (y = height +- wall); cutting below it opens the mouth.
    return solid.shell(wall) & S.half_space((0, 1, 0), height - 2 * wall)


def make_bottle(rng: np.random.Generator) -> S.SDF:
    """Closed bottle: body, rounded shoulder, neck, lip and maybe a cap (revolution)."""
    body_r, body_h = rng.uniform(0.15, 0.3), rng.uniform(0.5, 1.0)
    shoulder_h = rng.uniform(0.1, 0.3)
    neck_r = rng.uniform(0.25, 0.5) * body_r
    neck_r = max(neck_r, 0.06)
    neck_h = rng.uniform(0.1, 0.3)
    knots_y = [0.0, 0.03, body_h, body_h + shoulder_h, body_h + shoulder_h + neck_h]
    knots_r = [body_r * 0.92, body_r, body_r, neck_r, neck_r]
    heights, radii = profile_table(knots_y, knots_r)
    top = knots_y[-1]
    parts = [S.revolution(heights, radii),
             S.torus(neck_r, rng.uniform(0.02, 0.03)).translate((0, top - 0.03, 0))]
    if rng.random() < 0.5:
        cap_h = rng.uniform(0.05, 0.12)
        parts.append(S.cylinder(neck_r * 1.15, cap_h).translate((0, top + cap_h / 2 - 0.01, 0)))
    return S.union(*parts)


def make_mug(rng: np.random.Generator) -> S.SDF:
    """Cylindrical cup with a floor, open top and a handle made of a torus segment."""
    radius, height = rng.uniform(0.25, 0.4), rng.uniform(0.45, 0.9)
    wall, floor = rng.uniform(0.03, 0.05), rng.uniform(0.04, 0.07)
    body = S.cylinder(radius, height).translate((0, height / 2, 0))
    cavity = S.cylinder(radius - wall, height).translate((0, floor + height / 2, 0))
    tube = rng.uniform(0.03, 0.05)
    ring = rng.uniform(0.35, 0.45) * height - tube
    # Torus in the xy-plane (axis z) centred on the outer wall; only its outer half is kept
    # and it ends inside the wall, so the handle is joined to the body.
    handle = S.torus(ring, tube).rotate(rotation_x(np.pi / 2)).translate((radius, height / 2, 0))
    handle = handle & S.half_space((-1, 0, 0), -(radius - wall / 2))
    return (body | handle) - cavity


def make_airplane(rng: np.random.Generator) -> S.SDF:
    """Fuselage along z (nose at -z), swept wings, tailplane, fin, maybe two engines."""
    length = rng.uniform(1.5, 2.2)
    fuselage_r = rng.uniform(0.06, 0.11)
    span, chord = rng.uniform(1.2, 2.2), rng.uniform(0.22, 0.4)
    wing_t, sweep = rng.uniform(0.05, 0.07), rng.uniform(0.0, 0.6)
    wing_z = rng.uniform(-0.18, 0.0) * length
    wing_y = rng.uniform(-0.6, 0.3) * fuselage_r
    tail_span, tail_chord = span * rng.uniform(0.18, 0.25), chord * 0.6
    tail_z = length / 2 - fuselage_r - tail_chord / 2
    parts = [S.capsule((0, 0, -length / 2 + fuselage_r), (0, 0, length / 2 - fuselage_r),
                       fuselage_r),
             S.ellipsoid((fuselage_r, fuselage_r, fuselage_r * 2.5))
             .translate((0, 0, -length / 2 + fuselage_r * 2.5))]

    def half_wing(side: int, half_span: float, chord: float, thick: float) -> S.SDF:
        """A wing from the centre line (inside the fuselage) to ``side * half_span``, its
        tip swept back (+z) by ``sweep``."""
        panel = S.rounded_box((half_span, thick, chord), thick / 2.5)
        return panel.translate((side * half_span / 2, 0, 0)).rotate(
            S.rotation((0, 1, 0), -side * sweep))

    engine_at, engine_r = span * rng.uniform(0.15, 0.3), rng.uniform(0.05, 0.08)
    engines = rng.random() < 0.6
    for side in (-1, 1):
        parts.append(half_wing(side, span / 2, chord, wing_t).translate((0, wing_y, wing_z)))
        parts.append(half_wing(side, tail_span, tail_chord, wing_t * 0.9)
                     .translate((0, 0, tail_z)))
        if engines:  # hanging under the wing, its top inside the wing
            x = side * engine_at * np.cos(sweep)
            z = wing_z + engine_at * np.sin(sweep)
            y = wing_y - wing_t / 2 - engine_r * 0.7
            parts.append(S.capsule((x, y, z - chord * 0.6), (x, y, z + chord * 0.4), engine_r))
    fin_h = rng.uniform(0.2, 0.35) + fuselage_r
    fin = S.rounded_box((wing_t * 0.9, fin_h, tail_chord * 1.2), wing_t / 3)
    # Leaning back about its root, which stays inside the fuselage.
    fin = fin.translate((0, fin_h / 2, 0)).rotate(rotation_x(rng.uniform(0.2, 0.5)))
    parts.append(fin.translate((0, 0, tail_z)))
    return S.union(*parts)


def make_car(rng: np.random.Generator) -> S.SDF:
    """Car along x: rounded body, cabin with slanted windscreens, four wheels."""
    length, width = rng.uniform(1.6, 2.3), rng.uniform(0.7, 0.95)
    wheel_r, wheel_w = rng.uniform(0.13, 0.2), rng.uniform(0.1, 0.16)
    body_h = rng.uniform(0.25, 0.4)
    body_y = wheel_r * 0.9 + body_h / 2
    body = S.rounded_box((length, body_h, width), rng.uniform(0.04, 0.1)).translate((0, body_y, 0))
    cabin_l = rng.uniform(0.4, 0.6) * length
    cabin_h = rng.uniform(0.2, 0.32)
    cabin_x = rng.uniform(-0.12, 0.05) * length
    cabin_y = body_y + body_h / 2 + cabin_h / 2 - 0.02
    cabin = S.rounded_box((cabin_l, cabin_h, width * 0.9), 0.04).translate((cabin_x, cabin_y, 0))
    # Windscreens: planes through the cabin's top front and back edges, leaning outwards.
    front, back = rng.uniform(0.4, 0.9), rng.uniform(0.2, 0.8)
    for sign, lean in ((1, front), (-1, back)):
        normal = np.array([sign * np.cos(lean), np.sin(lean), 0.0])
        edge = np.array([cabin_x + sign * (cabin_l / 2 - cabin_h * 0.6), cabin_y + cabin_h / 2, 0])
        cabin = cabin & S.half_space(normal, float(normal @ edge))
    wheel = S.cylinder(wheel_r, wheel_w).rotate(rotation_x(np.pi / 2))
    axle_x = length / 2 - rng.uniform(0.25, 0.38)
    wheels = [wheel.translate((sx * axle_x, wheel_r, sz * (width / 2 - wheel_w / 2 + 0.02)))
              for sx in (-1, 1) for sz in (-1, 1)]
    return S.union(body, cabin, *wheels)


def make_blob(rng: np.random.Generator) -> S.SDF:
    """Free-form: a chain of random primitives blended by smooth unions, each centred on a
    point inside the previous one; maybe a sphere or box carved out."""
    anchor = np.zeros(3)
    solid = None
    for _ in range(int(rng.integers(3, 8))):
        kind = rng.integers(0, 5)
        scale = rng.uniform(0.18, 0.4)
        spin = S.rotation(rng.normal(size=3), rng.uniform(0, np.pi))
        direction = rng.normal(size=3)
        direction *= 0.6 / np.linalg.norm(direction)
        if kind == 0:  # `inner`: a point inside the part, in its own frame
            part, inner = S.sphere(scale), scale * direction
        elif kind == 1:
            radii = scale * rng.uniform(0.5, 1.5, size=3)
            part, inner = S.ellipsoid(radii), radii * direction
        elif kind == 2:
            part = S.capsule((-scale, 0, 0), (scale, 0, 0), scale * rng.uniform(0.25, 0.5))
            inner = np.array([rng.uniform(-scale, scale), 0, 0])
        elif kind == 3:
            size = scale * rng.uniform(0.8, 1.8, size=3)
            part, inner = S.rounded_box(size, scale * 0.2), size * rng.uniform(-0.4, 0.4, size=3)
        else:  # a torus is hollow in the middle: anchor on its ring
            part = S.torus(scale, scale * rng.uniform(0.25, 0.45))
            angle = rng.uniform(0, 2 * np.pi)
            inner = scale * np.array([np.cos(angle), 0, np.sin(angle)])
        part = part.rotate(spin).translate(anchor)
        solid = part if solid is None else S.smooth_union(solid, part, rng.uniform(0.05, 0.2))
        anchor = anchor + spin @ inner
    if rng.random() < 0.5:
        cut_r = rng.uniform(0.15, 0.3)
        cutter = S.sphere(cut_r) if rng.random() < 0.5 else S.box((cut_r * 2,) * 3)
        solid = solid - cutter.translate(rng.normal(size=3) * 0.35)
    return solid


CATEGORIES = {
    "chair": make_chair,
    "table": make_table,
    "sofa": make_sofa,
    "cabinet": make_cabinet,
    "lamp": make_lamp,
    "vase": make_vase,
    "bottle": make_bottle,
    "mug": make_mug,
    "airplane": make_airplane,
    "car": make_car,
    "blob": make_blob,
}

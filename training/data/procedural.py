"""The procedural corpus: analytic shapes with exact labels, in the official ONet layout.

Written by ``python -m training.data procedural`` (``N`` is ``Options.points``)::

    DIR/metadata.yaml                 {category: {id: category, name: category}}
    DIR/<category>/{train,val,test}.lst
                                      shape ids, one per line, no trailing newline (im2mesh
                                      splits the file on newlines: a trailing one would add
                                      an empty id); 80/10/10, at least one in val and in
                                      test when a category has 3 shapes or more
    DIR/<category>/<shape_id>/
        points.npz        ``points`` (N, 3) float16 uniform in the padded cube
                          [-0.55, 0.55]^3, ``occupancies`` np.packbits of N bools (inside),
                          ``loc`` (3,) float16 zeros, ``scale`` () float16 one
        points_near.npz   the same keys; points sampled on the mesh by area plus Gaussian
                          noise, sigma 0.01 for the first half and 0.05 for the second
                          half (a few of the latter fall outside the padded cube)
        pointcloud.npz    ``points`` (N, 3) float16 on the surface, ``normals`` (N, 3) float16
                          unit outward, ``loc``, ``scale``
        model.binvox      32^3 voxels over [-0.5, 0.5]^3 (translate -0.5, scale 1); a voxel is
                          set when the SDF at its centre is below half its diagonal, so every
                          voxel the solid touches is set (thin parts survive) plus a few
                          whose circumscribed ball, but not the voxel, meets the solid
                          (the "touching" voxelisation)
        model_centres.binvox  the same grid by the common rule: a voxel is set when its
                          centre is inside (the "centres" voxelisation)
        img_choy2016/     ``000.png`` ... RGBA views and ``cameras.npz`` (see render.py; their
                          shading and backgrounds: ``--look``, ``--backgrounds``, looks.py)
        mesh.ply          marching cubes at 128 over the padded cube, vertices projected onto
                          the surface: watertight, one connected piece

Corpora: ``v1`` (the default) is the 11 categories of ``shapes.py`` in canonical pose;
``v2`` adds the 11 families of ``families.py`` and stores every shape in a random rotation,
uniform on SO(3), drawn from its own stream of the shape's seeded generator and applied
about the shape's bounding-box centre before normalisation (so the same seed without the
rotation gives the same shape, and a v1 corpus is bit-identical to the one written before
v2 existed).

Corpus v2 size. CPU seconds per shape (one core, official options: 100k points, 6 views of
224^2, mesh at 128^3; mean of 3 rotated shapes each, ``time.process_time`` around
``generate_one``; wall time was about twice that on the shared 2-core machine)::

    chair 0.61  table 0.55  sofa 0.60  cabinet 0.61  lamp 0.48  vase 0.56  bottle 0.49
    mug 0.57  airplane 0.51  car 0.54  blob 0.65
    organic 0.81  displaced 0.89  creature 1.01  relief 0.67  bracket 0.57  flange 0.96
    gear 0.70  shell 0.60  sheet 0.53  lathe 0.53  tube 1.79 (sphere tracing a long polyline)

One shape of each of the 22 classes costs 15.2 s, 0.69 s a shape. The proposed v2 size is
128 shapes per class: 2816 shapes (102 train, 13 val, 13 test per class: 2244 training
shapes), 128 * 15.2 / 2 = 16 minutes on 2 free cores, about 33 minutes when they are shared
as they were when measured (twice the CPU time); about 3.6 MiB a shape, 10 GiB in all::

    python -m training.data procedural --corpus v2 --out data/procedural_v2 --per-class 128 \
        --seed 1 --workers 2

Shapes are normalised like ONet's preprocessing: bounding box centred at the origin, longest
edge 1. Occupancies come from the SDF at the stored (float16-rounded) coordinates, so they
are exact. Every random draw comes from a generator seeded by (seed, category, index), so a
seed gives the same files whatever the number of workers.
"""

from __future__ import annotations

import multiprocessing
import os
import time
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backend.io.inputs import VOXELISATIONS

from . import surface
from .looks import composite, random_background
from .render import render_views
from .families import FAMILIES
from .sdf import SDF, random_rotation
from .shapes import CATEGORIES

PADDED_LO, PADDED_SIZE = -0.55, 1.1  # the padded unit cube (docs/design.md, "Coordinates")
DESIGN_LO, DESIGN_SIZE = -2.5, 5.0  # makers build inside this cube
NEAR_SIGMAS = (0.01, 0.05)
MAX_ATTEMPTS = 8  # redraws of a shape that falls apart into several pieces
SPLITS = (("train", 0.8), ("val", 0.1), ("test", 0.1))
MAKERS = {**CATEGORIES, **FAMILIES}  # every category and family, by name
# Corpus name -> (its categories, whether its shapes are randomly rotated).
CORPORA = {"v1": (tuple(CATEGORIES), False), "v2": (tuple(MAKERS), True)}


@dataclass(frozen=True)
class Options:
    """Sizes of one shape's files (the defaults are the official ones) and whether the
    shape is randomly rotated (corpus v2)."""

    points: int = 100_000
    views: int = 6
    image_size: int = 224
    resolution: int = 128
    voxels: int = 32
    rotate: bool = False
    look: str = "plain"  # the views' shading (looks.LOOKS)
    backgrounds: bool = False  # views opaque on a random plain background, as photos


@dataclass
class Shape:
    """A normalised shape: its SDF and its closed mesh (vertices (V, 3) float32 on the
    surface, faces (F, 3) int32)."""

    sdf: SDF
    vertices: np.ndarray
    faces: np.ndarray


def shape_rng(seed: int, category: str, index: int, stream: int) -> np.random.Generator:
    """The generator of one stream of random draws for one shape (stable across runs and
    processes: the category enters through its CRC-32, not Python's salted hash)."""
    return np.random.default_rng([seed, zlib.crc32(category.encode()), index, stream])


def shape_rotation(seed: int, category: str, index: int) -> np.ndarray:
    """The random rotation (3, 3) float32 of shape ``index`` of ``category`` in a rotated
    corpus: uniform on SO(3), from its own stream (3) of the shape's generator."""
    return random_rotation(shape_rng(seed, category, index, stream=3))


def outer_box(raw: SDF, passes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """A box ``(lo (3,), hi (3,))`` guaranteed to hold the shape built in the design cube,
    from ``passes`` coarse narrow-band lattices, each zooming in on the previous box."""
    origin, size = np.full(3, DESIGN_LO), DESIGN_SIZE
    for _ in range(passes):
        values = surface.lattice_values(raw, 64, origin, size)
        lo, hi = surface.outer_bounds(values, origin, size)
        size = 1.2 * (hi - lo).max()
        origin = (lo + hi) / 2 - size / 2
    return lo, hi


def normalize(raw: SDF, resolution: int, rotation: np.ndarray | None = None) -> Shape:
    """Rescale ``raw`` exactly (``sdf(p * s + c) / s``) so its bounding box is centred at the
    origin with longest edge 1, and mesh it at ``resolution`` over the padded cube.

    Two coarse narrow-band lattices give a box guaranteed to hold the shape (so the padded
    cube never cuts it); the final mesh's vertices, snapped onto the surface, then give the
    box to within about 1e-4, and a last small rescaling makes it exact. A ``rotation``
    (3, 3) is applied first, about the centre of a coarse box of ``raw`` (so the rotated
    shape stays inside the design cube).
    """
    if rotation is not None:
        lo, hi = outer_box(raw, passes=1)
        raw = raw.translate(-(lo + hi) / 2).rotate(rotation)
    lo, hi = outer_box(raw)
    shape = raw.translate(-(lo + hi) / 2).scale(1 / (hi - lo).max())

    origin = np.full(3, PADDED_LO)
    values = surface.lattice_values(shape, resolution, origin, PADDED_SIZE)
    vertices, faces = surface.marching_cubes(values, origin, PADDED_SIZE)
    vertices = surface.snap_to_surface(shape, vertices, origin, PADDED_SIZE / resolution)
    lo, hi = vertices.min(axis=0), vertices.max(axis=0)
    centre, extent = (lo + hi) / 2, (hi - lo).max()
    return Shape(shape.translate(-centre).scale(1 / extent), (vertices - centre) / extent, faces)


def build_shape(category: str, seed: int, index: int, resolution: int = 128,
                rotate: bool = False) -> Shape:
    """Shape ``index`` of ``category`` (any of ``MAKERS``) for ``seed``: drawn, maybe
    rotated by ``shape_rotation``, normalised and meshed; redrawn (up to ``MAX_ATTEMPTS``
    times) if its mesh has more than one connected piece."""
    rng = shape_rng(seed, category, index, stream=0)
    rotation = shape_rotation(seed, category, index) if rotate else None
    for _ in range(MAX_ATTEMPTS):
        shape = normalize(MAKERS[category](rng), resolution, rotation)
        if surface.component_count(shape.faces, len(shape.vertices)) == 1:
            return shape
    raise RuntimeError(f"{category} {index} (seed {seed}): no connected shape "
                       f"in {MAX_ATTEMPTS} draws")


def labelled_points(sdf: SDF, points: np.ndarray) -> dict[str, np.ndarray]:
    """The official points file: float16 ``points`` (N, 3), packed ``occupancies`` taken at
    the stored coordinates, ``loc`` and ``scale`` of the identity normalisation."""
    stored = points.astype(np.float16)
    inside = sdf(stored.astype(np.float32)) < 0
    return {"points": stored, "occupancies": np.packbits(inside), **_identity()}


def _identity() -> dict[str, np.ndarray]:
    return {"loc": np.zeros(3, dtype=np.float16), "scale": np.array(1, dtype=np.float16)}


# Voxelisation name -> file: "touching" sets every voxel the solid touches (thin parts
# survive; the corpus's own rule), "centres" every voxel whose centre is inside (the common
# rule of voxelisers and of Blender's remesh). Voxel models train on both.
# The grid file of each voxelisation (``backend.io.inputs.VOXELISATIONS``), in its order.
VOXEL_FILES = dict(zip(VOXELISATIONS, ("model.binvox", "model_centres.binvox")))


def voxel_centres(resolution: int) -> np.ndarray:
    """Centres ``(n^3, 3) float32`` of an n^3 grid over [-0.5, 0.5]^3, [x, y, z], z fastest."""
    centres = (np.arange(resolution, dtype=np.float32) + 0.5) / resolution - 0.5
    return np.stack(np.meshgrid(centres, centres, centres, indexing="ij"), axis=-1).reshape(-1, 3)


def voxelize(sdf: SDF, resolution: int, rule: str = "touching",
             surface: np.ndarray | None = None) -> np.ndarray:
    """``(n, n, n) bool`` indexed [x, y, z] over [-0.5, 0.5]^3 by ``rule`` (VOXEL_FILES):
    "centres", voxels whose centre is inside; "touching", those and every voxel that holds
    one of the ``surface`` points ``(N, 3)`` (dense samples of the surface: the voxels the
    surface passes through, as binvox marks them)."""
    grid = (sdf(voxel_centres(resolution)) < 0).reshape((resolution,) * 3)
    if rule == "centres":
        return grid
    if surface is None:
        raise ValueError("the touching grid needs samples of the surface")
    return touching(grid, surface)


def touching(centres: np.ndarray, surface: np.ndarray) -> np.ndarray:
    """The "touching" voxelisation: a centres grid (n, n, n) plus every voxel
    that holds a surface sample (``surface`` (N, 3)); (n, n, n) bool."""
    occupancy = centres.copy()
    n = len(centres)
    index = np.clip(((surface + 0.5) * n).astype(np.int64), 0, n - 1)
    occupancy[tuple(index.T)] = True
    return occupancy


def write_shape(folder: Path, shape: Shape, options: Options, rng: np.random.Generator) -> None:
    """Write one shape's files (see the module docstring) into ``folder``."""
    from PIL import Image

    from backend.io.binvox import write_binvox
    from backend.io.meshes import write_mesh

    n = options.points
    uniform = rng.uniform(PADDED_LO, PADDED_LO + PADDED_SIZE, size=(n, 3))
    np.savez(folder / "points.npz", **labelled_points(shape.sdf, uniform))

    near = surface.sample_surface(shape.vertices, shape.faces, n, rng)
    sigma = np.where(np.arange(n) < n // 2, *NEAR_SIGMAS)[:, None]
    np.savez(folder / "points_near.npz",
             **labelled_points(shape.sdf, near + sigma * rng.standard_normal((n, 3))))

    on_mesh = surface.sample_surface(shape.vertices, shape.faces, n, rng)
    points, normals = surface.project(shape.sdf, on_mesh)
    np.savez(folder / "pointcloud.npz", points=points.astype(np.float16),
             normals=normals.astype(np.float16), **_identity())

    centres = voxelize(shape.sdf, options.voxels, "centres")
    for rule, grid in (("touching", touching(centres, points)), ("centres", centres)):
        write_binvox(folder / VOXEL_FILES[rule], grid, (-0.5,) * 3, 1.0)

    images_dir = folder / "img_choy2016"
    images_dir.mkdir(exist_ok=True)
    images, cameras = render_views(shape.sdf, options.views, options.image_size, rng,
                                   options.look)
    for i, image in enumerate(images):
        if options.backgrounds:
            image = composite(image, random_background(*image.shape[:2], rng))
        Image.fromarray(image).save(images_dir / f"{i:03d}.png")
    np.savez(images_dir / "cameras.npz", **cameras)

    write_mesh(folder / "mesh.ply", shape.vertices, shape.faces)


def shape_id(index: int) -> str:
    """Folder name of shape ``index`` within its category."""
    return f"{index:05d}"


def generate_one(task: tuple) -> tuple[str, str, float, int]:
    """Worker entry: build and write one shape. ``task`` is (out, category, index, seed,
    options); returns (category, shape id, seconds, bytes written)."""
    out, category, index, seed, options = task
    start = time.perf_counter()
    shape = build_shape(category, seed, index, options.resolution, options.rotate)
    folder = Path(out) / category / shape_id(index)
    folder.mkdir(parents=True, exist_ok=True)
    write_shape(folder, shape, options, shape_rng(seed, category, index, stream=1))
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    return category, shape_id(index), time.perf_counter() - start, size


def split_counts(total: int) -> tuple[int, int, int]:
    """(train, val, test) sizes: 80/10/10, with at least one val and one test shape when
    ``total >= 3`` (smaller categories go to train only)."""
    if total < 3:
        return total, 0, 0
    val = max(1, round(total * SPLITS[1][1]))
    test = max(1, round(total * SPLITS[2][1]))
    return total - val - test, val, test


def split_lists(ids: list[str], rng: np.random.Generator) -> dict[str, list[str]]:
    """Shuffle ``ids`` into {train, val, test: sorted ids} (``split_counts`` sizes)."""
    ids = [ids[i] for i in rng.permutation(len(ids))]
    lists, start = {}, 0
    for (name, _), count in zip(SPLITS, split_counts(len(ids))):
        lists[name] = sorted(ids[start:start + count])
        start += count
    return lists


def write_splits(category_dir: Path, ids: list[str], rng: np.random.Generator) -> None:
    """Shuffle ``ids`` and write ``train.lst``, ``val.lst`` and ``test.lst``."""
    for name, chosen in split_lists(ids, rng).items():
        (category_dir / f"{name}.lst").write_text("\n".join(chosen))


def corpus_splits(category: str, per_class: int, seed: int) -> dict[str, list[str]]:
    """The split lists of one category of the corpus of ``per_class`` shapes and ``seed``."""
    return split_lists([shape_id(i) for i in range(per_class)],
                       shape_rng(seed, category, 0, stream=2))


def write_metadata(out: Path, categories: list[str]) -> None:
    """``metadata.yaml`` as in the official dataset: category folder -> {id, name}."""
    import yaml

    metadata = {name: {"id": name, "name": name} for name in categories}
    (out / "metadata.yaml").write_text(yaml.safe_dump(metadata, sort_keys=False))


@contextmanager
def _single_threaded_children():
    """Workers started inside get one BLAS/OpenMP (and torch) thread each: the pool
    already uses every core it is given."""
    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update({name: "1" for name in names})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name)
            else:
                os.environ[name] = value


def generate(out: Path, categories: list[str], per_class: int, seed: int, workers: int = 1,
             options: Options = Options(), split: str | None = None) -> dict:
    """Write the corpus into ``out``; returns a summary (shapes, seconds, bytes, mean seconds
    per shape on one worker). ``workers > 1`` runs shapes in spawned processes. ``split``
    (train, val or test): only that split's shapes and list, the same shapes as in the
    whole corpus (e.g. the test split rendered with other looks)."""
    from tqdm import tqdm

    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    splits = {category: corpus_splits(category, per_class, seed) for category in categories}
    tasks = [(str(out), category, index, seed, options)
             for category in categories for index in range(per_class)
             if split is None or shape_id(index) in splits[category][split]]
    busy, total_bytes = 0.0, 0
    with _task_map(workers) as task_map:
        for _, _, seconds, size in tqdm(task_map(generate_one, tasks), total=len(tasks),
                                        unit="shape"):
            busy += seconds
            total_bytes += size

    for category in categories:
        for name, ids in splits[category].items():
            if split is None or name == split:
                (out / category).mkdir(exist_ok=True)
                (out / category / f"{name}.lst").write_text("\n".join(ids))
    write_metadata(out, categories)
    return {"shapes": len(tasks), "seconds": time.perf_counter() - start, "bytes": total_bytes,
            "seconds_per_shape": busy / max(len(tasks), 1)}


@contextmanager
def _task_map(workers: int):
    """A map over tasks: in this process for one worker, else a spawned pool's unordered
    map (spawn: safe with any parent state, and the same on every platform)."""
    if workers == 1:
        yield map
        return
    with _single_threaded_children():
        pool = multiprocessing.get_context("spawn").Pool(workers)  # starts the workers now
    with pool:
        yield pool.imap_unordered

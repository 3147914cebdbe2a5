"""``python -m training.data meshes --in FOLDER --out DIR``: any folder of meshes -> a dataset
in the official ONet layout (the files of ``procedural.py``, without ``img_choy2016``).

Categories: every subfolder of FOLDER is a category holding the meshes below it (at any
depth); meshes directly in FOLDER form a category named after FOLDER. A shape's id is its
file name without the extension (made unique within its category). Formats: .obj .ply .off
.stl .glb (.gltf), a multi-part file concatenated into one mesh.

Each mesh is normalised like ONet's preprocessing (bounding box centred at the origin,
longest edge 1; ``loc`` and ``scale`` in the npz files give the original frame:
``original = loc + scale * normalised``), then written as ``points.npz`` and
``points_near.npz`` (occupancies at the float16-rounded points), ``pointcloud.npz`` (area
-uniform surface samples with face normals), ``model.binvox`` (32^3 over [-0.5, 0.5]^3:
voxels whose centre is inside or that hold surface samples, so thin parts survive: the
"touching" voxelisation), ``model_centres.binvox`` (voxels whose centre is inside) and
``mesh.ply`` (the normalised mesh).

Inside test: ``backend.engine.inside.contains``, six-ray parity voting (ray stabbing, as binvox
does), so meshes need not be watertight: a missing face or a small hole is outvoted. It
fails for points where three or more of their six axis rays leave through holes (inside a
box missing three faces), for single-sheet surfaces (a plane, a leaf: no inside at all) and
where self-intersecting or duplicated parts count a wall twice.
No views are rendered: image models need perspective renders like the procedural corpus's.

A mesh that cannot be read or has no volume is skipped and listed at the end and in
``DIR/skipped.txt``; the rest are processed.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np

from backend.errors import UserError

MESH_EXTENSIONS = (".obj", ".ply", ".off", ".stl", ".glb", ".gltf")
VOXELS = 32


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the ``meshes`` subcommand."""
    parser.add_argument("--in", dest="source", required=True, type=Path,
                        help="folder of meshes (.obj .ply .off .stl .glb); subfolders are "
                             "categories")
    parser.add_argument("--out", required=True, type=Path, help="dataset folder to write")
    parser.add_argument("--points", type=int, default=100_000,
                        help="points per points/pointcloud file (default 100000)")
    parser.add_argument("--seed", type=int, default=0,
                        help="the same seed gives the same files (default 0)")


def find_meshes(source: Path) -> dict[str, list[Path]]:
    """Category -> mesh files (sorted) under ``source`` (see the module docstring)."""
    if not source.is_dir():
        raise UserError(f"mesh folder {source} not found; give a folder of .obj .ply .off "
                        f".stl .glb files")
    found: dict[str, list[Path]] = {}
    for path in sorted(source.rglob("*")):
        if path.suffix.lower() in MESH_EXTENSIONS and path.is_file():
            relative = path.relative_to(source).parts
            category = relative[0] if len(relative) > 1 else source.resolve().name
            found.setdefault(category, []).append(path)
    if not found:
        raise UserError(f"{source} holds no .obj .ply .off .stl .glb files")
    return found


def shape_ids(paths: list[Path]) -> list[str]:
    """Unique ids for a category's files: the stem, or stem-2, stem-3... on a clash."""
    ids: list[str] = []
    for path in paths:
        stem, n = path.stem, 1
        while (stem if n == 1 else f"{stem}-{n}") in ids:
            n += 1
        ids.append(stem if n == 1 else f"{stem}-{n}")
    return ids


def normalise(vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Vertices (V, 3) centred on their bounding box and scaled to longest edge 1.
    Returns (normalised (V, 3) float64, loc (3,), scale) with original = loc + scale * v."""
    vertices = np.asarray(vertices, dtype=np.float64)
    lo, hi = vertices.min(axis=0), vertices.max(axis=0)
    loc, scale = (lo + hi) / 2, float((hi - lo).max())
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError("the mesh has no extent (all vertices coincide or are not finite)")
    return (vertices - loc) / scale, loc, scale


def labelled(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray,
             frame: dict) -> dict[str, np.ndarray]:
    """The official points file: float16 points (N, 3), their packed occupancies (inside
    test at the stored coordinates) and the shape's ``loc``/``scale``."""
    from backend.engine.inside import contains

    stored = points.astype(np.float16)
    inside = contains(vertices, faces, stored.astype(np.float64))
    return {"points": stored, "occupancies": np.packbits(inside), **frame}


def centres_inside(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(32, 32, 32) bool over [-0.5, 0.5]^3, indexed [x, y, z]: voxels whose centre is inside
    the mesh (the "centres" voxelisation)."""
    from backend.engine.inside import contains

    from .procedural import voxel_centres

    return contains(vertices, faces, voxel_centres(VOXELS)).reshape((VOXELS,) * 3)




def add_centres_voxels(root: Path) -> int:
    """Write the "centres" grid (``model_centres.binvox``) from ``mesh.ply`` into every shape
    folder of dataset ``root`` that lacks one; returns how many were written."""
    from tqdm import tqdm

    from backend.io.binvox import write_binvox
    from backend.io.meshes import read_mesh

    from .procedural import VOXEL_FILES

    name = VOXEL_FILES["centres"]
    todo = sorted(mesh.parent for mesh in Path(root).glob("*/*/mesh.ply")
                  if not (mesh.parent / name).exists())
    for folder in tqdm(todo, desc="centres voxels", unit="shape"):
        mesh = read_mesh(folder / "mesh.ply")
        grid = centres_inside(np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces))
        write_binvox(folder / name, grid, (-0.5,) * 3, 1.0)
    return len(todo)


def import_mesh(path: Path, folder: Path, count: int, rng: np.random.Generator) -> None:
    """Write one mesh's files into ``folder`` (see the module docstring)."""
    from backend.io.binvox import write_binvox
    from backend.io.meshes import read_mesh, write_mesh
    from training.metrics import sample_surface

    from .procedural import NEAR_SIGMAS, PADDED_LO, PADDED_SIZE, VOXEL_FILES, touching

    mesh = read_mesh(path)
    vertices, loc, scale = normalise(mesh.vertices)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    frame = {"loc": loc.astype(np.float32), "scale": np.array(scale, dtype=np.float32)}
    surface, normals = sample_surface(vertices, faces, count, int(rng.integers(2**31)))
    if not np.isfinite(normals).all() or not np.abs(normals).sum(axis=1).all():
        raise ValueError("the mesh has no area (degenerate faces only)")

    folder.mkdir(parents=True, exist_ok=True)
    uniform = rng.uniform(PADDED_LO, PADDED_LO + PADDED_SIZE, size=(count, 3))
    np.savez(folder / "points.npz", **labelled(vertices, faces, uniform, frame))
    near, _ = sample_surface(vertices, faces, count, int(rng.integers(2**31)))
    sigma = np.where(np.arange(count) < count // 2, *NEAR_SIGMAS)[:, None]
    np.savez(folder / "points_near.npz",
             **labelled(vertices, faces, near + sigma * rng.standard_normal((count, 3)), frame))
    np.savez(folder / "pointcloud.npz", points=surface.astype(np.float16),
             normals=normals.astype(np.float16), **frame)
    centres = centres_inside(vertices, faces)
    for rule, grid in (("touching", touching(centres, surface)), ("centres", centres)):
        write_binvox(folder / VOXEL_FILES[rule], grid, (-0.5,) * 3, 1.0)
    write_mesh(folder / "mesh.ply", vertices, faces)


def run(args: argparse.Namespace) -> None:
    """The ``meshes`` subcommand: import every mesh, write splits and metadata, list the
    skipped files."""
    from tqdm import tqdm

    from .procedural import write_metadata, write_splits

    if args.points < 1:
        raise UserError(f"--points must be >= 1 (got {args.points})")
    if args.seed < 0:
        raise UserError(f"--seed must be >= 0 (got {args.seed})")
    found = find_meshes(args.source)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {args.out} ({exc.strerror}); choose a writable "
                        f"folder") from None
    tasks = [(category, shape, path) for category, paths in found.items()
             for shape, path in zip(shape_ids(paths), paths)]
    start = time.perf_counter()
    done: dict[str, list[str]] = {category: [] for category in found}
    skipped: list[str] = []
    for index, (category, shape, path) in enumerate(tqdm(tasks, unit="mesh")):
        folder = args.out / category / shape
        try:
            import_mesh(path, folder, args.points, np.random.default_rng([args.seed, index]))
            done[category].append(shape)
        # A corrupt file can fail anywhere in trimesh's parsers or in the geometry after
        # them; whatever the error, that one mesh is skipped and the rest go on.
        except Exception as exc:  # noqa: BLE001
            shutil.rmtree(folder, ignore_errors=True)
            reason = " ".join(str(exc).split())[:300] or type(exc).__name__
            skipped.append(reason if reason.startswith(str(path)) else f"{path}: {reason}")

    categories = [category for category, shapes in done.items() if shapes]
    for category in categories:
        write_splits(args.out / category, done[category],
                     np.random.default_rng([args.seed, len(tasks)]))
    write_metadata(args.out, categories)
    (args.out / "skipped.txt").write_text("".join(line + "\n" for line in skipped))
    imported = sum(len(shapes) for shapes in done.values())
    print(f"imported {imported} of {len(tasks)} meshes into {args.out} in "
          f"{time.perf_counter() - start:.1f} s ({len(categories)} categories)")
    if skipped:
        print(f"skipped {len(skipped)} (also in {args.out / 'skipped.txt'}):")
        for line in skipped:
            print(f"  {line}")
    if not imported:
        raise UserError(f"no mesh in {args.source} could be imported; see the reasons above")

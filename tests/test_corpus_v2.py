"""Corpus v2: every new family is one closed solid with exact labels, shapes are rotated by
exactly their recorded rotation, and the v1 corpus is unchanged since before v2."""

import functools
import json
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from backend.engine.inside import contains
from backend.io.binvox import read_binvox
from training.data import procedural
from training.data.__main__ import main
from training.data.families import FAMILIES
from training.data.sdf import random_rotation

SEED, POINTS = 5, 2000
SMALL = ["--points", str(POINTS), "--views", "1", "--image-size", "64"]
# Summary (shapes, dtypes, means and deviations of every array; text files verbatim) of the v1
# corpus that ``v1_command`` wrote with the code as it was before corpus v2 (commit 2d4421a,
# run from a `git worktree` of it). A summary, not a byte digest: numpy's SIMD paths and the
# installed zlib change the last bits and bytes from one CPU to the next, not the corpus.
V1_SUMMARY = Path(__file__).parent / "data" / "v1_corpus_summary.json"


def v1_command(out):
    return ["procedural", "--out", str(out), "--per-class", "1", "--seed", "7", *SMALL]


def array_summary(name: str, values) -> dict:
    """``name``'s shape, dtype, mean and standard deviation; packed bits are unpacked."""
    values = np.asarray(values)
    if values.dtype == np.uint8 and values.ndim == 1:
        values = np.unpackbits(values)
    as_float = values.astype(np.float64)
    return {f"{name} shape": str(values.shape), f"{name} dtype": str(values.dtype),
            f"{name} mean": float(as_float.mean()) if as_float.size else 0.0,
            f"{name} std": float(as_float.std()) if as_float.size else 0.0}


def file_summary(path: Path, name: str) -> dict:
    if path.suffix == ".npz":
        with np.load(path) as data:
            return {k: v for key in data.files for k, v in
                    array_summary(f"{name} {key}", data[key]).items()}
    if path.suffix == ".ply":
        mesh = trimesh.load(path, process=False)
        return {**array_summary(f"{name} vertices", mesh.vertices),
                **array_summary(f"{name} faces", mesh.faces)}
    if path.suffix == ".png":
        return array_summary(f"{name} pixels", np.asarray(Image.open(path)))
    if path.suffix == ".binvox":
        occupancy, translate, scale = read_binvox(path)
        return {**array_summary(f"{name} occupancy", occupancy),
                **array_summary(f"{name} placement", [*translate, scale])}
    return {f"{name} text": path.read_text()}


# Left out of the comparison: the centre-inside grids (written since v1) and the touching
# grids, which set every voxel the surface passes through since 2026-12-02 (they had set every
# voxel within half a voxel diagonal of the solid, a superset binvox does not write).
CHANGED_SINCE_V1 = tuple(procedural.VOXEL_FILES.values())


def tree_summary(root: Path, changed=CHANGED_SINCE_V1) -> dict:
    """One flat mapping of ``file_summary`` over every file under ``root`` but the files
    named in ``changed``."""
    return {key: value for path in sorted(root.rglob("*"))
            if path.is_file() and path.name not in changed
            for key, value in file_summary(path, path.relative_to(root).as_posix()).items()}


@functools.lru_cache(maxsize=None)
def v2_shape(family, rotate=True):
    return procedural.build_shape(family, SEED, 0, rotate=rotate)


@pytest.fixture(scope="module")
def v2_corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("v2")
    assert main(["procedural", "--out", str(out), "--per-class", "1", "--seed", str(SEED),
                 "--corpus", "v2", "--classes", ",".join(FAMILIES), *SMALL]) == 0
    return out


def unpacked(points_file):
    return np.unpackbits(points_file["occupancies"])[:len(points_file["points"])].astype(bool)


def test_v1_files_are_unchanged_since_before_v2(tmp_path):
    assert main(v1_command(tmp_path)) == 0
    # Exact shapes, dtypes and text; statistics to within float noise: one flipped label of
    # 2000 moves a mean by 5e-4, a changed generator moves all of them.
    stored = {key: value for key, value in json.loads(V1_SUMMARY.read_text()).items()
              if Path(key.split(" ")[0]).name not in CHANGED_SINCE_V1}
    assert tree_summary(tmp_path) == pytest.approx(stored, rel=1e-4, abs=1e-4)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_is_one_closed_normalised_solid(family):
    shape = v2_shape(family)
    mesh = trimesh.Trimesh(shape.vertices, shape.faces, process=False)
    assert mesh.is_watertight and mesh.is_winding_consistent and mesh.volume > 0
    assert mesh.body_count == 1
    lo, hi = mesh.bounds
    assert np.all(lo >= -0.51) and np.all(hi <= 0.51)
    assert abs((hi - lo).max() - 1) <= 0.01
    assert np.abs(shape.sdf(shape.vertices)).max() < 1e-4


def test_v2_files_have_exact_labels_and_closed_meshes(v2_corpus):
    for family in FAMILIES:
        folder = v2_corpus / family / procedural.shape_id(0)
        mesh = trimesh.load(folder / "mesh.ply", process=False)
        assert mesh.is_watertight and mesh.body_count == 1, family
        sdf = v2_shape(family).sdf
        for name in ("points.npz", "points_near.npz"):
            data = np.load(folder / name)
            points = data["points"].astype(np.float32)  # the stored float16 coordinates
            values = sdf(points)
            assert np.array_equal(unpacked(data), values < 0), (family, name)
            clear = np.abs(values) >= 0.005  # |sdf| bounds the distance: clear of the mesh
            inside = contains(mesh.vertices, mesh.faces, points[clear], closed=True)
            agreement = (inside == (values[clear] < 0)).mean()
            assert agreement >= 0.999, (family, name, agreement)


@pytest.mark.parametrize("family", ["bracket", "chair"])
def test_rotation_is_exactly_the_recorded_one(family):
    """The unrotated shape's surface, rotated by ``shape_rotation`` and renormalised, lies
    on the rotated shape's surface; and the rotated shape is not axis-aligned."""
    plain = procedural.build_shape(family, SEED, 0)
    rotated = v2_shape(family)
    moved = plain.vertices @ procedural.shape_rotation(SEED, family, 0).T
    lo, hi = moved.min(axis=0), moved.max(axis=0)
    moved = (moved - (lo + hi) / 2) / (hi - lo).max()
    distance = np.abs(rotated.sdf(moved))
    assert np.median(distance) < 1e-3 and distance.max() < 0.01

    mesh = trimesh.Trimesh(rotated.vertices, rotated.faces, process=False)
    axes = np.linalg.eigh(mesh.moment_inertia)[1]
    assert np.abs(axes).max(axis=0).min() < 0.99  # some principal axis is off every axis


def test_random_rotations_are_uniform_rotations():
    rng = np.random.default_rng(0)
    rotations = np.stack([random_rotation(rng) for _ in range(2000)]).astype(np.float64)
    assert np.allclose(rotations @ rotations.transpose(0, 2, 1), np.eye(3), atol=1e-5)
    assert np.allclose(np.linalg.det(rotations), 1, atol=1e-5)
    assert np.abs(rotations.mean(axis=0)).max() < 0.05  # E[R] = 0 for the uniform measure

"""The models that ship in backend/weights: their files and cards, and the defaults the CLI
picks when no model is named."""

import json
from pathlib import Path

import numpy as np
import pytest
import trimesh
from scipy.spatial import cKDTree

from backend.io import zoo
from backend.io.binvox import write_binvox

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "backend/samples/chair_scan.ply"
BUNDLED = sorted(zoo.BUNDLED_DIR.glob("*.safetensors"))
KINDS = ("pointcloud", "voxels", "image")


def cards():
    return {path.stem: json.loads(path.with_suffix(".json").read_text()) for path in BUNDLED}


def test_every_kind_has_exactly_one_bundled_default():
    """One unbounded default per kind; size-bounded ones only for point clouds, with
    distinct bounds (zoo.default_model_name)."""
    for kind in KINDS:
        defaults = [name for name, card in cards().items() if kind in card.get("default_for", ())]
        unbounded = [name for name in defaults if "default_max_points" not in cards()[name]]
        bounds = [cards()[name]["default_max_points"] for name in defaults
                  if name not in unbounded]
        assert len(unbounded) == 1, (kind, defaults)
        assert len(set(bounds)) == len(bounds) and (not bounds or kind == "pointcloud")
        assert all(cards()[name]["config"]["input_kind"] == kind for name in defaults)


@pytest.mark.parametrize("path", BUNDLED, ids=[p.stem for p in BUNDLED])
def test_bundled_files_are_small_and_carry_their_provenance(path):
    assert path.stat().st_size <= 10e6
    card = json.loads(path.with_suffix(".json").read_text())
    provenance = card["provenance"]
    assert provenance["command"].startswith("python -m training.train training/configs/")
    assert provenance["data"]["splits"]["train"] > 0 and provenance["hardware"]
    assert provenance["wall_seconds"] > 0 and 0 < card["metrics"]["best_val_iou"] <= 1
    if card["config"].get("input_kind"):
        test = card["metrics"]["test"]
        assert test and all(0 <= t["mean_of_classes"]["iou"] <= 1 for t in test)


def test_cli_picks_the_sparse_defaults_by_cloud_size(tmp_path, run_cli):
    """Without --model a cloud goes to the bundled default with the tightest
    default_max_points it fits (300 points to the sparsest), one point more to the next."""
    catalogue = zoo.catalogue()
    bounds = sorted(card["default_max_points"] for card in catalogue.values()
                    if "pointcloud" in card.get("default_for", ()) and
                    "default_max_points" in card)
    assert bounds and bounds[0] >= 300
    sparsest = zoo.default_model_name("pointcloud", points=300)
    assert catalogue[sparsest]["default_max_points"] == bounds[0]
    scan = trimesh.load(SAMPLE).vertices
    counts = [300] + [bound + 1 for bound in bounds]
    expected = [zoo.default_model_name("pointcloud", points=count) for count in counts]
    assert expected[-1] == zoo.default_model_name("pointcloud")
    assert len(set(expected)) == len(counts)  # each bound hands over to another model
    for count, model in zip(counts, expected):
        cloud = tmp_path / f"scan_{count}.npy"
        np.save(cloud, scan[np.random.default_rng(0).choice(len(scan), count, replace=False)])
        result = run_cli("reconstruct", cloud, "-o", tmp_path / f"{count}.ply", "--json")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["model"] == model


def test_cli_reconstructs_the_sample_with_the_default_model(tmp_path, run_cli):
    """The README's main job: no --model, the bundled point-cloud model, a mesh and a PNG."""
    result = run_cli("reconstruct", SAMPLE, "-o", tmp_path / "sample.ply", "--render",
                     tmp_path / "sample.png", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["model"] == zoo.default_model_name("pointcloud")
    mesh = trimesh.load(tmp_path / "sample.ply", process=False)
    assert mesh.is_watertight and (tmp_path / "sample.png").stat().st_size > 10_000
    # The surface wraps the scan: the scan's points lie near it and the boxes are
    # about as large as the scan says.
    scan = trimesh.load(SAMPLE).vertices
    assert np.allclose(mesh.bounds, [scan.min(axis=0), scan.max(axis=0)],
                       atol=0.1 * np.ptp(scan, axis=0).max())
    surface = trimesh.sample.sample_surface(mesh, 50_000, seed=0)[0]
    distance = cKDTree(surface).query(scan)[0]
    assert np.median(distance) < 0.02 * np.ptp(scan, axis=0).max()


def test_the_convonet_seals_a_void_in_the_solid_sample_and_the_cli_fills_it(tmp_path,
                                                                            run_cli):
    """The ConvONet (the point-cloud default before pointcloud_poco) hollows the big box of
    boxes_rods (README, "Enclosed voids"): by default the CLI fills the void (its shell and
    what floats in it go); --no-fill-cavities keeps it."""
    shells = {}
    for flags in ((), ("--no-fill-cavities",)):
        out = tmp_path / f"boxes{len(flags)}.ply"
        result = run_cli("reconstruct", ROOT / "backend/samples/boxes_rods_scan.ply", "-o",
                         out, "--model", "pointcloud_convonet_3plane", "--resolution0",
                         "16", *flags)
        assert result.returncode == 0, result.stderr
        mesh = trimesh.load(out, process=False)
        assert mesh.is_watertight
        shells[flags] = [part.volume for part in mesh.split(only_watertight=False)]
    filled, kept = shells[()], shells[("--no-fill-cavities",)]
    assert min(kept) < -0.01 * sum(v for v in kept if v > 0)  # a real void, not a speck
    assert min(filled) >= 0 and sum(filled) > sum(kept)


def test_cli_reconstructs_voxels_and_images_with_their_defaults(tmp_path, run_cli):
    centres = (np.arange(32) + 0.5) / 32 - 0.5
    grid = np.stack(np.meshgrid(centres, centres, centres, indexing="ij"), -1)
    write_binvox(tmp_path / "ball.binvox", np.linalg.norm(grid, axis=-1) < 0.35,
                 (-0.5,) * 3, 1.0)
    result = run_cli("reconstruct", tmp_path / "ball.binvox", "-o", tmp_path / "ball.ply",
                     "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["model"] == zoo.default_model_name("voxels")
    mesh = trimesh.load(tmp_path / "ball.ply", process=False)
    assert mesh.is_watertight
    # A voxel ball of radius 0.35 comes back as a ball of about that size (a short CPU
    # training leaves it about 15% small in volume).
    assert np.allclose(np.ptp(mesh.vertices, axis=0), 0.7, atol=0.07)
    assert mesh.volume == pytest.approx(4 / 3 * np.pi * 0.35 ** 3, rel=0.25)

    from backend.io import render

    sphere = trimesh.creation.icosphere(3, 0.4)
    render.render_mesh(sphere.vertices, sphere.faces, 224).save(tmp_path / "ball.png")
    result = run_cli("reconstruct", tmp_path / "ball.png", "-o", tmp_path / "image.ply",
                     "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["model"] == zoo.default_model_name("image")

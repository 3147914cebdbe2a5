"""Tiled reconstruction of scenes larger than one model cube (backend/tiling.py)."""

import json

import numpy as np
import pytest
import torch
import trimesh
from scipy.spatial import cKDTree

from backend.engine import pipeline, tiling
from backend.io.checkpoints import save_model
from backend.errors import UserError
from backend.engine.generation import Generator
from backend.engine.request import Settings
from backend.engine.request import ReconstructRequest, TilingOptions
from backend.io.inputs import PointCloudInput
from backend.models import build_model
from backend.models.analytic import AnalyticModel


class BallsModel(torch.nn.Module):
    """A local occupancy function with a known answer: the union of balls of radius
    ``radius`` (unit-cube units) around the input points. Each query depends only on the
    points within ``radius`` of it, so tiles with a margin wider than that must reproduce
    the untiled field exactly wherever its sign can change."""

    input_kind = "pointcloud"
    local_features = True
    z_dim = 0

    def __init__(self, radius=0.05):
        super().__init__()
        self.radius = radius

    def encode_inputs(self, points):
        return points[0]

    def prior_z(self, batch):
        return torch.empty(batch, 0)

    def shape_decoder(self, c, z=None, dtype=torch.float32):
        def decode(queries):
            return (self.radius - torch.cdist(queries, c).min(dim=1).values) / self.radius * 8
        return decode


def scene(seed=0):
    """Two hollow balls at x = -0.35 and 0.35 joined by a rod along x through the tile
    seam at x = 0: the scene's longest edge is 1 (so the untiled run's normalisation keeps
    its scale), (N, 3) float32."""
    rng = np.random.default_rng(seed)
    balls = rng.standard_normal((4000, 3))
    balls = 0.15 * balls / np.linalg.norm(balls, axis=1, keepdims=True)
    balls[:2000, 0] -= 0.35
    balls[2000:, 0] += 0.35
    rod = np.zeros((600, 3))
    rod[:, 0] = rng.uniform(-0.35, 0.35, 600)
    return np.concatenate([balls, rod]).astype(np.float32)


def settings(fill_cavities=True):
    return Settings(resolution0=16, upsampling_steps=2, threshold=0.5,
                    fill_cavities=fill_cavities)


def test_plan_covers_the_cloud_with_whole_tiles():
    grid = tiling.plan_tiles(scene(), crop_size=1.0, overlap=0.2, cells=64)
    # x: extent 1.0 + 2 * 0.05 margin over tiles of 0.6 -> 2; y, z: 0.3 + 0.1 -> 1.
    assert grid.counts == (2, 1, 1) and grid.tile == pytest.approx(0.6)
    assert grid.shape == (129, 65, 65) and grid.lattice_bytes == 4 * 129 * 65 * 65
    assert np.allclose(grid.center((0, 0, 0)), [-0.3, 0, 0], atol=1e-3)
    assert np.allclose(grid.center((1, 0, 0)), [0.3, 0, 0], atol=1e-3)


def sample_distance(a, b, count=20000, seed=0):
    """Mean distance of points sampled on mesh a to the surface samples of mesh b."""
    samples_a = trimesh.sample.sample_surface(a, count, seed=seed)[0]
    samples_b = trimesh.sample.sample_surface(b, count, seed=seed)[0]
    return cKDTree(samples_b).query(samples_a)[0].mean()


def test_tiles_meet_without_a_seam_and_match_the_untiled_mesh():
    points = scene()
    model = BallsModel()
    card = {"threshold": 0.5}
    raw = settings(fill_cavities=False)
    tiled = run_tiled(Generator(model, card, "cpu", raw), card, points,
                                     crop_size=1.0, overlap=0.2, max_points=len(points))
    assert tiled.grid.counts == (2, 1, 1) and tiled.tiles_run == 2
    assert tiled.most_tile_points < len(points)  # each crop holds only its side's points
    mesh = trimesh.Trimesh(tiled.vertices, tiled.faces, process=True)
    assert mesh.is_watertight and mesh.is_winding_consistent
    # The rod crosses the seam at x = 0: faces on both sides of it, one connected piece each
    # side of the hollow balls (outer and inner shells: 3 shells, inner cavities apart).
    near_seam = np.abs(mesh.triangles_center[:, 0]) < 0.02
    assert near_seam.sum() > 20
    assert len(mesh.split(only_watertight=False)) == 3
    # By default the balls' sealed cavities are dropped: one solid piece.
    filled = run_tiled(Generator(model, card, "cpu", settings()), card, points,
                                      crop_size=1.0, overlap=0.2, max_points=len(points))
    filled = trimesh.Trimesh(filled.vertices, filled.faces, process=True)
    assert filled.is_watertight and len(filled.split(only_watertight=False)) == 1
    assert filled.volume > mesh.volume

    prepared = pipeline.prepare(PointCloudInput(points), model, {})
    *_, finished = pipeline.reconstruct(ReconstructRequest(PointCloudInput(points),
                                                           settings=raw), model, card)
    untiled = trimesh.Trimesh(finished.frame.vertices, finished.frame.faces, process=True)
    assert prepared.scale == pytest.approx(1.0, abs=1e-3)
    # Untiled lattice spacing 1.1 / 64 = 0.017: the meshes agree to a fraction of it.
    assert sample_distance(mesh, untiled) < 0.006 and sample_distance(untiled, mesh) < 0.006
    assert mesh.volume == pytest.approx(untiled.volume, rel=0.05)


def test_empty_tiles_are_skipped():
    points = scene()
    far = points[points[:, 0] > 0.3] + np.array([3.0, 0, 0], np.float32)
    cloud = np.concatenate([points, far])
    card = {"threshold": 0.5}
    tiled = run_tiled(Generator(BallsModel(), card, "cpu", settings()), card,
                                     cloud, crop_size=1.0)
    assert tiled.grid.counts[0] == 7 and tiled.tiles_run < 7
    assert trimesh.Trimesh(tiled.vertices, tiled.faces).is_watertight


def test_a_global_model_cannot_be_tiled():
    request = ReconstructRequest(PointCloudInput(scene()), tiling=TilingOptions(1.0))
    with pytest.raises(UserError, match="local features"):
        request.validate(AnalyticModel("sphere"))


@pytest.mark.parametrize("options, message", [
    (TilingOptions(0.0), "tile_size must be a finite number > 0"),
    (TilingOptions(float("inf")), "tile_size must be a finite number"),
    (TilingOptions(1.0, 0.5), "tile_overlap"),
    (TilingOptions(1.0, tile_points=0), "tile_points"),
    (TilingOptions(1e-4), "over the limit of 4,096")])
def test_bad_tiling_options(options, message):
    request = ReconstructRequest(PointCloudInput(scene()), tiling=options)
    with pytest.raises(UserError, match=message):
        request.validate(BallsModel())


def run_tiled(*args, **kwargs) -> tiling.TiledResult:
    return tiling.tiled_result(tiling.reconstruct_tiled(*args, **kwargs))


def small_convonet():
    """An untrained ConvONet (3 planes of 16^2) and a threshold at the 80th percentile of its
    field around the scene, so that its surface crosses the tile seams."""
    torch.manual_seed(0)
    config = {"arch": "convonet", "input_kind": "pointcloud",
              "encoder": {"name": "pointnet_local_pool", "c_dim": 8, "hidden_dim": 8,
                          "plane_type": ["xz", "xy", "yz"], "plane_resolution": 16,
                          "unet": {"depth": 2, "start_filts": 8}},
              "decoder": {"name": "simple_local", "c_dim": 8, "hidden_size": 8},
              "padding": 0.1}
    model = build_model(config)
    generator = Generator(model, {}, "cpu")
    code = generator.encode(torch.from_numpy(scene()[None]))
    logits = generator.logits(code, np.random.default_rng(0).uniform(-0.5, 0.5, (4096, 3))
                              .astype(np.float32))
    return model, float(torch.sigmoid(torch.tensor(np.quantile(logits, 0.8))))


def test_convonet_tiles_close_where_they_meet():
    """A real (untrained) ConvONet: whatever its field, the stitched mesh is closed, also
    where the field is inside at the lattice's edge or next to an empty crop."""
    model, threshold = small_convonet()
    generator = Generator(model, {"threshold": threshold}, "cpu", settings())
    tiled = run_tiled(generator, {}, scene() * 2, crop_size=1.0, overlap=0.1)
    assert tiled.tiles_run > 2
    mesh = trimesh.Trimesh(tiled.vertices, tiled.faces)
    assert len(mesh.faces) and mesh.is_watertight


def test_cli_reconstructs_tile_by_tile(tmp_path, run_cli):
    model, threshold = small_convonet()
    save_model(tmp_path / "convonet.safetensors", model, {"threshold": threshold})
    np.save(tmp_path / "scene.npy", scene() * 2)
    result = run_cli("reconstruct", tmp_path / "scene.npy", "-o", tmp_path / "scene.ply",
                     "--model", tmp_path / "convonet.safetensors", "--tile-size", "1",
                     "--resolution0", "16", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["tiles"] == [4, 2, 2] and summary["lattice"] == "257x129x129"
    assert 2 < summary["tiles_run"] <= 16 and summary["most_tile_points"] <= 3000
    mesh = trimesh.load(tmp_path / "scene.ply", process=False)
    assert len(mesh.faces) == summary["faces"] and mesh.is_watertight


@pytest.mark.parametrize("options, message", [
    (["--model", "analytic:sphere"], "local features"),
    (["--model", "analytic:sphere", "--normals"], "normals and refine_steps"),
])
def test_cli_tiling_errors(tmp_path, run_cli, options, message):
    np.save(tmp_path / "scene.npy", scene())
    result = run_cli("reconstruct", tmp_path / "scene.npy", "-o", tmp_path / "out.ply",
                     "--tile-size", "1", *options)
    assert result.returncode == 2 and message in result.stderr

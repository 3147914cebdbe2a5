"""Rotated copies (``Settings.rotations``): the field is the mean over the cloud (or voxel
grid) and turned copies of it, each queried in its own frame; both engines agree; the fit
takes each copy in turn; point clouds and grids only, within the limit, on the CLI and the
server."""

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from backend.engine import fit, pipeline
from backend.engine.generation import Generator
from backend.engine.request import LIMITS, Limits, ReconstructRequest, Settings, TilingOptions
from backend.engine.transforms import (GRID_ROTATIONS, cube_rotations, input_rotations,
                                       turn_grid)
from backend.errors import LimitError, UserError
from backend.io import zoo
from backend.io.inputs import ImageInput, PointCloudInput, VoxelInput
from backend.io.inputs import read_ply_vertices_numpy
from backend.service.client import ServerError, launch
from tests.conftest import ROOT

MODEL = "pointcloud_poco"
VOXEL_MODEL = "voxels_convonet_grid"
MISE = {"resolution0": 16, "upsampling_steps": 1}
CHAIR = ROOT / "backend" / "samples" / "chair_scan.ply"


@pytest.fixture(scope="module")
def poco():
    return zoo.load(MODEL, torch.device("cpu"))


@pytest.fixture(scope="module")
def chair():
    """3000 of the sample scan's points (3000, 3) float32 in the unit cube."""
    points = read_ply_vertices_numpy(CHAIR)
    points = points[np.random.default_rng(0).permutation(len(points))[:3000]]
    lo, hi = points.min(0), points.max(0)
    return ((points - (lo + hi) / 2) / (hi - lo).max()).astype(np.float32)


def run(model, card, points, **settings):
    """All events of one fp32 reconstruction of ``points`` at 16 -> 32."""
    request = ReconstructRequest(PointCloudInput(points), settings=Settings(
        **MISE, precision="fp32", mesh_every_level=False, **settings))
    request.validate(model)
    return list(pipeline.reconstruct(request, model, card, "cpu"))


def test_input_rotations_start_with_the_identity_and_are_fixed():
    turns = input_rotations(5)
    assert turns.shape == (5, 3, 3) and turns.dtype == np.float32
    np.testing.assert_array_equal(turns[0], np.eye(3))
    np.testing.assert_allclose(turns @ turns.transpose(0, 2, 1), np.broadcast_to(np.eye(3),
                               (5, 3, 3)), atol=1e-6)
    np.testing.assert_allclose(np.linalg.det(turns), 1, atol=1e-5)
    assert np.abs(turns[1:] - np.eye(3)).max() > 0.1  # turned, not the identity again
    np.testing.assert_array_equal(input_rotations(3), turns[:3])  # a prefix, every call


def test_each_copy_is_queried_in_its_own_frame(poco, chair):
    """The mean field's surface still runs through the scan: a copy queried in the wrong
    frame (x R instead of x R^T) would average the chair with turned chairs."""
    model, card = poco
    plain = run(model, card, chair)[-1]
    turned = run(model, card, chair, rotations=4)[-1]
    assert turned.summary["rotations"] == 4 and "rotations" not in plain.summary
    for finished in (plain, turned):
        distance = cKDTree(finished.frame.vertices).query(chair)[0]
        assert np.median(distance) < 0.02, np.median(distance)
    # ...and differs from the single copy's: the turned copies took part.
    assert len(turned.frame.vertices) != len(plain.frame.vertices) or not np.allclose(
        turned.frame.vertices, plain.frame.vertices)


def test_the_mean_field_is_the_mean_of_the_turned_copies(poco, chair):
    model, card = poco
    generator = Generator(model, card, "cpu", Settings(precision="fp32", rotations=3))
    code = generator.encode(chair[None])
    queries = np.random.default_rng(0).uniform(-0.5, 0.5, (500, 3)).astype(np.float32)
    single = Generator(model, card, "cpu", Settings(precision="fp32", rotations=1))
    expected = np.mean([single.logits(single.encode(chair[None] @ turn.T), queries @ turn.T)
                        for turn in input_rotations(3)], axis=0)
    np.testing.assert_allclose(generator.logits(code, queries), expected, atol=1e-4)


def test_the_bundled_engine_averages_the_same_copies(poco, chair):
    model, card = poco
    numpy_model, numpy_card = zoo.load(MODEL, engine="bundled")
    settings = Settings(precision="fp32", rotations=3)
    queries = np.random.default_rng(1).uniform(-0.5, 0.5, (500, 3)).astype(np.float32)
    torch_side = Generator(model, card, "cpu", settings)
    numpy_side = Generator(numpy_model, numpy_card, "cpu", settings)
    np.testing.assert_allclose(numpy_side.logits(numpy_side.encode(chair[None]), queries),
                               torch_side.logits(torch_side.encode(chair[None]), queries),
                               atol=1e-3)


def test_the_fit_takes_each_copy_in_turn(poco, chair):
    model, card = poco
    events = run(model, card, chair, rotations=2, fit_steps=3)
    progress = [e for e in events if isinstance(e, fit.FitProgress)]
    assert [e.step for e in progress] == list(range(1, 7))
    assert all(e.steps == 6 for e in progress)
    summary = events[-1].summary
    assert summary["fit"]["steps"] == 6 and summary["rotations"] == 2


def test_a_cards_rotations_apply_unless_the_request_names_its_own(poco, chair):
    model, card = poco
    own = dict(card, rotations=2)
    assert Generator(model, card, "cpu", Settings()).rotations == 1  # the card names none
    assert Generator(model, own, "cpu", Settings()).rotations == 2
    assert Generator(model, own, "cpu", Settings(rotations=1)).rotations == 1
    assert run(model, own, chair)[-1].summary["rotations"] == 2
    assert "rotations" not in run(model, own, chair, rotations=1)[-1].summary
    with pytest.raises(UserError, match="the model card's rotations must lie in"):
        Generator(model, dict(card, rotations=0), "cpu", Settings())


def test_tiles_are_encoded_as_they_are_whatever_the_card(monkeypatch):
    from tests.test_tiling import BallsModel, scene

    encoded = []
    model = BallsModel()
    monkeypatch.setattr(model, "encode_inputs", lambda points: encoded.append(1) or points[0])
    request = ReconstructRequest(PointCloudInput(scene()), settings=Settings(
        resolution0=8, upsampling_steps=0, mesh_every_level=False),
        tiling=TilingOptions(1.0, tile_points=10**6))
    request.validate(model)
    list(pipeline.reconstruct(request, model, {"threshold": 0.5, "rotations": 3}, "cpu"))
    assert len(encoded) == 2  # one per tile, no turned copies


def test_rotations_are_checked_before_any_work(poco):
    model, _ = poco
    points = PointCloudInput(np.random.default_rng(0).uniform(-0.5, 0.5, (100, 3)))
    with pytest.raises(LimitError, match="max_rotations"):
        ReconstructRequest(points, settings=Settings(rotations=LIMITS.max_rotations + 1)
                           ).validate(model)
    with pytest.raises(LimitError, match="rotations 3 is over the limit of 2"):
        ReconstructRequest(points, settings=Settings(rotations=3)).validate(
            model, Limits(max_rotations=2))
    with pytest.raises(UserError, match="rotations must be at least 1"):
        ReconstructRequest(points, settings=Settings(rotations=0)).validate(model)
    with pytest.raises(UserError, match="rotations must be a whole number"):
        ReconstructRequest(points, settings=Settings(rotations=2.5)).validate(model)
    with pytest.raises(UserError, match="rotations is not available with tiling"):
        ReconstructRequest(points, settings=Settings(rotations=2),
                           tiling=TilingOptions(1.0)).validate(model)
    voxels = VoxelInput(np.ones((32, 32, 32), bool), np.zeros(3), 1.0)
    voxel_model, _ = zoo.load(VOXEL_MODEL, torch.device("cpu"))
    ReconstructRequest(voxels, settings=Settings(rotations=2)).validate(voxel_model)
    with pytest.raises(UserError, match="a voxel grid has 24 exact rotations"):
        ReconstructRequest(voxels, settings=Settings(rotations=GRID_ROTATIONS + 1)).validate(
            voxel_model, Limits(max_rotations=GRID_ROTATIONS + 1))
    image_model, _ = zoo.load("image_onet_small", torch.device("cpu"))
    image = ImageInput(np.zeros((8, 8, 4), np.uint8))
    with pytest.raises(UserError, match="this input is an image; leave rotations at 1"):
        ReconstructRequest(image, settings=Settings(rotations=2)).validate(image_model)


def test_cube_rotations_are_the_cubes_24_turns():
    turns = cube_rotations()
    assert turns.shape == (GRID_ROTATIONS, 3, 3) and turns.dtype == np.float32
    np.testing.assert_array_equal(turns[0], np.eye(3))
    assert len({turn.tobytes() for turn in turns}) == GRID_ROTATIONS
    assert set(np.unique(turns)) == {-1.0, 0.0, 1.0}
    np.testing.assert_allclose(np.linalg.det(turns), 1)
    np.testing.assert_array_equal(input_rotations(4, grid=True), turns[:4])


def test_a_turned_grid_holds_each_voxel_at_the_turned_place():
    """The voxel at unit-cube centre x lands at R x, as a turned cloud's point x R^T."""
    n = 6
    rng = np.random.default_rng(0)
    grid = rng.random((2, n, n, n))  # a leading channel axis is kept
    centres = (np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), -1) + 0.5) / n - 0.5
    for turn in cube_rotations():
        turned = turn_grid(grid, turn)
        landed = np.rint((centres @ turn.T + 0.5) * n - 0.5).astype(int)
        np.testing.assert_array_equal(turned[:, landed[..., 0], landed[..., 1],
                                             landed[..., 2]], grid)


@pytest.fixture(scope="module")
def voxel_model():
    return zoo.load(VOXEL_MODEL, torch.device("cpu"))


def test_a_grids_copies_are_turned_grids_queried_in_their_own_frames(voxel_model):
    """The mean field of a grid's copies is the mean of each turned grid's field at the
    turned queries, and the mesh of an asymmetric solid (an L block) stays in place."""
    model, card = voxel_model
    grid = np.zeros((32, 32, 32), bool)
    grid[6:26, 6:14, 6:26] = grid[6:14, 6:26, 6:26] = True  # an L, not symmetric by turns
    voxels = VoxelInput(grid, np.full(3, -0.5), 1.0, "centres")
    inputs = pipeline.prepare_voxels(grid, np.full(3, -0.5), 1.0, "centres", True).inputs
    settings = Settings(precision="fp32", rotations=3)
    queries = np.random.default_rng(2).uniform(-0.5, 0.5, (500, 3)).astype(np.float32)
    generator = Generator(model, card, "cpu", settings)
    single = Generator(model, card, "cpu", Settings(precision="fp32", rotations=1))
    expected = np.mean([single.logits(single.encode(turn_grid(inputs, turn)), queries @ turn.T)
                        for turn in input_rotations(3, grid=True)], axis=0)
    np.testing.assert_allclose(generator.logits(generator.encode(inputs), queries), expected,
                               atol=1e-4)
    request = ReconstructRequest(voxels, settings=Settings(
        **MISE, precision="fp32", mesh_every_level=False, rotations=4))
    request.validate(model)
    finished = list(pipeline.reconstruct(request, model, card, "cpu"))[-1]
    assert finished.summary["rotations"] == 4
    # Turned the wrong way, a copy's L would fill the notch (voxels 14 to 26 in x and y).
    vertices = finished.frame.vertices
    margin = 2 / 32
    lo, hi = np.array([14, 14, 6]) / 32 - 0.5 + margin, np.array([26, 26, 26]) / 32 - 0.5 - margin
    assert not np.all((vertices > lo) & (vertices < hi), axis=1).any(), "surface in the notch"
    solid = (np.argwhere(grid) + 0.5) / 32 - 0.5
    assert np.median(cKDTree(solid).query(vertices)[0]) < 0.05


def test_grid_codes_with_copies_blend_copy_by_copy(voxel_model):
    """Both ends' copies share the rotations, so the blend of their codes is exact at both
    ends; ends with different counts are refused."""
    model, card = voxel_model
    grids = np.zeros((2, 32, 32, 32), bool)
    grids[0, 6:26, 6:14, 6:26] = grids[0, 6:14, 6:26, 6:26] = True
    grids[1, 8:24, 8:24, 4:28] = True
    ends = [pipeline.prepare_voxels(grid, np.full(3, -0.5), 1.0, "centres", True).inputs
            for grid in grids]
    generator = Generator(model, card, "cpu", Settings(precision="fp32", rotations=3))
    a, b = (generator.encode(end) for end in ends)
    queries = np.random.default_rng(4).uniform(-0.5, 0.5, (500, 3)).astype(np.float32)
    for t, end in ((0.0, a), (1.0, b)):
        np.testing.assert_allclose(generator.logits(a.blend(b, t), queries),
                                   generator.logits(end, queries), atol=1e-5)
    middle = generator.logits(a.blend(b, 0.5), queries)
    assert np.abs(middle - generator.logits(a, queries)).max() > 0.1
    single = Generator(model, card, "cpu", Settings(precision="fp32", rotations=1))
    with pytest.raises(UserError, match="different rotations .3 and 1."):
        a.blend(single.encode(ends[1]), 0.5)


def test_the_bundled_engine_turns_grids_alike(voxel_model):
    model, card = voxel_model
    numpy_model, numpy_card = zoo.load(VOXEL_MODEL, engine="bundled")
    grid = np.zeros((32, 32, 32), bool)
    grid[4:20, 8:28, 10:22] = True
    inputs = pipeline.prepare_voxels(grid, np.full(3, -0.5), 1.0, "touching", True).inputs
    settings = Settings(precision="fp32", rotations=4)
    queries = np.random.default_rng(3).uniform(-0.5, 0.5, (500, 3)).astype(np.float32)
    torch_side = Generator(model, card, "cpu", settings)
    numpy_side = Generator(numpy_model, numpy_card, "cpu", settings)
    np.testing.assert_allclose(numpy_side.logits(numpy_side.encode(inputs), queries),
                               torch_side.logits(torch_side.encode(inputs), queries),
                               atol=1e-3)


def test_cli_rotations_reach_the_summary_and_keep_the_cap(run_cli, tmp_path):
    import json

    base = ["reconstruct", CHAIR, "-o", tmp_path / "out.ply", "--resolution0", "16",
            "--upsampling-steps", "1", "--json"]
    result = run_cli(*base, "--rotations", "2")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["rotations"] == 2
    result = run_cli(*base[:2], "-o", tmp_path / "out2.ply", "--rotations",
                     str(LIMITS.max_rotations + 1))
    assert result.returncode == 2
    assert "max_rotations" in result.stderr and not (tmp_path / "out2.ply").exists()


@pytest.fixture(scope="module")
def server():
    local = launch(cwd=ROOT, extra_args=["--max-rotations", "3"])
    yield local
    local.stop()


def test_server_takes_rotations_and_keeps_its_cap(server, chair):
    client = server.client
    assert client.health()["limits"]["max_rotations"] == 3
    frames = list(client.reconstruct(points=chair, model=MODEL, mise=MISE, rotations=2))
    assert frames[-1][0]["type"] == "final" and frames[-1][0]["rotations"] == 2
    with pytest.raises(ServerError) as error:
        list(client.reconstruct(points=chair, model=MODEL, mise=MISE, rotations=4))
    assert error.value.status == 413 and "max_rotations" in error.value.message
    with pytest.raises(ServerError) as error:
        list(client.reconstruct(points=chair, model=MODEL, rotations="2"))
    assert error.value.status == 400 and "rotations" in error.value.message


def test_generalize_adds_the_turned_variants(tmp_path, capsys):
    import csv

    from training import generalize

    status = generalize.main([
        "--model", MODEL, "--rotations", "2", "--fit-steps", "2", "--out", str(tmp_path),
        "--points", "300", "--families", "superquadric", "--no-real", "--poisson-depths",
        "--resolution0", "16", "--upsampling-steps", "0", "--eval-points", "3000"])
    assert status == 0
    with open(tmp_path / "shapes.csv") as f:
        methods = {row["method"] for row in csv.DictReader(f)}
    turned = f"{MODEL} rotations 2"
    assert methods == {MODEL, turned, generalize.fit_name(MODEL, 2),
                       generalize.fit_name(turned, 2)}
    assert generalize.main(["--model", MODEL, "--rotations", "0", "--out",
                            str(tmp_path)]) == 2
    assert "--rotations must be >= 1" in capsys.readouterr().err

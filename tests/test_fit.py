"""Fit to the scan (backend/engine/fit.py): the fitted surface comes closer to the input
points, cancels between steps, keeps to the step limit, and streams its progress."""

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from backend.engine import fit, pipeline
from backend.engine.generation import Generator
from backend.engine.request import LIMITS, Limits, ReconstructRequest, Settings, TilingOptions
from backend.errors import Cancelled, LimitError, UserError
from backend.io import zoo
from backend.io.inputs import PointCloudInput, VoxelInput
from backend.service.client import ServerError, launch
from tests.conftest import ROOT

MODEL = "pointcloud_convonet_3plane"
MISE = {"resolution0": 32, "upsampling_steps": 1}


def torus_cloud(n=3000, seed=0, noise=0.003):
    """Noisy points (n, 3) float32 on a torus (radii 0.3, 0.12), a shape outside the
    bundled model's training classes."""
    rng = np.random.default_rng(seed)
    u, v = rng.uniform(0, 2 * np.pi, (2, n))
    ring = 0.3 + 0.12 * np.cos(v)
    points = np.stack([ring * np.cos(u), 0.12 * np.sin(v), ring * np.sin(u)], axis=1)
    return (points + rng.normal(0, noise, points.shape)).astype(np.float32)


@pytest.fixture(scope="module")
def bundled():
    return zoo.load(MODEL, torch.device("cpu"))


def run(model, card, points, fit_steps, should_stop=None, seed=0):
    """All events of one reconstruction of ``points`` at 32 -> 64 in fp32."""
    settings = Settings(**MISE, precision="fp32", fit_steps=fit_steps, mesh_every_level=False)
    request = ReconstructRequest(PointCloudInput(points), settings=settings, seed=seed)
    request.validate(model)
    return list(pipeline.reconstruct(request, model, card, "cpu", should_stop))


def point_to_surface(points, vertices, faces, count=200_000):
    """Mean distance from each point (N, 3) to a dense sample of the mesh's surface."""
    import trimesh

    surface = trimesh.Trimesh(vertices, faces, process=False).sample(count, seed=0)
    return float(cKDTree(surface).query(points)[0].mean())


def test_fit_brings_the_surface_to_the_points(bundled):
    model, card = bundled
    points = torus_cloud()
    before = run(model, card, points, 0)[-1]
    events = run(model, card, points, 20)
    after = events[-1]
    progress = [e for e in events if isinstance(e, fit.FitProgress)]
    assert [e.step for e in progress] == list(range(1, 21))
    assert after.summary["fit"]["applied"] and after.summary["fit"]["steps"] == 20
    assert after.summary["fit"]["final_loss"] < after.summary["fit"]["initial_loss"]
    gap_before = point_to_surface(points, before.frame.vertices, before.frame.faces)
    gap_after = point_to_surface(points, after.frame.vertices, after.frame.faces)
    assert gap_after < 0.8 * gap_before, (gap_before, gap_after)
    assert after.summary["seconds"] >= after.summary["fit"]["seconds"] > 0


def test_fit_is_deterministic_for_a_seed(bundled):
    model, card = bundled
    points = torus_cloud(1500, seed=1)
    first, second = (run(model, card, points, 5, seed=3)[-1] for _ in range(2))
    np.testing.assert_array_equal(first.frame.faces, second.frame.faces)
    np.testing.assert_array_equal(first.frame.vertices, second.frame.vertices)


def test_fit_fits_point_latents_too():
    """The per-point features of the point-latent model are what it fits; its neighbour
    lists are found once."""
    model, card = zoo.load("pointcloud_poco", torch.device("cpu"))
    generator = Generator(model, card, "cpu", Settings(precision="fp32"))
    points = torus_cloud(1000, seed=2)
    prepared = pipeline.prepare(PointCloudInput(points), model, card)
    code = generator.encode(prepared.inputs)
    steps = fit.fit(model, code, prepared.points, generator.threshold, 5)
    with pytest.raises(StopIteration) as done:
        while True:
            next(steps)
    result = done.value.value
    assert result.applied and result.final_loss < result.initial_loss
    assert not torch.equal(result.code.c.features, code.c.features)
    assert torch.equal(result.code.c.points, code.c.points)


def test_a_dense_cloud_is_fitted_to_every_point_not_the_encoders_subsample(monkeypatch):
    """The encoder gets the card's input_points; the fit and the floater test get the whole
    cloud in the same unit cube, or SUPPORT_POINTS of it."""
    cloud = torus_cloud(5000, seed=5)
    prepared = pipeline.prepare_points(cloud, {"input_points": 1000})
    assert prepared.inputs.shape == (1, 1000, 3) and prepared.points.shape == (5000, 3)
    np.testing.assert_allclose(prepared.to_world(prepared.points), cloud, atol=1e-6)
    encoded = {tuple(p) for p in prepared.inputs[0]}
    assert encoded <= {tuple(p) for p in prepared.points}
    monkeypatch.setattr(pipeline, "SUPPORT_POINTS", 2000)
    capped = pipeline.prepare_points(cloud, {"input_points": 1000})
    assert capped.points.shape == (2000, 3) and len(np.unique(capped.points, axis=0)) == 2000
    np.testing.assert_array_equal(capped.inputs, prepared.inputs)
    small = pipeline.prepare_points(cloud[:800], {"input_points": 1000})
    np.testing.assert_array_equal(small.points, small.inputs[0])


def test_cancel_mid_fit_stops_at_the_next_step_with_no_mesh(bundled):
    model, card = bundled
    seen = []

    def should_stop():
        return len(seen) >= 3

    events = pipeline.reconstruct(
        ReconstructRequest(PointCloudInput(torus_cloud(1000)),
                           settings=Settings(**MISE, fit_steps=200)), model, card, "cpu",
        should_stop)
    with pytest.raises(Cancelled):
        for event in events:
            seen.append(event)
    assert len(seen) == 3 and all(isinstance(e, fit.FitProgress) for e in seen)


def test_a_fit_that_raises_the_loss_gives_the_unfitted_mesh(bundled, monkeypatch):
    model, card = bundled
    points = torus_cloud(1000, seed=4)
    unfitted = run(model, card, points, 0)[-1]
    monkeypatch.setattr(fit, "LEARNING_RATE", 1e4)  # steps that overshoot: the loss rises
    fitted = run(model, card, points, 5)[-1]
    assert not fitted.summary["fit"]["applied"]
    assert any("the mesh is the unfitted one" in note for note in fitted.summary["notes"])
    np.testing.assert_array_equal(fitted.frame.faces, unfitted.frame.faces)
    np.testing.assert_array_equal(fitted.frame.vertices, unfitted.frame.vertices)


def test_a_cards_fit_learning_rate_sets_the_step(bundled):
    """The card's rate reaches the fit: a tiny one barely moves the code, an overshooting
    one makes the loss rise (the unfitted mesh comes back)."""
    model, card = bundled
    points = torus_cloud(1000, seed=4)
    default = run(model, card, points, 5)[-1].summary["fit"]
    tiny = run(model, {**card, "fit_learning_rate": 1e-6}, points, 5)[-1].summary["fit"]
    huge = run(model, {**card, "fit_learning_rate": 1e4}, points, 5)[-1].summary["fit"]
    assert default["applied"] and not huge["applied"]
    assert default["final_loss"] < tiny["final_loss"] <= tiny["initial_loss"]
    assert tiny["initial_loss"] - tiny["final_loss"] < 0.01 * (
        default["initial_loss"] - default["final_loss"])


def test_a_fit_that_turns_nan_stops_and_gives_the_unfitted_mesh(bundled, monkeypatch):
    model, card = bundled
    points = torus_cloud(1000, seed=4)
    monkeypatch.setitem(fit.WEIGHTS, "surface", float("nan"))
    events = run(model, card, points, 5)
    finished = events[-1]
    assert not any(isinstance(e, fit.FitProgress) for e in events)
    assert finished.summary["fit"]["steps"] == 0 and not finished.summary["fit"]["applied"]
    assert any("diverged (NaN)" in note for note in finished.summary["notes"])
    monkeypatch.undo()
    unfitted = run(model, card, points, 0)[-1]
    np.testing.assert_array_equal(finished.frame.vertices, unfitted.frame.vertices)


def test_fit_steps_are_checked_before_any_work(bundled):
    model, _ = bundled
    points = PointCloudInput(torus_cloud(100))
    over = ReconstructRequest(points, settings=Settings(fit_steps=LIMITS.max_fit_steps + 1))
    with pytest.raises(LimitError, match="max_fit_steps"):
        over.validate(model)
    with pytest.raises(LimitError, match="fit_steps 3 is over the limit of 2"):
        ReconstructRequest(points, settings=Settings(fit_steps=3)).validate(
            model, Limits(max_fit_steps=2))
    with pytest.raises(UserError, match="fit_steps must be >= 0"):
        ReconstructRequest(points, settings=Settings(fit_steps=-1)).validate(model)
    with pytest.raises(UserError, match="not available with tiling"):
        ReconstructRequest(points, settings=Settings(fit_steps=3),
                           tiling=TilingOptions(1.0)).validate(model)
    voxels = VoxelInput(np.ones((32, 32, 32), bool), np.zeros(3), 1.0)
    voxel_model, _ = zoo.load("voxels_convonet_3plane", torch.device("cpu"))
    with pytest.raises(UserError, match="send a point cloud"):
        ReconstructRequest(voxels, settings=Settings(fit_steps=3)).validate(voxel_model)


def test_cli_fit_steps_prints_progress_and_keeps_the_cap(run_cli, tmp_path):
    np.save(tmp_path / "torus.npy", torus_cloud(1000))
    base = ["reconstruct", tmp_path / "torus.npy", "-o", tmp_path / "out.ply", "--model",
            MODEL, "--resolution0", "16", "--upsampling-steps", "1"]
    result = run_cli(*base, "--fit-steps", "3")
    assert result.returncode == 0, result.stderr
    assert [line.split(":")[0] for line in result.stderr.splitlines()
            if line.startswith("fit ")] == ["fit 1/3", "fit 2/3", "fit 3/3"]
    result = run_cli(*base, "--fit-steps", str(LIMITS.max_fit_steps + 1))
    assert result.returncode == 2
    assert "max_fit_steps" in result.stderr and not (tmp_path / "out2.ply").exists()


@pytest.fixture(scope="module")
def server():
    local = launch(cwd=ROOT, extra_args=["--max-fit-steps", "8"])
    yield local
    local.stop()


def test_server_streams_fit_frames_and_keeps_its_cap(server):
    client = server.client
    assert client.health()["limits"]["max_fit_steps"] == 8
    frames = list(client.reconstruct(points=torus_cloud(1000), model=MODEL,
                                     mise={"resolution0": 16, "upsampling_steps": 1},
                                     fit_steps=4))
    kinds = [header["type"] for header, _ in frames]
    fits = [header for header, _ in frames if header["type"] == "fit"]
    assert [h["step"] for h in fits] == [1, 2, 3, 4] and all(h["steps"] == 4 for h in fits)
    assert kinds.index("mesh") > kinds.index("fit") and kinds[-1] == "final"
    assert frames[-1][0]["fit"]["steps"] == 4
    with pytest.raises(ServerError) as error:
        list(client.reconstruct(points=torus_cloud(100), model=MODEL, fit_steps=9))
    assert error.value.status == 413 and "max_fit_steps" in error.value.message
    with pytest.raises(ServerError) as error:
        list(client.reconstruct(points=torus_cloud(100), model=MODEL, fit_steps="9"))
    assert error.value.status == 400 and "fit_steps" in error.value.message


def test_server_cancels_between_fit_steps(server):
    client = server.client
    accepted = []
    stream = client.reconstruct(points=torus_cloud(1000), model=MODEL, fit_steps=8,
                                on_accepted=accepted.append)
    from backend.service.client import JobCancelled

    seen = []
    with pytest.raises(JobCancelled):
        for header, _ in stream:
            seen.append(header["type"])
            if header["type"] == "fit" and header["step"] == 1:
                client.cancel(header["job"])
    assert "mesh" not in seen and "final" not in seen
    assert client.job(accepted[0]["job"])["status"] == "cancelled"


def test_generalize_runs_every_model_with_and_without_fitting(tmp_path, capsys):
    import csv

    from training import generalize

    status = generalize.main([
        "--model", MODEL, "--fit-steps", "3", "--out", str(tmp_path), "--points", "500",
        "--families", "superquadric", "--no-real", "--poisson-depths", "--resolution0", "16",
        "--upsampling-steps", "0", "--eval-points", "3000"])
    assert status == 0
    with open(tmp_path / "shapes.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["method"] for r in rows} == {MODEL, generalize.fit_name(MODEL, 3)}
    assert generalize.main(["--model", MODEL, "--fit-steps", "-1", "--out",
                            str(tmp_path)]) == 2
    assert "--fit-steps must be >= 0" in capsys.readouterr().err

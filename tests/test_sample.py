"""Sampling from the generative ONet's prior and slerp of its latent: engine, CLI, server.

The CLI and server tests use the bundled VAE (``unconditional_onet_chair``, the default for
sampling) at low MISE resolutions.
"""

import hashlib
import json
import os

import numpy as np
import pytest
import torch
import trimesh

from backend.engine import pipeline
from backend.engine.generation import ShapeCode, slerp
from backend.engine.runtime import lerp
from backend.engine.request import (MAX_SEED, Blend, EncodedShape, ReconstructRequest, Sample,
                                    Settings)
from backend.errors import UserError
from backend.io import zoo
from backend.service.client import JobCancelled, ServerError, launch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VAE = zoo.default_model_name("sample")
LOW_MISE = ["--resolution0", "16", "--upsampling-steps", "1"]
MISE = {"resolution0": 16, "upsampling_steps": 1}


@pytest.fixture(scope="module")
def server():
    local = launch(cwd=ROOT)
    yield local
    local.stop()


def md5(path):
    return hashlib.md5(open(path, "rb").read()).hexdigest()


def prior_pair(seed, dim=128):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(2, 1, dim, generator=generator)


def test_a_blend_judges_floaters_by_the_points_of_the_ends_it_takes_from():
    """A reconstruction drops shells far from its input points; a blend's ends must too, or
    t = 0 keeps a floater the reconstruction of A dropped."""
    z = np.zeros((1, 0), np.float32)
    support_a, support_b = np.zeros((5, 3), np.float32), np.ones((7, 3), np.float32)
    a = EncodedShape("m", ShapeCode(np.zeros((1, 4), np.float32), z), np.zeros(3), 1.0,
                     support_a)
    b = EncodedShape("m", ShapeCode(np.ones((1, 4), np.float32), z), np.ones(3), 2.0,
                     support_b)
    request = ReconstructRequest(Blend(a, b, 0.0), "m")
    for t, want in ((0.0, support_a), (1.0, support_b),
                    (0.5, np.concatenate([support_a, support_b]))):
        request.source.t = t
        _, place = pipeline.source_code(request, None, None, {})
        np.testing.assert_array_equal(place.points, want)
    sample = EncodedShape("m", a.code, np.zeros(3), 1.0)  # a prior sample: no points
    request.source = Blend(sample, b, 0.0)
    assert pipeline.source_code(request, None, None, {})[1].points is None


# -- slerp ---------------------------------------------------------------------------------------
def test_lerp_of_codes_is_exact_at_both_ends():
    """An interpolation's t = 1 must be shape B's own code, not a + (b - a), which differs in
    the last bit and, where the field sits at the threshold, changes the mesh."""
    a, b = (code.numpy() for code in prior_pair(1, 16))
    planes_a, planes_b = {"xz": a[None, None] * 3}, {"xz": b[None, None] / 7}
    assert not np.array_equal(a + (b - a), b)  # the rounding this guards against
    for x, y in ((a, b), (torch.from_numpy(a), torch.from_numpy(b))):
        assert (lerp(x, y, 0.0) == x).all() and (lerp(x, y, 1.0) == y).all()
        assert np.allclose(lerp(x, y, 0.25), 0.75 * x + 0.25 * y, atol=1e-6)
        assert np.allclose(lerp(x, y, 0.75), 0.25 * x + 0.75 * y, atol=1e-6)
    assert np.array_equal(lerp(planes_a, planes_b, 1.0)["xz"], planes_b["xz"])


def test_slerp_is_exact_at_the_ends_and_keeps_samples_on_the_prior_shell():
    a, b = prior_pair(0)
    assert torch.equal(slerp(a, b, 0.0), a) and torch.equal(slerp(a, b, 1.0), b)
    norms = (a.norm() + b.norm()) / 2
    middle_slerp, middle_lerp = slerp(a, b, 0.5).norm(), torch.lerp(a, b, 0.5).norm()
    # Two draws of N(0, I) in 128 dimensions are nearly orthogonal: lerp's midpoint is
    # shrunk by about 1/sqrt(2), slerp's keeps the norm.
    assert abs(middle_slerp / norms - 1) < 0.02, (middle_slerp, norms)
    assert abs(middle_lerp / norms - 2 ** -0.5) < 0.08, (middle_lerp, norms)
    # Between ends of one norm: constant angular speed, a quarter of the way is a quarter
    # of the angle.
    def angle(x, y):
        return torch.arccos((x * y).sum() / (x.norm() * y.norm()))

    b = b * a.norm() / b.norm()
    quarter = slerp(a, b, 0.25)
    assert torch.isclose(quarter.norm(), a.norm(), rtol=1e-5)
    assert torch.isclose(angle(a, quarter), 0.25 * angle(a, b), atol=1e-4)
    assert torch.isclose(angle(quarter, b), 0.75 * angle(a, b), atol=1e-4)


def test_slerp_lerps_a_zero_end_and_blend_lerps_c():
    a, b = prior_pair(1)
    zero = torch.zeros_like(a)
    assert torch.allclose(slerp(zero, b, 0.3), 0.3 * b)  # the prior's mean: no direction
    empty = torch.zeros(1, 0)
    assert slerp(empty, empty, 0.5).shape == (1, 0)  # conditional models: no z
    c_a, c_b = torch.ones(1, 4), torch.full((1, 4), 3.0)
    mixed = ShapeCode(c_a, a).blend(ShapeCode(c_b, b), 0.5)
    assert torch.allclose(mixed.c, torch.full((1, 4), 2.0))
    assert torch.allclose(mixed.z, slerp(a, b, 0.5))


# -- engine --------------------------------------------------------------------------------------
def test_only_generative_models_sample_and_seeds_are_checked():
    vae, _ = zoo.load(VAE)
    conditional, _ = zoo.load("pointcloud_onet_small")
    analytic, _ = zoo.load("analytic:sphere")
    for model, message in [(conditional, "reconstructs from a point cloud and has no prior"),
                           (analytic, "no latent code")]:
        with pytest.raises(UserError, match=message):
            ReconstructRequest(Sample(0)).validate(model)
    for seed in (-1, MAX_SEED + 1, 1.5, True):
        with pytest.raises(UserError, match="seed must be a whole number"):
            ReconstructRequest(Sample(seed)).validate(vae)
    with pytest.raises(UserError, match="occupancies"):
        ReconstructRequest(Sample(0), occupancies=np.ones(3, bool)).validate(vae)


def test_a_seed_draws_the_same_z_every_time():
    model, card = zoo.load(VAE)
    request = ReconstructRequest(Sample(7), settings=Settings(16, 0))
    codes = [pipeline.encode(request, VAE, model, card)[0].code.z for _ in range(2)]
    other = pipeline.encode(ReconstructRequest(Sample(8)), VAE, model, card)[0].code.z
    assert torch.equal(codes[0], codes[1]) and not torch.equal(codes[0], other)
    assert codes[0].shape == (1, model.z_dim)


# -- CLI -----------------------------------------------------------------------------------------
def test_cli_sample_is_deterministic_closed_and_seeds_differ(tmp_path, run_cli):
    paths = {}
    for name, seed in (("first", 3), ("again", 3), ("other", 4)):
        paths[name] = tmp_path / f"{name}.ply"
        result = run_cli("sample", "--seed", seed, "-o", paths[name], *LOW_MISE, "--json")
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout)
        assert summary["model"] == VAE and summary["shapes"][0]["seed"] == seed
    assert md5(paths["first"]) == md5(paths["again"])
    meshes = {name: trimesh.load(path, process=False) for name, path in paths.items()}
    assert all(mesh.is_watertight and len(mesh.faces) > 100 for mesh in meshes.values())
    first, other = meshes["first"].vertices, meshes["other"].vertices
    assert first.shape != other.shape or np.abs(first - other).max() > 0.01


def test_cli_grid_holds_each_seed_at_its_place(tmp_path, run_cli):
    out, picture = tmp_path / "grid.ply", tmp_path / "grid.png"
    result = run_cli("sample", "--seed", 3, "--count", 4, "--spacing", 2.0, "-o", out,
                     "--render", picture, *LOW_MISE, "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert [shape["seed"] for shape in summary["shapes"]] == [3, 4, 5, 6]
    grid = trimesh.load(out, process=False)
    assert grid.is_watertight and len(grid.faces) == summary["faces"]
    single = tmp_path / "single.ply"
    assert run_cli("sample", "--seed", 5, "-o", single, *LOW_MISE).returncode == 0
    alone = trimesh.load(single, process=False)
    # Seed 5 is the third shape: row 1, column 0 of a 2 x 2 grid (x columns, z rows).
    start = sum(shape["vertices"] for shape in summary["shapes"][:2])
    third = grid.vertices[start:start + len(alone.vertices)]
    np.testing.assert_allclose(third - [0.0, 0.0, 2.0], alone.vertices, atol=1e-5)
    from PIL import Image

    assert Image.open(picture).size[0] == 2 * 256


def test_cli_interpolation_between_two_samples_starts_and_ends_at_them(tmp_path, run_cli):
    out = tmp_path / "strip.ply"
    result = run_cli("sample", "--seed", 3, "--to-seed", 4, "--count", 3, "--spacing", 0,
                     "-o", out, *LOW_MISE, "--json")
    assert result.returncode == 0, result.stderr
    shapes = json.loads(result.stdout)["shapes"]
    assert [shape["t"] for shape in shapes] == [0.0, 0.5, 1.0]
    strip = trimesh.load(out, process=False)
    for seed, index in ((3, 0), (4, 2)):
        alone_path = tmp_path / f"seed{seed}.ply"
        assert run_cli("sample", "--seed", seed, "-o", alone_path, *LOW_MISE).returncode == 0
        alone = trimesh.load(alone_path, process=False)
        start = sum(shape["vertices"] for shape in shapes[:index])
        np.testing.assert_allclose(strip.vertices[start:start + len(alone.vertices)],
                                   alone.vertices, atol=1e-5)


@pytest.mark.parametrize("flags, message", [
    (["--model", "analytic:sphere"], "no latent code"),
    (["--model", "pointcloud_onet_small"], "has no prior over shapes"),
    (["--seed", "-2"], "seed must be a whole number"),
    (["--count", "0"], "--count must be in"),
    (["--tile-size", "1"], "unrecognized arguments"),
])
def test_cli_sample_refuses_with_one_line(flags, message, tmp_path, run_cli):
    result = run_cli("sample", "-o", tmp_path / "x.ply", *flags)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "x.ply").exists()


# -- server --------------------------------------------------------------------------------------
def test_server_streams_the_cli_sample(server, tmp_path, run_cli):
    out = tmp_path / "cli.ply"
    assert run_cli("sample", "--seed", 11, "-o", out, *LOW_MISE).returncode == 0
    accepted = []
    frames = list(server.client.sample(11, mise=MISE, on_accepted=accepted.append))
    meshes = [arrays for header, arrays in frames if header["type"] == "mesh"]
    final = frames[-1][0]
    assert accepted[0]["model"] == VAE and len(meshes) == 2
    assert final["type"] == "final" and final["seed"] == 11 and final["model"] == VAE
    assert server.client.job(final["job"])["kind"] == "sample"
    cli = trimesh.load(out, process=False)
    np.testing.assert_array_equal(meshes[-1]["faces"], cli.faces)
    np.testing.assert_allclose(meshes[-1]["vertices"], cli.vertices, atol=1e-5)
    again = [a for h, a in server.client.sample(11, mise=MISE) if h["type"] == "mesh"]
    np.testing.assert_array_equal(again[-1]["vertices"], meshes[-1]["vertices"])


def test_server_interpolates_between_sampled_and_encoded_shapes(server):
    client = server.client
    latents = [client.encode(sample={"seed": seed}) for seed in (11, 12)]
    assert client.encode(sample={"seed": 11}) == latents[0]  # cached by seed
    for t, seed in ((0.0, 11), (1.0, 12)):
        direct = [a for h, a in client.sample(seed, mise=MISE) if h["type"] == "mesh"][-1]
        morphed = [a for h, a in client.interpolate(*latents, t, mise=MISE)
                   if h["type"] == "mesh"][-1]
        np.testing.assert_allclose(morphed["vertices"], direct["vertices"], atol=1e-5)
    # An encoded end: points labelled inside a ball give the posterior mean of z.
    points = np.random.default_rng(3).uniform(-0.5, 0.5, (2000, 3)).astype(np.float32)
    encoded = client.encode(points=points, occupancies=np.linalg.norm(points, axis=1) < 0.3,
                            model=VAE)
    middle = [a for h, a in client.interpolate(latents[0], encoded, 0.5, mise=MISE)
              if h["type"] == "mesh"][-1]
    assert len(middle["faces"]) > 0


@pytest.mark.parametrize("header, status, message", [
    ({"sample": {"seed": -1}}, 400, "seed must be a whole number"),
    ({"sample": {"seed": 1.5}}, 400, "sample.seed"),
    ({"sample": 3}, 400, "'sample' must be an object"),
    ({"sample": {"seed": 1}, "model": "pointcloud_onet_small"}, 400, "no prior"),
    ({"sample": {"seed": 1}, "tiling": {"tile_size": 1.0}}, 400, "tiling"),
    ({"sample": {"seed": 1}, "mise": {"resolution0": 64, "upsampling_steps": 4}}, 413,
     "above the limit"),
])
def test_server_refuses_bad_samples(server, header, status, message):
    body = server.client.input_frame(**header)
    with pytest.raises(ServerError) as error:
        list(server.client.stream("/v1/reconstruct", body))
    assert error.value.status == status and message in error.value.message, error.value


def test_server_refuses_a_sample_with_an_input_buffer(server):
    body = server.client.input_frame(points=np.zeros((10, 3), np.float32), sample={"seed": 1})
    with pytest.raises(ServerError) as error:
        list(server.client.stream("/v1/reconstruct", body))
    assert error.value.status == 400 and "no input buffers" in error.value.message


def test_cancel_mid_sample(server):
    client = server.client
    accepted, levels = [], []
    stream = client.sample(5, mise={"resolution0": 32, "upsampling_steps": 3},
                           on_accepted=accepted.append)
    with pytest.raises(JobCancelled):
        for header, _ in stream:
            levels.append(header["level"])
            client.cancel(header["job"])
    assert levels == [0]  # the cancel landed before the next level's mesh
    assert client.job(accepted[0]["job"])["status"] == "cancelled"
    frames = list(client.sample(5, mise=MISE))
    assert frames[-1][0]["type"] == "final"

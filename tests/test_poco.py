"""Point-latent network (``arch: poco``): locality and invariances, the per-shape decoder,
checkpoints, training through ``training.train``, meshing and tiling."""

import numpy as np
import pytest
import torch
import trimesh
import yaml

from backend.engine import tiling
from backend.engine.generation import Generator, ShapeCode
from backend.engine.request import Settings
from backend.errors import UserError
from backend.io.checkpoints import load_model, save_model
from backend.models import build_model
from backend.models.poco.neighbours import knn
from training.checkpoints import MODEL_BEST
from training.config import load_config
from training.data import procedural
from training.train import main

SMALL = {"arch": "poco", "input_kind": "pointcloud",
         "encoder": {"name": "point_unet", "c_dim": 16, "widths": [16, 24, 32], "k": 8},
         "decoder": {"name": "attention", "c_dim": 16, "hidden_size": 16, "k": 8, "heads": 2}}


def sphere_cloud(n=600, radius=0.3, seed=0):
    """(n, 3) float32 points on a sphere of ``radius`` about the origin."""
    points = np.random.default_rng(seed).standard_normal((n, 3))
    return (radius * points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def model():
    """A small random model whose logits vary (its residual blocks start as the identity)."""
    torch.manual_seed(0)
    net = build_model(SMALL).eval()
    with torch.no_grad():
        for block in net.decoder.blocks:
            block.fc_1.weight.normal_(0, 0.3)
    return net


def clouds(seed=0):
    rng = np.random.default_rng(seed)
    inputs = torch.from_numpy(np.stack([sphere_cloud(500, 0.3, seed),
                                        rng.uniform(-0.4, 0.4, (500, 3)).astype(np.float32)]))
    queries = torch.from_numpy(rng.uniform(-0.55, 0.55, (2, 300, 3)).astype(np.float32))
    return inputs, queries


def test_config_is_completed_and_checked():
    config = build_model(SMALL).config
    assert config["encoder"]["widths"] == [16, 24, 32] and config["decoder"]["n_blocks"] == 3
    assert build_model(config).config == config
    with pytest.raises(UserError, match="c_dim"):
        build_model({**SMALL, "decoder": {**SMALL["decoder"], "c_dim": 8}})
    with pytest.raises(UserError, match="multiple of heads"):
        build_model({**SMALL, "decoder": {**SMALL["decoder"], "heads": 3}})
    with pytest.raises(UserError, match="point clouds"):
        build_model({**SMALL, "input_kind": "voxels"})
    with pytest.raises(UserError, match="unknown key 'padding'"):
        build_model({**SMALL, "padding": 0.1})


@torch.no_grad()
def test_results_do_not_depend_on_the_batch(model):
    inputs, queries = clouds()
    both = model.encode_inputs(inputs)
    alone = model.encode_inputs(inputs[1:])
    assert torch.allclose(both.features[1], alone.features[0], atol=1e-6)
    assert torch.allclose(both.scale[1], alone.scale[0])
    logits = model.decode(queries, None, both)
    assert torch.allclose(model.decode(queries[1:], None, alone)[0], logits[1], atol=1e-6)
    # Nor on the other queries: a subset, reordered, gives the same logits.
    order = torch.randperm(300)[:77]
    assert torch.allclose(model.decode(queries[:, order], None, both), logits[:, order],
                          atol=1e-6)


@torch.no_grad()
def test_logits_are_translation_and_scale_invariant(model):
    """Only offsets divided by the cloud's sampling scale enter the network: moving the
    input and queries together, or scaling both, leaves every logit as it is."""
    inputs, queries = clouds(1)
    logits = model.decode(queries, None, model.encode_inputs(inputs))
    shift = torch.tensor([0.21, -0.13, 0.07])
    moved = model.decode(queries + shift, None, model.encode_inputs(inputs + shift))
    assert torch.allclose(moved, logits, atol=1e-5, rtol=1e-5)
    scaled = model.decode(queries * 0.5, None, model.encode_inputs(inputs * 0.5))
    assert torch.allclose(scaled, logits, atol=1e-5, rtol=1e-5)


def test_neighbour_search_agrees_with_brute_force():
    rng = np.random.default_rng(2)
    points = torch.from_numpy(rng.uniform(-0.5, 0.5, (2, 400, 3)).astype(np.float32))
    queries = torch.from_numpy(rng.uniform(-0.5, 0.5, (2, 50, 3)).astype(np.float32))
    expected = torch.cdist(queries, points).topk(5, dim=-1, largest=False).indices
    assert torch.equal(knn(queries, points, 5), expected)
    assert knn(queries, points[:, :3], 5).shape == (2, 50, 3)  # k at most the cloud


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_shape_decoder_matches_decode(model, dtype):
    inputs, queries = clouds(3)
    with torch.no_grad():
        code = model.encode_inputs(inputs[:1])
        expected = model.decode(queries[:1], None, code)[0]
        decoder = model.shape_decoder(code, None, dtype)
        got = decoder(queries[0])
    assert got.dtype == torch.float32 and got.shape == (300,)
    tolerance = 1e-5 if dtype == torch.float32 else 0.05 * expected.abs().max().item()
    assert torch.allclose(got, expected, atol=tolerance)
    points = queries[0].clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(decoder(points).sum(), points)
    assert torch.isfinite(gradient).all() and gradient.abs().sum() > 0
    with pytest.raises(ValueError, match="one shape"):
        model.shape_decoder(model.encode_inputs(inputs), None)


def test_checkpoint_round_trip(model, tmp_path):
    inputs, queries = clouds(4)
    save_model(tmp_path / "poco.safetensors", model, {"threshold": 0.3})
    loaded, card = load_model(tmp_path / "poco.safetensors")
    assert card["config"] == model.config and card["threshold"] == 0.3
    with torch.no_grad():
        assert torch.equal(loaded.decode(queries, None, loaded.encode_inputs(inputs)),
                           model.decode(queries, None, model.encode_inputs(inputs)))


def test_codes_of_two_clouds_are_not_interpolated(model):
    generator = Generator(model, {}, "cpu")
    inputs, _ = clouds()
    a, b = (generator.encode(inputs[i:i + 1]) for i in range(2))
    assert isinstance(a, ShapeCode)
    with pytest.raises(UserError, match="cannot be interpolated"):
        a.blend(b, 0.5)


def test_overfit_sphere_gives_a_closed_mesh():
    """A few hundred steps on one sphere: the Generator's mesh is closed and near radius."""
    torch.manual_seed(0)
    net = build_model(SMALL)
    cloud = torch.from_numpy(sphere_cloud(800))[None]
    rng = np.random.default_rng(0)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(250):
        near = sphere_cloud(512, 0.3, int(rng.integers(1 << 30))) + rng.normal(
            0, 0.03, (512, 3))
        points = np.concatenate([near, rng.uniform(-0.55, 0.55, (512, 3))]).astype(np.float32)
        occ = torch.from_numpy((np.linalg.norm(points, axis=1) < 0.3).astype(np.float32))
        logits = net.decode(torch.from_numpy(points)[None], None, net.encode_inputs(cloud))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits[0], occ)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    generator = Generator(net, {"threshold": 0.5}, "cpu",
                          Settings(resolution0=16, upsampling_steps=2, precision="fp32"))
    *_, final = generator.frames(generator.encode(cloud))
    mesh = trimesh.Trimesh(final.vertices, final.faces)
    radii = np.linalg.norm(mesh.vertices, axis=1)
    assert mesh.is_watertight and abs(np.median(radii) - 0.3) < 0.02, np.median(radii)


def test_tiles_close_where_they_meet(model):
    """Tiles of a random field meet without a seam. Checked on the welded mesh as tiling
    returns it: where the field is inside along an edge of the scene's lattice, marching
    cubes' closing caps hold zero-area triangles, which trimesh's processing would drop."""
    from tests.test_tiling import scene, settings

    generator = Generator(model, {}, "cpu", settings())
    tiled = tiling.tiled_result(tiling.reconstruct_tiled(generator, {}, scene() * 2,
                                                         crop_size=1.0, overlap=0.1))
    assert tiled.tiles_run > 2
    mesh = trimesh.Trimesh(tiled.vertices, tiled.faces, process=False)
    assert len(mesh.faces) and mesh.is_watertight


def test_trains_through_training_train(tmp_path):
    corpus = tmp_path / "corpus"
    procedural.generate(corpus, ["mug"], 4, seed=0,
                        options=procedural.Options(points=3000, views=1, image_size=32,
                                                   resolution=32))
    config = {"model": SMALL,
              "data": {"path": str(corpus), "input_points": 300, "points": 256,
                       "val_points": 1000, "augment": {"rotation": "any"}},
              "training": {"batch_size": 2, "lr": 1e-3, "max_iterations": 3,
                           "validate_every": 3, "checkpoint_every": 3, "num_workers": 0,
                           "precision": "bf16"}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    assert main([str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run")]) == 0
    loaded, card = load_model(tmp_path / "run" / MODEL_BEST)
    assert loaded.config == load_config(tmp_path / "c.yaml")["model"]
    assert 0 <= card["metrics"]["val_iou"] <= 1

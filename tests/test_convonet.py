"""Convolutional Occupancy Networks: official layout, feature geometry, fast decoder, generation."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from backend.io.checkpoints import infer_config, load_model
from backend.errors import UserError
from backend.engine.generation import Generator, ShapeCode
from backend.engine.request import Settings
from backend.models import PAPER_CONFIGS, build_model
from backend.models.convonet.features import cell_index, normalize, pool_cells, sample, scatter_mean

REFERENCE = Path(__file__).parent / "data" / "convonet_official_state_dicts.txt"
# Section title in the reference file -> PAPER_CONFIGS name.
SECTIONS = {"shapenet_3plane": "convonet_3plane", "shapenet_grid32": "convonet_grid32",
            "voxel grid32": "convonet_voxels_grid32"}
NAMES = list(SECTIONS.values())
# A small fresh 3-plane model (our sampling convention).
SMALL = {"arch": "convonet", "input_kind": "pointcloud",
         "encoder": {"name": "pointnet_local_pool", "c_dim": 8, "hidden_dim": 8,
                     "plane_resolution": 16, "unet": {"depth": 2, "start_filts": 8}},
         "decoder": {"name": "simple_local", "c_dim": 8, "hidden_size": 16}}


def parse_reference():
    """{config name: {"entries": [(key, shape)], "count": int, "params": int}}."""
    sections, current = {}, None
    for line in REFERENCE.read_text().splitlines():
        title = re.match(r"^### ConvONet (.+): (\d+) entries, (\d+) params", line)
        if title:
            current = SECTIONS.get(title.group(1))
            if current:
                sections[current] = {"entries": [], "count": int(title.group(2)),
                                     "params": int(title.group(3))}
            continue
        entry = re.match(r"^(\S+)\t\[([\d, ]*)\]$", line)
        if entry and current:
            shape = tuple(int(n) for n in entry.group(2).split(","))
            sections[current]["entries"].append((entry.group(1), shape))
    return sections


def perturbed(model, seed=0):
    """``model`` in eval mode with every tensor moved away from the init (zeros, ones)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.dim() >= 2:
                t.copy_(torch.randn(t.shape) / t[0].numel() ** 0.5)
            else:
                t.add_(0.1 * torch.randn(t.shape))
    return model.eval()


def example_input(input_kind, batch=1, seed=1):
    generator = torch.Generator().manual_seed(seed)
    if input_kind == "pointcloud":
        return torch.rand(batch, 1000, 3, generator=generator) - 0.5
    return (torch.rand(batch, 32, 32, 32, generator=generator) > 0.7).float()


def query_points(n, seed=2):
    """Points ``(1, n, 3)`` over the padded cube and a little beyond (the border cells)."""
    return torch.rand(1, n, 3, generator=torch.Generator().manual_seed(seed)) * 1.2 - 0.6


@pytest.fixture(scope="module")
def models():
    return {name: perturbed(build_model(PAPER_CONFIGS[name]), seed)
            for seed, name in enumerate(NAMES)}


@pytest.fixture(scope="module")
def codes(models):
    with torch.no_grad():
        return {name: model.encode_inputs(example_input(model.input_kind))
                for name, model in models.items()}


def test_state_dicts_match_the_official_checkpoints(models):
    reference = parse_reference()
    for name in NAMES:
        state, expected = models[name].state_dict(), reference[name]
        if expected["entries"]:  # the voxel model is listed by its counts only
            assert [(k, tuple(v.shape)) for k, v in state.items()] == expected["entries"]
        assert len(state) == expected["count"], name
        assert sum(p.numel() for p in models[name].parameters()) == expected["params"], name
    assert reference["convonet_voxels_grid32"]["params"] == 1_042_209


def test_codes_are_feature_volumes(models, codes):
    assert {k: tuple(v.shape) for k, v in codes["convonet_3plane"].items()} == {
        "xz": (1, 32, 64, 64), "xy": (1, 32, 64, 64), "yz": (1, 32, 64, 64)}
    for name in ("convonet_grid32", "convonet_voxels_grid32"):
        assert {k: tuple(v.shape) for k, v in codes[name].items()} == {"grid": (1, 32, 32, 32, 32)}
    model = models["convonet_3plane"]
    assert model.z_dim == 0 and model.prior_z(2).shape == (2, 0)
    assert model.infer_z(torch.zeros(2, 5, 3), torch.zeros(2, 5), None)[0].shape == (2, 0)


@pytest.mark.parametrize("name", NAMES)
def test_official_checkpoint_round_trip(name, models, tmp_path):
    original = models[name]
    path = tmp_path / "model_best.pt"
    torch.save({"model": original.state_dict(), "loss_val_best": np.float64(0.9)}, path)
    model, card = load_model(path)
    assert card["config"] == model.config == PAPER_CONFIGS[name]
    assert card["config"]["sample_align"] == "official"
    x, p = example_input(model.input_kind, seed=3), query_points(500)
    with torch.no_grad():
        c = original.encode_inputs(x)
        expected = original.decode(p, None, c)
        assert torch.equal(model.decode(p, None, model.encode_inputs(x)), expected)
        # The convention is live: the same volumes sampled our way give another field.
        ours = build_model({**PAPER_CONFIGS[name], "sample_align": "consistent"}).eval()
        ours.load_state_dict(original.state_dict())
        assert (ours.decode(p, None, c) - expected).abs().max() > 1e-3


def test_infer_config_reads_widths_depths_and_resolutions():
    decoder = {"name": "simple_local", "c_dim": 8, "hidden_size": 16}
    for encoder in (
        {"name": "pointnet_local_pool", "c_dim": 8, "hidden_dim": 12,
         "plane_type": ["xz", "xy", "yz"], "plane_resolution": 16,
         "unet": {"depth": 2, "start_filts": 4}},
        {"name": "voxel_simple_local", "c_dim": 8, "plane_type": ["grid"], "grid_resolution": 16,
         "unet3d": {"num_levels": 2, "f_maps": 8, "num_groups": 8}},
    ):
        config = {"arch": "convonet", "encoder": encoder, "decoder": decoder}
        # Fresh models take the consistent convention; official checkpoints the official one.
        assert build_model(config).config["sample_align"] == "consistent"
        model = build_model({**config, "sample_align": "official"})
        assert infer_config(model.state_dict()) == model.config


@pytest.mark.parametrize("change, message", [
    ({"encoder": {"name": "pointnet_local_pool", "plane_type": ["xz", "zx"]}}, "plane_type"),
    ({"encoder": {"name": "pointnet_local_pool", "plane_type": ["grid"],
                  "unet": {"depth": 2}}}, "'unet' is for planes"),
    ({"encoder": {"name": "pointnet_local_pool", "unet": {"depth": 4, "width": 3}}},
     "'encoder.unet.width'"),
    ({"encoder": {"name": "pointnet_local_pool", "plane_resolution": 60,
                  "unet": {"depth": 4}}}, "multiple of 8"),
    ({"encoder": {"name": "pointnet_local_pool", "plane_type": "xz"}}, "must be list"),
    ({"sample_align": "centre"}, "sample_align"),
    ({"padding": 1}, "padding"),
    ({"decoder": {"name": "simple_local", "sample_mode": "bicubic"}}, "sample_mode"),
    ({"decoder": {"name": "simple_local", "c_dim": 16}}, "c_dim"),
    ({"input_kind": "voxels"}, "input_kind"),
])
def test_bad_configs_are_rejected(change, message):
    config = {"arch": "convonet", "encoder": {"name": "pointnet_local_pool"},
              "decoder": {"name": "simple_local"}, **change}
    with pytest.raises(UserError, match=re.escape(message)):
        build_model(config)


def test_scatter_and_local_pooling_by_hand():
    # With padding 0.1 and 4 cells per axis, x = -0.4 and -0.3 fall in cell 0, x = 0.3 in cell
    # 3; z = 0 in cell 2, z = -0.4 in cell 0. On the "xz" plane: cells (x 0, z 2) and (3, 0).
    p = torch.tensor([[[-0.4, 0.1, 0.0], [-0.3, -0.2, 0.0], [0.3, 0.0, -0.4]]])
    features = torch.tensor([[[1.0, 4.0], [3.0, -2.0], [5.0, 7.0]]])
    index = cell_index(normalize(p, "xz", 0.1), 4)
    assert index.tolist() == [[0 + 4 * 2, 0 + 4 * 2, 3 + 4 * 0]]
    plane = scatter_mean(features, index, 16).unflatten(2, (4, 4))  # indexed [z, x]
    expected = torch.zeros(1, 2, 4, 4)
    expected[0, :, 2, 0] = torch.tensor([2.0, 1.0])
    expected[0, :, 0, 3] = torch.tensor([5.0, 7.0])
    assert torch.equal(plane, expected)
    assert pool_cells(features, index, 16).tolist() == [[[3.0, 4.0], [3.0, 4.0], [5.0, 7.0]]]
    # The grid flattens x fastest: volume [z, y, x].
    grid_index = cell_index(normalize(p, "grid", 0.1), 4)
    assert grid_index[0, 2] == 3 + 4 * (2 + 4 * 0)


@pytest.mark.parametrize("kind, dims", [("xz", 2), ("yz", 2), ("grid", 3)])
def test_binning_and_sampling_agree_on_axes(kind, dims):
    """A single point's features land in one cell; sampling at that cell's centre gives them
    back exactly with "consistent", and at u = k / (R - 1) with "official"."""
    resolution, p = 8, torch.tensor([[[0.31, -0.17, 0.06]]])
    u = normalize(p, kind, 0.1)
    volume = scatter_mean(torch.tensor([[[2.5]]]), cell_index(u, resolution), resolution ** dims)
    volume = volume.unflatten(2, (resolution,) * dims)
    cell = (u * resolution).floor()
    centre = (cell + 0.5) / resolution
    assert sample(volume, centre, align="consistent").item() == pytest.approx(2.5)
    assert sample(volume, cell / (resolution - 1), align="official").item() == pytest.approx(2.5)
    assert volume.sum() == 2.5


@pytest.mark.parametrize("name", NAMES)
def test_shape_decoder_matches_decode(name, models, codes):
    model, c = models[name], codes[name]
    points = query_points(5000)  # more than one chunk
    with torch.no_grad():
        expected = model.decode(points, None, c)[0]
    assert expected.std() > 0.05
    f = model.shape_decoder(c, model.prior_z(1))
    logits = f(points[0])
    assert logits.dtype == torch.float32 and logits.shape == (5000,)
    assert (logits - expected).abs().max() <= 1e-5 * expected.abs().max()
    fast = model.shape_decoder(c, model.prior_z(1), torch.bfloat16)(points[0])
    assert fast.dtype == torch.float32
    assert (fast - expected).abs().mean() <= 0.05 * expected.abs().mean()
    # Gradients with respect to the points, second order included (refinement needs it).
    reference = points[0, :300].clone().requires_grad_(True)
    (want,) = torch.autograd.grad(model.decode(reference[None], None, c).sum(), reference)
    query = points[0, :300].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(f(query).sum(), query, create_graph=True)
    assert torch.allclose(grad, want, rtol=1e-4, atol=1e-5 * want.abs().max())
    grad.square().sum().backward()
    assert query.grad is not None and all(w.grad is None for w in model.parameters())


def test_results_do_not_depend_on_the_batch(models, codes):
    model, c = models["convonet_3plane"], codes["convonet_3plane"]
    points, probe = query_points(10_000), 1_234
    with torch.no_grad():
        alone = model.decode(points[:, probe:probe + 1], None, c)[0, 0]
        together = model.decode(points, None, c)[0, probe]
    assert torch.allclose(alone, together, rtol=1e-5, atol=1e-5)
    f = model.shape_decoder(c)
    assert torch.allclose(f(points[0, probe:probe + 1])[0], f(points[0])[probe],
                          rtol=1e-5, atol=1e-5)
    # Encoding is per shape too: a batch of two gives each shape's volumes.
    model = perturbed(build_model(SMALL), seed=5)
    x = torch.cat([example_input("pointcloud", seed=5), example_input("pointcloud", seed=6)])
    with torch.no_grad():
        pair = model.encode_inputs(x)
        single = model.encode_inputs(x[1:])
    assert all(torch.allclose(pair[k][1:], single[k], atol=1e-5) for k in single)


def test_shape_decoder_takes_one_shape(models, codes):
    model, c = models["convonet_grid32"], codes["convonet_grid32"]
    with pytest.raises(ValueError, match="one shape"):
        model.shape_decoder({"grid": c["grid"].expand(2, -1, -1, -1, -1)})
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        model.shape_decoder(c)(torch.zeros(4, 2))


def closed(faces):
    """Whether every edge of a triangle mesh is shared by exactly two faces."""
    edges = np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    return np.all(np.unique(edges, axis=0, return_counts=True)[1] == 2)


def test_generator_meshes_a_small_model_and_codes_interpolate():
    model = perturbed(build_model(SMALL), seed=4)
    generator = Generator(model, {"threshold": 0.5},
                          settings=Settings(resolution0=16, upsampling_steps=1, precision="fp32"))
    code = generator.encode(example_input("pointcloud"))
    with torch.no_grad():  # the surface through the middle of the field's range
        model.decoder.fc_out.bias -= model.decode(query_points(4000), None, code.c).median()
    frames = list(generator.frames(code))
    assert [f.level for f in frames] == [0, 1] and frames[-1].final
    assert len(frames[-1].faces) > 100 and closed(frames[-1].faces)

    other = generator.encode(example_input("pointcloud", seed=9))
    for t, end in ((0.0, code), (1.0, other)):
        mixed = code.blend(other, t)
        assert isinstance(mixed, ShapeCode) and mixed.c.keys() == code.c.keys()
        assert all(torch.equal(mixed.c[k], end.c[k]) for k in code.c)
    halfway = code.blend(other, 0.5).c["xy"]
    assert torch.allclose(halfway, (code.c["xy"] + other.c["xy"]) / 2, atol=1e-6)


def test_voxel_grid_without_padding_skips_the_scatter_exactly():
    """One voxel per cell (a 32^3 grid over the unpadded cube, true centres): the encoder's
    shortcut gives the grid the scatter gives, and a wide input kernel keeps the frame."""
    config = {"arch": "convonet", "input_kind": "voxels", "padding": 0.0,
              "sample_align": "consistent",
              "encoder": {"name": "voxel_simple_local", "c_dim": 8, "plane_type": ["grid"],
                          "grid_resolution": 32, "kernel_size": 7},
              "decoder": {"name": "simple_local", "c_dim": 8, "hidden_size": 8}}
    torch.manual_seed(0)
    model = build_model(config).eval()
    encoder = model.encoder
    voxels = torch.zeros(2, 32, 32, 32)
    voxels[0, 3:9, 20:30, 5:7] = 1  # asymmetric, so a wrong axis order shows
    voxels[1] = (torch.rand(32, 32, 32) > 0.7).float()
    assert encoder.one_voxel_per_cell(32)
    fast = encoder(voxels)["grid"]
    features = torch.relu(encoder.conv_in(voxels.unsqueeze(1))).flatten(2).transpose(1, 2)
    centres = encoder.voxel_centres(32, voxels.device).expand(2, -1, -1)
    slow = encoder.volumes(encoder.cells(centres), features)["grid"]
    assert torch.equal(fast, slow)
    with pytest.raises(UserError, match="kernel_size"):
        build_model({**config, "encoder": {**config["encoder"], "kernel_size": 4}})

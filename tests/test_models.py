"""ONet modules: official tensor layout, fast per-shape decoder, configs."""

import re
from pathlib import Path

import pytest
import torch

from backend.errors import UserError
from backend.models import PAPER_CONFIGS, build_model

REFERENCE = Path(__file__).parent / "data" / "onet_official_state_dicts.txt"
# Section title prefix in the reference file -> PAPER_CONFIGS name.
SECTIONS = {
    "pointcloud ONet": "pointcloud",
    "voxel ONet": "voxels",
    "image ONet": "image",
    "legacy img decoder": "image_legacy",
    "unconditional ONet": "unconditional",
}


def parse_reference():
    """{config name: {"entries": [(key, shape, dtype or None)], "params": int}}."""
    sections, current = {}, None
    for line in REFERENCE.read_text().splitlines():
        if line.startswith("### "):
            current = next(name for title, name in SECTIONS.items() if line[4:].startswith(title))
            declared = re.search(r"(\d+) parameters", line)
            sections[current] = {"entries": [], "params": declared and int(declared.group(1))}
            continue
        entry = re.match(r"^(\S+)\s+\[([\d, ]*)\]\s*(\S+)?$", line)
        if entry and current:
            shape = tuple(int(n) for n in entry.group(2).split(",") if n.strip())
            sections[current]["entries"].append((entry.group(1), shape, entry.group(3)))
        elif line.startswith("legacy total params"):
            sections["image_legacy"]["params"] = int(line.split()[-1])
    return sections


def perturbed(config, seed=0):
    """A model of ``config`` in eval mode whose every float tensor (running statistics
    included) is moved away from the init, whose zeros and ones make the folds trivial."""
    torch.manual_seed(seed)
    model = build_model(config)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.dtype.is_floating_point:
                continue
            noise = torch.randn(t.shape)
            if name.endswith("running_var"):
                t.copy_(0.5 + noise.abs())
            elif t.dim() >= 2:
                t.copy_(noise / t[0].numel() ** 0.5)
            else:
                t.add_(0.1 * noise)
    return model.eval()


def example_input(input_kind, batch=1):
    generator = torch.Generator().manual_seed(1)
    if input_kind == "pointcloud":
        return torch.rand(batch, 300, 3, generator=generator) - 0.5
    if input_kind == "voxels":
        return (torch.rand(batch, 32, 32, 32, generator=generator) > 0.7).float()
    if input_kind == "image":
        return torch.rand(batch, 3, 224, 224, generator=generator)
    return None


@pytest.fixture(scope="module")
def reference():
    return parse_reference()


@pytest.fixture(scope="module")
def models():
    """One perturbed paper-size model per config, in eval mode, built once for the module."""
    return {name: perturbed(PAPER_CONFIGS[name], seed) for seed, name in enumerate(PAPER_CONFIGS)}


@pytest.fixture(scope="module")
def codes(models):
    """c (1, c_dim) of each model for its example input (images at 224 x 224)."""
    with torch.no_grad():
        return {name: model.encode_inputs(example_input(model.input_kind))
                for name, model in models.items()}


@pytest.mark.parametrize("name", ["pointcloud", "voxels", "image", "unconditional"])
def test_state_dict_matches_official_layout(name, reference, models):
    expected = reference[name]
    state = models[name].state_dict()
    assert [(k, tuple(v.shape)) for k, v in state.items()] == \
        [(k, shape) for k, shape, _ in expected["entries"]]
    for key, _, dtype in expected["entries"]:
        assert str(state[key].dtype) == f"torch.{dtype}", key
    assert sum(p.numel() for p in models[name].parameters()) == expected["params"]


def test_legacy_image_decoder_layout(reference, models):
    expected = reference["image_legacy"]
    state = models["image_legacy"].state_dict()
    assert expected["entries"]
    for key, shape, _ in expected["entries"]:
        assert tuple(state[key].shape) == shape, key
    assert not any("conv_gamma" in key or "conv_beta" in key for key in state)
    assert sum(p.numel() for p in models["image_legacy"].parameters()) == expected["params"]


def test_partial_config_is_completed_with_paper_defaults():
    model = build_model({"arch": "onet", "input_kind": "voxels",
                         "encoder": {"name": "voxel_simple"}, "decoder": {"name": "cbatchnorm"}})
    assert model.config == PAPER_CONFIGS["voxels"]


@pytest.mark.parametrize("name", list(PAPER_CONFIGS))
def test_shape_decoder_matches_decode(name, models, codes):
    model, c = models[name], codes[name]
    points = torch.rand(1, 5000, 3, generator=torch.Generator().manual_seed(2)) * 1.1 - 0.55
    with torch.no_grad():
        z = 0.5 * torch.randn(1, model.z_dim, generator=torch.Generator().manual_seed(3))
        expected = model.decode(points, z, c)[0]
    logits = model.shape_decoder(c, z)(points[0])  # 5000 points: more than one chunk
    assert logits.dtype == torch.float32 and logits.shape == (5000,)
    assert expected.std() > 0.05  # the perturbed weights make the function non-trivial
    scale = expected.abs().max()
    assert (logits - expected).abs().max() <= 1e-5 * scale

    fast = model.shape_decoder(c, z, torch.bfloat16)(points[0])
    assert fast.dtype == torch.float32
    assert (fast - expected).abs().mean() <= 0.05 * expected.abs().mean()


@pytest.mark.parametrize("name", ["pointcloud", "image_legacy", "unconditional"])
def test_shape_decoder_is_differentiable_like_decode(name, models, codes):
    model, c = models[name], codes[name]
    z = torch.zeros(1, model.z_dim)
    points = torch.rand(300, 3, generator=torch.Generator().manual_seed(5)) - 0.5
    reference = points.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(model.decode(reference[None], z, c).sum(), reference)
    query = points.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model.shape_decoder(c, z)(query).sum(), query,
                                  create_graph=True)  # as the paper's refinement does
    assert torch.allclose(grad, expected, rtol=1e-4, atol=1e-5 * expected.abs().max())
    grad.square().sum().backward()  # second order through the normal loss works
    assert query.grad is not None
    assert all(w.grad is None for w in model.parameters())  # weights are constants there


def test_eval_results_do_not_depend_on_the_batch(models, codes):
    points = torch.rand(1, 100_000, 3, generator=torch.Generator().manual_seed(4)) - 0.5
    probe, z = 12345, torch.empty(1, 0)
    # decode() on 100k points with a narrow CBN decoder (same code, a fraction of the time).
    narrow = perturbed({
        "arch": "onet", "input_kind": "pointcloud",
        "encoder": {"name": "resnet_pointnet", "c_dim": 16, "hidden_dim": 16},
        "decoder": {"name": "cbatchnorm", "c_dim": 16, "hidden_size": 32}})
    with torch.no_grad():
        c = narrow.encode_inputs(example_input("pointcloud"))
        alone = narrow.decode(points[:, probe:probe + 1], z, c)[0, 0]
        together = narrow.decode(points, z, c)[0, probe]
    # One row and 100k rows take different matmul kernels: equal up to float32 rounding
    # (~1e-6 relative); train-mode batch norm would differ by O(1).
    assert torch.allclose(alone, together, rtol=1e-5, atol=1e-5)
    f = models["pointcloud"].shape_decoder(codes["pointcloud"], z)
    assert torch.allclose(f(points[0, probe:probe + 1])[0], f(points[0])[probe],
                          rtol=1e-5, atol=1e-5)


def test_shape_decoder_takes_one_shape(models):
    model = models["voxels"]
    with pytest.raises(ValueError, match="one shape"):
        model.shape_decoder(torch.zeros(2, 256), torch.zeros(2, 0))
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        model.shape_decoder(torch.zeros(1, 256), torch.zeros(1, 0))(torch.zeros(4, 2))


def test_image_encoder_normalises_with_imagenet_statistics(models):
    encoder = models["image"].encoder
    assert "mean" not in encoder.state_dict() and "std" not in encoder.state_dict()
    image = example_input("image")[:, :, :64, :64]
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(encoder(image), encoder.fc(encoder.features((image - mean) / std)))


def test_code_shapes(models, codes):
    for name in ("pointcloud", "voxels", "image", "image_legacy"):
        assert codes[name].shape == (1, models[name].config["encoder"]["c_dim"])
    with torch.no_grad():
        model = models["unconditional"]
        assert model.input_kind is None and model.encode_inputs(None).shape == (1, 0)
        p = torch.rand(2, 64, 3) - 0.5
        mean, logstd = model.infer_z(p, (p.norm(dim=2) < 0.3).float(), torch.empty(2, 0))
        assert mean.shape == logstd.shape == (2, 128)
        assert torch.equal(model.prior_z(3), torch.zeros(3, 128))
        assert models["voxels"].infer_z(p[:1], p[:1, :, 0], codes["voxels"])[0].shape == (1, 0)


@pytest.mark.parametrize("change, message", [
    ({"arch": "nope"}, "arch"),
    ({"colour": 1}, "'colour'"),
    ({"encoder": {"name": "resnet_pointnet", "width": 3}}, "'encoder.width'"),
    ({"encoder": {"name": "pointnet++"}}, "pointnet++"),
    ({"decoder": {"name": "cbatchnorm", "c_dim": 512, "hidden_size": "8"}}, "decoder.hidden_size"),
    ({"decoder": {"name": "cbatchnorm", "c_dim": 256}}, "c_dim"),
    ({"input_kind": "voxels"}, "input_kind"),
    ({"input_kind": "mesh"}, "input_kind"),
    ({"encoder_latent": {"name": "simple", "z_dim": 8}}, "encoder_latent"),
])
def test_bad_configs_are_rejected(change, message):
    config = {**PAPER_CONFIGS["pointcloud"], **change}
    with pytest.raises(UserError, match=re.escape(message)):
        build_model(config)

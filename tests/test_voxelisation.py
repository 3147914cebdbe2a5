"""A voxel grid's rule (touching or centres) from the CLI flag and the wire to the model, and the
local grid model that reads it (``voxelisation_input``, ``base_field``, no positions), in both
engines."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from backend.engine import pipeline, transforms
from backend.engine.generation import Generator
from backend.engine.request import LIMITS, ReconstructRequest, Settings
from backend.errors import UserError
from backend.io import zoo
from backend.io.binvox import write_binvox
from backend.io.checkpoints import save_model
from backend.io.inputs import VOXELISATIONS, VoxelInput, read_input
from backend.models import build_model
from backend.service import schema
from training.data.fields import VoxelsField, run_fields
from training.data.procedural import VOXEL_FILES, voxelize

GRID_CONFIG = {
    "arch": "convonet", "input_kind": "voxels", "padding": 0.0, "sample_align": "consistent",
    "base_field": True,
    "encoder": {"name": "voxel_simple_local", "c_dim": 8, "plane_type": ["grid"],
                "grid_resolution": 32, "kernel_size": 5, "voxelisation_input": True},
    "decoder": {"name": "simple_local", "c_dim": 8, "hidden_size": 8, "positions": False}}


def ball(radius=0.3):
    """The signed distance of a ball about the origin, (N, 3) -> (N,)."""
    return lambda p: np.linalg.norm(p, axis=-1) - radius


def ball_grid(rule, radius=0.3, n=32):
    """A ball's n^3 grid by ``rule``, the touching one from 200k samples of its sphere."""
    directions = np.random.default_rng(0).standard_normal((200_000, 3))
    surface = radius * directions / np.linalg.norm(directions, axis=1, keepdims=True)
    return voxelize(ball(radius), n, rule, surface)


def grid_model(seed=0, base_only=False):
    """A grid model with random weights (scaled so every part matters), or with its
    correction switched off (``base_only``: the logits are the base field alone)."""
    torch.manual_seed(seed)
    model = build_model(GRID_CONFIG).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.2 * torch.randn_like(parameter))
        if base_only:
            model.decoder.fc_out.weight.zero_()
            model.decoder.fc_out.bias.zero_()
    return model


def plane_model():
    """A voxel model on three feature planes with a U-Net: it reads grids resampled to 32^3."""
    encoder = {"name": "voxel_simple_local", "c_dim": 8, "plane_type": ["xz", "xy", "yz"],
               "unet": {"depth": 2, "start_filts": 8}}
    decoder = {"name": "simple_local", "c_dim": 8, "hidden_size": 8}
    return build_model({"arch": "convonet", "input_kind": "voxels", "encoder": encoder,
                        "decoder": decoder})


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "grid.safetensors"
    save_model(path, grid_model(base_only=True), {"threshold": 0.5, "input_kind": "voxels"})
    return path


def test_voxelisation_names_match_the_corpus_files():
    assert tuple(VOXEL_FILES) == VOXELISATIONS and VOXELISATIONS[0] == "touching"


def test_base_field_meshes_the_blurred_grid_before_any_training(model_file):
    """With the correction off, a centres grid of a ball comes back as that ball (the base
    field's 0.5 level): radius within a third of a voxel, closed."""
    model, card = zoo.load(str(model_file), "cpu")
    grid = ball_grid("centres")
    request = ReconstructRequest(VoxelInput(grid, np.full(3, -0.5), 1.0, "centres"),
                                 settings=Settings(16, 2, mesh_every_level=False))
    *_, finished = pipeline.reconstruct(request, model, card, "cpu")
    radii = np.linalg.norm(finished.frame.vertices, axis=1)
    assert abs(np.median(radii) - 0.3) < 1 / 96 and radii.std() < 0.01
    assert not any("half a voxel" in note for note in finished.summary["notes"])


def test_a_finer_grid_is_read_at_its_own_size(model_file):
    """The grid model (one voxel per cell, no U-Net) takes a 64^3 grid as it is, so a
    ball's surface comes back about twice as close as through the 32^3 resampling that
    plane models still get; grids over NATIVE_GRID_MAX are resampled to it."""
    model, card = zoo.load(str(model_file), "cpu")
    grid = ball_grid("centres", n=64)
    prepared = pipeline.prepare(VoxelInput(grid, np.full(3, -0.5), 1.0, "centres"), model,
                                card)
    assert prepared.inputs.shape == (1, 2, 64, 64, 64) and prepared.notes == []
    errors = {}
    for name, inputs in (("native", grid), ("resampled", transforms.resample_voxels(
            grid, transforms.TRAINED_GRID))):
        request = ReconstructRequest(VoxelInput(inputs, np.full(3, -0.5), 1.0, "centres"),
                                     settings=Settings(32, 2, mesh_every_level=False))
        *_, finished = pipeline.reconstruct(request, model, card, "cpu")
        errors[name] = np.abs(np.linalg.norm(finished.frame.vertices, axis=1) - 0.3).mean()
    assert errors["native"] < 0.6 * errors["resampled"], errors
    big = np.zeros((transforms.NATIVE_GRID_MAX + 32,) * 3, bool)
    big[40:120, 40:120, 40:120] = True
    capped = pipeline.prepare(VoxelInput(big, np.full(3, -0.5), 1.0, "centres"), model, card)
    assert capped.inputs.shape[-1] == transforms.NATIVE_GRID_MAX
    most = transforms.NATIVE_GRID_MAX
    assert capped.notes == [f"resampled the {len(big)}^3 grid to {most}^3"]
    planes = plane_model()
    assert not transforms.reads_native_grid(planes)
    assert pipeline.prepare(VoxelInput(grid, np.full(3, -0.5), 1.0), planes,
                            {}).inputs.shape == (1, 32, 32, 32)


def test_auto_resolution_follows_a_grid_read_at_its_own_size(model_file):
    """resolution0 unset ("auto", the CLI's, the wire's and Settings' default): MISE starts
    at 32, or at a finer grid's own size (up to 64) for a model that reads it so, within
    the finest-lattice limit; an explicit resolution0 is kept."""
    model, card = zoo.load(str(model_file), "cpu")
    grid = ball_grid("centres", n=64)

    def settled(settings, limits=LIMITS, inputs=grid, on=model):
        request = ReconstructRequest(VoxelInput(inputs, np.full(3, -0.5), 1.0, "centres"),
                                     settings=settings)
        request.validate(on, limits)
        return request.settings.resolution0

    assert Settings().resolution0 is None and schema.settings_from({}).resolution0 is None
    assert schema.settings_from({"mise": {"resolution0": None}}).resolution0 is None
    with pytest.raises(schema.ApiError, match="resolution0"):
        schema.settings_from({"mise": {"resolution0": "auto"}})
    assert settled(Settings()) == 64
    assert settled(Settings(), inputs=ball_grid("centres", n=48)) == 48
    assert settled(Settings(), inputs=ball_grid("centres")) == 32
    assert settled(Settings(), limits=replace(LIMITS, max_resolution=128)) == 32
    assert settled(Settings(32)) == 32
    assert settled(Settings(), on=plane_model()) == 32
    request = ReconstructRequest(VoxelInput(grid, np.full(3, -0.5), 1.0, "centres"),
                                 settings=Settings(mesh_every_level=False))
    request.validate(model)
    *_, finished = pipeline.reconstruct(request, model, card, "cpu")
    assert finished.summary["resolution"] == 256
    generator = Generator(model, card, "cpu", Settings(rotations=1))
    codes = [generator.encode(pipeline.prepare(VoxelInput(g, np.full(3, -0.5), 1.0, "centres"),
                                               model, card).inputs)
             for g in (grid, ball_grid("centres"))]
    with pytest.raises(UserError, match="grids of the same size"):
        codes[0].blend(codes[1], 0.5)


def test_every_lattice_point_of_a_voxel_field_is_evaluated():
    """A voxel model's field jumps by tens of logits within a voxel: MISE's certainty
    margin skipped the thin tube of a torus knot's touching grid where a coarser lattice
    missed it (IoU 0.50), so voxel models run without it (0.71)."""
    from training import evaluate
    from training.generalize import family_shape, ground_truth
    from training.generalize_voxels import voxelise

    model, card = zoo.load("voxels_convonet_grid", "cpu")
    knot = family_shape("knot", 0)
    request = ReconstructRequest(VoxelInput(voxelise(knot, "touching", 0), np.full(3, -0.5),
                                            1.0, "touching"),
                                 settings=Settings(rotations=1, mesh_every_level=False))
    assert Generator(model, card, "cpu", request.settings).certainty_margin is None
    *_, finished = pipeline.reconstruct(request, model, card, "cpu")
    scores = evaluate.score(evaluate.ShapeRef("families", "knot", None), "grid",
                            finished.frame.vertices, finished.frame.faces, 0.0,
                            ground_truth(knot, 20_000, 0), 20_000, 0)
    assert scores["iou"] > 0.65


def test_a_shape_touching_the_grid_faces_stops_at_them(model_file):
    """Features are clamped beyond the outer voxels, so without the cube wall a slab that
    fills the grid's outer layers would reach out to the padded cube (0.55)."""
    model, card = zoo.load(str(model_file), "cpu")
    grid = np.zeros((32, 32, 32), bool)
    grid[:20, 4:28, 4:28] = True  # flush with the x = -0.5 face
    request = ReconstructRequest(VoxelInput(grid, np.full(3, -0.5), 1.0, "centres"),
                                 settings=Settings(16, 2, mesh_every_level=False))
    *_, finished = pipeline.reconstruct(request, model, card, "cpu")
    x = finished.frame.vertices[:, 0]
    assert -0.5 - 1 / 64 < x.min() < -0.5 + 1 / 64  # the face, not beyond it
    assert abs(x.max() - (-0.5 + 20 / 32)) < 1 / 64


def test_the_rule_moves_the_surface_and_reaches_the_encoder():
    """The same grid under the two rules gives two codes (fc_rule's offset), and the
    prepared input carries the rule as channel 1."""
    model = grid_model()
    grid = ball_grid("touching")
    prepared = {rule: pipeline.prepare(VoxelInput(grid, np.full(3, -0.5), 1.0, rule), model, {})
                for rule in VOXELISATIONS}
    for index, rule in enumerate(VOXELISATIONS):
        inputs = prepared[rule].inputs
        assert inputs.shape == (1, 2, 32, 32, 32)
        np.testing.assert_array_equal(inputs[0, 0], grid)
        assert np.all(inputs[0, 1] == index)
    with torch.no_grad():
        codes = [model.encode_inputs(torch.from_numpy(prepared[rule].inputs))["grid"]
                 for rule in VOXELISATIONS]
    features, base = codes[0][:, :-1], codes[0][:, -1]
    assert not torch.allclose(features, codes[1][:, :-1])
    assert torch.equal(base, codes[1][:, -1])  # the base field is the grid's alone
    with pytest.raises(ValueError, match="occupancy and voxelisation"):
        model.encode_inputs(torch.zeros(1, 32, 32, 32))


def test_a_model_without_the_rule_says_centres_grids_come_out_small():
    model = build_model({**GRID_CONFIG, "base_field": False,
                         "encoder": {**GRID_CONFIG["encoder"], "voxelisation_input": False}})
    grid = ball_grid("centres")
    prepared = pipeline.prepare(VoxelInput(grid, np.full(3, -0.5), 1.0, "centres"), model, {})
    assert prepared.inputs.shape == (1, 32, 32, 32)
    assert any("half a voxel small" in note for note in prepared.notes)
    touching = pipeline.prepare(VoxelInput(grid, np.full(3, -0.5), 1.0), model, {})
    assert touching.notes == []


@pytest.mark.parametrize("n", [32, 48])
def test_bundled_engine_equals_torch_on_the_grid_model(model_file, tmp_path, n):
    """Codes and fp32 logits of both engines agree for a random grid model, both rules,
    on the trained 32^3 grid and a finer one read at its own size, and a model's batch does
    not change a shape's logits."""
    path = tmp_path / "random.safetensors"
    save_model(path, grid_model(seed=3), {"threshold": 0.5, "input_kind": "voxels"})
    (torch_model, card), (numpy_model, _) = (zoo.load_resolved(str(path), engine=e)
                                             for e in ("torch", "bundled"))
    grid = voxelize(lambda p: np.abs(p).max(-1) - 0.27 + 0.05 * p[..., 0], n, "centres")
    queries = np.random.default_rng(1).uniform(-0.55, 0.55, (20000, 3)).astype(np.float32)
    settings = Settings(precision="fp32")
    logits = {}
    for rule in VOXELISATIONS:
        inputs = pipeline.prepare(VoxelInput(grid, np.full(3, -0.5), 1.0, rule),
                                  torch_model, card).inputs
        generators = [Generator(m, card, "cpu", settings) for m in (torch_model, numpy_model)]
        reference, bundled = (g.logits(g.encode(inputs), queries) for g in generators)
        assert np.abs(reference).max() > 1.0
        np.testing.assert_allclose(bundled, reference, atol=1e-4, rtol=1e-4)
        logits[rule] = reference
    assert np.abs(logits["touching"] - logits["centres"]).max() > 0.1
    batch = np.stack([pipeline.prepare(VoxelInput(g, np.full(3, -0.5), 1.0, "centres"),
                                       torch_model, card).inputs[0]
                      for g in (grid, np.zeros_like(grid))])
    p = torch.from_numpy(queries[None, :500]).expand(2, -1, -1)
    with torch.no_grad():
        together = torch_model.decode(p, None, torch_model.encode_inputs(torch.from_numpy(batch)))
        alone = torch_model.decode(p[:1], None,
                                   torch_model.encode_inputs(torch.from_numpy(batch[:1])))
    torch.testing.assert_close(together[:1], alone, atol=1e-5, rtol=1e-5)


def test_training_field_draws_a_rule_and_sends_it(tmp_path):
    folder = tmp_path / "shape"
    folder.mkdir()
    grids = {rule: ball_grid(rule) for rule in VOXELISATIONS}
    for rule, grid in grids.items():
        write_binvox(folder / VOXEL_FILES[rule], grid, (-0.5,) * 3, 1.0)
    field = VoxelsField(VOXELISATIONS, channels=True)
    seen = set()
    for seed in range(12):
        sample = field.load(folder, np.random.default_rng(seed))
        assert sample.shape == (2, 32, 32, 32)
        rule = VOXELISATIONS[int(sample[1, 0, 0, 0])]
        np.testing.assert_array_equal(sample[0], grids[rule])
        seen.add(rule)
    assert seen == set(VOXELISATIONS)
    data = {"input": "voxels", "voxelisations": ["centres"], "points": 64, "near_share": 0.5,
            "val_points": 100}
    assert run_fields(data, True)["inputs"].load(folder, np.random.default_rng(0)).ndim == 3
    assert run_fields(data, True, voxelisation_input=True)["inputs"].channels


def test_cli_flag_and_wire_field_carry_the_rule(tmp_path):
    grid = ball_grid("centres")
    np.save(tmp_path / "grid.npy", grid)
    write_binvox(tmp_path / "grid.binvox", grid, (-0.5,) * 3, 1.0)
    for name in ("grid.npy", "grid.binvox"):
        assert read_input(tmp_path / name).voxelisation == "touching"
        assert read_input(tmp_path / name, voxelisation="centres").voxelisation == "centres"
    with pytest.raises(UserError, match="voxelisation must be one of touching, centres"):
        read_input(tmp_path / "grid.npy", voxelisation="inside")

    arrays = {"voxels": grid}
    header = {"voxelisation": "centres"}
    assert schema.input_from(header, arrays, LIMITS).voxelisation == "centres"
    assert schema.input_from({}, arrays, LIMITS).voxelisation == "touching"
    with pytest.raises(UserError, match="request voxelisation"):
        schema.input_from({"voxelisation": 3}, arrays, LIMITS)
    assert schema.content_hash(header, arrays) != schema.content_hash({}, arrays)


def test_cli_reconstructs_a_centres_grid_with_the_grid_model(model_file, tmp_path, run_cli):
    import trimesh

    grid = ball_grid("centres")
    np.save(tmp_path / "grid.npy", grid)
    out = tmp_path / "centres.ply"
    result = run_cli("reconstruct", str(tmp_path / "grid.npy"), "-o", str(out), "--model",
                     str(model_file), "--voxelisation", "centres", "--json", "--quiet")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["model"] == str(model_file)
    mesh = trimesh.load(out)
    assert mesh.is_watertight and abs(np.linalg.norm(mesh.vertices, axis=1).mean() - 0.3) < 0.01
    result = run_cli("reconstruct", str(tmp_path / "grid.npy"), "-o", str(tmp_path / "x.ply"),
                     "--voxelisation", "inside")
    assert result.returncode == 2 and "invalid choice: 'inside'" in result.stderr

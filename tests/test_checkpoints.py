"""Model files: official im2mesh .pt checkpoints and our safetensors + card format."""

import datetime
import json
import zipfile

import numpy as np
import pytest
import torch

from backend.io.checkpoints import convert_checkpoint, infer_config, load_model, save_model
from backend.errors import UnknownCheckpointError, UserError
from backend.models import PAPER_CONFIGS, build_model


def perturbed(config, seed=0):
    """A model of ``config`` in eval mode with every float tensor moved away from the init."""
    torch.manual_seed(seed)
    model = build_model(config)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.dtype.is_floating_point:  # num_batches_tracked
                t.fill_(1000 + seed)
            elif name.endswith("running_var"):
                t.copy_(0.5 + torch.randn(t.shape).abs())
            elif t.dim() >= 2:
                t.copy_(torch.randn(t.shape) / t[0].numel() ** 0.5)
            else:
                t.add_(0.1 * torch.randn(t.shape))
    return model.eval()


def save_official(path, model):
    """Write ``model`` the way im2mesh's CheckpointIO does."""
    torch.save({"model": model.state_dict(), "optimizer": {}, "it": 5, "epoch_it": 1,
                "loss_val_best": np.float64(0.3)}, path)
    return path


def logits(model):
    """Decoder output for fixed inputs: ``(1, 256)``."""
    generator = torch.Generator().manual_seed(7)
    inputs = {
        "pointcloud": torch.rand(1, 200, 3, generator=generator) - 0.5,
        "voxels": (torch.rand(1, 32, 32, 32, generator=generator) > 0.7).float(),
        "image": torch.rand(1, 3, 64, 64, generator=generator),
        None: None,
    }[model.input_kind]
    points = torch.rand(1, 256, 3, generator=generator) - 0.5
    with torch.no_grad():
        c = model.encode_inputs(inputs)
        z = torch.randn(1, model.z_dim, generator=generator)
        return model.decode(points, z, c)


@pytest.fixture(scope="module", params=list(PAPER_CONFIGS))
def official(request, tmp_path_factory):
    """(config name, original model, path of its official-layout .pt)."""
    name = request.param
    model = perturbed(PAPER_CONFIGS[name], seed=len(name))
    path = save_official(tmp_path_factory.mktemp(name) / "model_best.pt", model)
    return name, model, path


def test_official_checkpoint_loads_with_inferred_config(official):
    name, original, path = official
    model, card = load_model(path)
    assert not model.training
    assert card["config"] == model.config == PAPER_CONFIGS[name]
    assert card["threshold"] == 0.2
    assert card["metrics"] == {"loss_val_best": 0.3}
    assert card["provenance"]["file"] == "model_best.pt" and card["provenance"]["it"] == 5
    assert torch.equal(logits(model), logits(original))


def test_convert_round_trip(official, tmp_path):
    name, original, path = official
    out = tmp_path / f"{name}.safetensors"
    written = convert_checkpoint(path, out)
    on_disk = json.loads(out.with_suffix(".json").read_text())
    assert on_disk == written and written["config"] == PAPER_CONFIGS[name]
    assert len(written["provenance"]["sha256"]) == 64
    model, card = load_model(out)
    assert card == written and not model.training
    assert torch.equal(logits(model), logits(original))
    for key, value in original.state_dict().items():  # num_batches_tracked (0-dim int64) too
        assert model.state_dict()[key].dtype == value.dtype
        assert torch.equal(model.state_dict()[key], value), key


def test_save_model_keeps_card_fields(tmp_path):
    model = perturbed(PAPER_CONFIGS["unconditional"])
    card = save_model(tmp_path / "m.safetensors", model,
                      {"threshold": 0.4, "metrics": {"iou": 0.7}, "notes": "ours"})
    loaded, loaded_card = load_model(tmp_path / "m.safetensors")
    assert loaded_card == card
    assert card["threshold"] == 0.4 and card["notes"] == "ours"
    assert card["config"] == PAPER_CONFIGS["unconditional"]
    assert torch.equal(logits(loaded), logits(model))


def test_bare_state_dict_is_accepted(tmp_path):
    model = perturbed(PAPER_CONFIGS["voxels"])
    torch.save(model.state_dict(), tmp_path / "bare.pt")
    loaded, card = load_model(tmp_path / "bare.pt")
    assert card["config"] == PAPER_CONFIGS["voxels"] and card["metrics"] == {}
    assert torch.equal(logits(loaded), logits(model))


def test_numpy2_scalar_name_is_allowed(tmp_path):
    """numpy 2 pickles the numpy.float64 through numpy._core.multiarray.scalar."""
    model = perturbed(PAPER_CONFIGS["unconditional"])
    numpy1 = save_official(tmp_path / "numpy1.pt", model)
    numpy2 = tmp_path / "numpy2.pt"
    with zipfile.ZipFile(numpy1) as src, zipfile.ZipFile(numpy2, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("data.pkl"):
                assert b"numpy.core.multiarray\nscalar" in data
                data = data.replace(b"numpy.core.multiarray\nscalar",
                                    b"numpy._core.multiarray\nscalar")
            dst.writestr(info, data)
    loaded, card = load_model(numpy2)
    assert card["metrics"] == {"loss_val_best": 0.3}
    assert torch.equal(logits(loaded), logits(model))


def test_infer_config_recognises_non_paper_sizes():
    config = {"arch": "onet", "input_kind": "pointcloud", "z_dim": 0,
              "encoder": {"name": "resnet_pointnet", "c_dim": 32, "hidden_dim": 16},
              "decoder": {"name": "cbatchnorm", "c_dim": 32, "z_dim": 0, "hidden_size": 64,
                          "legacy": True},
              "encoder_latent": None}
    assert infer_config(build_model(config).state_dict()) == config


@pytest.mark.parametrize("encoder", [{"name": "voxel_simple", "c_dim": 64, "width": 8},
                                     {"name": "resnet18", "c_dim": 64, "width": 16}])
def test_infer_config_recognises_narrow_voxel_and_image_encoders(encoder):
    kind = "voxels" if encoder["name"] == "voxel_simple" else "image"
    config = {"arch": "onet", "input_kind": kind, "z_dim": 0, "encoder": encoder,
              "decoder": {"name": "cbatchnorm", "c_dim": 64, "z_dim": 0, "hidden_size": 32,
                          "legacy": False},
              "encoder_latent": None}
    assert infer_config(build_model(config).state_dict()) == config


@pytest.mark.parametrize("edit, message", [
    (lambda sd: {"foo.weight": torch.zeros(3)}, "no 'decoder.fc_p.weight'"),
    (lambda sd: {**sd, "decoder.fc_p.weight": torch.zeros(3)}, "no Linear/Conv1d"),
    (lambda sd: {k: v for k, v in sd.items() if k != "decoder.block2.fc_1.bias"},
     "missing: decoder.block2.fc_1.bias"),
    (lambda sd: {**sd, "encoder.extra.weight": torch.zeros(2)}, "unexpected: encoder.extra.weight"),
    (lambda sd: {k: v for k, v in sd.items() if not k.startswith("encoder.")}
     | {"encoder.conv0.weight": torch.zeros(2)}, "no known encoder"),
    (lambda sd: {**sd, "decoder.fc_out.weight": torch.zeros(1, 128, 1)},
     "wrong shape: decoder.fc_out.weight"),
    (lambda sd: {**sd, "encoder.fc_c.weight": torch.zeros(128, 512)}, "inconsistent sizes"),
])
def test_unknown_architectures_are_rejected(tmp_path, edit, message):
    state = edit(build_model(PAPER_CONFIGS["pointcloud"]).state_dict())
    with pytest.raises(UnknownCheckpointError, match=message):
        infer_config(state)
    torch.save({"model": state}, tmp_path / "odd.pt")
    with pytest.raises(UnknownCheckpointError, match="Expected an Occupancy Network"):
        load_model(tmp_path / "odd.pt")


def test_unusable_files_give_one_line_user_errors(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint\n")
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"model": {}, "when": datetime.date(2019, 6, 16)}, unsafe)
    no_model = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], no_model)
    orphan = tmp_path / "orphan.safetensors"
    save_model(orphan, build_model(PAPER_CONFIGS["unconditional"]), {})
    orphan.with_suffix(".json").unlink()
    cases = [
        (tmp_path / "missing.pt", "not found"),
        (text, "not a torch.save file"),
        (unsafe, "datetime.date"),
        (no_model, "not a model checkpoint"),
        (orphan, "no model card orphan.json"),
    ]
    for path, message in cases:
        with pytest.raises(UserError, match=message) as error:
            load_model(path)
        assert "\n" not in str(error.value)


def test_card_that_does_not_fit_the_weights(tmp_path):
    path = tmp_path / "m.safetensors"
    save_model(path, build_model(PAPER_CONFIGS["voxels"]), {})
    card = json.loads(path.with_suffix(".json").read_text())
    card["config"] = PAPER_CONFIGS["image"]
    path.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(UserError, match="does not match the config"):
        load_model(path)

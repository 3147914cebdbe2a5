"""Bundling a trained run as a backend model with its card."""

import json

import pytest

from backend.io import zoo
from backend.io.checkpoints import save_model
from backend.errors import UserError
from backend.models import PAPER_CONFIGS, build_model
from training.bundle import bundle


@pytest.fixture
def run_dir(tmp_path):
    config = dict(PAPER_CONFIGS["pointcloud"])
    config["encoder"] = {"name": "resnet_pointnet", "c_dim": 8, "hidden_dim": 8}
    config["decoder"] = {"name": "cbatchnorm", "c_dim": 8, "z_dim": 0, "hidden_size": 8,
                         "legacy": False}
    run = tmp_path / "run"
    save_model(run / "model_best.safetensors", build_model(config),
               {"threshold": 0.2, "input_kind": "pointcloud",
                "provenance": {"command": "python -m training.train x.yaml"}})
    report = tmp_path / "report"
    report.mkdir()
    (report / "summary.json").write_text(json.dumps({
        "split": "test", "input": "pointcloud", "settings": {"n_points": 3000},
        "methods": {"model": {"mean_of_classes": {"iou": 0.9}, "classes": {},
                              "seconds_per_shape": 0.5},
                    "poisson": {"mean_of_classes": {"iou": 0.7}, "classes": {},
                                "seconds_per_shape": 1.5}}}))
    return run, report


def test_bundle_writes_weights_and_card_that_the_zoo_picks(run_dir, tmp_path):
    run, report = run_dir
    out = tmp_path / "weights"
    card = bundle(run, "pc_small", [report], ["pointcloud"], out, notes=["resumed once"])
    assert card["provenance"]["notes"] == ["resumed once"]
    assert (out / "pc_small.safetensors").is_file()
    assert card["metrics"]["test"][0]["mean_of_classes"]["iou"] == 0.9
    assert card["metrics"]["test"][0]["baselines"]["poisson"]["mean_of_classes"]["iou"] == 0.7
    assert card["provenance"]["command"].startswith("python -m training.train")
    assert zoo.default_model_name("pointcloud", [out]) == "pc_small"
    model, loaded = zoo.load("pc_small", extra_dirs=[out])
    assert loaded["default_for"] == ["pointcloud"] and model.input_kind == "pointcloud"


def test_bundle_refuses_what_it_should(run_dir, tmp_path):
    run, report = run_dir
    out = tmp_path / "weights"
    with pytest.raises(UserError, match="not found"):
        bundle(tmp_path / "nothing", "x", out_dir=out)
    with pytest.raises(UserError, match="limit"):
        bundle(run, "x", out_dir=out, max_mb=0.001)
    bundle(run, "first", [report], ["pointcloud"], out)
    with pytest.raises(UserError, match="already the default"):
        bundle(run, "second", [report], ["pointcloud"], out)


def test_a_size_bounded_default_takes_sparse_clouds_only(run_dir, tmp_path):
    run, report = run_dir
    out = tmp_path / "weights"
    bundle(run, "dense", [report], ["pointcloud"], out)
    card = bundle(run, "sparse", [report], ["pointcloud"], out, default_max_points=1500)
    assert card["default_max_points"] == 1500
    assert zoo.default_model_name("pointcloud", [out], points=300) == "sparse"
    assert zoo.default_model_name("pointcloud", [out], points=1500) == "sparse"
    assert zoo.default_model_name("pointcloud", [out], points=1501) == "dense"
    assert zoo.default_model_name("pointcloud", [out]) == "dense"  # count unknown
    bundle(run, "sparser", [report], ["pointcloud"], out, default_max_points=500)
    assert zoo.default_model_name("pointcloud", [out], points=300) == "sparser"
    assert zoo.default_model_name("pointcloud", [out], points=600) == "sparse"
    # The user's folder replaces the bundled defaults: none of them is picked.
    assert not {zoo.default_model_name("pointcloud", [out], points=n)
                for n in (10, 1000, 10**6)} - {"dense", "sparse", "sparser"}
    with pytest.raises(UserError, match="already the default"):
        bundle(run, "again", [report], ["pointcloud"], out, default_max_points=1500)
    with pytest.raises(UserError, match="--default-for pointcloud"):
        bundle(run, "voxel", [report], ["voxels"], out, default_max_points=1500)
    assert "default_max_points" not in bundle(run, "dense", [report], ["pointcloud"], out)


def test_the_cli_bundles_the_last_checkpoint_when_asked(run_dir, tmp_path):
    from training.bundle import main
    run, report = run_dir
    model, _ = zoo.load(str(run / "model_best.safetensors"))
    save_model(run / "model_last.safetensors", model, {"threshold": 0.5,
                                                       "input_kind": "pointcloud"})
    out = tmp_path / "weights"
    assert main([str(run), "--name", "last", "--checkpoint", "model_last", "--out",
                 str(out)]) == 0
    assert json.loads((out / "last.json").read_text())["threshold"] == 0.5
    assert (out / "last.safetensors").read_bytes() == \
        (run / "model_last.safetensors").read_bytes()
    assert main([str(run), "--name", "best", "--out", str(out)]) == 0
    assert json.loads((out / "best.json").read_text())["threshold"] == 0.2

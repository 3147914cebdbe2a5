"""Training: loaders on both dataset layouts, config checks, an end-to-end run whose
checkpoint reconstructs, exact --resume, two-process DDP and clear errors for bad data."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from backend.io.binvox import write_binvox
from backend.io.checkpoints import load_model
from backend.errors import UserError
from backend.engine.generation import Generator
from backend.engine.request import Settings
from training.checkpoints import MODEL_BEST, MODEL_LAST, STATE
from training.config import check_config, learning_rate, load_config
from training.data import procedural
from training.data.datasets import ShapeDataset, collate
from training.data.fields import ImagesField, MixedPointsField, run_fields
from training.data.transforms import SubsamplePoints
from training.train import main

ROOT = Path(__file__).resolve().parents[1]

TINY_MODEL = {"arch": "onet", "input_kind": "pointcloud",
              "encoder": {"name": "resnet_pointnet", "c_dim": 32, "hidden_dim": 32},
              "decoder": {"name": "cbatchnorm", "c_dim": 32, "hidden_size": 32}}
TINY_DATA = {"input_points": 256, "points": 256, "val_points": 2000}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Two procedural categories of 6 shapes (4 train, 1 val, 1 test each), small files."""
    out = tmp_path_factory.mktemp("corpus")
    options = procedural.Options(points=4000, views=2, image_size=64, resolution=48)
    procedural.generate(out, ["chair", "mug"], 6, seed=0, options=options)
    return out


def write_official(root, shapes=("s1", "s2", "s3"), n=3000):
    """A tiny dataset in the official ShapeNet layout: spheres, jpg views, no
    points_near.npz, no mesh.ply. Splits: s1, s2 train; s3 val and test."""
    rng = np.random.default_rng(0)
    category = root / "02958343"
    for i, shape in enumerate(shapes):
        folder = category / shape
        (folder / "img_choy2016").mkdir(parents=True)
        radius = 0.3 + 0.05 * i
        points = rng.uniform(-0.55, 0.55, (n, 3)).astype(np.float16)
        inside = np.linalg.norm(points.astype(np.float32), axis=1) < radius
        identity = {"loc": np.zeros(3, np.float32), "scale": np.float32(1)}
        np.savez(folder / "points.npz", points=points, occupancies=np.packbits(inside),
                 **identity)
        normals = rng.normal(size=(n, 3))
        normals /= np.linalg.norm(normals, axis=1, keepdims=True)
        np.savez(folder / "pointcloud.npz", points=(radius * normals).astype(np.float16),
                 normals=normals.astype(np.float16), **identity)
        centres = (np.arange(32) + 0.5) / 32 - 0.5
        grid = np.stack(np.meshgrid(centres, centres, centres, indexing="ij"), -1)
        write_binvox(folder / "model.binvox", np.linalg.norm(grid, axis=-1) < radius,
                     (-0.5,) * 3, 1.0)
        for view in range(3):
            image = np.full((137, 137, 3), 255, np.uint8)
            image[40:100, 40 + view:100] = 90
            Image.fromarray(image).save(folder / "img_choy2016" / f"{view:03d}.jpg")
    (root / "metadata.yaml").write_text(
        yaml.safe_dump({"02958343": {"id": "02958343", "name": "car"}}))
    (category / "train.lst").write_text("\n".join(shapes[:2]))
    (category / "val.lst").write_text(shapes[2])
    (category / "test.lst").write_text(shapes[2])
    return root


def write_config(path, data_path, model=TINY_MODEL, data=None, **training):
    """A tiny training config at ``path``; ``training`` entries replace the defaults here."""
    config = {"model": model, "data": {"path": str(data_path), **TINY_DATA, **(data or {})},
              "training": {"batch_size": 4, "lr": 1e-3, "max_iterations": 40,
                           "validate_every": 20, "checkpoint_every": 20, "log_every": 1,
                           "num_workers": 0, **training}}
    path.write_text(yaml.safe_dump(config))
    return path


def metrics(run_dir, name):
    with open(run_dir / "metrics.csv", newline="") as f:
        return [(int(row["iteration"]), float(row["value"])) for row in csv.DictReader(f)
                if row["metric"] == name]


def data_section(**overrides):
    return check_config({"model": {"paper": "unconditional"}, "data": overrides})["data"]


# Loaders


def test_official_layout_loads_for_every_input_kind(tmp_path):
    root = write_official(tmp_path / "shapenet")
    data = data_section(input_points=100, points=512)
    for kind, shape in (("pointcloud", (100, 3)), ("voxels", (32, 32, 32)),
                        ("image", (3, 224, 224))):
        data["input"] = kind
        train = ShapeDataset(root, "train", run_fields(data, training=True))
        sample = train[0]
        assert sample["inputs"].shape == shape and sample["inputs"].dtype == np.float32
        # No points_near.npz: all query points are uniform ones from points.npz.
        assert sample["points"].shape == (512, 3) and sample["points.occ"].shape == (512,)
        stored = np.load(root / "02958343" / "s1" / "points.npz")["points"].astype(np.float32)
        assert np.isin(sample["points"][:, 0], stored[:, 0]).all()
        radius = np.linalg.norm(sample["points"], axis=1)
        np.testing.assert_array_equal(sample["points.occ"], (radius < 0.3).astype(np.float32))
        batch = collate([train[0], train[1]])
        assert batch["inputs"].shape == (2, *shape) and batch["shape"] == ["s1", "s2"]
    image = ShapeDataset(root, "val", run_fields(data, training=False))[0]["inputs"]
    assert image.min() >= 0 and image.max() <= 1 and image[:, 0, 0].min() > 0.98
    assert train.categories == ["02958343"]
    assert train.split_sizes() == {"train": 2, "val": 1, "test": 1}


def test_procedural_layout_mixes_near_surface_points_and_picks_views(corpus):
    folder = corpus / "chair" / (corpus / "chair" / "train.lst").read_text().split()[0]
    rng = np.random.default_rng(0)
    mixed = MixedPointsField(1000, near_share=0.25).load(folder, rng)
    near = np.load(folder / "points_near.npz")["points"].astype(np.float32)
    assert mixed[None].shape == (1000, 3)
    assert np.isin(mixed[None][750:, 0], near[:, 0]).mean() > 0.99
    # Uniform points cover the padded cube; near-surface ones stay close to the shape.
    assert np.abs(mixed[None][:750]).max() > 0.45
    uniform_only = MixedPointsField(1000, near_share=0.0).load(folder, rng)
    assert np.abs(uniform_only[None]).max() <= 0.55 + 1e-3

    first = ImagesField(random_view=False)
    rendered = first.load(folder, rng)
    assert rendered.shape == (3, 224, 224) and rendered[:, 0, 0].tolist() == [1, 1, 1]
    drawn = [ImagesField().load(folder, np.random.default_rng(seed)) for seed in range(8)]
    assert any(not np.array_equal(image, rendered) for image in drawn)
    assert np.array_equal(first.load(folder, np.random.default_rng(5)), rendered)


def test_subsample_points_draws_with_replacement():
    data = {None: np.arange(6, dtype=np.float32).reshape(2, 3), "occ": np.array([0., 1.])}
    out = SubsamplePoints(5)(data, np.random.default_rng(0))
    assert out[None].shape == (5, 3) and out["occ"].tolist() == (out[None][:, 0] / 3).tolist()


def test_samples_are_reproducible_per_epoch(corpus):
    data = data_section(input="none", points=64)
    data["input"] = "none"
    dataset = ShapeDataset(corpus, "train", run_fields(data, training=True), seed=3)
    again = ShapeDataset(corpus, "train", run_fields(data, training=True), seed=3)
    assert np.array_equal(dataset[1]["points"], again[1]["points"])
    again.set_epoch(1)
    assert not np.array_equal(dataset[1]["points"], again[1]["points"])


# Configs


def test_config_defaults_and_yaml_floats(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: {paper: unconditional}\ntraining: {lr: 1e-4, batch_size: 8}\n")
    config = load_config(path, data_path="/data")
    assert config["training"]["lr"] == 1e-4 and config["training"]["batch_size"] == 8
    assert config["training"]["precision"] == "fp32" and config["data"]["points"] == 2048
    assert config["data"]["path"] == "/data" and config["data"]["input"] == "none"
    assert config["model"]["decoder"]["hidden_size"] == 128


@pytest.mark.parametrize("text, expected", [
    ("training: {batchsize: 8}", "unknown key 'training.batchsize'"),
    ("training: {batch_size: '8'}", "'training.batch_size' must be int"),
    ("training: {batch_size: true}", "'training.batch_size' must be int"),
    ("data: {categories: chair}", "'data.categories' must be a list of str"),
    ("training: {precision: fp16}", "'training.precision' must be one of fp32, bf16"),
    ("optimizer: {}", "unknown key 'optimizer'"),
    ("data: {input: image}", "'data.input' is image but the model takes none"),
])
def test_config_errors_name_file_and_key(tmp_path, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(f"model: {{paper: unconditional}}\n{text}\n")
    with pytest.raises(UserError) as error:
        load_config(path)
    assert str(path) in str(error.value) and expected in str(error.value)


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "training"
                                          / "configs").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_configs_load_and_build(path):
    from backend.models import build_model

    config = load_config(path, data_path="unused")
    assert build_model(config["model"]).config["arch"] == config["model"]["arch"]


def test_config_model_errors(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"model": {**TINY_MODEL, "encoder": {
        "name": "resnet_pointnet", "width": 3}}}))
    with pytest.raises(UserError, match=r"bad.yaml: .*'encoder.width'"):
        load_config(path)
    path.write_text("model: {paper: pointcloud, c_dim: 3}\n")
    with pytest.raises(UserError, match="model.paper"):
        load_config(path)


# Training runs


def test_training_end_to_end_and_exact_resume(corpus, tmp_path):
    # The lr drops at 30: the resumed half below must follow the same schedule.
    config = write_config(tmp_path / "tiny.yaml", corpus, lr_milestones=[30])
    run = tmp_path / "run"
    assert main([str(config), "--out", str(run)]) == 0
    losses = [value for _, value in metrics(run, "train/loss")]
    assert len(losses) == 40 and np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
    assert [it for it, _ in metrics(run, "val/iou")] == [20, 40]
    assert (run / "curves.png").is_file() and any((run / "tensorboard").iterdir())

    model, card = load_model(run / MODEL_BEST)
    assert card["threshold"] == 0.2 and card["input_kind"] == "pointcloud"
    assert card["input_points"] == 256 and card["metrics"]["best_val_iou"] > 0
    provenance = card["provenance"]
    assert provenance["command"].startswith("python -m training.train")
    assert provenance["data"]["splits"] == {"train": 8, "val": 2, "test": 2}
    assert provenance["iterations"] in (20, 40) and provenance["hardware"]["cpu"]
    assert provenance["config"]["training"]["batch_size"] == 4
    cloud = np.load(corpus / "mug" / "00000" / "pointcloud.npz")["points"][:256]
    generator = Generator(model, card, settings=Settings(resolution0=16, upsampling_steps=1))
    frames = list(generator.frames(generator.encode(torch.from_numpy(
        cloud.astype(np.float32))[None])))
    assert frames[-1].final and frames[-1].resolution == 32 and len(frames[-1].faces) > 0

    # The same run in two parts (stopped at the checkpoint of iteration 20) ends identical.
    resumed = tmp_path / "resumed"
    write_config(tmp_path / "half.yaml", corpus, max_iterations=20, lr_milestones=[30])
    assert main([str(tmp_path / "half.yaml"), "--out", str(resumed)]) == 0
    assert torch.load(resumed / STATE, weights_only=True)["iteration"] == 20
    assert main([str(config), "--out", str(resumed), "--resume"]) == 0
    assert torch.load(resumed / STATE, weights_only=True)["iteration"] == 40
    straight, parts = load_file(run / MODEL_LAST), load_file(resumed / MODEL_LAST)
    assert all(torch.equal(straight[key], parts[key]) for key in straight)
    assert [it for it, _ in metrics(resumed, "train/loss")] == list(range(1, 41))
    assert json.loads((resumed / "model_last.json").read_text())["provenance"][
        "iterations"] == 40


def test_time_limit_stops_cleanly_and_resumes(corpus, tmp_path, capsys):
    config = write_config(tmp_path / "tiny.yaml", corpus, max_iterations=3,
                          validate_every=100, checkpoint_every=100)
    run = tmp_path / "run"
    assert main([str(config), "--out", str(run), "--time-limit", "0"]) == 0
    assert "stopped at the time limit" in capsys.readouterr().out
    # The stop validates and checkpoints like a last iteration.
    assert torch.load(run / STATE, weights_only=True)["iteration"] == 1
    assert [it for it, _ in metrics(run, "val/iou")] == [1]
    assert (run / MODEL_BEST).is_file()
    assert main([str(config), "--out", str(run), "--resume"]) == 0
    assert torch.load(run / STATE, weights_only=True)["iteration"] == 3
    assert [it for it, _ in metrics(run, "val/iou")] == [1, 3]
    assert main([str(config), "--out", str(tmp_path / "other"), "--time-limit", "-5"]) == 2
    assert "--time-limit is seconds >= 0" in capsys.readouterr().err


def test_init_fine_tunes_from_a_model_file(corpus, tmp_path, capsys):
    config = write_config(tmp_path / "tiny.yaml", corpus, max_iterations=2)
    first = tmp_path / "first"
    assert main([str(config), "--out", str(first)]) == 0
    # lr 0: Adam moves nothing, so the parameters must stay those of the init file.
    frozen = write_config(tmp_path / "frozen.yaml", corpus, lr=0.0, max_iterations=3,
                          num_workers=1)
    tuned = tmp_path / "tuned"
    assert main([str(frozen), "--out", str(tuned), "--init", str(first / MODEL_BEST)]) == 0
    before, after = load_file(first / MODEL_BEST), load_file(tuned / MODEL_LAST)
    parameters = [key for key in before if "running_" not in key and "batches" not in key]
    assert parameters and all(torch.equal(before[key], after[key]) for key in parameters)
    card = json.loads((tuned / "model_last.json").read_text())
    origin = card["provenance"]["init"]
    assert origin["file"] == str(first / MODEL_BEST) and origin["iterations"] == 2
    assert len(origin["sha256"]) == 64 and card["provenance"]["iterations"] == 3
    waits = [value for _, value in metrics(tuned, "train/data_wait_seconds")]
    steps = [value for _, value in metrics(tuned, "train/seconds_per_iteration")]
    assert len(waits) == 3 and all(0 <= w <= s for w, s in zip(waits, steps))
    longer = write_config(tmp_path / "longer.yaml", corpus, lr=0.0, max_iterations=4)
    assert main([str(longer), "--out", str(tuned), "--resume"]) == 0
    card = json.loads((tuned / "model_last.json").read_text())
    assert card["provenance"]["iterations"] == 4 and card["provenance"]["init"] == origin

    other = write_config(tmp_path / "other.yaml", corpus, model={
        **TINY_MODEL, "encoder": {"name": "resnet_pointnet", "c_dim": 32, "hidden_dim": 16}})
    assert main([str(other), "--out", str(tmp_path / "x"), "--init",
                 str(first / MODEL_BEST)]) == 2
    assert "its model differs from the config's" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: --resume and --init exclude each other
        main([str(config), "--out", str(first), "--resume", "--init", str(first / MODEL_BEST)])
    assert "not allowed with argument" in capsys.readouterr().err


def test_learning_rate_schedule():
    training = check_config({"model": {"paper": "unconditional"},
                             "training": {"lr": 1e-3, "lr_milestones": [10, 20],
                                          "lr_factor": 0.5}})["training"]
    rates = [learning_rate(training, i) for i in (0, 9, 10, 19, 20, 1000)]
    assert rates == pytest.approx([1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4, 2.5e-4])


def test_loader_workers_see_the_epoch_of_each_sample(corpus):
    """One loader iterator runs across epochs: each key carries its epoch, so workers
    draw what the main process would, epoch after epoch, and a resumed sampler continues
    the same stream."""
    from torch.utils.data import DataLoader

    from training.train import EpochSampler, Processes

    data = data_section(input="none", points=64)
    data["input"] = "none"
    dataset = ShapeDataset(corpus, "train", run_fields(data, training=True), seed=3)

    def stream(workers, iteration=0, count=7):
        sampler = EpochSampler(dataset, Processes(), seed=0, batch_size=3,
                               iteration=iteration)
        loader = DataLoader(dataset, 3, sampler=sampler, drop_last=True,
                            num_workers=workers, collate_fn=collate)
        batches = iter(loader)
        return [next(batches) for _ in range(count)]

    inline, workers = stream(0), stream(2)
    # 8 shapes in batches of 3: 2 batches per epoch, so 7 batches span 4 epochs.
    for a, b in zip(inline, workers):
        assert a["index"] == b["index"] and torch.equal(a["points"], b["points"])
    for number, batch in enumerate(workers):  # batch n belongs to epoch n // 2
        expected = np.stack([dataset[number // 2, i]["points"] for i in batch["index"]])
        assert np.array_equal(batch["points"].numpy(), expected)
    assert not np.array_equal(dataset[0, 0]["points"], dataset[1, 0]["points"])
    for a, b in zip(inline[3:], stream(0, iteration=3, count=4)):
        assert a["index"] == b["index"] and torch.equal(a["points"], b["points"])


def test_run_folder_is_not_overwritten(corpus, tmp_path, capsys):
    config = write_config(tmp_path / "tiny.yaml", corpus, max_iterations=2)
    run = tmp_path / "run"
    assert main([str(config), "--out", str(run)]) == 0
    assert main([str(config), "--out", str(run)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main([str(config), "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert "no run to resume" in capsys.readouterr().err


@pytest.mark.parametrize("model, data", [
    ({"paper": "unconditional"}, {}),
    ({**TINY_MODEL, "input_kind": "voxels",
      "encoder": {"name": "voxel_simple", "c_dim": 32}}, {}),
    ({**TINY_MODEL, "input_kind": "image", "encoder": {"name": "resnet18", "c_dim": 32}},
     {}),
    ({"arch": "convonet", "input_kind": "pointcloud", "sample_align": "consistent",
      "encoder": {"name": "pointnet_local_pool", "c_dim": 8, "hidden_dim": 8,
                  "plane_type": ["xz", "xy", "yz"], "plane_resolution": 16,
                  "unet": {"depth": 2, "start_filts": 8}},
      "decoder": {"name": "simple_local", "c_dim": 8, "hidden_size": 8}}, {}),
])
def test_other_input_kinds_train_and_load(corpus, tmp_path, model, data):
    config = write_config(tmp_path / "c.yaml", corpus, model=model, data=data,
                          batch_size=2, max_iterations=2, validate_every=2,
                          precision="bf16")
    assert main([str(config), "--out", str(tmp_path / "run")]) == 0
    loaded, card = load_model(tmp_path / "run" / MODEL_BEST)
    assert loaded.config == load_config(config)["model"]
    assert 0 <= card["metrics"]["val_iou"] <= 1


def test_official_layout_trains(tmp_path):
    root = write_official(tmp_path / "shapenet")
    config = write_config(tmp_path / "c.yaml", root, batch_size=2, max_iterations=2)
    assert main([str(config), "--out", str(tmp_path / "run")]) == 0


def test_two_process_ddp_on_cpu(corpus, tmp_path):
    config = write_config(tmp_path / "c.yaml", corpus, max_iterations=4, validate_every=4,
                          checkpoint_every=4)
    run = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
         "2", "-m", "training.train", str(config), "--out", str(run)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(path.name for path in run.iterdir() if "model" in path.name) == [
        "model_best.json", "model_best.safetensors", "model_last.json",
        "model_last.safetensors"]
    _, card = load_model(run / MODEL_LAST)
    assert card["provenance"]["hardware"]["processes"] == 2
    assert card["provenance"]["iterations"] == 4
    assert result.stdout.count("best val IoU") == 1  # rank 0 alone reports


# Errors for bad data


def test_bad_dataset_folders_give_clear_errors(tmp_path, capsys):
    config = write_config(tmp_path / "c.yaml", tmp_path / "empty", max_iterations=2)
    (tmp_path / "empty").mkdir()
    assert main([str(config)]) == 2
    assert "python -m training.data procedural" in capsys.readouterr().err

    (tmp_path / "nolist" / "chair").mkdir(parents=True)
    (tmp_path / "nolist" / "metadata.yaml").write_text("chair: {id: chair, name: chair}\n")
    with pytest.raises(UserError, match=r"nolist/chair/train.lst not found: is .* "
                                        r"`python -m training.data procedural`"):
        ShapeDataset(tmp_path / "nolist", "train", {})

    root = write_official(tmp_path / "partial")
    (root / "02958343" / "s2" / "pointcloud.npz").unlink()
    data = data_section(input="none")
    data["input"] = "pointcloud"
    with pytest.raises(UserError, match=r"s2/pointcloud.npz not found"):
        ShapeDataset(root, "train", run_fields(data, training=True))
    with pytest.raises(UserError, match="no category 'plane'"):
        ShapeDataset(root, "train", {}, categories=["plane"])
    with pytest.raises(UserError, match="not found"):
        ShapeDataset(tmp_path / "missing", "train", {})


def test_card_of_a_sparse_scan_config_says_how_to_prepare_sparse_inputs():
    from training.train import make_card

    configs = Path(__file__).resolve().parents[1] / "training/configs"
    config = load_config(configs / "pointcloud_convonet_3plane.yaml", data_path="unused")
    card = make_card(config, {}, 10, 1.0, None, None, None)
    assert card["sparse_inputs"] == {"resample_to": 3000, "jitter": 0.005}
    plain = make_card(load_config(configs / "pointcloud_small.yaml", data_path="unused"), {}, 10,
                      1.0, None, None, None)
    assert "sparse_inputs" not in plain


def test_sparse_clouds_are_resampled_as_in_training():
    from backend.engine.pipeline import prepare_points

    points = np.random.default_rng(0).uniform(-1, 1, (300, 3))
    card = {"input_points": 3000, "sparse_inputs": {"resample_to": 3000, "jitter": 0.005}}
    prepared = prepare_points(points, card)
    unit = prepared.inputs[0]
    assert unit.shape == (3000, 3) and "resampled 300 points" in prepared.notes[0]
    # Every point is a jittered copy of an input point (in unit-cube units).
    source = (points - prepared.center) / prepared.scale
    nearest = np.linalg.norm(unit[:, None] - source[None], axis=2).min(axis=1)
    assert nearest.max() < 0.005 * 6 and 0.004 < np.median(nearest) < 0.012
    assert prepare_points(points, {"input_points": 3000}).inputs.shape == (1, 300, 3)


def test_init_from_torchvision_resnet18_weights(tmp_path):
    """``--init resnet18-*.pth`` (torchvision's ImageNet file: a bare state dict with the
    1000-class fc) starts the paper's image encoder trunk from it; the rest is random, and a
    narrow encoder is refused with what to change."""
    from backend.models.onet.encoders import ResNet18Features
    from training.train import open_model

    torch.manual_seed(5)
    trunk = ResNet18Features(64).state_dict()
    weights = {**trunk, "fc.weight": torch.randn(1000, 512), "fc.bias": torch.randn(1000)}
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save(weights, path)
    config = check_config({"model": {"paper": "image"}})
    model, state, origin = open_model(config, tmp_path / "run", False, path)
    assert state is None and "ImageNet" in origin["weights"] and len(origin["sha256"]) == 64
    loaded = model.encoder.features.state_dict()
    for key, value in trunk.items():
        assert torch.equal(loaded[key], value), key
    assert model.encoder.fc.weight.shape == (256, 512)  # c_dim, not ImageNet's classes
    narrow = check_config(yaml.safe_load(
        (Path(__file__).parents[1] / "training/configs/image_small.yaml").read_text()))
    with pytest.raises(UserError, match="width 64"):
        open_model(narrow, tmp_path / "run2", False, path)

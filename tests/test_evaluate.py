"""Evaluation end to end on a tiny analytic corpus, the mesh import and the renderer."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from backend.io import render, zoo
from backend.io.binvox import write_binvox
from backend.io.meshes import write_mesh
from training import evaluate, generative
from training.data.__main__ import main as data_main

ROOT = Path(__file__).resolve().parents[1]

HALF = np.array([0.5, 0.3, 0.2])  # the normalised box: longest edge 1


def sphere_sdf(p):
    return np.linalg.norm(p, axis=1) - 0.5


def box_sdf(p):
    q = np.abs(p) - HALF
    return np.linalg.norm(np.maximum(q, 0), axis=1) + np.minimum(q.max(axis=1), 0)


SHAPES = {"ball": (sphere_sdf, lambda: trimesh.creation.icosphere(3, 0.5)),
          "brick": (box_sdf, lambda: trimesh.creation.box(2 * HALF))}


def write_shape(folder, sdf, mesh, seed, n=10_000):
    """One shape in the official layout, with exact labels from its SDF."""
    (folder / "img_choy2016").mkdir(parents=True)
    points = np.random.default_rng(seed).uniform(-0.55, 0.55, (n, 3)).astype(np.float16)
    np.savez(folder / "points.npz", points=points,
             occupancies=np.packbits(sdf(points.astype(np.float32)) < 0))
    surface, face = trimesh.sample.sample_surface(mesh, n, seed=seed)
    np.savez(folder / "pointcloud.npz", points=surface.astype(np.float16),
             normals=mesh.face_normals[face].astype(np.float16))
    centres = (np.arange(32) + 0.5) / 32 - 0.5
    grid = np.stack(np.meshgrid(centres, centres, centres, indexing="ij"), -1)
    write_binvox(folder / "model.binvox", sdf(grid.reshape(-1, 3)).reshape((32,) * 3) < 0,
                 (-0.5,) * 3, 1.0)
    render.render_mesh(mesh.vertices, mesh.faces, 64).save(folder / "img_choy2016/000.png")
    write_mesh(folder / "mesh.ply", mesh.vertices, mesh.faces)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Two categories of two test shapes each: a ball of radius 0.5 and a 1 x 0.6 x 0.4 box."""
    root = tmp_path_factory.mktemp("corpus")
    for category, (sdf, make) in SHAPES.items():
        for i in range(2):
            write_shape(root / category / f"{i:02d}", sdf, make(), seed=i)
        (root / category / "test.lst").write_text("00\n01")
        (root / category / "train.lst").write_text("")
    (root / "metadata.yaml").write_text("ball: {id: ball, name: ball}\n"
                                        "brick: {id: brick, name: brick}\n")
    return root


def run_evaluate(corpus, out, *extra):
    return evaluate.main(["--model", "analytic:sphere", "--data", str(corpus), "--out",
                          str(out), "--resolution0", "16", "--upsampling-steps", "1",
                          "--eval-points", "10000", *map(str, extra)])


def read_rows(out):
    with open(out / "shapes.csv") as f:
        return list(csv.DictReader(f))


def test_point_cloud_evaluation_writes_every_report(corpus, tmp_path):
    assert run_evaluate(corpus, tmp_path) == 0
    rows = read_rows(tmp_path)
    assert [(r["category"], r["shape"], r["method"]) for r in rows] == [
        ("ball", "00", "model"), ("ball", "01", "model"),
        ("brick", "00", "model"), ("brick", "01", "model")]
    # The analytic sphere (radius 0.35 in the cloud's unit cube) comes back at about radius
    # 0.35 in the dataset frame: IoU with the radius 0.5 ball is about 0.7^3.
    for row in rows[:2]:
        assert float(row["iou"]) == pytest.approx(0.343, abs=0.04)
        assert float(row["chamfer_l1"]) == pytest.approx(0.15, abs=0.015)
        assert float(row["fscore"]) == 0.0

    summary = json.loads((tmp_path / "summary.json").read_text())
    model = summary["methods"]["model"]
    assert set(model["classes"]) == {"ball", "brick"} and summary["shapes"] == 4
    class_mean = np.mean([c["iou"] for c in model["classes"].values()])
    assert model["mean_of_classes"]["iou"] == pytest.approx(class_mean)
    report = (tmp_path / "report.md").read_text()
    assert "| ball | 2 |" in report and "| brick | 2 |" in report
    assert "mean of class means" in report and "x10" in report
    assert "Baseline" not in report
    with Image.open(tmp_path / "gallery.png") as gallery:
        assert gallery.height == 4 * (evaluate.GALLERY_SIZE + render.LABEL_HEIGHT)
        assert gallery.width == 3 * evaluate.GALLERY_SIZE


def test_voxel_evaluation_has_a_baseline_row(corpus, tmp_path):
    assert run_evaluate(corpus, tmp_path, "--input", "voxels", "--categories", "ball") == 0
    rows = read_rows(tmp_path)
    assert [r["method"] for r in rows] == ["model", "voxel baseline"] * 2
    model, baseline = rows[0], rows[1]
    # The grid covers the unit cube, so the sphere of radius 0.35 lands there exactly.
    assert float(model["iou"]) == pytest.approx(0.343, abs=0.02)
    assert float(baseline["iou"]) > 0.9 and float(baseline["chamfer_l1"]) < 0.015
    assert "Baseline: marching cubes of the input 32^3 voxels" in (
        tmp_path / "report.md").read_text()


def test_image_evaluation_reads_the_first_view(corpus, tmp_path):
    assert run_evaluate(corpus, tmp_path, "--input", "image", "--limit", "1") == 0
    assert len(read_rows(tmp_path)) == 2


@pytest.mark.parametrize("change, options, message", [
    (None, ["--split", "validation"], "validation.lst not found"),
    (None, ["--categories", "ball,chair"], "no category chair"),
    ("pointcloud.npz", [], "00/pointcloud.npz not found"),
    ("folder", [], "dataset folder"),
])
def test_bad_data_is_one_line_error(corpus, tmp_path, capsys, change, options, message):
    data = corpus
    if change == "pointcloud.npz":
        data = tmp_path / "copy"
        (data / "ball/00").mkdir(parents=True)
        (data / "ball/test.lst").write_text("00")
    elif change == "folder":
        data = tmp_path / "missing"
    assert run_evaluate(data, tmp_path / "out", *options) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "\n" not in error and message in error


def test_mesh_import_skips_a_corrupt_file(tmp_path, capsys):
    source = tmp_path / "meshes"
    (source / "cups").mkdir(parents=True)
    box = trimesh.creation.box((2.0, 2.0, 2.0))
    open_top = box.faces[box.face_normals[:, 2] < 0.9]
    write_mesh(source / "cups/open_box.obj", box.vertices + 5.0, open_top)
    trimesh.creation.icosphere(2, 3.0).export(source / "cups/ball.stl")
    (source / "cups/broken.off").write_text("OFF\n3 1 0\n1 2\nnot a mesh\n")
    out = tmp_path / "data"
    assert data_main(["meshes", "--in", str(source), "--out", str(out), "--points",
                      "4000"]) == 0
    printed = capsys.readouterr().out
    assert "imported 2 of 3" in printed and "broken.off" in printed
    assert "broken.off" in (out / "skipped.txt").read_text()
    assert (out / "cups/train.lst").read_text().split("\n") == ["ball", "open_box"]
    for name in ("points.npz", "points_near.npz", "pointcloud.npz", "model.binvox",
                 "mesh.ply"):
        assert (out / "cups/open_box" / name).is_file()
    with np.load(out / "cups/open_box/points.npz") as points:
        inside = np.unpackbits(points["occupancies"])[:4000].astype(bool)
        # Normalised to the unit cube, the open box still holds its interior.
        expected = (np.abs(points["points"].astype(np.float64)) < 0.5).all(axis=1)
        assert (inside == expected).mean() > 0.99
        np.testing.assert_allclose(points["loc"], [5.0, 5.0, 5.0])
        assert float(points["scale"]) == 2.0


def test_renderer_silhouette_matches_the_mesh_extent():
    box = trimesh.creation.box((1.0, 0.5, 0.25))
    image = render.render_mesh(box.vertices, box.faces, 200, azimuth=0, elevation=0)
    assert image.size == (200, 200) and image.mode == "RGBA"
    alpha = np.asarray(image)[..., 3] > 0
    rows, cols = np.nonzero(alpha)
    # Seen along -z, the box fills 90% of the width (5% margins) and half as much height.
    assert cols.max() - cols.min() + 1 == pytest.approx(180, abs=2)
    assert rows.max() - rows.min() + 1 == pytest.approx(90, abs=2)
    assert (rows.min() + rows.max()) / 2 == pytest.approx(99.5, abs=1)

    points = render.render_points(box.sample(2000), 100)
    assert (np.asarray(points)[..., 3] > 0).mean() > 0.1
    row = render.side_by_side([image, points], ["mesh", "points"])
    assert row.size == (300, 200 + render.LABEL_HEIGHT)


def test_cli_render_writes_input_and_result(tmp_path, run_cli):
    cloud = trimesh.creation.icosphere(2, 2.0).vertices
    np.save(tmp_path / "cloud.npy", cloud)
    result = run_cli("reconstruct", tmp_path / "cloud.npy", "-o", tmp_path / "m.ply",
                     "--model", "analytic:sphere", "--resolution0", "16",
                     "--upsampling-steps", "1", "--render", tmp_path / "view.png")
    assert result.returncode == 0, result.stderr
    with Image.open(tmp_path / "view.png") as image:
        assert image.size == (1024, 512 + render.LABEL_HEIGHT)


def test_poisson_baseline_row(corpus, tmp_path):
    assert run_evaluate(corpus, tmp_path, "--poisson", "--categories", "ball",
                        "--n-points", "3000") == 0
    rows = read_rows(tmp_path)
    assert [r["method"] for r in rows] == ["model", "poisson"] * 2
    # Poisson of 3000 noisy points on the radius 0.5 ball recovers the ball.
    for baseline in rows[1::2]:
        assert float(baseline["iou"]) > 0.9 and float(baseline["normal_consistency"]) > 0.95
        assert float(baseline["seconds"]) > 0
    assert "Baseline: screened Poisson (depth 8" in (tmp_path / "report.md").read_text()


def test_partial_views_keep_one_side_of_the_shape(corpus):
    ref = evaluate.ShapeRef("ball", "00", corpus / "ball/00")
    gt = evaluate.ground_truth(ref.folder)
    whole = evaluate.load_input(ref, "pointcloud", gt, 3000, 0.0, np.random.default_rng(0))
    seen = evaluate.load_input(ref, "pointcloud", gt, 3000, 0.0, np.random.default_rng(0), 1)
    assert np.linalg.norm(whole.points.mean(axis=0)) < 0.05
    # A camera at distance 2 sees less than a hemisphere: its centroid lies beyond r / 2.
    assert np.linalg.norm(seen.points.mean(axis=0)) > 0.25


def test_compare_tables_reports_side_by_side(corpus, tmp_path, capsys):
    from training import compare

    assert run_evaluate(corpus, tmp_path / "a", "--poisson", "--limit", "1") == 0
    assert run_evaluate(corpus, tmp_path / "b", "--limit", "1") == 0
    capsys.readouterr()
    assert compare.main([f"sphere={tmp_path / 'a'}", str(tmp_path / "b"),
                         "--split-by", "brick"]) == 0
    out = capsys.readouterr().out
    held, rest = out.split("Classes ball")
    assert "Classes brick" in held and "| sphere | poisson | 1 |" in held
    assert "| b | model | 1 |" in rest
    rows = read_rows(tmp_path / "a")
    brick_iou = next(float(r["iou"]) for r in rows
                     if r["category"] == "brick" and r["method"] == "model")
    assert f"| sphere | model | 1 | {brick_iou:.4f} |" in held
    assert compare.main([str(tmp_path / "missing")]) == 2


def test_threshold_sweep_picks_the_best_on_validation(corpus, tmp_path, capsys):
    """The analytic sphere (logit -50 sdf, radius 0.35 at probability 0.5) grows as the
    threshold falls, towards the corpus ball of radius 0.5: IoU must pick the lowest."""
    from training import threshold

    for category in SHAPES:
        (corpus / category / "val.lst").write_text("00")
    args = ["--model", "analytic:sphere", "--data", str(corpus), "--out", str(tmp_path),
            "--thresholds", "0.5", "0.05", "0.9", "--metric", "iou", "--n-points", "500",
            "--resolution0", "16", "--upsampling-steps", "1", "--eval-points", "5000"]
    assert threshold.main(args) == 0
    result = json.loads((tmp_path / "threshold.json").read_text())
    assert result["chosen"] == 0.05 and result["shapes"] == 2
    assert result["chosen_smooth_steps"] == 0
    iou = result["by_threshold_and_smoothing"]
    assert iou["0.05/0"] > iou["0.5/0"] > iou["0.9/0"]
    assert "| 500 | 0.05 | 0 |" in (tmp_path / "report.md").read_text()

    smoothed = tmp_path / "smoothed"
    assert threshold.main(args[:5] + [str(smoothed)] + args[6:]
                          + ["--smooth-steps", "0", "2"]) == 0
    both = json.loads((smoothed / "threshold.json").read_text())
    assert set(both["by_threshold_and_smoothing"]) == {f"{t}/{s}" for t in ("0.5", "0.05", "0.9")
                                                       for s in (0, 2)}
    assert both["by_threshold_and_smoothing"]["0.05/0"] == iou["0.05/0"]  # the same meshes

    assert threshold.main(args[:-12] + ["--split", "test"]) == 2
    assert "never on test" in capsys.readouterr().err
    assert threshold.main(args + ["--write-card"]) == 2  # analytic models have no card file
    assert "no JSON card" in capsys.readouterr().err


def without_timings(out):
    """A report folder's contents with the wall-clock figures taken out (they differ from
    run to run): shapes.csv rows, summary.json, report.md lines, gallery pixels."""
    rows = [{k: v for k, v in row.items() if k != "seconds"} for row in read_rows(out)]
    summary = json.loads((out / "summary.json").read_text())
    for method in summary["methods"].values():
        method.pop("seconds_per_shape")
        for means in [*method["classes"].values(), method["mean_of_classes"],
                      method["mean_over_shapes"]]:
            means.pop("seconds")
    report = [line for line in (out / "report.md").read_text().splitlines()
              if "s per shape" not in line]
    with Image.open(out / "gallery.png") as image:
        pixels = np.asarray(image)
    return rows, summary, report, pixels


def test_sharded_evaluation_over_two_processes_equals_one_process(corpus, tmp_path):
    """torchrun with 2 CPU processes (gloo): each scores every other shape, rank 0 merges;
    the report equals a single process's, a real (small bundled) network included."""
    options = ["-m", "training.evaluate", "--model", "pointcloud_onet_small", "--data",
               str(corpus), "--resolution0", "16", "--upsampling-steps", "1",
               "--eval-points", "5000", "--gallery-per-class", "1"]
    # One thread per process in both runs, so every matmul reduces in the same order.
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    single = subprocess.run([sys.executable, *options, "--out", str(tmp_path / "one")],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    sharded = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
         "2", *options, "--out", str(tmp_path / "two")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert sharded.returncode == 0, sharded.stderr[-2000:]
    one, two = without_timings(tmp_path / "one"), without_timings(tmp_path / "two")
    assert len(one[0]) == 4 and one[0] == two[0]
    assert one[1] == two[1] and one[2] == two[2]
    np.testing.assert_array_equal(one[3], two[3])
    assert sharded.stdout.count("report in") == 1  # rank 0 alone writes and reports


def test_mmd_and_coverage_of_a_distance_matrix():
    # 3 candidates x 2 references: both candidates 0 and 2 are nearest reference 0.
    distances = np.array([[0.1, 0.5], [0.4, 0.3], [0.2, 0.9]])
    assert generative.mmd_cov(distances) == pytest.approx(
        {"mmd_chamfer_l1": (0.1 + 0.3) / 2, "coverage": 1.0})
    assert generative.mmd_cov(distances[[0, 2]])["coverage"] == 0.5


def test_generative_report_scores_posterior_and_samples(tmp_path):
    """The bundled VAE on a ball and a brick: its samples are further from them than the same
    shapes from the training split (the reference a perfect model reaches)."""
    root = tmp_path / "corpus"
    for category, (sdf, make) in SHAPES.items():
        write_shape(root / category / "00", sdf, make(), seed=0)
        for split in ("train", "test"):
            (root / category / f"{split}.lst").write_text("00")
    out = tmp_path / "report"
    assert generative.main(["--model", zoo.default_model_name("sample"), "--data", str(root),
                            "--out", str(out), "--samples", "3", "--surface-points", "2000",
                            "--resolution0", "16", "--upsampling-steps", "1",
                            "--thresholds", "0.2", "0.5"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    by_threshold = summary["posterior_iou_by_threshold"]
    card_threshold = f"{summary['threshold']:g}"  # the card's, always scored
    assert card_threshold in by_threshold and summary["shapes"] == 2
    assert summary["posterior_iou"] == by_threshold[card_threshold]
    assert summary["best_threshold"] == max((0.2, 0.5), key=lambda t: by_threshold[f"{t:g}"])
    samples, reference = summary["samples"], summary["training_shapes"]
    assert samples["count"] == 3 and reference["count"] == 2 and reference["coverage"] == 1
    assert 0 < reference["mmd_chamfer_l1"] < samples["mmd_chamfer_l1"] / 2
    assert (out / "samples.png").is_file() and "Posterior IoU" in (out / "report.md").read_text()

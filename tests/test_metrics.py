"""Metrics of the ONet/ConvONet protocol on shapes with known answers, and the inside test."""

import numpy as np
import pytest
import trimesh

from training import metrics


def sphere(radius, subdivisions=5):
    mesh = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    return mesh.vertices, mesh.faces


def uniform_points(n, seed=0):
    return np.random.default_rng(seed).uniform(-0.55, 0.55, size=(n, 3))


def test_a_mesh_against_itself_is_perfect():
    vertices, faces = sphere(0.4)
    gt_points, gt_normals = metrics.sample_surface(vertices, faces, seed=1)
    queries = uniform_points(20_000)
    result = metrics.mesh_metrics(vertices, faces, gt_points, gt_normals, queries,
                                  np.linalg.norm(queries, axis=1) < 0.4, seed=2)
    assert result["chamfer_l1"] < 0.003
    assert result["normal_consistency"] > 0.99
    assert result["fscore"] == pytest.approx(1.0, abs=1e-3)
    assert result["iou"] > 0.99


def test_concentric_spheres():
    r1, r2 = 0.3, 0.4
    vertices, faces = sphere(r1)
    gt_points, gt_normals = metrics.sample_surface(*sphere(r2), count=20_000, seed=1)
    queries = uniform_points(50_000)
    result = metrics.mesh_metrics(vertices, faces, gt_points, gt_normals, queries,
                                  np.linalg.norm(queries, axis=1) < r2, n_points=20_000)
    assert result["chamfer_l1"] == pytest.approx(r2 - r1, abs=0.003)
    assert result["accuracy"] == pytest.approx(r2 - r1, abs=0.003)
    assert result["iou"] == pytest.approx((r1 / r2) ** 3, abs=0.02)
    assert result["normal_consistency"] > 0.99  # concentric: normals stay parallel
    assert result["fscore"] == result["precision"] == result["recall"] == 0.0


def test_fscore_counts_distances_up_to_one_percent():
    points = np.random.default_rng(0).uniform(-0.5, 0.5, size=(500, 3))
    normals = np.tile([0.0, 0.0, 1.0], (500, 1))
    near = metrics.pointcloud_metrics(points + [0.0, 0.0, 0.009], normals, points, -normals)
    assert near["fscore"] == 1.0 and near["normal_consistency"] == 1.0  # |cos|
    far = metrics.pointcloud_metrics(points + [0.0, 0.0, 0.011], normals, points, normals)
    assert far["fscore"] == 0.0
    assert far["chamfer_l1"] == pytest.approx(0.011, abs=1e-6)


def test_empty_prediction_gets_the_worst_values():
    gt_points, gt_normals = metrics.sample_surface(*sphere(0.4, 2), count=100, seed=0)
    result = metrics.mesh_metrics(np.zeros((0, 3)), np.zeros((0, 3), int), gt_points,
                                  gt_normals, uniform_points(10), np.ones(10, bool))
    assert result["iou"] == 0.0 and result["fscore"] == 0.0
    assert result["chamfer_l1"] == result["accuracy"] == pytest.approx(np.sqrt(3))
    assert result["normal_consistency"] == -1.0  # im2mesh's EMPTY_PCL_DICT_NORMALS


def test_iou():
    a = np.array([1, 1, 0, 0], bool)
    assert metrics.iou(a, np.array([1, 0, 1, 0], bool)) == pytest.approx(1 / 3)
    assert metrics.iou(np.zeros(3, bool), np.zeros(3, bool)) == 1.0


def test_inside_test_matches_a_watertight_sphere():
    vertices, faces = sphere(0.4)
    points = uniform_points(30_000)
    inside = metrics.contains(vertices, faces, points)
    # The icosphere's flat faces lie within 2e-4 of the sphere; ignore points that close.
    radius = np.linalg.norm(points, axis=1)
    clear = np.abs(radius - 0.4) > 1e-3
    assert np.array_equal(inside[clear], radius[clear] < 0.4)


def test_inside_test_survives_a_missing_face():
    box = trimesh.creation.box((1.0, 1.0, 1.0))
    open_top = box.faces[box.face_normals[:, 2] < 0.9]
    points = np.array([[0, 0, 0], [0.2, -0.3, 0.45], [0, 0, 0.6], [0.7, 0, 0], [0, 0, -0.6]])
    assert metrics.contains(box.vertices, open_top, points).tolist() == [
        True, True, False, False, False]


def test_inside_test_counts_rays_through_shared_edges_once():
    box = trimesh.creation.box((1.0, 1.0, 1.0))  # every face is split along a diagonal
    line = np.array([[t, t, 0.0] for t in np.linspace(-0.45, 0.45, 7)])
    assert metrics.contains(box.vertices, box.faces, line).all()

"""Mesh quality metrics of the ONet/ConvONet protocol (docs/design.md, "Metrics").

All lengths are in the normalised unit cube (a shape's bounding box centred, longest edge 1).
Following im2mesh's ``MeshEvaluator``: 100k points with face normals are sampled on the
predicted mesh; accuracy is their mean distance to the ground-truth surface samples,
completeness the reverse, Chamfer-L1 the mean of the two; normal consistency averages
``|cos|`` between each point's normal and its nearest neighbour's, both ways; precision and
recall are the fractions of those distances ``<= 0.01`` (1% of the cube edge) and F-score
their harmonic mean; IoU compares the occupancies of the 100k uniform points (inside test:
``backend.engine.inside.contains``).

An empty predicted mesh gets im2mesh's ``EMPTY_PCL_DICT``: accuracy = completeness =
sqrt(3) (the unit cube's diagonal), normal consistency -1 (``EMPTY_PCL_DICT_NORMALS``) and
IoU 0. im2mesh leaves Chamfer-L1 and F-score undefined there (pandas then skips the shape in
class means, flattering the method); we set Chamfer-L1 = sqrt(3) and F-score, precision and
recall = 0, so an empty mesh always counts as the worst case.
"""

from __future__ import annotations

import numpy as np

from backend.engine.inside import contains

N_POINTS = 100_000
FSCORE_THRESHOLD = 0.01
EMPTY_DISTANCE = float(np.sqrt(3))
EMPTY_NORMAL_CONSISTENCY = -1.0


def sample_surface(vertices: np.ndarray, faces: np.ndarray, count: int = N_POINTS,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``count`` points uniformly on the mesh by area, seeded, and their faces' unit normals.

    vertices (V, 3), faces (F, 3). Returns (points (count, 3) float32, normals (count, 3)
    float32).
    """
    import trimesh

    mesh = trimesh.Trimesh(np.asarray(vertices, dtype=np.float64), np.asarray(faces),
                           process=False)
    points, face_index = trimesh.sample.sample_surface(mesh, count, seed=seed)
    return points.astype(np.float32), mesh.face_normals[face_index].astype(np.float32)


def nearest(source: np.ndarray, source_normals: np.ndarray, target: np.ndarray,
            target_normals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each source point (N, 3): distance to its nearest target point (M, 3) and
    ``|cos|`` between their normals. Returns ((N,) float64, (N,) float64)."""
    from scipy.spatial import cKDTree

    # Sliding-midpoint, non-compact trees: as fast as the defaults on close surfaces and
    # four times faster on far apart ones (a bad prediction).
    tree = cKDTree(target, balanced_tree=False, compact_nodes=False)
    distance, index = tree.query(source)
    cosine = (_unit(source_normals) * _unit(target_normals)[index]).sum(axis=1)
    return distance, np.abs(cosine)


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float64)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def pointcloud_metrics(points: np.ndarray, normals: np.ndarray, gt_points: np.ndarray,
                       gt_normals: np.ndarray,
                       threshold: float = FSCORE_THRESHOLD) -> dict[str, float]:
    """Distances between a predicted and a ground-truth surface sample (both (N, 3) with
    normals (N, 3), unit-cube units). Returns accuracy, completeness, chamfer_l1,
    normal_consistency, precision, recall and fscore (at ``threshold``)."""
    if len(points) == 0:
        return empty_metrics()
    completeness, completeness_cos = nearest(gt_points, gt_normals, points, normals)
    accuracy, accuracy_cos = nearest(points, normals, gt_points, gt_normals)
    precision = float((accuracy <= threshold).mean())
    recall = float((completeness <= threshold).mean())
    total = precision + recall
    return {
        "accuracy": float(accuracy.mean()),
        "completeness": float(completeness.mean()),
        "chamfer_l1": float((accuracy.mean() + completeness.mean()) / 2),
        "normal_consistency": float((accuracy_cos.mean() + completeness_cos.mean()) / 2),
        "precision": precision,
        "recall": recall,
        "fscore": 2 * precision * recall / total if total > 0 else 0.0,
    }


def empty_metrics() -> dict[str, float]:
    """The metrics of an empty prediction (see the module docstring)."""
    return {"accuracy": EMPTY_DISTANCE, "completeness": EMPTY_DISTANCE,
            "chamfer_l1": EMPTY_DISTANCE, "normal_consistency": EMPTY_NORMAL_CONSISTENCY,
            "precision": 0.0, "recall": 0.0, "fscore": 0.0, "iou": 0.0}


def iou(occupancy: np.ndarray, gt_occupancy: np.ndarray) -> float:
    """Intersection over union of two (N,) bool occupancies (1.0 when both are empty)."""
    occupancy, gt_occupancy = np.asarray(occupancy, bool), np.asarray(gt_occupancy, bool)
    union = np.count_nonzero(occupancy | gt_occupancy)
    return float(np.count_nonzero(occupancy & gt_occupancy) / union) if union else 1.0


def mesh_metrics(vertices: np.ndarray, faces: np.ndarray, gt_points: np.ndarray,
                 gt_normals: np.ndarray, iou_points: np.ndarray, gt_occupancy: np.ndarray,
                 n_points: int = N_POINTS, seed: int = 0) -> dict[str, float]:
    """All metrics of a predicted mesh (V, 3)/(F, 3) against a shape's ground truth: surface
    samples ``gt_points`` (M, 3) with ``gt_normals`` (M, 3), and ``iou_points`` (K, 3) with
    ``gt_occupancy`` (K,) bool. ``n_points`` are sampled on the prediction with ``seed``.
    Returns pointcloud_metrics' keys plus iou."""
    if len(vertices) == 0 or len(faces) == 0:
        return empty_metrics()
    points, normals = sample_surface(vertices, faces, n_points, seed)
    result = pointcloud_metrics(points, normals, gt_points, gt_normals)
    result["iou"] = iou(contains(vertices, faces, iou_points), gt_occupancy)
    return result
